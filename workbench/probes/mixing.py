"""The mixing-step search: the largest timestep from which on DDIM-inverted real images
cannot be told from sampled latents (the boundary engine fits its boundaries there).

Sampled trajectories (from x_T ~ N(0, I)) and DDIM-inverted trajectories of real images on
one grid. At every grid timestep two statistics compare the populations: the two-sample
Kolmogorov-Smirnov statistic of the norms ||x_t||, and a sliced KS statistic (mean over
random unit projections of the latents' KS statistic), which also sees differences of mean
and covariance that leave the norm alone. The mixing step is the largest grid timestep at
which, and at every grid timestep below which, both statistics stay under the tolerance
(default: the KS critical value at the 5% level for the two sample sizes,
1.358 sqrt((n + m) / (n m))): up to there an inverted latent cannot be told from a sampled
one. The published code has no search. Under a flow schedule the same comparison runs on
the Euler grid (x_t = (1 - s) x_0 + s eps); the expected norm curve is then
sqrt((1 - s)^2 m2 + s^2) with m2 = E||x_0||^2 / d.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workbench.models.wrapper import DiffusionModel
from workbench.options import BANK, IMAGES, INVERSION, NUM_STEPS, PROGRESS, SEED, Option
from workbench.probes import register_probe
from workbench.probes.norm import NormConcentration
from workbench.stats import ks_critical, ks_statistic, last_agreeing
from workbench.trajectories import TrajectoryBank, paired_trajectories

if TYPE_CHECKING:
    import plotly.graph_objects as go


@dataclass(repr=False)
class MixingStep(NormConcentration):
    """The mixing-step search and its evidence (``sampled``/``inverted``: ||x_t|| / sqrt(d),
    ``[S, n]``, rows follow ascending ``timesteps``; ``ks``: KS of the norms; ``sliced_ks``:
    mean KS over ``projections`` random directions)."""

    sliced_ks: list[float] = field(default_factory=list)
    projections: int = 0
    name: str = "mixing-step"

    def figure(self) -> go.Figure:
        """KS statistics against timestep with the mixing step marked."""
        fig = super().figure()
        fig.add_scatter(
            x=self.timesteps,
            y=self.sliced_ks,
            yaxis="y2",
            line={"color": "darkorange", "dash": "dot"},
            name=f"sliced KS ({self.projections} projections)",
        )
        fig.add_scatter(
            x=[self.timesteps[0], self.timesteps[-1]],
            y=[self.tolerance, self.tolerance],
            yaxis="y2",
            mode="lines",
            line={"color": "gray", "width": 1},
            name=f"tolerance {self.tolerance:.3f}",
        )
        fig.update_layout(title="Mixing-step search: sampled vs DDIM-inverted latents")
        return fig

    def summary(self) -> str:
        """The mixing step found, as text."""
        at = f"t = {self.mixing_step}" if self.mixing_step is not None else "none found"
        return f"mixing step: {at} (tolerance {self.tolerance:.3f} on KS and sliced KS)"


@register_probe(
    "mixing-step",
    "the first timestep where sampled and inverted x_t agree in distribution",
    (
        Option("n", int, 128, "sampled trajectories and real images", low=8, high=100_000),
        NUM_STEPS,
        IMAGES,
        SEED,
        Option("projections", int, 32, "random projections of the sliced KS", low=1, high=10000),
        Option(
            "tolerance",
            float,
            None,
            "on both statistics (default: the 5% KS critical value)",
            low=0,
            high=1,
        ),
        INVERSION,
        PROGRESS,
        BANK,
    ),
)
def find_mixing_step(
    model: DiffusionModel,
    n: int = 128,
    num_steps: int | None = None,
    images: torch.Tensor | str | Path | None = None,
    seed: int = 0,
    projections: int = 32,
    tolerance: float | None = None,
    progress: bool | None = None,
    inversion: str = "ddim",
    bank: TrajectoryBank | None = None,
) -> MixingStep:
    """Search the mixing step of ``model`` (see the module docstring).

    Args:
        n: sampled trajectories (seeds ``seed..seed+n-1``) and real images to invert.
        images: real images ``[m, *model.image_shape]`` in [-1, 1], or a folder of image
            files (default: ``n`` images of the model's scene).
        tolerance: on both statistics (default: the 5% KS critical value for n and m).
        bank: a :class:`~workbench.trajectories.TrajectoryBank` on the same grid: its
            trajectories of seeds ``seed..`` and its first ``n`` inverted images are used.
    Returns:
        :class:`MixingStep` with ``mixing_step`` (``None`` if they never agree) and figure.
    """
    pair = paired_trajectories(
        model,
        n,
        num_steps,
        images,
        seed,
        progress,
        image_seed=seed + 1,
        inversion=inversion,
        bank=bank,
    )
    m = pair.real.shape[0]
    tol = ks_critical(n, m) if tolerance is None else tolerance
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(model.d, projections, generator=gen, dtype=torch.float64)
    proj = proj / proj.norm(dim=0, keepdim=True)
    s_norm, i_norm = pair.norm_ratios()
    ks, sliced = [], []
    for s_lat, i_lat, a_norm, b_norm in zip(
        pair.sampled, pair.inverted, s_norm, i_norm, strict=True
    ):
        ks.append(ks_statistic(a_norm, b_norm))
        a, b = s_lat @ proj, i_lat @ proj
        sliced.append(sum(ks_statistic(a[:, j], b[:, j]) for j in range(projections)) / projections)
    agree = [k <= tol and sl <= tol for k, sl in zip(ks, sliced, strict=True)]
    return MixingStep(
        timesteps=pair.timesteps,
        sampled=s_norm.float(),
        inverted=i_norm.float(),
        expected=pair.expected(model),
        ks=ks,
        d=model.d,
        tolerance=tol,
        mixing_step=last_agreeing(pair.timesteps, agree),
        sliced_ks=sliced,
        projections=projections,
    )
