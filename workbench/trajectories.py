"""Sampled and DDIM-inverted trajectories of one model on one grid: what the norm probe
and the mixing-step search compare, and the bank of them that a run shares
(:class:`TrajectoryBank`)."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.data.labelled import load_images
from workbench.data.scenes import Scene, get_scene
from workbench.errors import WorkbenchError
from workbench.models.presets import NO_SCENE
from workbench.models.wrapper import DiffusionModel
from workbench.options import (
    CACHE,
    CONDITIONING,
    INVERSION,
    MAX_SEED,
    NUM_STEPS,
    PROGRESS,
    SEED,
    Option,
    Spec,
    in_context,
    validated,
)
from workbench.sampling import make_timesteps, refinements, run_chain
from workbench.store import Cache, as_cache, cache_key


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
    bank: TrajectoryBank | None = None,
) -> PairedTrajectories:
    """Sample ``n`` trajectories (seeds ``seed..``) and invert the real ``images`` (a tensor
    ``[m, *model.image_shape]`` in [-1, 1] or a folder of image files; default: ``n`` images
    of the model's scene from ``image_seed``, default ``seed``) on the same grid, by
    ``inversion`` (``ddim`` or ``fixed-point``, see :func:`workbench.sampling.invert`); a
    latent model inverts the images' VAE latents. With ``bank`` (and no ``images``) its
    trajectories of the same seeds and grid and its first ``n`` inverted images are used."""
    refine = refinements(inversion)
    grid = make_timesteps(model, num_steps)
    if bank is not None:
        if images is not None:
            raise WorkbenchError("give images or a trajectory bank, not both")
        return bank.paired(model, grid, range(seed, seed + n), n, inversion)
    if images is None:
        images = reference_images(model, n, seed if image_seed is None else image_seed)
    elif isinstance(images, str | Path):
        images = load_images(images, model.image_shape[-1])
    real = model.check_real_images(images)
    _, sampled = run_chain(
        model, model.noise(range(seed, seed + n)), grid, return_trajectory=True, progress=progress
    )
    latents = model.encode(real)  # a latent model's x_0; the images themselves in pixel space
    _, inverted = run_chain(
        model, latents, grid[::-1], return_trajectory=True, progress=progress, refine=refine
    )
    return PairedTrajectories(
        timesteps=grid[::-1],
        sampled=sampled.x.flip(0).flatten(2).double(),
        inverted=inverted.x.flatten(2).double(),
        real=real,
    )


@dataclass(repr=False)
class TrajectoryBank:
    """Trajectories of one model on one DDIM grid, computed once and reused by every engine
    and probe that would otherwise sample or invert its own (the PCA engine, the norm,
    mixing-step and UMAP probes, the edits' unedited trunks and the demo's samples).

    ``timesteps``: the decreasing grid, ending at the clean end ``-1``. ``sampled``
    ``[S+1, n, C, H, W]``: x along the grid (sampling order) from the noise of ``seeds``;
    ``h`` ``[S, n, *h_shape]``: h at each step of those runs (read at ``h_point``; None when
    not recorded); ``real`` ``[m, *image_shape]``: the real images, and ``inverted``
    ``[S+1, m, C, H, W]``: their latents inverted up the same grid (ascending: the clean
    end first). Tensors live on the CPU in float32."""

    timesteps: list[int]
    seeds: list[int]
    sampled: torch.Tensor
    h: torch.Tensor | None
    real: torch.Tensor
    inverted: torch.Tensor
    inversion: str
    h_point: str
    fingerprint: str
    conditioning: dict | None = None

    def __repr__(self) -> str:
        return (
            f"TrajectoryBank({len(self.seeds)} sampled and {self.real.shape[0]} inverted "
            f"trajectories, {len(self.timesteps) - 1} steps, h "
            f"{'recorded' if self.h is not None else 'not recorded'})"
        )

    def check(self, model: DiffusionModel, grid: list[int], seeds: range | list[int]) -> list[int]:
        """Rows of ``seeds`` in the bank, after checking that the bank belongs to ``model``
        (fingerprint, conditioning) and ``grid``: a one-line error naming the mismatch
        otherwise."""
        self._check_model(model)
        if list(grid) != self.timesteps:
            raise WorkbenchError(
                f"the trajectory bank's grid ({len(self.timesteps) - 1} steps from "
                f"{self.timesteps[0]}) is not this run's ({len(grid) - 1} steps from {grid[0]})"
            )
        where = {s: i for i, s in enumerate(self.seeds)}
        missing = [s for s in seeds if s not in where]
        if missing:
            raise WorkbenchError(
                f"seeds {missing[:4]}{'...' if len(missing) > 4 else ''} are not in the "
                f"trajectory bank (seeds {self.seeds[0]}-{self.seeds[-1]})"
            )
        return [where[s] for s in seeds]

    def _check_model(self, model: DiffusionModel) -> None:
        if self.fingerprint != model.fingerprint:
            raise WorkbenchError(
                f"fingerprint mismatch: the trajectory bank is of model {self.fingerprint}, "
                f"not of {model.fingerprint}"
            )
        conditioning = model.conditioning
        here = None if conditioning is None else conditioning.describe()
        if here != self.conditioning:
            raise WorkbenchError("the trajectory bank was sampled under another conditioning")

    def covers(self, model: DiffusionModel, grid: list[int], seeds: list[int]) -> bool:
        """Whether the bank holds ``seeds`` on ``grid`` (after checking that it is of ``model``
        and its conditioning: a one-line error otherwise)."""
        self._check_model(model)
        return list(grid) == self.timesteps and set(seeds) <= set(self.seeds)

    def sampled_h(
        self, model: DiffusionModel, grid: list[int], seeds: range | list[int]
    ) -> list[torch.Tensor]:
        """h at each step of ``grid`` (but the last) for ``seeds``: ``[n, *h_shape]`` per step,
        as ``model.record_h()`` sees them during sampling."""
        rows = self.check(model, grid, seeds)
        if self.h is None:
            raise WorkbenchError("the trajectory bank holds no h: build it with h=True")
        if model.h_point != self.h_point:
            raise WorkbenchError(
                f"the trajectory bank recorded h at {self.h_point!r}, not at {model.h_point!r}"
            )
        return list(self.h[:, rows])

    def paired(
        self,
        model: DiffusionModel,
        grid: list[int],
        seeds: range | list[int],
        m: int,
        inversion: str,
    ) -> PairedTrajectories:
        """Sampled trajectories of ``seeds`` and the first ``m`` inverted real images, as
        :func:`paired_trajectories` gives them."""
        rows = self.check(model, grid, seeds)
        if inversion != self.inversion:
            raise WorkbenchError(
                f"the trajectory bank inverted by {self.inversion!r}, not {inversion!r}"
            )
        if m > self.real.shape[0]:
            raise WorkbenchError(
                f"the trajectory bank holds {self.real.shape[0]} inverted images, not {m}"
            )
        return PairedTrajectories(
            timesteps=self.timesteps[::-1],
            sampled=self.sampled[:, rows].flip(0).flatten(2).double(),
            inverted=self.inverted[:, :m].flatten(2).double(),
            real=self.real[:m],
        )

    def at(
        self, model: DiffusionModel, grid: list[int], seeds: range | list[int], t: int
    ) -> torch.Tensor:
        """x of ``seeds`` at grid timestep ``t`` (``-1``: the samples' clean latents)."""
        rows = self.check(model, grid, seeds)
        return self.sampled[self.timesteps.index(t), rows]


#: The options of :func:`trajectory_bank`.
BANK_SPEC = Spec(
    "function",
    "trajectory_bank",
    "sampled (with h) and inverted trajectories on one grid, shared by a run",
    (
        Option(
            "n", int, 64, "sampled trajectories (and scene images inverted)", low=2, high=100_000
        ),
        NUM_STEPS,
        SEED,
        Option("images", object, None, "real images [m, *image_shape] in [-1, 1]", cli=False),
        Option(
            "image_seed",
            int,
            None,
            "seed of the scene images (default: seed + 1)",
            low=0,
            high=MAX_SEED,
        ),
        INVERSION,
        Option("h", bool, True, "record h at every step"),
        CACHE,
        PROGRESS,
        *CONDITIONING,
    ),
)


def _bank_checked(fn: Callable) -> Callable:
    return validated(BANK_SPEC, in_context(fn, BANK_SPEC.options))


@_bank_checked
def trajectory_bank(
    model: DiffusionModel,
    n: int = 64,
    num_steps: int | None = None,
    seed: int = 0,
    images: torch.Tensor | None = None,
    image_seed: int | None = None,
    inversion: str = "ddim",
    h: bool = True,
    cache: Cache | None | bool = None,
    progress: bool | None = None,
) -> TrajectoryBank:
    """Sample ``n`` trajectories (seeds ``seed..seed+n-1``, eta 0, h recorded when ``h``) and
    invert ``images`` (default: ``n`` images of the model's scene from ``image_seed``,
    default ``seed + 1``) on the grid of ``num_steps``; cached on disk by fingerprint, grid,
    seeds, images and inversion (``cache``: a :class:`~workbench.store.Cache`, None for the
    user's, False for none), so a second run with the same model and settings samples
    nothing. The two passes are one network call per step each (plus the refinements of a
    fixed-point inversion)."""
    refine = refinements(inversion)
    grid = make_timesteps(model, num_steps)
    seeds = list(range(seed, seed + n))
    image_seed = seed + 1 if image_seed is None else image_seed
    if images is None:
        images = reference_images(model, n, image_seed)
        source: dict = {"scene": model.preset.scene, "image_seed": image_seed, "m": n}
    else:
        images = model.check_real_images(images)
        source = {"images": hashlib.sha256(images.float().numpy().tobytes()).hexdigest()[:16]}
    conditioning = model.conditioning
    described = None if conditioning is None else conditioning.describe()
    key = cache_key(
        kind="trajectory-bank",
        model=model.fingerprint,
        grid=grid,
        seeds=seeds,
        inversion=inversion,
        h_point=model.h_point if h else None,
        dtype=str(model.dtype),
        device=model.device.type,
        conditioning=described,
        **source,
    )
    store = as_cache(cache)
    hit = store.get(key) if store is not None else None
    if hit is None:
        recording = model.record_h() if h else contextlib.nullcontext([])
        with recording as seen:
            _, forward = run_chain(
                model, model.noise(seeds), grid, return_trajectory=True, progress=progress
            )
        latents = model.encode(images)
        _, backward = run_chain(
            model, latents, grid[::-1], return_trajectory=True, progress=progress, refine=refine
        )
        tensors = {"sampled": forward.x.float(), "inverted": backward.x.float()}
        if h:
            tensors["h"] = torch.stack(seen)
        if store is not None:
            store.put(key, tensors, {"grid": grid, "seeds": seeds})
    else:
        tensors = hit[0]
    return TrajectoryBank(
        timesteps=grid,
        seeds=seeds,
        sampled=tensors["sampled"],
        h=tensors.get("h"),
        real=images.float().cpu(),
        inverted=tensors["inverted"],
        inversion=inversion,
        h_point=model.h_point,
        fingerprint=model.fingerprint,
        conditioning=described,
    )
