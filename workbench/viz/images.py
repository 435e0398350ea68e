"""Image grids as uint8 arrays and PNG files (written atomically)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from workbench.store import atomic_path

if TYPE_CHECKING:
    from workbench.editing import EditResult


def image_grid(images: torch.Tensor | np.ndarray, pad: int = 1, upscale: int = 1) -> np.ndarray:
    """Tile uint8 images ``[R, C, H, W, 3]`` (or ``[N, H, W, 3]`` as one row) into one array."""
    arr = np.asarray(images)
    if arr.ndim == 4:
        arr = arr[None]
    rows, cols, h, w, c = arr.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for r in range(rows):
        for k in range(cols):
            y, x = pad + r * (h + pad), pad + k * (w + pad)
            out[y : y + h, x : x + w] = arr[r, k]
    if upscale > 1:
        out = out.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return out


def edit_grid(result: EditResult, upscale: int = 2) -> np.ndarray:
    """Grid of an :class:`~workbench.editing.EditResult`: a row per sample, a column per
    strength."""
    images = result.uint8().permute(1, 0, 2, 3, 4)  # [N, S, H, W, 3]
    return image_grid(images, upscale=upscale)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 image ``[H, W, 3]`` encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 image array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp, format="PNG")
    return Path(path)
