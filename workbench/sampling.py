"""Sampling and inversion: one explicit loop (:func:`run_chain`), edits plug in through
callbacks.

The loop walks the Markov chain along a list of timesteps (``-1`` is the clean end,
alpha-bar = 1) with the model's own deterministic step: DDIM for a noise schedule, the
Euler step of the flow for a rectified-flow model (:attr:`Schedule.label` names it).
Going down (sampling) it evaluates the network at the current timestep. Going up
(inversion) it evaluates the network on x_t at the target timestep and, holding that raw
output (eps, v or x0) fixed, solves the deterministic sampling step exactly for the
noisier latent; so inversion then sampling on the same grid is exact up to the change of
the U-Net output between x_t and x_next. (Converting to eps first, as is common, is wrong
for v-prediction at zero terminal SNR: there eps(x, T) = x whatever the network says.)

Two hooks, k-diffusion style, take a :class:`Step`:

- ``edit(step)`` runs before the network call and may change ``step.x`` (x-space edit),
  set ``step.delta_h`` (additive h edit for this step only), ``step.asymmetric`` (the
  edited prediction forms x0, the unedited one the direction to the next x) and
  ``step.eta``.
- ``callback(step)`` runs after the step, read-only, with ``step.prediction`` and
  ``step.x_next`` filled in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError, check_finite
from workbench.models.wrapper import DiffusionModel, Prediction
from workbench.options import (
    CONDITIONING,
    INVERSION,
    NUM_STEPS,
    PROGRESS,
    SEEDS,
    Option,
    Spec,
    check_model,
    validated,
)
from workbench.settings import show_progress

StepHook = Callable[["Step"], None]


@dataclass
class Step:
    """One step of the DDIM loop, as seen by ``edit`` and ``callback`` hooks."""

    index: int
    t: int
    t_next: int
    x: torch.Tensor
    eta: float = 0.0
    delta_h: torch.Tensor | None = None
    asymmetric: bool = False
    prediction: Prediction | None = None
    x_next: torch.Tensor | None = None

    @property
    def inverting(self) -> bool:
        """Whether this step goes up the chain (inversion)."""
        return self.t_next > self.t


@dataclass
class Trajectory:
    """Every x along a DDIM run: ``x[i]`` is x at ``timesteps[i]``; ``[S+1, B, C, H, W]``."""

    timesteps: list[int]
    x: torch.Tensor

    def at(self, t: int) -> torch.Tensor:
        """The state at timestep ``t`` of the grid."""
        if t not in self.timesteps:
            raise WorkbenchError(f"timestep {t} is not on this trajectory's grid")
        return self.x[self.timesteps.index(t)]


def make_timesteps(
    model: DiffusionModel,
    num_steps: int | None = None,
    t_start: int | None = None,
    include: Sequence[int] = (),
) -> list[int]:
    """Decreasing grid of ``num_steps`` timesteps from ``t_start`` (default: the whole
    chain, spaced as the model's scheduler config says), then the clean end ``-1``; see
    :meth:`Schedule.timesteps`. ``num_steps`` defaults to the preset's, or to one step per
    timestep where ``t_start`` is too low for that many (a mixing step of 19 under a
    50-step preset: 20 steps)."""
    num_steps = NUM_STEPS.check(num_steps) or min(
        model.preset.num_inference_steps, model.schedule.max_steps(t_start)
    )
    return model.schedule.timesteps(num_steps, t_start=t_start, include=include)


def _as_hooks(hooks: StepHook | Sequence[StepHook] | None) -> list[StepHook]:
    if hooks is None:
        return []
    if callable(hooks):
        return [hooks]
    return list(hooks)


def _step_noise(x: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None):
    if generator is None or isinstance(generator, torch.Generator):
        z = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    else:
        if len(generator) != x.shape[0]:
            raise WorkbenchError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
        z = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generator])
    return z.to(x.device, x.dtype)


def _sampling_step(
    model: DiffusionModel,
    step: Step,
    generator: torch.Generator | Sequence[torch.Generator] | None,
    clip_x0: bool | None,
) -> tuple[torch.Tensor, Prediction]:
    """One DDIM step down from ``step.x``; asymmetric when the step asks for it."""
    pred = model.predict(step.x, step.t, step.delta_h)
    asymmetric = step.asymmetric and step.delta_h is not None
    direction = model.eps(step.x, step.t) if asymmetric else pred.eps
    schedule = model.schedule
    if schedule.clip_sample if clip_x0 is None else clip_x0:
        x0 = pred.x0.clamp(-schedule.clip_sample_range, schedule.clip_sample_range)
    else:
        x0 = pred.x0
    sigma = schedule.step_sigma(step.t, step.t_next, step.eta)
    x_next = schedule.step_to(x0, direction, step.t_next, sigma)
    if sigma > 0:
        x_next = x_next + sigma * _step_noise(step.x, generator)
    return x_next, Prediction(eps=pred.eps, x0=x0)


def ddim(*args: Any, **kwargs: Any) -> Any:
    """The older name of :func:`run_chain` (it also runs a flow model's Euler step)."""
    warnings.warn("workbench.sampling.ddim is now run_chain", FutureWarning, stacklevel=2)
    return run_chain(*args, **kwargs)


@torch.no_grad()
def run_chain(
    model: DiffusionModel,
    x: torch.Tensor,
    timesteps: Sequence[int],
    eta: float = 0.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    edit: StepHook | Sequence[StepHook] | None = None,
    callback: StepHook | Sequence[StepHook] | None = None,
    return_trajectory: bool = False,
    progress: bool | None = None,
    clip_x0: bool | None = None,
    refine: int = 0,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Run the chain from ``x`` at ``timesteps[0]`` along ``timesteps`` (down: sample, up:
    invert), with the schedule's deterministic step (DDIM; the flow's Euler step), plus
    ``eta`` noise when sampling.

    Args:
        x: ``[B, C, H, W]`` at ``timesteps[0]``.
        timesteps: strictly monotone integers, ``-1`` allowed at the clean end.
        eta: DDIM stochasticity (sampling only; inversion is deterministic).
        generator: one generator, or one per sample, for the eta > 0 noise.
        edit: hooks that may change the step (x, h), see the module docstring.
        callback: hooks that only watch each step, see the module docstring.
        return_trajectory: also return every intermediate x (on the CPU).
        refine: inversion only: fixed-point refinements of each step (0: plain DDIM
            inversion). Plain inversion evaluates the network at the lower x and solves
            the step for the higher one; each refinement re-evaluates it at the current
            estimate of the higher x, so the step is inverted exactly in the limit
            (``x_next = (x - B r(x_next)) / A``); stops early once an iterate moves less
            than 1e-6 of its norm. Costs up to ``refine`` more network calls per step.
        clip_x0: clamp the predicted x0 at every sampling step (default: as the model's
            scheduler config says, ``clip_sample``).
    Returns:
        x at ``timesteps[-1]``, and the :class:`Trajectory` if asked for.
    """
    model.check_x(x, "x")
    continuous = model.schedule.continuous
    ts = [model.check_timestep(t if continuous else int(t), allow_clean=True) for t in timesteps]
    if len(ts) < 2:
        raise WorkbenchError("timesteps must hold at least two values")
    diffs = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    if not (all(d < 0 for d in diffs) or all(d > 0 for d in diffs)):
        raise WorkbenchError(
            "timesteps must be strictly decreasing (sampling) or increasing (inversion)"
        )
    if diffs[0] > 0 and eta != 0:
        raise WorkbenchError("DDIM inversion is deterministic: eta must be 0")
    model.schedule.step_sigma(ts[0], ts[1], eta)  # a flow schedule refuses eta > 0 here
    edits, callbacks = _as_hooks(edit), _as_hooks(callback)
    x = x.to(model.device, model.dtype)
    trajectory = [x.detach().cpu()] if return_trajectory else None
    label = model.schedule.label  # DDIM, or the flow Euler step
    desc = f"{label} inversion" if diffs[0] > 0 else f"{label} sampling"
    bar = tqdm(range(len(ts) - 1), desc=desc, disable=not show_progress(progress), leave=False)
    for i in bar:
        step = Step(index=i, t=ts[i], t_next=ts[i + 1], x=x, eta=eta)
        for hook in edits:
            hook(step)
        x = step.x
        if step.inverting:
            # Hold the U-Net output r at x_t fixed (taken at t_next) and solve the
            # deterministic step t_next -> t, x_t = A x_next + B r, for x_next exactly.
            raw = model.raw(x, step.t_next, step.delta_h)
            coef_a, coef_b = model.schedule.step_coefficients(step.t_next, step.t)
            x_next = (x - coef_b * raw) / coef_a
            for _ in range(refine):  # fixed point of x_next = (x - B r(x_next)) / A
                raw = model.raw(x_next, step.t_next, step.delta_h)
                moved, x_next = x_next, (x - coef_b * raw) / coef_a
                if float((x_next - moved).norm()) <= 1e-6 * float(x_next.norm()):
                    break
            step.prediction = model.schedule.convert_at(raw, x_next, step.t_next)
        else:
            x_next, step.prediction = _sampling_step(model, step, generator, clip_x0)
        step.x_next = x_next
        for hook in callbacks:
            hook(step)
        x = x_next
        if trajectory is not None:
            trajectory.append(x.detach().cpu())
    check_finite("DDIM result", x)
    if trajectory is not None:
        return x, Trajectory(timesteps=ts, x=torch.stack(trajectory))
    return x


#: The options of :func:`sample` (checked before anything is allocated).
SAMPLE = Spec(
    "function",
    "sample",
    "sample images from seeds or from given x_T",
    (
        SEEDS,
        Option("x_T", object, None, "x_T [B, C, H, W] instead of seeds", cli=False),
        NUM_STEPS,
        Option("eta", float, 0.0, "DDIM eta (0: deterministic)", low=0, high=1),
        Option("edit", object, None, "step hooks that edit", cli=False),
        Option("callback", object, None, "step hooks that observe", cli=False),
        PROGRESS,
        Option("batch_size", int, 256, "samples per network call", low=1, high=65536),
        *CONDITIONING,
        Option("decode", bool, True, "latent models: VAE-decode to images (False: latents)"),
    ),
)


def run_to(
    model: DiffusionModel, x: torch.Tensor, grid: Sequence[int], t: int, progress: bool = False
) -> torch.Tensor:
    """``x`` (at ``grid[0]``, e.g. x_T) carried along ``grid`` down to its timestep ``t``:
    x_t, or ``x`` itself when ``t`` is where the grid starts."""
    i = list(grid).index(t)
    return run_chain(model, x, grid[: i + 1], progress=progress) if i > 0 else x


def _sample_checked(fn: Callable) -> Callable:
    return validated(SAMPLE, fn)


@_sample_checked
def sample(
    model: DiffusionModel,
    seeds: Sequence[int] | None = None,
    x_T: torch.Tensor | None = None,
    num_steps: int | None = None,
    eta: float = 0.0,
    edit: StepHook | Sequence[StepHook] | None = None,
    callback: StepHook | Sequence[StepHook] | None = None,
    progress: bool | None = None,
    batch_size: int = 256,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    guidance_scale: float | None = None,
    class_label: int | None = None,
    decode: bool = True,
) -> torch.Tensor:
    """Sample images ``[B, C, H, W]`` in [-1, 1] from seeds (or from given x_T).

    With ``eta > 0`` the step noise of sample i is drawn from a generator seeded with
    ``seeds[i] + 1_000_003``, so a sample does not depend on the batch it is in. A latent
    text-to-image model samples latents under ``prompt`` (guided by ``guidance_scale``
    against ``negative_prompt``, see :meth:`DiffusionModel.conditioned`; a DiT under
    ``class_label``, guided against the null class) and returns them
    VAE-decoded, ``[B, *model.image_shape]`` (``decode=False``: the latents).
    """
    check_model(model)
    if (seeds is None) == (x_T is None):
        raise WorkbenchError("give exactly one of seeds or x_T")
    x_T = model.noise(seeds) if x_T is None else x_T
    model.check_x(x_T, "x_T")
    timesteps = make_timesteps(model, num_steps)
    with model.conditioned(prompt, negative_prompt, guidance_scale, class_label):
        x0 = _sample_batches(
            model, seeds, x_T, timesteps, eta, edit, callback, progress, batch_size
        )
    return model.decode(x0) if decode else x0


def _sample_batches(
    model: DiffusionModel,
    seeds: Sequence[int] | None,
    x_T: torch.Tensor,
    timesteps: list[int],
    eta: float,
    edit: StepHook | Sequence[StepHook] | None,
    callback: StepHook | Sequence[StepHook] | None,
    progress: bool | None,
    batch_size: int,
) -> torch.Tensor:
    outs = []
    for start in range(0, x_T.shape[0], batch_size):
        gens = None
        if eta and seeds is not None:
            gens = [
                torch.Generator().manual_seed(int(s) + 1_000_003)
                for s in seeds[start : start + batch_size]
            ]
        outs.append(
            run_chain(
                model,
                x_T[start : start + batch_size],
                timesteps,
                eta=eta,
                generator=gens,
                edit=edit,
                callback=callback,
                progress=progress,
            )
        )
    return torch.cat(outs)


def invert(
    model: DiffusionModel,
    x0: torch.Tensor,
    num_steps: int | None = None,
    t_stop: int | None = None,
    return_trajectory: bool = False,
    progress: bool | None = None,
    method: str = "ddim",
    refine: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Invert clean images ``x0`` ``[B, *model.image_shape]`` in [-1, 1] up to ``t_stop``
    (default: the top of the chain); a latent model inverts their VAE latents
    (``model.encode``).

    The ``num_steps`` steps are spread over ``[0, t_stop]`` (the grid of
    ``make_timesteps(model, num_steps, t_start=t_stop)`` walked upwards), so sampling from
    the result on that same grid retraces the same timesteps. ``method``: ``"ddim"``
    (plain DDIM inversion, one network call per step) or ``"fixed-point"`` (each step
    refined by up to ``refine`` (default :data:`FIXED_POINT_REFINE`) fixed-point iterations
    until sampling it back lands on its input, see :func:`run_chain`'s ``refine``): the same
    sampler, so edits, probes and engines take its latents unchanged.
    """
    grid = make_timesteps(model, num_steps, t_start=t_stop)
    x0 = model.encode(x0) if model.latent else x0
    return run_chain(
        model,
        x0,
        grid[::-1],
        return_trajectory=return_trajectory,
        progress=progress,
        refine=refinements(method, refine),
    )


#: Fixed-point refinements per step of the ``fixed-point`` inversion (an iterate that moves
#: less than 1e-6 of its norm stops them earlier).
FIXED_POINT_REFINE = 10


def refinements(method: str, refine: int | None = None) -> int:
    """The ``refine`` of :func:`run_chain` for an inversion ``method`` (one-line error for an
    unknown one)."""
    if method not in INVERSION.choices:
        raise WorkbenchError(f"unknown inversion {method!r}; known: {', '.join(INVERSION.choices)}")
    if method == "ddim":
        return 0
    return FIXED_POINT_REFINE if refine is None else refine
