"""How much the mid-block output h reaches a model's output, and the norms behind a preset.

``h_sensitivity``: the relative change of the predicted x0,
``||x0(h + |h| v) - x0(h)|| / ||x0(h)||``, when h is shifted by a vector as long as h itself,
over noised images of the model's scene at timesteps of the preset's h window. ``v`` is a
given unit direction (``[C, H, W]``, or ``[C]`` added at every position) or, by default, a
fresh Gaussian direction per image. On a model whose decoder bypasses the mid block (skip
connections carry the image) it is close to 0; 1 means the prediction moves as much as it
is large.

``h_reach``: how far one h shift at a single step of the chain reaches the final sample,
per step: ``n`` trajectories get h shifted by ``relative`` ||h|| at that step only (along
each sample's top pullback direction in h there, or a Gaussian direction) and are sampled
on unedited; the curve is the mean relative change of the final sample.
:func:`reach_window` reads an h window from it (:mod:`workbench.eval.calibration`).

``calibrate``: the norms that a preset's strength units are defined from (``x_step = 0.1
E||x_t||`` at the x edit timestep, ``h_step = 0.25 E||h||`` over the h window), measured on
sampled trajectories.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from workbench.engines.pullback import local_basis
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import IMAGES, SEED, Option, Spec, validated
from workbench.sampling import Step, make_timesteps, run_chain
from workbench.settings import show_progress
from workbench.trajectories import model_scene


@dataclass
class HSensitivity:
    """How much random h perturbations change the predicted x0."""

    timesteps: list[int]
    per_timestep: list[float]  # mean relative change of x0 at each timestep
    mean: float

    def to_dict(self) -> dict:
        """The result as plain JSON-ready data."""
        return asdict(self)


#: The options of :func:`h_sensitivity` (checked before anything runs).
H_SENSITIVITY = Spec(
    "function",
    "h_sensitivity",
    "relative change of x0 when h is shifted by |h| along a direction",
    (
        Option("direction", object, None, "h-space direction (default: random)", cli=False),
        Option("n", int, 16, "images", low=1, high=100_000),
        Option("n_timesteps", int, 5, "timesteps over the h window", low=1, high=1000),
        dataclasses.replace(SEED, default=123),
        IMAGES,
        Option("noise_seed", int, None, "seed of the noise (default: seed + 1)", low=0),
    ),
)


@functools.partial(validated, H_SENSITIVITY)
def h_sensitivity(
    model: DiffusionModel,
    direction: torch.Tensor | None = None,
    n: int = 16,
    n_timesteps: int = 5,
    seed: int = 123,
    images: torch.Tensor | None = None,
    noise_seed: int | None = None,
) -> HSensitivity:
    """Relative change of x0 when h is shifted by ``|h|`` along ``direction`` (module doc).

    Args:
        direction: unit vector ``[C, H, W]`` or ``[C]``; ``None``: Gaussian, one per image.
        n: images of the model's scene (``preset.scene``), unless ``images`` are given.
        n_timesteps: evenly spread over the preset's h window, both ends included.
        seed: of the scene images; ``noise_seed`` (default ``seed + 1``): of the noise and
            the random directions.
    """
    if images is None:
        scene = model_scene(model)
        images = scene.generate(n, size=model.sample_shape[1], seed=seed)[0]
    images = images.to(model.device, model.dtype)
    high, low = model.preset.h_window
    gen = torch.Generator().manual_seed(seed + 1 if noise_seed is None else noise_seed)
    timesteps = torch.linspace(high, low, n_timesteps).round().int().tolist()
    means = []
    with torch.no_grad():
        for t in timesteps:
            noise = torch.randn(images.shape, generator=gen).to(images)
            x_t = model.schedule.add_noise(images, noise, t)
            h = model.h(x_t, t)
            if direction is None:
                v = torch.randn(h.shape, generator=gen).to(h)
            else:
                v = direction.to(h).reshape(
                    1, -1, *([1, 1] if direction.ndim == 1 else h.shape[2:])
                )
                v = v.expand_as(h)
            v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            shift = h.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * v
            before = model.predict(x_t, t).x0
            after = model.predict(x_t, t, shift).x0
            change = (after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1)
            means.append(float(change.mean()))
    return HSensitivity(timesteps=timesteps, per_timestep=means, mean=sum(means) / len(means))


def trajectory_norms(
    model: DiffusionModel,
    n: int,
    grid: list[int],
    seed: int = 0,
    progress: bool | None = False,
) -> tuple[list[float], list[float]]:
    """Mean ||x_t|| and ||h|| at every timestep of ``grid`` but its clean end, over ``n``
    trajectories sampled from seeds ``seed..`` (h from the sampling forwards themselves)."""
    seeds = range(seed, seed + n)
    with model.record_h() as seen:
        _, traj = run_chain(
            model, model.noise(seeds), grid, return_trajectory=True, progress=progress
        )
    x_norms = [float(x.flatten(1).norm(dim=1).mean()) for x in traj.x[:-1]]
    h_norms = [float(h.flatten(1).norm(dim=1).mean()) for h in seen]
    return x_norms, h_norms


@dataclass
class HReach:
    """How far one h shift at each step reaches the final sample (module doc).

    ``timesteps``: the grid's steps (descending, without the clean end; a flow model's are
    fractional); ``effect``: the mean relative change ``||x_0' - x_0|| / ||x_0||`` of the
    final sample per step.
    """

    timesteps: list[float]
    effect: list[float]
    n: int
    relative: float
    direction: str

    def to_dict(self) -> dict:
        """The result as plain JSON-ready data."""
        return asdict(self)


#: Mid-chain: the reach curve's peak is looked for above this fraction of the chain; below
#: it every step's change reaches the output directly (no later step absorbs it), whatever
#: h carries, so the curve rises there on every model.
REACH_FLOOR = 0.2
#: h is mute when one h strength unit at one step moves the final sample by less than this
#: share of its norm at every mid-chain step (``analysis/h_effect.py --direction pullback``:
#: 25 steps, shapes32 at most 0.0007, shapes64 0.053; 50 steps: 0.0006 and 0.022).
REACH_MUTE = 0.005


@dataclass(frozen=True)
class ReachWindow:
    """What :func:`reach_window` reads from an h reach curve.

    ``peak``: the step above ``floor * top`` where one h shift moves the final sample most
    (by ``largest``); ``half``: the last step, going down from the peak, before the curve
    first falls under half the peak; ``mute``: the peak is under the mute level.
    """

    top: int
    peak: float
    largest: float
    half: float
    mute: bool

    @property
    def window(self) -> tuple[int, int] | None:
        """The h window ``(top, peak)``: the steps up to where h reaches the image most, in
        whole timesteps (a fractional peak rounded down, so that it stays inside; ``None``
        when h is mute)."""
        return None if self.mute else (self.top, math.floor(self.peak))

    @property
    def pullback(self) -> tuple[int, ...] | None:
        """The pullback timesteps: the peak and the end of the span of at least half the
        peak, rounded to whole timesteps (one when they coincide; ``None`` when h is mute)."""
        if self.mute:
            return None
        peak, half = round(self.peak), round(self.half)
        return (peak, half) if half != peak else (peak,)


def reach_window(
    timesteps: list[float],
    effect: list[float],
    top: int,
    floor: float = REACH_FLOOR,
    mute: float = REACH_MUTE,
) -> ReachWindow:
    """The peak of a reach curve above ``floor * top`` (its timesteps descending) and the
    span of at least half the peak below it (:class:`ReachWindow`); mute when the peak is
    under ``mute`` (or NaN)."""
    mid = [(t, e) for t, e in zip(timesteps, effect, strict=True) if t >= floor * top]
    if not mid:
        raise WorkbenchError(f"no step of the reach curve lies above t = {floor * top:g}")
    i = max(range(len(mid)), key=lambda j: mid[j][1])
    peak, largest = mid[i]
    half = peak
    for t, e in mid[i + 1 :]:
        if not e >= largest / 2:
            break
        half = t
    return ReachWindow(top=top, peak=peak, largest=largest, half=half, mute=not largest >= mute)


#: The options of :func:`h_reach` (checked before anything runs).
H_REACH = Spec(
    "function",
    "h_reach",
    "how far one h shift at each step reaches the final sample",
    (
        Option("n", int, 8, "sampled trajectories", low=1, high=4096),
        Option("num_steps", int, 25, "steps of the grid (cost grows as its square)", low=2),
        Option("relative", float, 0.25, "shift as a share of ||h|| (0.25: one h unit)", low=0),
        Option(
            "direction",
            str,
            "pullback",
            "each sample's top pullback direction in h, or a Gaussian one",
            choices=("pullback", "random"),
        ),
        SEED,
        Option("progress", bool, None, "show a progress bar", cli=False),
    ),
)


@functools.partial(validated, H_REACH)
def h_reach(
    model: DiffusionModel,
    n: int = 8,
    num_steps: int = 25,
    relative: float = 0.25,
    direction: str = "pullback",
    seed: int = 0,
    progress: bool | None = None,
) -> HReach:
    """How far an h shift at one step reaches the final sample, per step (module doc).

    ``direction="pullback"``: each sample's top left singular vector of dh/dx_t at that step
    (the h direction that x_t moves most; random directions are nearly mute: 20 times less
    on shapes64). Costs ``n * num_steps**2 / 2`` network rows for the sampling, plus the
    pullback direction at each step.
    """
    grid = make_timesteps(model, num_steps)
    gen = torch.Generator().manual_seed(seed + 1)  # the directions; seed..: the noise
    with torch.no_grad():
        with model.record_h() as seen:
            final, traj = run_chain(
                model, model.noise(range(seed, seed + n)), grid, return_trajectory=True,
                progress=False,
            )  # fmt: skip
        final = final.float()
        effect = []
        for i in tqdm(range(len(grid) - 1), desc="h reach", disable=not show_progress(progress)):
            h = seen[i]
            if direction == "pullback":
                x_t = traj.x[i].to(model.device, model.dtype)
                with torch.enable_grad():
                    v = local_basis(model, x_t, grid[i], k=1, tol_deg=1.0, max_iter=10).U[:, 0]
            else:
                v = torch.randn(h.shape, generator=gen)
            v = v.to(model.device, torch.float32)
            v = v / v.flatten(1).norm(dim=1).view(-1, *[1] * (v.ndim - 1))
            size = h.float().flatten(1).norm(dim=1).view(-1, *[1] * (v.ndim - 1))
            shift = (relative * size.to(v) * v).to(model.dtype)

            def at_first(step: Step, shift: torch.Tensor = shift) -> None:
                if step.index == 0:
                    step.delta_h = shift

            x = run_chain(model, traj.x[i], grid[i:], edit=at_first, progress=False).float()
            change = (x - final).flatten(1).norm(dim=1) / final.flatten(1).norm(dim=1)
            effect.append(float(change.mean()))
    return HReach(
        timesteps=[t if isinstance(t, int) else float(t) for t in grid[:-1]],
        effect=effect,
        n=n,
        relative=relative,
        direction=direction,
    )


def calibrate(model: DiffusionModel, n: int = 32, num_steps: int = 50) -> dict:
    """Norms of x_t and h along ``n`` sampled trajectories at the preset's edit timesteps,
    and the strength steps they imply."""
    p = model.preset
    hi, lo = p.h_window
    grid = make_timesteps(model, num_steps, include=[p.x_timestep])
    x_norms, all_h = trajectory_norms(model, n, grid)
    x_norm = x_norms[grid.index(p.x_timestep)]
    h_norms = [h for t, h in zip(grid[:-1], all_h, strict=True) if lo <= t <= hi]
    h_mean = statistics.mean(h_norms)
    return {
        "x_timestep": p.x_timestep,
        "mean_norm_x_t": x_norm,
        "h_window": [hi, lo],
        "mean_norm_h": h_mean,
        "mean_per_position_norm_h": h_mean / math.sqrt(model.h_shape[1] * model.h_shape[2]),
        "suggested_x_step": round(0.1 * x_norm, 2),
        "suggested_h_step": round(0.25 * h_mean, 2),
        "preset_x_step": p.x_step,
        "preset_h_step": p.h_step,
    }
