"""Frequency content of edits: the radial power spectrum of difference images.

An edit's difference image (edited minus unedited, per sample) is transformed with a 2-D
FFT per channel; its power is binned by radial frequency ``r = sqrt(fy^2 + fx^2)`` in
cycles per image side (bin ``i`` holds ``i - 0.5 <= r < i + 0.5``; the DC term is bin 0).
The **high-frequency share** is the share of the power (DC excluded) at radii above
``cutoff`` times the Nyquist radius ``min(H, W) / 2``: about 0 for a smooth change (a
brightness shift, a moved blob), near 1 for a change in fine detail (texture, edges
only). White noise puts a share of about ``1 - (pi / 4) cutoff^2`` above the cutoff (the
area of the spectrum outside the cutoff's disc), so 0.95 at the default cutoff 0.25.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from workbench.directions import DirectionSet
from workbench.engines.pullback import pullback_directions
from workbench.engines.random import random_directions
from workbench.errors import WorkbenchError, check_finite
from workbench.eval.judge import edits_with_reference
from workbench.models.wrapper import DiffusionModel

#: Default cutoff of :func:`high_frequency_share`, as a fraction of the Nyquist radius.
CUTOFF = 0.25


def _check(images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise WorkbenchError(f"{name} must be a tensor [N, C, H, W], got {shape}")
    if min(images.shape[-2:]) < 4:
        raise WorkbenchError(f"{name}: need at least 4 x 4 pixels, got {list(images.shape[-2:])}")
    check_finite(name, images)
    return images.double()


def _spectrum(images: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The power ``[N, H, W]`` of ``images`` (summed over the channels) and each frequency's
    radius ``[H, W]`` in cycles per image side (of the shorter side)."""
    x = _check(images, name)
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x).abs().pow(2).sum(1)
    fy = torch.fft.fftfreq(h, dtype=torch.float64) * min(h, w)
    fx = torch.fft.fftfreq(w, dtype=torch.float64) * min(h, w)
    return power, torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def radial_power(images: torch.Tensor) -> torch.Tensor:
    """Power per radial frequency bin of ``images`` ``[N, C, H, W]`` (summed over the
    channels): ``[N, R]`` with ``R = floor(sqrt(2) min(H, W) / 2) + 2`` bins, bin ``i``
    holding the power at radius ``i`` cycles per image side (rounded)."""
    power, radius = _spectrum(images, "images")
    side = min(images.shape[-2:])
    bins = int(math.floor(math.sqrt(2) * side / 2)) + 2
    out = torch.zeros(power.shape[0], bins, dtype=torch.float64)
    out.index_add_(1, radius.round().long().flatten(), power.flatten(1))
    return out


def high_frequency_share(differences: torch.Tensor, cutoff: float = CUTOFF) -> torch.Tensor:
    """The share of each difference image's power (DC excluded) at radial frequencies
    above ``cutoff`` times the Nyquist radius: ``[N]`` in [0, 1] (NaN for an image with no
    change at all)."""
    if not 0 < cutoff < 1:
        raise WorkbenchError(f"cutoff must be in (0, 1), got {cutoff}")
    power, radius = _spectrum(differences, "differences")
    nyquist = min(differences.shape[-2:]) / 2
    power[:, 0, 0] = 0.0  # the mean change is not a frequency
    total = power.flatten(1).sum(1)
    high = (power * (radius > cutoff * nyquist)).flatten(1).sum(1)
    return torch.where(total > 0, high / total.clamp_min(1e-300), torch.nan)


def edit_frequency(
    model: DiffusionModel,
    directions: DirectionSet,
    strength: float,
    seeds: Sequence[int],
    indices: Sequence[int] | None = None,
    cutoff: float = CUTOFF,
    **edit_options: Any,
) -> tuple[torch.Tensor, float]:
    """How high in frequency the edits of ``directions`` (``indices``, default all) at
    ``-strength`` and ``+strength`` are: per seed, the mean :func:`high_frequency_share`
    of the difference images over the directions and both signs ``[N]``, and the RMS
    change over all of them (in [-1, 1] units). One batched edit run
    (:func:`~workbench.eval.judge.edits_with_reference`); ``edit_options`` go to it."""
    indices = list(range(len(directions)) if indices is None else indices)
    edits = edits_with_reference(
        model, directions, indices, [-strength, strength], seeds, **edit_options
    )
    diffs = torch.stack([edited - reference[None] for edited, reference in edits])  # [k,2,N,..]
    shares = high_frequency_share(diffs.flatten(0, 2), cutoff).reshape(len(indices), 2, -1)
    return shares.nanmean((0, 1)), float(diffs.pow(2).mean().sqrt())


def frequency_by_timestep(
    model: DiffusionModel,
    timesteps: Sequence[int],
    seeds: Sequence[int],
    k: int = 4,
    samples: int = 4,
    strength: float = 2.0,
    num_steps: int = 20,
) -> dict[str, dict[int, tuple[torch.Tensor, float]]]:
    """The pullback paper's frequency claim, measured: at each edit timestep the pullback
    engine's top ``k`` directions there (shared by ``samples`` samples) and ``k`` random x
    directions (the control, seed 3), each edited at +-``strength`` x steps on ``seeds``
    (:func:`edit_frequency`). Returns ``{"pullback" | "random": {t: (per-seed high-frequency
    share [N], RMS change)}}``."""
    out: dict[str, dict[int, tuple[torch.Tensor, float]]] = {"pullback": {}, "random": {}}
    for t in timesteps:
        sets = {
            "pullback": pullback_directions(
                model, k=k, timestep=t, samples=samples, num_steps=num_steps
            ),
            "random": random_directions(model, k=k, space="x", timestep=t, seed=3),
        }
        for name, ds in sets.items():
            out[name][t] = edit_frequency(
                model, ds, strength, seeds, num_steps=num_steps, progress=False
            )
    return out
