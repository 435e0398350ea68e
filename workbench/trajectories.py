"""Sampled and DDIM-inverted trajectories of one model on one grid: what the norm probe
and the mixing-step search compare."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.data.labelled import load_images
from workbench.data.scenes import Scene, get_scene
from workbench.errors import WorkbenchError, check_finite
from workbench.models.presets import NO_SCENE
from workbench.models.wrapper import DiffusionModel
from workbench.sampling import ddim, make_timesteps, refinements


def model_scene(model: DiffusionModel) -> Scene:
    """The procedural scene with ground truth that ``model`` draws (the preset's ``scene``,
    Shapes by default); a one-line error for a model that cannot be one of ours (a latent
    or text-conditioned model, a non-RGB or non-square one, one whose preset says it has
    none, as a model loaded without a preset)."""
    channels, height, width = model.sample_shape
    if model.preset.scene == NO_SCENE:
        raise WorkbenchError(
            f"model {model.name!r} has no built-in scene with ground truth (its preset names "
            "none): pass your own images, or labels= folders for a boundary"
        )
    if model.latent or model.conditional:
        raise WorkbenchError(
            f"model {model.name!r} has no built-in scene with ground truth (a latent "
            "text-to-image model): pass your own images"
        )
    if channels != 3 or height != width:
        raise WorkbenchError(
            f"model {model.name!r} has no built-in scene with ground truth: pass images"
        )
    return get_scene(model.preset.scene)


def reference_images(model: DiffusionModel, n: int, seed: int = 0) -> torch.Tensor:
    """Real images for ``model``: its scene (:func:`model_scene`) at its resolution."""
    return model_scene(model).generate(n, size=model.sample_shape[1], seed=seed)[0]


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
        """sqrt(a_t m2 + 1 - a_t) per timestep, m2 = E||x_0||^2 / d of the real x_0 (the
        images, or a latent model's latents of them: the first row of ``inverted``); under a
        flow schedule sqrt((1 - s)^2 m2 + s^2) (x_t = (1 - s) x_0 + s eps)."""
        m2 = float((self.inverted[0] ** 2).sum(1).mean()) / model.d
        return [math.sqrt(model.schedule.expected_square(t, m2)) for t in self.timesteps]


def paired_trajectories(
    model: DiffusionModel,
    n: int,
    num_steps: int | None,
    images: torch.Tensor | str | Path | None,
    seed: int,
    progress: bool | None,
    image_seed: int | None = None,
    inversion: str = "ddim",
) -> PairedTrajectories:
    """Sample ``n`` trajectories (seeds ``seed..``) and invert the real ``images`` (a tensor
    ``[m, *model.image_shape]`` in [-1, 1] or a folder of image files; default: ``n`` images
    of the model's scene from ``image_seed``, default ``seed``) on the same grid, by
    ``inversion`` (``ddim`` or ``fixed-point``, see :func:`workbench.sampling.invert`); a
    latent model inverts the images' VAE latents."""
    refine = refinements(inversion)
    grid = make_timesteps(model, num_steps)
    if images is None:
        images = reference_images(model, n, seed if image_seed is None else image_seed)
    elif isinstance(images, str | Path):
        images = load_images(images, model.image_shape[-1])
    real = images
    model.check_images(real)
    check_finite("images", real)
    _, sampled = ddim(
        model, model.noise(range(seed, seed + n)), grid, return_trajectory=True, progress=progress
    )
    latents = model.encode(real)  # a latent model's x_0; the images themselves in pixel space
    _, inverted = ddim(
        model, latents, grid[::-1], return_trajectory=True, progress=progress, refine=refine
    )
    return PairedTrajectories(
        timesteps=grid[::-1],
        sampled=sampled.x.flip(0).flatten(2).double(),
        inverted=inverted.x.flatten(2).double(),
        real=real,
    )
