"""Norm concentration along the Markov chain, for sampled and DDIM-inverted trajectories.

For x_T ~ N(0, I_d) the norm concentrates at sqrt(d) (sqrt(d) - 1 <= E||x|| <= sqrt(d),
fluctuations O(1)). Along the chain, E||x_t||^2 = a_t E||x_0||^2 + (1 - a_t) d with
a_t = alpha-bar. Sampled trajectories start on that shell; trajectories of real images
DDIM-inverted need not reach it. Per timestep this probe records ||x_t|| / sqrt(d) of both
populations, their two-sample Kolmogorov-Smirnov statistic, and the expected value.

Mixing step (provisional criterion, refined by the boundary engine): the largest grid
timestep t such that the KS statistic is at most ``tolerance`` at t and at every grid
timestep below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.data.shapes import generate
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.probes import ProbeResult, register_probe
from workbench.sampling import ddim, make_timesteps


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| of 1-D samples."""
    values = torch.cat([a, b]).sort().values
    fa = torch.searchsorted(a.sort().values.contiguous(), values, right=True) / a.numel()
    fb = torch.searchsorted(b.sort().values.contiguous(), values, right=True) / b.numel()
    return float((fa - fb).abs().max())


def reference_images(model: DiffusionModel, n: int, seed: int = 0) -> torch.Tensor:
    """Real images for ``model``: Shapes at the model's resolution (RGB, square models)."""
    channels, height, width = model.sample_shape
    if channels != 3 or height != width:
        raise WorkbenchError("no built-in reference images for this model: pass images")
    return generate(n, size=height, seed=seed)[0]


@dataclass
class NormConcentration(ProbeResult):
    """Ratios ||x_t|| / sqrt(d), ``[S, n]`` for ``sampled`` and ``inverted``.

    Rows follow ``timesteps`` (ascending, -1 first).
    """

    timesteps: list[int]
    sampled: torch.Tensor
    inverted: torch.Tensor
    expected: list[float]
    ks: list[float]
    d: int
    tolerance: float
    mixing_step: int | None
    name: str = "norm"

    def figure(self):
        import plotly.graph_objects as go

        fig = go.Figure()
        t = self.timesteps
        for label, data, colour in (
            ("sampled", self.sampled, "31,119,180"),
            ("inverted", self.inverted, "214,39,40"),
        ):
            q = torch.quantile(data, torch.tensor([0.05, 0.5, 0.95]), dim=1)
            fig.add_scatter(
                x=t, y=q[2].tolist(), line={"width": 0}, showlegend=False, hoverinfo="skip"
            )
            fig.add_scatter(
                x=t,
                y=q[0].tolist(),
                fill="tonexty",
                line={"width": 0},
                fillcolor=f"rgba({colour},0.2)",
                name=f"{label} 5-95%",
            )
            fig.add_scatter(
                x=t, y=q[1].tolist(), line={"color": f"rgb({colour})"}, name=f"{label} median"
            )
        fig.add_scatter(
            x=t, y=self.expected, line={"dash": "dash", "color": "black"}, name="expected"
        )
        fig.add_scatter(
            x=t, y=self.ks, yaxis="y2", line={"color": "gray", "dash": "dot"}, name="KS statistic"
        )
        if self.mixing_step is not None:
            fig.add_vline(
                x=self.mixing_step,
                line_dash="dash",
                annotation_text=f"mixing step {self.mixing_step}",
            )
        fig.update_layout(
            title="Norm concentration along the chain: ||x_t|| / sqrt(d)",
            xaxis_title="timestep t",
            yaxis_title="||x_t|| / sqrt(d)",
            yaxis2={"title": "KS statistic", "overlaying": "y", "side": "right", "range": [0, 1]},
            template="plotly_white",
        )
        return fig


@register_probe("norm")
def norm_concentration(
    model: DiffusionModel,
    n: int = 32,
    num_steps: int | None = None,
    images: torch.Tensor | None = None,
    seed: int = 0,
    tolerance: float = 0.2,
    progress: bool | None = None,
) -> NormConcentration:
    """Norms of ``n`` sampled and ``n`` inverted trajectories on the same DDIM grid.

    Args:
        images: real images ``[m, C, H, W]`` in [-1, 1] to invert (default: Shapes).
        tolerance: KS statistic under which the two populations count as alike.
    """
    if n < 2:
        raise WorkbenchError(f"n must be at least 2, got {n}")
    grid = make_timesteps(model, num_steps)
    real = reference_images(model, n, seed) if images is None else images
    model._check_x(real, "images")
    _, sampled = ddim(
        model, model.noise(range(seed, seed + n)), grid, return_trajectory=True, progress=progress
    )
    _, inverted = ddim(model, real, grid[::-1], return_trajectory=True, progress=progress)
    scale = math.sqrt(model.d)
    up = grid[::-1]
    s_norm = sampled.x.flatten(2).norm(dim=2).flip(0) / scale  # ascending timesteps
    i_norm = inverted.x.flatten(2).norm(dim=2) / scale
    m2 = float((real.flatten(1) ** 2).sum(1).mean()) / model.d
    expected = [math.sqrt(model.alpha_bar(t) * m2 + 1 - model.alpha_bar(t)) for t in up]
    ks = [ks_statistic(s_norm[i], i_norm[i]) for i in range(len(up))]
    mixing = None
    for i, t in enumerate(up):
        if ks[i] > tolerance:
            break
        mixing = t
    if mixing == -1:
        mixing = None
    return NormConcentration(
        timesteps=up,
        sampled=s_norm,
        inverted=i_norm,
        expected=expected,
        ks=ks,
        d=model.d,
        tolerance=tolerance,
        mixing_step=mixing,
    )
