"""Lit Shapes: one object lit from a direction, on a shaded background, with its shadow.

The scene of the second bundled model (``shapes64``). Everything of Shapes (``shapes.py``)
plus one global factor that ties the whole picture together, so that a denoiser must carry
the image's layout through its low-resolution path:

- ``light``: direction the light comes from, in turns [0, 1) (0: from the right, 0.25:
  from below, y grows downwards), uniform. The background is a linear ramp, brighter
  towards the light: ``grey(p) = background + RAMP * ((p - centre) . u) / S`` with ``u``
  the unit vector towards the light; the object casts a grey shadow (its own silhouette,
  offset by ``SHADOW_OFFSET * S`` away from the light, darkening the background by
  ``SHADOW_DEPTH``).
- ``background``: grey level at the image centre in [0.35, 0.65] (so the ramp stays
  inside [0.07, 0.93]).
- ``shape``, ``hue``, ``scale``, ``x``, ``y``: as in Shapes (same ranges, in pixels).

The object is fully saturated and everything else is grey, so the object's coverage of a
pixel is exactly its chroma (largest minus smallest channel): the read-out measures
coverage, centroid, area and hue without knowing the background, then fits the
background plane (level and light direction) to the grey pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from workbench.data.readout import best_template, object_region, rgb_to_hue, soft_moments
from workbench.data.shapes import (
    POS_RANGE,
    SCALE_RANGE,
    Factors,
    coverage,
    draw_shapes,
    factor_spreads,
    hue_to_rgb,
)
from workbench.errors import WorkbenchError

LIT_FACTOR_NAMES = ("shape", "hue", "scale", "x", "y", "background", "light")
LIT_BACKGROUND_RANGE = (0.35, 0.65)
RAMP = 0.4  # background change across one image side along the light direction
SHADOW_OFFSET = 0.07  # of the image side, away from the light
SHADOW_DEPTH = 0.45  # fraction of the background's grey the shadow takes away
_UNIFORM_STD = 1 / math.sqrt(12)

# Read-out thresholds (see read_lit_factors).
CHROMA_THRESHOLD = 0.25
GREY_CHROMA = 0.03
SHADOW_THRESHOLD = 0.04


@dataclass
class LitFactors(Factors):
    """Shapes factors plus ``light`` (turns), each ``[N]``."""

    light: torch.Tensor


def lit_factor_spreads(size: int = 64) -> dict[str, float]:
    """Standard deviation of each factor under the generator (shape: 1.0, categorical):
    Shapes' spreads with this scene's background range and the light (turns)."""
    return factor_spreads(size) | {
        "background": (LIT_BACKGROUND_RANGE[1] - LIT_BACKGROUND_RANGE[0]) * _UNIFORM_STD,
        "light": _UNIFORM_STD,
    }


def sample_lit_factors(
    n: int,
    size: int = 64,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    shape_probs: Sequence[float] | None = None,
) -> LitFactors:
    """Draw ``n`` independent factor settings (positions and scale in pixels); shapes
    uniform unless ``shape_probs`` tilts them (:func:`~workbench.data.shapes.draw_shapes`)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(int(seed or 0))

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=gen)

    return LitFactors(
        shape=draw_shapes(n, gen, shape_probs),
        hue=torch.rand(n, generator=gen),
        scale=uniform(*SCALE_RANGE) * size,
        x=uniform(*POS_RANGE) * size,
        y=uniform(*POS_RANGE) * size,
        background=uniform(*LIT_BACKGROUND_RANGE),
        light=torch.rand(n, generator=gen),
    )


def light_vector(light: torch.Tensor) -> torch.Tensor:
    """Unit vectors ``[N, 2]`` (x, y) towards the light."""
    angle = 2 * math.pi * light
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def render_lit(factors: LitFactors, size: int = 64) -> torch.Tensor:
    """Images ``[N, 3, size, size]`` in [-1, 1], on the factors' device."""
    device = factors.x.device
    centres = torch.arange(size, dtype=torch.float32, device=device) + 0.5 - size / 2
    u = light_vector(factors.light.float())
    ramp = (
        u[:, 0, None, None] * centres[None, None, :] + u[:, 1, None, None] * centres[None, :, None]
    ) * (RAMP / size)
    grey = factors.background[:, None, None] + ramp  # [N, S, S]
    offset = SHADOW_OFFSET * size
    shadow = coverage(
        factors.shape,
        factors.scale,
        factors.x - offset * u[:, 0],
        factors.y - offset * u[:, 1],
        size,
    )
    grey = grey * (1 - SHADOW_DEPTH * shadow)
    cov = coverage(factors.shape, factors.scale, factors.x, factors.y, size)[:, None]
    colour = hue_to_rgb(factors.hue)[:, :, None, None]
    img = torch.lerp(grey[:, None].expand(-1, 3, -1, -1), colour, cov)
    return img * 2 - 1


def generate_lit(
    n: int,
    size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    shape_probs: Sequence[float] | None = None,
) -> tuple[torch.Tensor, LitFactors]:
    """``n`` Lit Shapes images ``[n, 3, size, size]`` in [-1, 1] and their factors.

    The factors are drawn on the CPU from ``seed`` (the same on every device); the images
    are rendered on ``device`` (default CPU).
    """
    factors = sample_lit_factors(n, size, seed, shape_probs=shape_probs)
    if device is not None:
        factors = LitFactors(**{k: v.to(device) for k, v in factors.as_dict().items()})
    return render_lit(factors, size), factors


@dataclass
class LitReadout:
    """Read-out factors (pixels for x, y, scale; turns for hue and light) and diagnostics."""

    factors: LitFactors
    valid: torch.Tensor
    n_components: torch.Tensor
    iou: torch.Tensor
    object_std: torch.Tensor
    background_std: torch.Tensor
    ramp: torch.Tensor
    shadow_angle: torch.Tensor

    def __len__(self) -> int:
        return len(self.factors)


def read_lit_factors(images: torch.Tensor) -> LitReadout:
    """Read the Lit Shapes factors of ``images`` ``[N, 3, S, S]`` in [-1, 1].

    1. chroma (largest minus smallest channel) is the object's coverage of each pixel;
       object mask: chroma above 0.25, connected components with 8-connectivity; the
       largest, dilated by one pixel, is the object region;
    2. area, ``scale = sqrt(area)`` and centroid from the chroma over the region; hue from
       the summed ``pixel - min channel`` (= coverage x colour: the grey cancels);
    3. background: least-squares plane ``level + g . (p - centre)`` of the grey level over
       grey pixels (chroma below 0.03) outside the dilated region, refitted once without
       the pixels more than 0.04 below it (the shadow); ``light`` is the direction of g;
    4. shadow: grey pixels at least 0.04 below the plane; its direction from the object's
       centroid (``shadow_angle``, turns) should point away from the light;
    5. shape class: best soft IoU of the coverage against the three templates at the
       measured centroid and scale.

    Valid: one component of at least 4 pixels, uniform object colour (channel std of the
    interior's colour below 0.1), background within 0.05 of its plane, ramp
    ``|g| * S`` within 25% of the generator's, a shadow of at least 4 pixels pointing
    within 45 degrees of away from the measured light, and a template IoU of at least 0.6.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise WorkbenchError(f"images must be [N, 3, S, S], got {list(images.shape)}")
    img = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    n, _, size, _ = img.shape
    hi, lo = img.amax(1), img.amin(1)
    chroma = hi - lo  # [N, S, S]
    mask = (chroma > CHROMA_THRESHOLD).numpy()

    region, n_comp = object_region(mask)
    region_t = torch.from_numpy(region)

    alpha = chroma.clamp(0, 1) * region_t
    area, cx, cy, scale = soft_moments(alpha)
    centres = torch.arange(size, dtype=torch.float32) + 0.5

    tinted = (img - lo[:, None]) * region_t[:, None]  # coverage x colour inside the region
    colour = tinted.sum((2, 3))
    colour = colour / colour.amax(1, keepdim=True).clamp_min(1e-8)
    interior = (chroma > 0.9) & region_t
    inner = interior[:, None].float()
    pure = (img - lo[:, None]) / chroma[:, None].clamp_min(1e-3)
    count = inner.sum((2, 3)).clamp_min(1)
    object_std = (
        (((pure - colour[:, :, None, None]) ** 2 * inner).sum((2, 3)) / count).sqrt().amax(1)
    )

    # Background plane over grey pixels away from the object.
    grey = img.mean(1)  # [N, S, S]
    away = torch.from_numpy(
        ~ndimage.binary_dilation(region, structure=np.ones((1, 5, 5), bool))
    ) & (chroma < GREY_CHROMA)
    rel = centres - size / 2
    design = torch.stack(
        [
            torch.ones(size, size),
            rel[None, :].expand(size, size),
            rel[:, None].expand(size, size),
        ],
        dim=-1,
    ).reshape(-1, 3)  # [S*S, 3]: 1, x, y
    coef = torch.zeros(n, 3)
    keep = away.reshape(n, -1).clone()
    for _ in range(2):
        w = keep.float()
        lhs = torch.einsum("np,pi,pj->nij", w, design, design) + 1e-6 * torch.eye(3)
        rhs = torch.einsum("np,pi,np->ni", w, design, grey.reshape(n, -1))
        coef = torch.linalg.solve(lhs, rhs)
        resid = grey.reshape(n, -1) - coef @ design.T
        keep = away.reshape(n, -1) & (resid > -SHADOW_THRESHOLD)
    plane = (coef @ design.T).reshape(n, size, size)
    resid = grey - plane
    kept = keep.reshape(n, size, size).float()
    background_std = ((resid**2 * kept).sum((1, 2)) / kept.sum((1, 2)).clamp_min(1)).sqrt()
    gx, gy = coef[:, 1], coef[:, 2]
    ramp = torch.sqrt(gx**2 + gy**2) * size
    light = (torch.atan2(gy, gx) / (2 * math.pi)) % 1.0

    # Shadow: grey pixels clearly below the plane.
    shadow = ((resid < -SHADOW_THRESHOLD) & (chroma < GREY_CHROMA) & ~region_t).float()
    s_count = shadow.sum((1, 2))
    sx = (shadow.sum(1) * centres).sum(1) / s_count.clamp_min(1) - cx
    sy = (shadow.sum(2) * centres).sum(1) / s_count.clamp_min(1) - cy
    shadow_angle = (torch.atan2(sy, sx) / (2 * math.pi)) % 1.0
    turn = (shadow_angle - light - 0.5).abs() % 1.0
    shadow_error = torch.minimum(turn, 1 - turn)  # 0 when the shadow points away from the light

    iou, shape = best_template(alpha, scale, cx, cy)

    n_comp_t = torch.from_numpy(n_comp)
    valid = (
        (n_comp_t == 1)
        & (area >= 4)
        & (object_std < 0.1)
        & (background_std < 0.05)
        & ((ramp / RAMP - 1).abs() < 0.25)
        & (s_count >= 4)
        & (shadow_error < 0.125)
        & (iou >= 0.6)
    )
    factors = LitFactors(
        shape=shape,
        hue=rgb_to_hue(colour),
        scale=scale,
        x=cx,
        y=cy,
        background=coef[:, 0],
        light=light,
    )
    return LitReadout(
        factors=factors,
        valid=valid,
        n_components=n_comp_t,
        iou=iou,
        object_std=object_std,
        background_std=background_std,
        ramp=ramp,
        shadow_angle=shadow_angle,
    )
