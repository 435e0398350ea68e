"""Measure the Shapes factors back from pixels alone, no classifier.

Procedure, per image (``[N, 3, S, S]`` in [-1, 1]):

1. background colour: per-channel median of the one-pixel border ring;
2. foreground mask: pixels whose largest channel difference from the background exceeds
   0.25 (half the smallest object/background contrast the generator allows); connected
   components with 8-connectivity;
3. object colour: mean of the interior pixels (difference at least 90% of the largest);
4. soft coverage of each pixel near the object: projection of (pixel - background) onto
   (colour - background), clipped to [0, 1]; area, ``scale = sqrt(area)`` and centroid
   from it (sub-pixel);
5. hue of the object colour; shape class: best soft IoU against the three rendered
   templates at the measured centroid and scale;
6. validity: exactly one component, at least 4 pixels, uniform object colour (channel std
   of interior pixels below 0.1), uniform background (std below 0.05 away from the object),
   and a template IoU of at least 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from workbench.data.shapes import Factors, coverage
from workbench.errors import WorkbenchError

MASK_THRESHOLD = 0.25
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Readout:
    """Read-out factors (pixels for x, y, scale) plus diagnostics, each ``[N]``."""

    factors: Factors
    valid: torch.Tensor
    n_components: torch.Tensor
    iou: torch.Tensor
    object_std: torch.Tensor
    background_std: torch.Tensor

    def __len__(self) -> int:
        return len(self.factors)


def rgb_to_hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in [0, 1) of colours ``[N, 3]`` in [0, 1]."""
    r, g, b = rgb.unbind(-1)
    mx, _ = rgb.max(-1)
    mn, _ = rgb.min(-1)
    delta = (mx - mn).clamp_min(1e-8)
    hue = torch.where(
        mx == r,
        ((g - b) / delta) % 6,
        torch.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4),
    )
    return (hue / 6) % 1.0


def hue_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Circular distance between hues in [0, 1): at most 0.5."""
    d = (a - b).abs() % 1.0
    return torch.minimum(d, 1 - d)


def object_region(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image of ``mask`` ``[N, S, S]``: its largest 8-connected component dilated by one
    pixel (``[N, S, S]`` bool) and the number of components ``[N]``."""
    region = np.zeros_like(mask)
    n_comp = np.zeros(mask.shape[0], dtype=np.int64)
    for i in range(mask.shape[0]):
        labels, count = ndimage.label(mask[i], structure=_EIGHT)
        n_comp[i] = count
        if count:
            sizes = ndimage.sum_labels(mask[i], labels, index=np.arange(1, count + 1))
            biggest = labels == (1 + int(np.argmax(sizes)))
            region[i] = ndimage.binary_dilation(biggest, structure=_EIGHT)
    return region, n_comp


def soft_moments(alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Area, centroid x and y (pixels, sub-pixel) and scale = sqrt(area) of soft coverages
    ``alpha`` ``[N, S, S]``."""
    area = alpha.sum((1, 2))
    centres = torch.arange(alpha.shape[-1], dtype=torch.float32) + 0.5
    safe_area = area.clamp_min(1e-8)
    cx = (alpha.sum(1) * centres).sum(1) / safe_area
    cy = (alpha.sum(2) * centres).sum(1) / safe_area
    return area, cx, cy, area.sqrt()


def best_template(
    alpha: torch.Tensor, scale: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft IoU of ``alpha`` with the best of the three shape templates rendered at the
    measured centroid and scale, and that shape's class: ``(iou [N], shape [N])``."""
    n, size = alpha.shape[0], alpha.shape[-1]
    ious = []
    for kind in range(3):
        template = coverage(torch.full((n,), kind), scale, cx, cy, size)
        ious.append(
            torch.minimum(template, alpha).sum((1, 2))
            / torch.maximum(template, alpha).sum((1, 2)).clamp_min(1e-8)
        )
    return torch.stack(ious, 1).max(1)


def read_factors(images: torch.Tensor) -> Readout:
    """Read the Shapes factors of ``images`` ``[N, 3, S, S]`` in [-1, 1]."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise WorkbenchError(f"images must be [N, 3, S, S], got {list(images.shape)}")
    img = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    n, _, size, _ = img.shape
    ring = torch.cat(
        [img[:, :, 0, :], img[:, :, -1, :], img[:, :, 1:-1, 0], img[:, :, 1:-1, -1]], dim=2
    )
    bg = ring.median(dim=2).values  # [N, 3]
    diff = img - bg[:, :, None, None]
    mag = diff.abs().amax(1)  # [N, S, S]
    mask = (mag > MASK_THRESHOLD).numpy()

    region, n_comp = object_region(mask)
    region_t = torch.from_numpy(region)

    peak = (mag * region_t).amax((1, 2), keepdim=True)
    interior = (mag >= 0.9 * peak) & region_t & (peak > MASK_THRESHOLD)
    inner = interior[:, None].float()
    count = inner.sum((2, 3)).clamp_min(1)
    colour = (img * inner).sum((2, 3)) / count  # [N, 3]
    object_std = (
        (((img - colour[:, :, None, None]) ** 2 * inner).sum((2, 3)) / count).sqrt().amax(1)
    )

    contrast = colour - bg
    alpha = (diff * contrast[:, :, None, None]).sum(1) / (contrast**2).sum(1).clamp_min(1e-8)[
        :, None, None
    ]
    alpha = alpha.clamp(0, 1) * region_t
    area, cx, cy, scale = soft_moments(alpha)

    outside = torch.from_numpy(~ndimage.binary_dilation(region, structure=np.ones((1, 3, 3), bool)))
    out_f = outside[:, None].float()
    out_count = out_f.sum((2, 3)).clamp_min(1)
    background_std = (
        (((img - bg[:, :, None, None]) ** 2 * out_f).sum((2, 3)) / out_count).sqrt().amax(1)
    )

    iou, shape = best_template(alpha, scale, cx, cy)

    n_comp_t = torch.from_numpy(n_comp)
    valid = (
        (n_comp_t == 1) & (area >= 4) & (object_std < 0.1) & (background_std < 0.05) & (iou >= 0.6)
    )
    factors = Factors(
        shape=shape, hue=rgb_to_hue(colour), scale=scale, x=cx, y=cy, background=bg.mean(1)
    )
    return Readout(
        factors=factors,
        valid=valid,
        n_components=n_comp_t,
        iou=iou,
        object_std=object_std,
        background_std=background_std,
    )
