"""`Schedule`: the DDIM maths of a model's noise schedule, apart from the network.

As in diffusers, the scheduler is separate from the model: a :class:`Schedule` holds the
alpha-bar table, the prediction type and the timestep-grid convention of the model's own
scheduler config, and owns every formula the sampler and the engines use (prediction-type
conversions, DDIM step coefficients, sigma(eta), the grid). The network wrapper
(:class:`~workbench.models.wrapper.DiffusionModel`) keeps the forwards, activations, hooks
and the fingerprint.

Timesteps are integers in ``[0, T - 1]``; ``-1`` stands for the clean end of the chain,
whose alpha-bar is 1 (``set_alpha_to_one=True``, our bundled models) or alpha-bar at
``t = 0`` (``set_alpha_to_one=False``, Stable Diffusion's scheduler), as in diffusers' DDIM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

#: The grid conventions of diffusers' ``timestep_spacing``.
SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class Prediction:
    """What the network says about ``x_t``: the noise ``eps`` and the clean image ``x0``.

    Both have the shape of ``x_t``.
    """

    eps: torch.Tensor
    x0: torch.Tensor


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete variance-preserving noise schedule and its DDIM maths.

    Attributes:
        alphas_cumprod: alpha-bar ``[T]``, float64 on the CPU.
        prediction_type: what the network outputs: ``epsilon``, ``v_prediction``, ``sample``.
        timestep_spacing: how a grid of N steps spreads over ``[0, T - 1]`` (``leading``,
            ``trailing``, ``linspace``; diffusers' names and formulas).
        steps_offset: added to every ``leading`` grid point (Stable Diffusion: 1).
        final_alpha_cumprod: alpha-bar of the clean end ``t = -1``.
        clip_sample: clamp the predicted x0 to ``[-clip_sample_range, clip_sample_range]``
            at every sampling step (diffusers' DDIM does when its config says so).
    """

    alphas_cumprod: torch.Tensor = field(repr=False)
    prediction_type: str = "epsilon"
    timestep_spacing: str = "trailing"
    steps_offset: int = 0
    final_alpha_cumprod: float = 1.0
    clip_sample: bool = False
    clip_sample_range: float = 1.0

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise WorkbenchError(f"unsupported prediction_type {self.prediction_type!r}")
        if self.timestep_spacing not in SPACINGS:
            raise WorkbenchError(
                f"unsupported timestep_spacing {self.timestep_spacing!r}: "
                f"use one of {', '.join(SPACINGS)}"
            )
        a = self.alphas_cumprod
        if a.ndim != 1 or a.shape[0] < 2 or not bool(torch.isfinite(a).all()):
            raise WorkbenchError("alphas_cumprod must be a finite 1-D table of >= 2 values")
        if self.prediction_type == "epsilon" and float(a.min()) <= 0.0:
            raise WorkbenchError(
                "a zero-terminal-SNR schedule needs prediction_type='v_prediction' or 'sample'"
            )

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> Schedule:
        """The schedule of a diffusers scheduler (its ``alphas_cumprod`` and config)."""
        config = scheduler.config
        alphas = scheduler.alphas_cumprod.detach().to(torch.float64).cpu()
        one = config.get("set_alpha_to_one", True)
        if config.get("thresholding", False):
            raise WorkbenchError("schedulers with dynamic thresholding are not supported yet")
        return cls(
            alphas_cumprod=alphas,
            prediction_type=config.get("prediction_type", "epsilon"),
            timestep_spacing=config.get("timestep_spacing", "leading"),
            steps_offset=int(config.get("steps_offset", 0) or 0),
            final_alpha_cumprod=1.0 if one else float(alphas[0]),
            clip_sample=bool(config.get("clip_sample", False)),
            clip_sample_range=float(config.get("clip_sample_range", 1.0)),
        )

    # ------------------------------------------------------------------ timesteps
    @property
    def num_train_timesteps(self) -> int:
        """Length T of the training schedule."""
        return int(self.alphas_cumprod.shape[0])

    def check_timestep(self, t: int | torch.Tensor, allow_clean: bool = False) -> int:
        """Return ``t`` as int, or raise a one-line error if it is out of range."""
        if isinstance(t, torch.Tensor):
            t = int(t.item())
        if not isinstance(t, int) or isinstance(t, bool):
            raise WorkbenchError(f"timestep must be an integer, got {t!r}")
        low = -1 if allow_clean else 0
        if not low <= t < self.num_train_timesteps:
            raise WorkbenchError(
                f"timestep {t} out of range [{low}, {self.num_train_timesteps - 1}]"
            )
        return t

    def alpha_bar(self, t: int) -> float:
        """alpha-bar at integer timestep ``t``; ``final_alpha_cumprod`` at the clean end -1."""
        return self.final_alpha_cumprod if t < 0 else float(self.alphas_cumprod[t])

    def timesteps(
        self, num_steps: int, t_start: int | None = None, include: Sequence[int] = ()
    ) -> list[int]:
        """Decreasing DDIM grid of ``num_steps`` timesteps, then the clean end ``-1``.

        The whole chain (``t_start=None``) follows ``timestep_spacing`` as diffusers'
        ``DDIMScheduler.set_timesteps`` does; a chain from ``t_start`` (inversion to a
        timestep, edits from one) is "trailing" spaced from it: ``t_i = round((N - i)
        (t_start + 1) / N) - 1``, so it starts exactly there. Each timestep in ``include``
        replaces its nearest grid point, so an edit at that timestep happens exactly there.
        Returns ``N + 1`` values.
        """
        T = self.num_train_timesteps
        top = T - 1 if t_start is None else self.check_timestep(t_start)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int):
            raise WorkbenchError(f"num_steps must be an integer, got {num_steps!r}")
        if not 1 <= num_steps <= top + 1:
            raise WorkbenchError(f"num_steps must be in [1, {top + 1}], got {num_steps}")
        n = num_steps
        if t_start is None and self.timestep_spacing == "leading":
            grid = [int(t) for t in np.arange(n)[::-1] * (T // n) + self.steps_offset]
            if grid[0] > top:
                raise WorkbenchError(
                    f"steps_offset {self.steps_offset} puts the {n}-step grid past T - 1 = {top}"
                )
        elif t_start is None and self.timestep_spacing == "linspace":
            grid = [int(t) for t in np.linspace(0, T - 1, n).round()[::-1]]
        else:
            grid = [round((n - i) * (top + 1) / n) - 1 for i in range(n)]
        for t in include:
            t = self.check_timestep(t)
            if t > top:
                raise WorkbenchError(f"timestep {t} lies above the grid's start {top}")
            if t not in grid:
                nearest = min(range(n), key=lambda i: (abs(grid[i] - t), i))
                grid[nearest] = t
        grid = sorted(set(grid), reverse=True)
        if len(grid) != n:
            raise WorkbenchError(f"timesteps to include {list(include)} collide on a {n}-step grid")
        return grid + [-1]

    # ------------------------------------------------------------------ DDIM maths
    def convert(self, raw: torch.Tensor, x: torch.Tensor, a: float) -> Prediction:
        """eps and x0 from the raw network output ``raw`` for ``x`` at alpha-bar ``a``."""
        sa, s1a = math.sqrt(a), math.sqrt(1.0 - a)
        x = x.to(raw.dtype)
        if self.prediction_type == "epsilon":
            return Prediction(eps=raw, x0=(x - s1a * raw) / sa)
        if self.prediction_type == "v_prediction":
            return Prediction(eps=sa * raw + s1a * x, x0=sa * x - s1a * raw)
        return Prediction(eps=(x - sa * raw) / s1a, x0=raw)

    def ddim_coefficients(self, a_noisy: float, a_clean: float) -> tuple[float, float]:
        """(A, B) of the deterministic DDIM step from alpha-bar ``a_noisy`` to ``a_clean``:
        ``x_clean = A x_noisy + B r`` with ``r`` the raw output at ``x_noisy``.

        Linear in ``x_noisy`` for every parameterisation, so DDIM inversion with the raw
        output held fixed is the exact solve ``x_noisy = (x_clean - B r) / A``.
        """
        sa, s1a = math.sqrt(a_noisy), math.sqrt(1.0 - a_noisy)
        sc, s1c = math.sqrt(a_clean), math.sqrt(1.0 - a_clean)
        if self.prediction_type == "epsilon":
            return sc / sa, s1c - sc * s1a / sa
        if self.prediction_type == "v_prediction":
            return sc * sa + s1c * s1a, s1c * sa - sc * s1a
        return s1c / s1a, sc - s1c * sa / s1a

    @staticmethod
    def ddim_step(
        x0: torch.Tensor, eps: torch.Tensor, a_next: float, sigma: float = 0.0
    ) -> torch.Tensor:
        """The mean of the DDIM step to alpha-bar ``a_next`` from the predictions ``x0`` and
        ``eps``: ``sqrt(a_next) x0 + sqrt(1 - a_next - sigma^2) eps`` (add ``sigma z``)."""
        return math.sqrt(a_next) * x0 + math.sqrt(max(1.0 - a_next - sigma**2, 0.0)) * eps

    @staticmethod
    def sigma(a_t: float, a_next: float, eta: float) -> float:
        """Standard deviation of the fresh noise of a DDIM step from alpha-bar ``a_t`` to
        ``a_next`` (eta = 0: deterministic DDIM, eta = 1: DDPM's posterior)."""
        if not eta:
            return 0.0
        return eta * math.sqrt((1 - a_next) / (1 - a_t) * (1 - a_t / a_next))
