"""The field's standard scores for editing directions, beside the workbench's own.

From the **effect matrix** ``E`` ``[k, F]`` (direction by factor, non-negative: the
effect per unit strength of :func:`workbench.eval.directions.score_directions`, in factor
spreads):

- **DCI** (Eastwood & Williams, 2018), with ``E`` as the importance matrix:
  *disentanglement* ``sum_i rho_i (1 - H_F(P_i))`` with ``P_i = E_i / sum_j E_ij`` (each
  direction's effects as a distribution over the F factors, entropy in base F) and
  ``rho_i`` the direction's share of all effect; *completeness* the mean over factors of
  ``1 - H_k(P~_j)`` with ``P~_j = E_.j / sum_i E_ij`` (each factor's effects over the k
  directions, base k; factors no direction moves count 0); *informativeness*, which in
  DCI is how well a regressor predicts a factor from the codes, becomes for edits how far
  the best direction moves each factor: the mean over factors of
  ``min(1, max_i E_ij / move)`` (1: every factor is moved at least ``move`` spreads per
  unit strength by some direction).
- **MIG-style gap** (after the mutual information gap of Chen et al., 2018): per factor,
  the gap between the largest and the second largest effect on it, over the largest,
  averaged over factors (factors no direction moves count 0). 1 when each factor is moved
  by one direction only; 0 when two directions move it equally.

From edited images:

- **SSIM** (the structural similarity of scikit-image, images in [-1, 1], data range 2)
  between edited and unedited images, averaged inside and outside a region from the
  library's SSIM map over the pixels whose window lies in the image (those the library's
  own mean uses: without a region the result is its value);
- **edit success**: the share of edited images (strength != 0) in which the targeted
  factor moves by at least ``move`` of its spread (for the shape class: the class
  changes) and every other factor by at most ``keep`` of its spread (the shape class:
  unchanged), both images valid. **Transfer success** is the same for a direction found on
  one sample and applied to others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench.data.scenes import Scene
from workbench.errors import WorkbenchError, check_finite

#: SSIM window side (scikit-image's default).
WINDOW = 7
#: Default thresholds of edit success and informativeness, in factor spreads.
MOVE = 0.25
KEEP = 0.1


@dataclass
class Disentanglement:
    """DCI and the MIG-style gap of an effect matrix (module docstring)."""

    disentanglement: float
    completeness: float
    informativeness: float
    gap: float
    per_direction: list[float]  # 1 - H_F(P_i)
    per_factor: list[float]  # 1 - H_k(P~_j)
    gap_per_factor: list[float]

    def to_dict(self) -> dict:
        """The scores as plain data."""
        return dict(self.__dict__)


def _check_matrix(effect: torch.Tensor) -> torch.Tensor:
    e = torch.as_tensor(effect, dtype=torch.float64)
    if e.ndim != 2 or e.shape[0] < 1 or e.shape[1] < 1:
        raise WorkbenchError(f"effect matrix must be [k, F], got {list(e.shape)}")
    check_finite("effect matrix", e)
    if bool((e < 0).any()):
        raise WorkbenchError("effect matrix must be non-negative (absolute effects)")
    return e


def _one_minus_entropy(p: torch.Tensor, base: int) -> torch.Tensor:
    """``1 - H(p) / log(base)`` per row of a distribution ``[n, m]`` (rows summing to 1);
    1 for a one-hot row; a base of 1 leaves nothing to spread over: 1."""
    if base < 2:
        return torch.ones(p.shape[0], dtype=torch.float64)
    h = -(p * p.clamp_min(1e-300).log()).sum(1) / math.log(base)
    return 1.0 - h


def disentanglement(effect: torch.Tensor, move: float = MOVE) -> Disentanglement:
    """DCI and the MIG-style gap of ``effect`` ``[k, F]`` (module docstring)."""
    e = _check_matrix(effect)
    k, f = e.shape
    total = float(e.sum())
    if total == 0:
        zeros = [0.0] * f
        return Disentanglement(0.0, 0.0, 0.0, 0.0, [0.0] * k, zeros, zeros)
    rows = e.sum(1)
    p = e / rows.clamp_min(1e-300)[:, None]
    d_i = torch.where(rows > 0, _one_minus_entropy(p, f), torch.zeros(k, dtype=torch.float64))
    rho = rows / total
    cols = e.sum(0)
    pt = (e / cols.clamp_min(1e-300)[None]).T  # [F, k]
    c_j = torch.where(cols > 0, _one_minus_entropy(pt, k), torch.zeros(f, dtype=torch.float64))
    informativeness = float((e.max(0).values / move).clamp(max=1.0).mean())
    top2 = e.topk(min(2, k), dim=0).values  # [2, F]
    second = top2[1] if k > 1 else torch.zeros(f, dtype=torch.float64)
    gap = torch.where(top2[0] > 0, (top2[0] - second) / top2[0].clamp_min(1e-300), 0.0)
    return Disentanglement(
        disentanglement=float((rho * d_i).sum()),
        completeness=float(c_j.mean()),
        informativeness=informativeness,
        gap=float(gap.mean()),
        per_direction=d_i.tolist(),
        per_factor=c_j.tolist(),
        gap_per_factor=gap.tolist(),
    )


def masked_ssim(
    edited: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[float, float | None]:
    """Mean SSIM between ``edited`` and ``reference`` ``[N, C, H, W]`` in [-1, 1] inside
    ``mask`` ``[H, W]`` (True inside) and outside it: ``(inside, outside)``; without a mask
    ``(whole image, None)``. scikit-image's SSIM (uniform 7 x 7 windows, data range 2,
    channels averaged), read from its per-pixel map over the pixels 3 or more from the
    border (as the library averages it)."""
    from skimage.metrics import structural_similarity

    if edited.shape != reference.shape or edited.ndim != 4:
        raise WorkbenchError(
            f"need edited and reference images of one shape [N, C, H, W], got "
            f"{list(edited.shape)} and {list(reference.shape)}"
        )
    if mask is not None:
        mask = torch.as_tensor(mask).bool()
        if tuple(mask.shape) != tuple(edited.shape[-2:]):
            raise WorkbenchError(
                f"mask has shape {list(mask.shape)}, expected {list(edited.shape[-2:])}"
            )
        if bool(mask.all()) or not bool(mask.any()):
            raise WorkbenchError("the mask must have pixels both inside and outside")
    a = edited.detach().to("cpu", torch.float64).numpy()
    b = reference.detach().to("cpu", torch.float64).numpy()
    maps = []
    for x, y in zip(a, b, strict=True):
        _, full = structural_similarity(
            x, y, win_size=WINDOW, data_range=2.0, channel_axis=0, full=True
        )
        maps.append(full.mean(0))  # [H, W], channels averaged
    stack = np.stack(maps)
    pad = (WINDOW - 1) // 2
    interior = np.zeros(stack.shape[1:], dtype=bool)
    interior[pad:-pad, pad:-pad] = True
    if mask is None:
        return float(stack[:, interior].mean()), None
    m = mask.numpy()
    if not (m & interior).any() or not (~m & interior).any():
        raise WorkbenchError(f"the mask must have pixels inside and outside, {pad} from the border")
    return float(stack[:, m & interior].mean()), float(stack[:, ~m & interior].mean())


def edit_success(
    changes: dict[str, torch.Tensor],
    valid: torch.Tensor,
    strengths: Sequence[float],
    target: str,
    scene: Scene,
    size: int,
    move: float = MOVE,
    keep: float = KEEP,
) -> float:
    """Share of the edited images (strength != 0, pair valid) in which ``target`` moves by
    at least ``move`` spreads and every other factor by at most ``keep``; ``changes``
    ``[S, N]`` per factor as :func:`workbench.eval.directions.factor_changes` gives them,
    ``valid`` ``[S, N]`` (module docstring)."""
    if target not in changes:
        raise WorkbenchError(f"unknown factor {target!r}; factors: {', '.join(changes)}")
    spreads = scene.spreads(size)
    edited = torch.tensor([float(s) != 0 for s in strengths])[:, None].expand_as(valid)
    pairs = edited & valid
    if not bool(pairs.any()):
        return float("nan")
    ok = torch.ones_like(valid)
    for name, change in changes.items():
        size_of = change.abs() if name == "shape" else change.abs() / spreads[name]
        ok &= (size_of >= move) if name == target else (size_of <= keep)
    return float(ok[pairs].float().mean())
