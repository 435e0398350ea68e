"""Baseline: unsupervised PCA of h-space activations (Haas et al., 2024).

Sample ``n`` trajectories (seeds ``seed .. seed + n - 1``, eta 0), record h at every DDIM
step (a mid-block hook, no extra forward passes), and take the principal components:

- ``timestep=None`` (default): h from every grid step inside the preset's h window,
  centred per timestep (so the drift of the mean along the chain is not a component),
  pooled; the directions edit over that window;
- ``timestep=t``: h at ``t`` only; the directions edit at that single step.

``form="full"`` gives directions of all of h ``[C, H, W]``; ``form="channel"`` treats every
spatial position as a sample and gives channel directions ``[C]`` (comparable with the
attention engine). Scores are explained-variance ratios. Sign rule: as in the attention
engine, the entry of largest magnitude is positive.
"""

from __future__ import annotations

import torch

from workbench.directions import DirectionSet, sign_fixed
from workbench.engines import register_engine
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import BANK, NUM_STEPS, SINGLE_STEP, WINDOW, Option
from workbench.sampling import make_timesteps, run_chain
from workbench.trajectories import TrajectoryBank


def principal_directions(data: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` principal axes ``[k, D]`` of centred ``data`` ``[N, D]`` and their
    explained-variance ratios ``[k]``."""
    data = data.double()
    data = data - data.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(data, full_matrices=False)
    var = s**2
    ratio = var / var.sum().clamp_min(1e-30)
    return sign_fixed(vh[:k]).float(), ratio[:k].float()


OPTIONS = (
    SINGLE_STEP,
    Option("n", int, 128, "sampled trajectories", low=2, high=100_000),
    Option(
        "form",
        str,
        "full",
        "full [C,H,W] principal directions, or channel [C] ones",
        choices=("full", "channel"),
    ),
    NUM_STEPS,
    WINDOW,
    Option("progress", bool, None, "progress bar (default: the package setting)", cli=False),
    BANK,
)


@register_engine("pca", "PCA of h over sampled trajectories (baseline)", OPTIONS)
def pca_directions(
    model: DiffusionModel,
    k: int = 8,
    timestep: int | None = None,
    seed: int = 0,
    n: int = 128,
    form: str = "full",
    num_steps: int | None = None,
    window: tuple[int, int] | None = None,
    progress: bool | None = None,
    bank: TrajectoryBank | None = None,
) -> DirectionSet:
    """Principal directions of h; see the module docstring. With ``bank`` the h of its
    trajectories of the same seeds and grid are used (no sampling)."""
    t_high, t_low = window or model.preset.h_window
    include = [] if timestep is None else [model.check_timestep(timestep)]
    grid = make_timesteps(model, num_steps, include=include)
    wanted = include or [t for t in grid[:-1] if t_low <= t <= t_high]
    if not wanted:
        raise WorkbenchError(f"no grid timestep inside the window ({t_high}, {t_low})")
    if bank is not None:
        seen = bank.sampled_h(model, grid, range(seed, seed + n))
    else:
        with model.record_h() as seen:
            run_chain(model, model.noise(range(seed, seed + n)), grid, progress=progress)
    rows = []
    for i, t in enumerate(grid[:-1]):
        if t in wanted:
            h = seen[i]  # [n, C, H, W], one forward per step
            h = h - h.mean(0, keepdim=True)
            rows.append(
                h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]) if form == "channel" else h.flatten(1)
            )
    data = torch.cat(rows)
    dim = data.shape[1]
    if not 1 <= k <= min(dim, data.shape[0]):
        raise WorkbenchError(f"k must be in [1, {min(dim, data.shape[0])}], got {k}")
    vectors, ratios = principal_directions(data, k)
    shape = (model.h_shape[0],) if form == "channel" else model.h_shape
    when: int | tuple[int, int] = include[0] if include else (t_high, t_low)
    return DirectionSet(
        vectors=vectors.reshape(k, *shape),
        space="h",
        timestep=when,
        engine="pca",
        model_fingerprint=model.fingerprint,
        scores=ratios,
        score_name="explained variance",
        params={"n": n, "seed": seed, "form": form, "num_steps": num_steps, "timesteps": wanted},
        labels=[f"pca-{form}[{i}]" for i in range(k)],
    )
