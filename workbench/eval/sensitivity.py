"""How much the mid-block output h reaches a model's output, and the norms behind a preset.

``h_sensitivity``: the relative change of the predicted x0,
``||x0(h + |h| v) - x0(h)|| / ||x0(h)||``, when h is shifted by a vector as long as h itself,
over noised images of the model's scene at timesteps of the preset's h window. ``v`` is a
given unit direction (``[C, H, W]``, or ``[C]`` added at every position) or, by default, a
fresh Gaussian direction per image. On a model whose decoder bypasses the mid block (skip
connections carry the image) it is close to 0; 1 means the prediction moves as much as it
is large.

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

from workbench.models.wrapper import DiffusionModel
from workbench.options import IMAGES, SEED, Option, Spec, validated
from workbench.sampling import ddim, make_timesteps
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
        _, traj = ddim(model, model.noise(seeds), grid, return_trajectory=True, progress=progress)
    x_norms = [float(x.flatten(1).norm(dim=1).mean()) for x in traj.x[:-1]]
    h_norms = [float(h.flatten(1).norm(dim=1).mean()) for h in seen]
    return x_norms, h_norms


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
