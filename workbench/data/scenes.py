"""The procedural scenes with ground truth, by name: what a bundled model was trained on.

A :class:`Scene` bundles a generator, its factor names and spreads, and the analytic
read-out, so that training, sample quality and scoring ask the model's scene rather than
assume Shapes. ``shapes`` (one object on a plain background) is ``shapes32``'s;
``lit-shapes`` (one object lit from a direction, shaded background, shadow) is
``shapes64``'s. A model's preset names its scene (``Preset.scene``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workbench.data import lit, readout, shapes
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class Scene:
    """One procedural scene.

    Attributes:
        name: registry name.
        factor_names: every factor, categorical ``shape`` first.
        circular: factors measured in turns (compared on the circle).
        generate: ``(n, size, seed, device, shape_probs=None) -> (images [n, 3, S, S] in
            [-1, 1], factors)``; ``shape_probs`` tilts the class prior (uniform by default).
        sample_factors: ``(n, size, seed) -> factors``.
        read: ``images -> read-out`` with ``.factors`` and ``.valid``.
        spreads: ``size -> {factor: standard deviation under the generator}``.
    """

    name: str
    factor_names: tuple[str, ...]
    circular: tuple[str, ...]
    generate: Callable[..., tuple[torch.Tensor, Any]]
    sample_factors: Callable[..., Any]
    read: Callable[[torch.Tensor], Any]
    spreads: Callable[[int], dict[str, float]]

    @property
    def continuous(self) -> tuple[str, ...]:
        """The factors other than the categorical ``shape``."""
        return tuple(f for f in self.factor_names if f != "shape")


def _generate_shapes(
    n: int,
    size: int = 32,
    seed: int = 0,
    device: torch.device | str | None = None,
    shape_probs: Sequence[float] | None = None,
) -> tuple[torch.Tensor, shapes.Factors]:
    images, factors = shapes.generate(n, size=size, seed=seed, shape_probs=shape_probs)
    return (images if device is None else images.to(device)), factors


SCENES: dict[str, Scene] = {
    "shapes": Scene(
        name="shapes",
        factor_names=shapes.FACTOR_NAMES,
        circular=("hue",),
        generate=_generate_shapes,
        sample_factors=shapes.sample_factors,
        read=readout.read_factors,
        spreads=shapes.factor_spreads,
    ),
    "lit-shapes": Scene(
        name="lit-shapes",
        factor_names=lit.LIT_FACTOR_NAMES,
        circular=("hue", "light"),
        generate=lit.generate_lit,
        sample_factors=lit.sample_lit_factors,
        read=lit.read_lit_factors,
        spreads=lit.lit_factor_spreads,
    ),
}


def get_scene(name: str | None) -> Scene:
    """The scene called ``name`` (``None``: ``shapes``, the default of older presets)."""
    key = name or "shapes"
    if key not in SCENES:
        raise WorkbenchError(f"unknown scene {key!r}; known: {', '.join(SCENES)}")
    return SCENES[key]
