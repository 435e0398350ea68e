"""Sampled and DDIM-inverted trajectories of one model on one grid: what the norm probe
and the mixing-step search compare."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.data.scenes import get_scene
from workbench.errors import WorkbenchError, check_finite
from workbench.models.wrapper import DiffusionModel
from workbench.sampling import ddim, make_timesteps


def reference_images(model: DiffusionModel, n: int, seed: int = 0) -> torch.Tensor:
    """Real images for ``model``: its scene (the preset's ``scene``, Shapes by default) at
    the model's resolution (RGB, square models)."""
    channels, height, width = model.sample_shape
    if model.latent:
        raise WorkbenchError(
            "no built-in reference images for a latent model: pass your own images"
        )
    if channels != 3 or height != width:
        raise WorkbenchError("no built-in reference images for this model: pass images")
    return get_scene(model.preset.scene).generate(n, size=height, seed=seed)[0]


@dataclass
class PairedTrajectories:
    """Sampled and DDIM-inverted latents on one grid, rows in ascending ``timesteps``:
    ``sampled``/``inverted`` ``[S, n, d]`` (float64), and the real images inverted."""

    timesteps: list[int]
    sampled: torch.Tensor
    inverted: torch.Tensor
    real: torch.Tensor

    def norm_ratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """||x_t|| / sqrt(d) of both populations, ``[S, n]`` each."""
        scale = math.sqrt(self.sampled.shape[-1])
        return self.sampled.norm(dim=2) / scale, self.inverted.norm(dim=2) / scale

    def expected(self, model: DiffusionModel) -> list[float]:
        """sqrt(a_t m2 + 1 - a_t) per timestep, m2 = E||x_0||^2 / d of the real images."""
        m2 = float((self.real.flatten(1).double() ** 2).sum(1).mean()) / model.d
        return [math.sqrt(model.alpha_bar(t) * m2 + 1 - model.alpha_bar(t)) for t in self.timesteps]


def paired_trajectories(
    model: DiffusionModel,
    n: int,
    num_steps: int | None,
    images: torch.Tensor | None,
    seed: int,
    progress: bool | None,
    image_seed: int | None = None,
) -> PairedTrajectories:
    """Sample ``n`` trajectories (seeds ``seed..``) and invert the real ``images`` (default:
    ``n`` Shapes images from ``image_seed``, default ``seed``) on the same grid."""
    grid = make_timesteps(model, num_steps)
    if images is None:
        images = reference_images(model, n, seed if image_seed is None else image_seed)
    real = images
    model.check_x(real, "images")
    check_finite("images", real)
    _, sampled = ddim(
        model, model.noise(range(seed, seed + n)), grid, return_trajectory=True, progress=progress
    )
    _, inverted = ddim(model, real, grid[::-1], return_trajectory=True, progress=progress)
    return PairedTrajectories(
        timesteps=grid[::-1],
        sampled=sampled.x.flip(0).flatten(2).double(),
        inverted=inverted.x.flatten(2).double(),
        real=real,
    )
