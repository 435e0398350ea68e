"""`Schedule` and `FlowSchedule`: the sampler maths of a model's noise schedule, apart
from the network.

As in diffusers, the scheduler is separate from the model: a :class:`Schedule` holds the
alpha-bar table, the prediction type and the timestep-grid convention of the model's own
scheduler config, and owns every formula the sampler and the engines use (prediction-type
conversions, DDIM step coefficients, sigma(eta), the grid). The network wrapper
(:class:`~workbench.models.wrapper.DiffusionModel`) keeps the forwards, activations, hooks
and the fingerprint.

Timesteps are integers in ``[0, T - 1]``; ``-1`` stands for the clean end of the chain,
whose alpha-bar is 1 (``set_alpha_to_one=True``, our bundled models) or alpha-bar at
``t = 0`` (``set_alpha_to_one=False``, Stable Diffusion's scheduler), as in diffusers' DDIM.

A rectified-flow model (SD3, FLUX: diffusers' ``FlowMatchEulerDiscreteScheduler``) has
:class:`FlowSchedule`: ``x_t = (1 - s) x_0 + s eps`` with ``s = t / T``, the network
predicts the velocity ``v = eps - x_0``, and its timesteps are the network's own timestep
values, real numbers in ``[0, T]`` (``-1`` again the clean end, s = 0). Both schedules
answer the same questions in terms of timesteps (:meth:`Schedule.coefficients`,
:meth:`Schedule.convert_at`, :meth:`Schedule.step_coefficients`, :meth:`Schedule.step_to`,
:meth:`Schedule.step_sigma`, :meth:`Schedule.add_noise`, :meth:`Schedule.timesteps`), so
the one sampling loop, the edits and the engines serve both: the deterministic DDIM step
``x' = a' x0_hat + b' eps_hat`` with ``(a, b)`` the signal and noise coefficients *is* the
flow's Euler step ``x' = x + (s' - s) v``.
"""

from __future__ import annotations

import math
import numbers
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


def _including(grid: list, include: Sequence[float], top: float) -> list:
    """``grid`` (descending) with each timestep of ``include`` in place of its nearest grid
    point (ties: the earlier), then the clean end ``-1``; one-line errors for a timestep
    above ``top`` or two that collide."""
    n = len(grid)
    for t in include:
        if t > top:
            raise WorkbenchError(f"timestep {t} lies above the grid's start {top:g}")
        if t not in grid:
            nearest = min(range(n), key=lambda i: (abs(grid[i] - t), i))
            grid[nearest] = t
    grid = sorted(set(grid), reverse=True)
    if len(grid) != n:
        raise WorkbenchError(f"timesteps to include {list(include)} collide on a {n}-step grid")
    return grid + [-1]


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

    @property
    def top(self) -> int:
        """The noisiest timestep, where x_T sits: T - 1."""
        return self.num_train_timesteps - 1

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

    def max_steps(self, t_start: int | None = None) -> int:
        """The most steps a grid from ``t_start`` (default: the whole chain) can take: one
        per integer timestep down to 0."""
        return (self.num_train_timesteps - 1 if t_start is None else int(t_start)) + 1

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
        return _including(grid, [self.check_timestep(t) for t in include], top)

    # ------------------------------------------------------------------ by timestep
    #: Whether timesteps are real numbers (flow matching) rather than integers.
    continuous = False

    def coefficients(self, t: int) -> tuple[float, float]:
        """Signal and noise coefficients ``(a, b)`` of ``x_t = a x_0 + b eps`` at ``t``."""
        a = self.alpha_bar(t)
        return math.sqrt(a), math.sqrt(1.0 - a)

    def convert_at(self, raw: torch.Tensor, x: torch.Tensor, t: int) -> Prediction:
        """eps and x0 from the raw network output ``raw`` for ``x`` at timestep ``t``."""
        return self.convert(raw, x, self.alpha_bar(t))

    def step_coefficients(self, t_noisy: int, t_clean: int) -> tuple[float, float]:
        """(A, B) of the deterministic step from ``t_noisy`` to ``t_clean``:
        ``x_clean = A x_noisy + B r`` (see :meth:`ddim_coefficients`)."""
        return self.ddim_coefficients(self.alpha_bar(t_noisy), self.alpha_bar(t_clean))

    def step_to(
        self, x0: torch.Tensor, eps: torch.Tensor, t_next: int, sigma: float = 0.0
    ) -> torch.Tensor:
        """The mean of the step to ``t_next`` from the predictions ``x0`` and ``eps``."""
        return self.ddim_step(x0, eps, self.alpha_bar(t_next), sigma)

    def step_sigma(self, t: int, t_next: int, eta: float) -> float:
        """Standard deviation of the fresh noise of a step from ``t`` to ``t_next``."""
        return self.sigma(self.alpha_bar(t), self.alpha_bar(t_next), eta)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """``x_t`` of clean ``x0`` and standard normal ``noise`` at ``t``."""
        a = self.alpha_bar(t)
        return a**0.5 * x0 + (1 - a) ** 0.5 * noise

    def expected_square(self, t: int, m2: float) -> float:
        """E||x_t||^2 / d for clean data with E||x_0||^2 / d = ``m2`` and independent noise."""
        a = self.alpha_bar(t)
        return a * m2 + 1 - a

    #: The sampler's name in progress bars and messages.
    label = "DDIM"

    def identity(self) -> bytes:
        """Bytes that identify the schedule in a model's fingerprint: the alpha-bar table."""
        return self.alphas_cumprod.numpy().tobytes()

    def describe(self) -> dict[str, Any]:
        """The schedule as plain data (recorded with results, shown to users)."""
        return {
            "kind": "ddim",
            "prediction_type": self.prediction_type,
            "timestep_spacing": self.timestep_spacing,
            "steps_offset": self.steps_offset,
            "num_train_timesteps": self.num_train_timesteps,
        }

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


@dataclass(frozen=True, eq=False)
class FlowSchedule:
    """A rectified-flow (flow-matching) schedule: ``x_t = (1 - s) x_0 + s eps``, ``s = t / T``,
    the network predicting the velocity ``v = eps - x_0``; sampled with the deterministic
    Euler step ``x' = x + (s' - s) v`` and inverted exactly on the same grid.

    Timesteps are the network's own timestep values ``t = s T``, real numbers in ``[0, T]``;
    ``-1`` is the clean end (s = 0). The grid of a whole chain is diffusers'
    ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (shifted sigmas); a chain from
    ``t_start`` is spread evenly in the *unshifted* sigma below it and shifted the same way.

    Attributes:
        num_train_timesteps: T.
        shift: the shift factor k of ``s = k u / (1 + (k - 1) u)`` (u the unshifted sigma):
            the config's ``shift``, or ``exp(mu)`` / ``mu`` under dynamic shifting.
        scheduler: a private copy of the diffusers scheduler, for the whole-chain grid.
        mu: the dynamic-shift parameter passed to ``set_timesteps`` (None: static shift).
    """

    num_train_timesteps: int
    shift: float
    scheduler: Any = field(repr=False, default=None)
    mu: float | None = None
    prediction_type: str = "flow"
    pipeline_sigmas: bool = False
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    continuous = True

    @classmethod
    def from_scheduler(
        cls, scheduler: Any, image_seq_len: int | None = None, pipeline_sigmas: bool = False
    ) -> FlowSchedule:
        """The schedule of a diffusers ``FlowMatchEulerDiscreteScheduler``; under dynamic
        shifting ``mu`` is computed from ``image_seq_len`` as diffusers' pipelines do.
        ``pipeline_sigmas``: the whole-chain grid is the one FLUX's pipeline passes,
        ``set_timesteps(sigmas=linspace(1, 1/N, N))``, rather than the scheduler's own."""
        import copy

        config = scheduler.config
        for key in ("shift_terminal", "use_karras_sigmas", "use_exponential_sigmas",
                    "use_beta_sigmas", "invert_sigmas", "stochastic_sampling"):  # fmt: skip
            if config.get(key):
                raise WorkbenchError(f"flow-matching schedulers with {key} are not supported yet")
        mu = None
        shift = float(config.get("shift", 1.0))
        if config.get("use_dynamic_shifting"):
            if image_seq_len is None:
                raise WorkbenchError("a dynamically shifted flow schedule needs the image size")
            base, top = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
            lo, hi = config.get("base_shift", 0.5), config.get("max_shift", 1.16)
            mu = lo + (image_seq_len - base) * (hi - lo) / (top - base)
            exponential = config.get("time_shift_type", "exponential") == "exponential"
            shift = math.exp(mu) if exponential else mu
        if shift <= 0:
            raise WorkbenchError(f"flow schedule shift must be positive, got {shift}")
        return cls(
            num_train_timesteps=int(config.num_train_timesteps),
            shift=shift,
            scheduler=copy.deepcopy(scheduler),
            mu=mu,
            pipeline_sigmas=pipeline_sigmas,
        )

    # ------------------------------------------------------------------ timesteps
    @property
    def top(self) -> int:
        """The noisiest timestep, where x_T sits: T (s = 1)."""
        return self.num_train_timesteps

    def check_timestep(self, t: float | torch.Tensor, allow_clean: bool = False) -> float:
        """``t`` as a number in ``[0, T]`` (``-1`` too with ``allow_clean``), or a one-line
        error. Integers stay integers."""
        if isinstance(t, torch.Tensor):
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise WorkbenchError(f"timestep must be a number, got {t!r}")
        t = int(t) if isinstance(t, numbers.Integral) else float(t)
        T = self.num_train_timesteps
        if allow_clean and t == -1:
            return t
        if not (math.isfinite(t) and 0 <= t <= T):
            low = "-1 or " if allow_clean else ""
            raise WorkbenchError(f"timestep {t} out of range ({low}[0, {T}])")
        return t

    def sigma_of(self, t: float) -> float:
        """The noise level ``s = t / T`` (0 at the clean end)."""
        return 0.0 if t < 0 else t / self.num_train_timesteps

    def alpha_bar(self, t: float) -> float:
        """The alpha-bar of the variance-preserving schedule with the same signal-to-noise
        ratio, ``(1 - s)^2 / ((1 - s)^2 + s^2)``: for comparisons across schedules."""
        a, b = self.coefficients(t)
        return a * a / (a * a + b * b)

    def _shifted(self, u: float) -> float:
        k = self.shift
        return k * u / (1 + (k - 1) * u)

    def _unshifted(self, s: float) -> float:
        k = self.shift
        return s / (k - (k - 1) * s)

    def max_steps(self, t_start: float | None = None) -> int:
        """The most steps a grid can take: ``num_train_timesteps`` (real timesteps: from
        any ``t_start``)."""
        return self.num_train_timesteps

    def timesteps(
        self, num_steps: int, t_start: float | None = None, include: Sequence[float] = ()
    ) -> list[float]:
        """Decreasing grid of ``num_steps`` timesteps, then the clean end ``-1``.

        The whole chain (``t_start`` None or T) is diffusers' ``set_timesteps(num_steps)``
        grid; from a lower ``t_start``, ``s_i = shift(u_0 (N - i) / N)`` with ``u_0`` the
        unshifted sigma of ``t_start``.
        Each timestep in ``include`` replaces its nearest grid point.
        """
        if isinstance(num_steps, bool) or not isinstance(num_steps, int):
            raise WorkbenchError(f"num_steps must be an integer, got {num_steps!r}")
        n, T = num_steps, self.num_train_timesteps
        if not 1 <= n <= T:
            raise WorkbenchError(f"num_steps must be in [1, {T}], got {n}")
        if t_start is None or t_start == T:
            top = T
            if self.pipeline_sigmas:
                sigmas = np.linspace(1.0, 1 / n, n)
                self.scheduler.set_timesteps(sigmas=sigmas, mu=self.mu)
            else:
                self.scheduler.set_timesteps(n, mu=self.mu)
            grid = [float(t) for t in self.scheduler.timesteps.tolist()]
        else:
            top = self.check_timestep(t_start)
            u0 = self._unshifted(top / T)
            grid = [top] + [self._shifted(u0 * (n - i) / n) * T for i in range(1, n)]
        return _including(grid, [self.check_timestep(t) for t in include], top)

    # ------------------------------------------------------------------ by timestep
    def coefficients(self, t: float) -> tuple[float, float]:
        """Signal and noise coefficients ``(1 - s, s)`` at ``t``."""
        s = self.sigma_of(t)
        return 1.0 - s, s

    def convert_at(self, raw: torch.Tensor, x: torch.Tensor, t: float) -> Prediction:
        """eps and x0 from the velocity ``raw`` for ``x`` at ``t``: ``x0 = x - s v``,
        ``eps = x + (1 - s) v``."""
        a, b = self.coefficients(t)
        x = x.to(raw.dtype)
        return Prediction(eps=x + a * raw, x0=x - b * raw)

    def step_coefficients(self, t_noisy: float, t_clean: float) -> tuple[float, float]:
        """(A, B) = (1, s_clean - s_noisy): the Euler step ``x_clean = x_noisy + B v``."""
        return 1.0, self.sigma_of(t_clean) - self.sigma_of(t_noisy)

    def step_to(
        self, x0: torch.Tensor, eps: torch.Tensor, t_next: float, sigma: float = 0.0
    ) -> torch.Tensor:
        """``(1 - s') x0 + s' eps``: the Euler step, written in the predictions."""
        if sigma:
            raise WorkbenchError("flow matching samples deterministically: eta must be 0")
        a, b = self.coefficients(t_next)
        return a * x0 + b * eps

    def step_sigma(self, t: float, t_next: float, eta: float) -> float:
        """0: the Euler sampler is deterministic (a one-line error for eta > 0)."""
        if eta:
            raise WorkbenchError("flow matching samples deterministically: eta must be 0")
        return 0.0

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        """``(1 - s) x0 + s noise``."""
        a, b = self.coefficients(t)
        return a * x0 + b * noise

    def expected_square(self, t: float, m2: float) -> float:
        """E||x_t||^2 / d = (1 - s)^2 m2 + s^2 for independent noise."""
        a, b = self.coefficients(t)
        return a * a * m2 + b * b

    #: The sampler's name in progress bars and messages.
    label = "flow Euler"

    def identity(self) -> bytes:
        """Bytes that identify the schedule in a model's fingerprint: its description."""
        import json

        return json.dumps(self.describe(), sort_keys=True).encode()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha-bar ``[T]`` of the variance-preserving schedule with the same
        signal-to-noise ratio at the integer timesteps (float64, CPU)."""
        T = self.num_train_timesteps
        return torch.tensor([self.alpha_bar(t) for t in range(T)], dtype=torch.float64)

    def describe(self) -> dict[str, Any]:
        """The schedule as plain data (recorded with results, shown to users)."""
        return {
            "kind": "flow-euler",
            "prediction_type": self.prediction_type,
            "shift": self.shift,
            "mu": self.mu,
            "num_train_timesteps": self.num_train_timesteps,
        } | ({"sigmas": "linspace(1, 1/N, N)"} if self.pipeline_sigmas else {})
