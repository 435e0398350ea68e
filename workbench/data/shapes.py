"""Shapes: one object on a plain background, with known generating factors.

Factors (independent, uniform unless said), in pixel units of a ``size x size`` image:

- ``shape``: 0 disc, 1 square, 2 triangle (equilateral, pointing up), equally likely.
- ``hue``: in [0, 1), fully saturated, full value (HSV), so the object always differs
  from the grey background by at least 0.5 in some channel.
- ``scale``: sqrt of the object's area, in [0.14, 0.31] of the image side (4.5-10 px at 32).
- ``x``, ``y``: centroid, in [0.29, 0.71] of the image side (the largest object never
  touches the border); y grows downwards.
- ``background``: grey level in [0.15, 0.85].

Edges are anti-aliased from the signed distance to the outline. Images are returned in
[-1, 1], ``[N, 3, S, S]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from workbench.errors import WorkbenchError

SHAPE_NAMES = ("disc", "square", "triangle")
SCALE_RANGE = (0.14, 0.31)
POS_RANGE = (0.29, 0.71)
BACKGROUND_RANGE = (0.15, 0.85)
FACTOR_NAMES = ("shape", "hue", "scale", "x", "y", "background")
#: Spread (standard deviation) of each continuous factor in the training distribution, as a
#: fraction of the image side for scale/x/y; hue is circular with spread 1/sqrt(12).
_UNIFORM_STD = 1 / math.sqrt(12)


@dataclass
class Factors:
    """Generating (or read-out) factors of a batch, each ``[N]``; positions/scale in pixels."""

    shape: torch.Tensor
    hue: torch.Tensor
    scale: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    background: torch.Tensor

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Every factor by name, in field order (a subclass's extra factors last)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, index: int | slice | np.ndarray) -> Factors:
        return type(self)(**{k: v[index] for k, v in self.as_dict().items()})


def factor_spreads(size: int = 32) -> dict[str, float]:
    """Standard deviation of each factor under the generator (shape: 1.0, it is categorical)."""
    return {
        "shape": 1.0,
        "hue": _UNIFORM_STD,
        "scale": (SCALE_RANGE[1] - SCALE_RANGE[0]) * size * _UNIFORM_STD,
        "x": (POS_RANGE[1] - POS_RANGE[0]) * size * _UNIFORM_STD,
        "y": (POS_RANGE[1] - POS_RANGE[0]) * size * _UNIFORM_STD,
        "background": (BACKGROUND_RANGE[1] - BACKGROUND_RANGE[0]) * _UNIFORM_STD,
    }


def hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """Fully saturated, full-value colour of each hue: ``[N]`` -> ``[N, 3]`` in [0, 1]."""
    k = (hue[:, None] * 6 + torch.tensor([5.0, 3.0, 1.0], device=hue.device)) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def coverage(
    shape: torch.Tensor, scale: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: int
) -> torch.Tensor:
    """Fraction of each pixel covered by the object: ``[N, size, size]`` in [0, 1].

    Anti-aliased analytically: coverage = clamp(0.5 - d, 0, 1) with d the signed distance
    (pixels) from the pixel centre to the shape's outline, exact for straight edges.
    """
    out = torch.empty(shape.shape[0], size, size, device=x.device)
    centres = torch.arange(size, dtype=torch.float32, device=x.device) + 0.5
    for kind, fn in enumerate((_disc, _square, _triangle)):
        idx = (shape == kind).nonzero().squeeze(1)
        for start in range(0, idx.shape[0], 1024):  # chunks stay in cache
            i = idx[start : start + 1024]
            dy = centres[None, :, None] - y[i, None, None]  # [n, S, 1]
            dx = centres[None, None, :] - x[i, None, None]  # [n, 1, S]
            out[i] = fn(dx, dy, scale[i, None, None]).neg_().add_(0.5).clamp_(0, 1)
    return out


def _disc(dx: torch.Tensor, dy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(dx * dx + dy * dy) - s / math.sqrt(math.pi)


def _square(dx: torch.Tensor, dy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.maximum(dx.abs(), dy.abs()) - s / 2


def _triangle(dx: torch.Tensor, dy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    r = s * math.sqrt(4 / math.sqrt(3)) / math.sqrt(3)  # circumradius of an area-s^2 triangle
    slant = torch.maximum(math.sqrt(3) * dx - dy, -math.sqrt(3) * dx - dy) / 2
    return torch.maximum(dy, slant) - r / 2


def render(factors: Factors, size: int = 32) -> torch.Tensor:
    """Images ``[N, 3, size, size]`` in [-1, 1] for the given factors."""
    cov = coverage(factors.shape, factors.scale, factors.x, factors.y, size)[:, None]
    colour = (hue_to_rgb(factors.hue) * 2 - 1)[:, :, None, None].expand(-1, -1, size, size)
    background = (factors.background * 2 - 1)[:, None, None, None].expand(-1, 3, size, size)
    return torch.lerp(background, colour, cov)


def draw_shapes(
    n: int,
    gen: torch.Generator,
    shape_probs: Sequence[float] | None = None,
    name: str = "shape_probs",
) -> torch.Tensor:
    """``n`` shape classes ``[N]``: uniform, or drawn with ``shape_probs`` (one weight per
    class of ``SHAPE_NAMES``, normalised; a tilted class prior for training). ``name``
    is the option that errors name."""
    if shape_probs is None:
        return torch.randint(0, 3, (n,), generator=gen)
    probs = torch.as_tensor(shape_probs, dtype=torch.float64)
    if probs.shape != (len(SHAPE_NAMES),) or not bool(torch.isfinite(probs).all()):
        raise WorkbenchError(
            f"{name}: expected {len(SHAPE_NAMES)} finite weights "
            f"({', '.join(SHAPE_NAMES)}), got {list(shape_probs)}"
        )
    if bool((probs < 0).any()) or float(probs.sum()) <= 0:
        raise WorkbenchError(f"{name}: weights must be >= 0, not all 0: {list(shape_probs)}")
    if not bool(torch.isfinite(probs.sum())):  # huge weights (1e308) overflow their sum
        probs = probs / probs.max()
    return torch.multinomial(probs / probs.sum(), n, replacement=True, generator=gen)


def sample_factors(
    n: int,
    size: int = 32,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    shape_probs: Sequence[float] | None = None,
) -> Factors:
    """Draw ``n`` independent factor settings (positions and scale in pixels); shapes
    uniform unless ``shape_probs`` tilts them (:func:`draw_shapes`)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(int(seed or 0))

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=gen)

    return Factors(
        shape=draw_shapes(n, gen, shape_probs),
        hue=torch.rand(n, generator=gen),
        scale=uniform(*SCALE_RANGE) * size,
        x=uniform(*POS_RANGE) * size,
        y=uniform(*POS_RANGE) * size,
        background=uniform(*BACKGROUND_RANGE),
    )


def generate(
    n: int, size: int = 32, seed: int = 0, shape_probs: Sequence[float] | None = None
) -> tuple[torch.Tensor, Factors]:
    """``n`` Shapes images ``[n, 3, size, size]`` in [-1, 1] and their factors, from ``seed``."""
    factors = sample_factors(n, size, seed, shape_probs=shape_probs)
    return render(factors, size), factors
