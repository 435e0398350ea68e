"""Norm concentration along the Markov chain, for sampled and DDIM-inverted trajectories.

For x_T ~ N(0, I_d) the norm concentrates at sqrt(d) (sqrt(d) - 1 <= E||x|| <= sqrt(d),
fluctuations O(1)). Along the chain, E||x_t||^2 = a_t E||x_0||^2 + (1 - a_t) d with
a_t = alpha-bar; under a flow schedule (x_t = (1 - s) x_0 + s eps, s = t / T: SD3, FLUX)
E||x_t||^2 = (1 - s)^2 E||x_0||^2 + s^2 d, so the expected curve dips below the two ends in
the middle of the chain instead of rising monotonically. Sampled trajectories start on the
shell; trajectories of real images inverted (DDIM, or the flow's Euler step) need not reach
it. Per timestep this probe records ||x_t|| / sqrt(d) of both
populations, their two-sample Kolmogorov-Smirnov statistic, and the expected value.

Mixing step (provisional criterion, refined by the boundary engine): the largest grid
timestep t such that the KS statistic is at most ``tolerance`` at t and at every grid
timestep below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workbench.models.wrapper import DiffusionModel
from workbench.options import BANK, IMAGES, INVERSION, NUM_STEPS, PROGRESS, SEED, Option
from workbench.probes import ProbeResult, register_probe
from workbench.stats import ks_statistic, last_agreeing
from workbench.trajectories import TrajectoryBank, paired_trajectories

if TYPE_CHECKING:
    import plotly.graph_objects as go


@dataclass(repr=False)
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

    def figure(self) -> go.Figure:
        """Norm of x_t against timestep, with sqrt(d) for reference."""
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

    def summary(self) -> str:
        """Where the two populations end, against the expected curve, and the mixing step."""
        top = len(self.timesteps) - 1
        sampled = float(self.sampled[top].median())
        inverted = float(self.inverted[top].median())
        at = f"t = {self.mixing_step}" if self.mixing_step is not None else "none"
        return (
            f"||x_t|| / sqrt(d) at t = {self.timesteps[top]}: sampled {sampled:.2f}, "
            f"inverted {inverted:.2f} (expected {self.expected[top]:.2f}); alike "
            f"(KS <= {self.tolerance:.2f}) from the data end up to: {at}"
        )


@register_probe(
    "norm",
    "norms of sampled and inverted x_t along the chain, against sqrt(d)",
    (
        Option("n", int, 32, "sampled and inverted trajectories", low=2, high=100_000),
        NUM_STEPS,
        IMAGES,
        SEED,
        Option(
            "tolerance", float, 0.2, "KS statistic under which they count as alike", low=0, high=1
        ),
        INVERSION,
        PROGRESS,
        BANK,
    ),
)
def norm_concentration(
    model: DiffusionModel,
    n: int = 32,
    num_steps: int | None = None,
    images: torch.Tensor | str | Path | None = None,
    seed: int = 0,
    tolerance: float = 0.2,
    inversion: str = "ddim",
    progress: bool | None = None,
    bank: TrajectoryBank | None = None,
) -> NormConcentration:
    """Norms of ``n`` sampled and ``n`` inverted trajectories on the same DDIM grid.

    Args:
        images: real images ``[m, *model.image_shape]`` in [-1, 1], or a folder of image
            files, to invert (default: the model's scene).
        tolerance: KS statistic under which the two populations count as alike.
        bank: a :class:`~workbench.trajectories.TrajectoryBank` on the same grid: its
            trajectories of seeds ``seed..`` and its first ``n`` inverted images are used.
    """
    pair = paired_trajectories(
        model, n, num_steps, images, seed, progress, inversion=inversion, bank=bank
    )
    s_norm, i_norm = pair.norm_ratios()
    ks = [ks_statistic(a, b) for a, b in zip(s_norm, i_norm, strict=True)]
    return NormConcentration(
        timesteps=pair.timesteps,
        sampled=s_norm.float(),
        inverted=i_norm.float(),
        expected=pair.expected(model),
        ks=ks,
        d=model.d,
        tolerance=tolerance,
        mixing_step=last_agreeing(pair.timesteps, [k <= tolerance for k in ks]),
    )
