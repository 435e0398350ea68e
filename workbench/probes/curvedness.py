"""Curvedness of interpolation paths: how much the encoder bends straight segments of x_t.

Definition (chosen for being parameter-free and comparable across timesteps): for two
samples x_a, x_b at timestep t, take ``points`` evenly spaced points on the segment
between them in x_t (``linear``: (1 - s) x_a + s x_b; ``slerp``: the great-circle arc
between their directions with the norm interpolated linearly, which keeps the path on the
Gaussian shell where the samples live), map each through the encoder to h = f(x_t, t),
and measure the polyline h_0 .. h_{n-1}:

- **length ratio** L / C: its length over its chord ||h_{n-1} - h_0||. 1 for a straight
  image (any linear map), larger the more the path bends or doubles back. It ignores the
  speed along the path, so an affine map with uneven stretching still scores 1.
- **mean turning angle**: the mean angle between successive segments of the polyline
  (degrees). 0 for a straight image; a circle arc of angle theta sampled with n - 1 equal
  segments turns theta / (n - 1) at every vertex.

For the straight segment in x_t itself both are exactly 1 and 0 (the slerp path has the
ratio of an arc to its chord). Both quantities depend on the sampling density: a polyline
underestimates the length of a curve, and the turning angle per vertex shrinks as points
are added, so compare runs with the same ``points``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from workbench.errors import WorkbenchError, check_finite
from workbench.models.wrapper import DiffusionModel
from workbench.options import H_POINT, NUM_STEPS, PROGRESS, SEED, TIMESTEPS, Option
from workbench.probes import ProbeResult, register_probe
from workbench.probes.common import check_timesteps, sampled_states

if TYPE_CHECKING:
    import plotly.graph_objects as go


INTERPOLATIONS = ("linear", "slerp")


def segment_points(
    a: torch.Tensor, b: torch.Tensor, points: int, interpolation: str = "linear"
) -> torch.Tensor:
    """``points`` points from ``a`` to ``b`` (``[P, ...]`` each): ``[P, points, ...]``."""
    if interpolation not in INTERPOLATIONS:
        raise WorkbenchError(
            f"unknown interpolation {interpolation!r}; choose from {', '.join(INTERPOLATIONS)}"
        )
    if points < 3:
        raise WorkbenchError(f"points must be at least 3 (a turning angle needs 3), got {points}")
    s = torch.linspace(0, 1, points, dtype=torch.float64).to(a.device)
    shape = (1, points) + (1,) * (a.ndim - 1)
    s = s.reshape(shape)
    a64, b64 = a.double().unsqueeze(1), b.double().unsqueeze(1)
    if interpolation == "linear":
        out = (1 - s) * a64 + s * b64
    else:
        flat_a, flat_b = a64.flatten(2), b64.flatten(2)
        na, nb = flat_a.norm(dim=2, keepdim=True), flat_b.norm(dim=2, keepdim=True)
        ua, ub = flat_a / na, flat_b / nb
        omega = torch.arccos((ua * ub).sum(2, keepdim=True).clamp(-1, 1)).clamp_min(1e-12)
        s_flat = s.flatten(2)
        direction = (
            torch.sin((1 - s_flat) * omega) * ua + torch.sin(s_flat * omega) * ub
        ) / torch.sin(omega)
        out = (direction * ((1 - s_flat) * na + s_flat * nb)).reshape(
            a64.shape[:1] + (points,) + a.shape[1:]
        )
    return out.to(a.dtype)


def path_curvedness(path: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Length ratio and mean turning angle (degrees), ``[P]`` each, of polylines ``[P, n, ...]``."""
    pts = path.double().flatten(2)
    seg = pts[:, 1:] - pts[:, :-1]
    lengths = seg.norm(dim=2)
    chord = (pts[:, -1] - pts[:, 0]).norm(dim=1)
    ratio = lengths.sum(1) / chord.clamp_min(1e-300)
    cos = (seg[:, 1:] * seg[:, :-1]).sum(2) / (lengths[:, 1:] * lengths[:, :-1]).clamp_min(1e-300)
    angle = torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).mean(1)
    return ratio, angle


@dataclass(repr=False)
class Curvedness(ProbeResult):
    """Per timestep (rows, decreasing) and pair (columns): ``ratio`` and ``angle`` ``[T, P]``."""

    timesteps: list[int]
    ratio: torch.Tensor
    angle: torch.Tensor
    interpolation: str
    points: int
    name: str = "curvedness"

    def summary(self) -> str:
        """Ratio and angle per timestep, as text."""
        lines = [f"curvedness ({self.interpolation}, {self.points} points): t, ratio, angle"]
        for i, t in enumerate(self.timesteps):
            r, a = self.ratio[i], self.angle[i]
            lines.append(
                f"  t={t:>4}: L/C median {float(r.median()):.3f} (max {float(r.max()):.3f}), "
                f"turning angle median {float(a.median()):.1f} deg"
            )
        return "\n".join(lines)

    def headline(self) -> str:
        """How much the paths in h bend, at the timestep where they bend most."""
        medians = [float(r.median()) for r in self.ratio]
        i = max(range(len(medians)), key=medians.__getitem__)
        return (
            f"{self.interpolation} paths between samples bend in h: length / chord median "
            f"{medians[i]:.2f} at t={self.timesteps[i]} (1 = straight; "
            + ", ".join(f"t={t}: {m:.2f}" for t, m in zip(self.timesteps, medians, strict=True))
            + ")"
        )

    def figure(self) -> go.Figure:
        """Ratio and angle against timestep."""
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=("length / chord of the path in h", "mean turning angle (degrees)"),
        )
        for col, data in ((1, self.ratio), (2, self.angle)):
            for i, t in enumerate(self.timesteps):
                fig.add_box(
                    y=data[i].tolist(),
                    name=str(t),
                    marker_color="#1f77b4",
                    showlegend=False,
                    row=1,
                    col=col,
                )
        fig.update_xaxes(title_text="timestep t")
        fig.update_yaxes(title_text="length / chord (1 = straight)", row=1, col=1)
        fig.update_yaxes(title_text="turning angle (degrees)", row=1, col=2)
        fig.update_layout(
            title=f"Curvedness of {self.interpolation} interpolation in x_t, seen in h "
            f"({self.ratio.shape[1]} pairs, {self.points} points)",
            template="plotly_white",
        )
        return fig


@register_probe(
    "curvedness",
    "how far interpolation paths between x_t bend off the straight line, per timestep",
    (
        Option("n", int, 16, "pairs of samples", low=1, high=4096),
        TIMESTEPS,
        Option("points", int, 17, "points per path", low=3, high=10000),
        Option("interpolation", str, "linear", "path between two x_t", choices=INTERPOLATIONS),
        NUM_STEPS,
        SEED,
        Option("batch_size", int, 128, "points per network call", low=1, high=65536),
        PROGRESS,
        H_POINT,
    ),
)
def curvedness(
    model: DiffusionModel,
    n: int = 16,
    timesteps: Sequence[int] | None = None,
    points: int = 17,
    interpolation: str = "linear",
    num_steps: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool | None = None,
) -> Curvedness:
    """Curvedness of ``n`` pairs of samples (seeds ``seed .. seed + 2n - 1``) at each
    timestep; see the module docstring."""
    timesteps = check_timesteps(model, timesteps)
    states = sampled_states(model, range(seed, seed + 2 * n), timesteps, num_steps, progress)
    ratios, angles = [], []
    with torch.no_grad():
        for t in timesteps:
            x = states[t]
            path = segment_points(x[0::2], x[1::2], points, interpolation)
            flat = path.reshape(n * points, *model.sample_shape)
            h = torch.cat(
                [model.h(flat[i : i + batch_size], t) for i in range(0, flat.shape[0], batch_size)]
            )
            check_finite("h", h)
            r, a = path_curvedness(h.reshape(n, points, -1).cpu())
            ratios.append(r.float())
            angles.append(a.float())
    return Curvedness(
        timesteps=timesteps,
        ratio=torch.stack(ratios),
        angle=torch.stack(angles),
        interpolation=interpolation,
        points=points,
    )


def arc_ratio(theta: float, segments: int) -> float:
    """Length / chord of a circle arc of angle ``theta`` sampled with ``segments`` equal
    chords: ``segments * sin(theta / (2 segments)) / sin(theta / 2)`` (the closed form the
    tests check against; ``theta / (2 sin(theta / 2))`` in the limit)."""
    return segments * math.sin(theta / (2 * segments)) / math.sin(theta / 2)
