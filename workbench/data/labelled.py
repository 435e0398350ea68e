"""Labelled real images from disk, for boundaries of user attributes.

Two layouts (``load_labelled``):

- a **folder with two sub-folders**, one per class: ``root/smiling/*.png`` and
  ``root/not-smiling/*.png``; ``positive`` names the sub-folder whose images are labelled
  True;
- a **CSV file** with an image path and a label per row (``path,label``; a header row
  naming the columns is optional; paths relative to the CSV's folder); ``positive`` names
  the label value that means True.

``positive`` may be left out when the two class names are an obvious pair: ``0``/``1``,
``false``/``true``, ``no``/``yes``, ``negative``/``positive`` (any case).

Images are read by mode (8-bit modes through RGB, 16-bit and float greyscale at their own
range; see :func:`load_image`), centre-cropped to a square and resized (bicubic) to the
model's sample size, and returned in [-1, 1] as ``[N, 3, S, S]`` float32, in a stable
order (sorted file names per class; CSV row order).
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from workbench.errors import WorkbenchError

#: Largest image read (pixels): far above any photo a user labels, far below a bomb.
MAX_PIXELS = 8192 * 8192

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
#: (negative, positive) pairs recognised without ``positive=``
OBVIOUS_PAIRS = (("0", "1"), ("false", "true"), ("no", "yes"), ("negative", "positive"))


@dataclass
class LabelledImages:
    """Images ``[N, 3, S, S]`` in [-1, 1], labels ``[N]`` bool, and where each came from."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    positive: str
    negative: str

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ReadImages:
    """Image files read for a model: ``images`` ``[N, 3, S, S]`` in [-1, 1], their
    ``paths``, and how many had to be centre-cropped or resized (``resized``)."""

    images: torch.Tensor
    paths: list[Path]
    resized: int


def read_images(source: str | Path, size: int) -> ReadImages:
    """One image file, or every image file directly in a folder (sorted by name), as
    :func:`load_image` reads them; counts those not already ``size`` x ``size``."""
    paths = image_paths(source)
    resized = 0
    for path in paths:
        try:
            with Image.open(path) as img:
                resized += img.size != (size, size)
        except (UnidentifiedImageError, OSError):
            pass  # load_image says what is wrong with it
    return ReadImages(torch.stack([load_image(p, size) for p in paths]), paths, resized)


def image_paths(source: str | Path) -> list[Path]:
    """The image files :func:`read_images` reads: ``source`` itself, or every image file
    directly in the folder ``source``, sorted by name."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(
            p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            raise WorkbenchError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    elif source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise WorkbenchError(f"{source}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
        paths = [source]
    else:
        raise WorkbenchError(f"{source}: no such image file or folder")
    return paths


#: Modes of more than 8 bits a channel, read at their own range (not through 8-bit RGB):
#: 16-bit greyscale (``I;16*``, or ``I`` as PNG's 16-bit files open) over [0, 65535], and
#: 32-bit float (``F``, e.g. TIFF) over [0, 1].
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """One image file as ``[3, size, size]`` in [-1, 1] (centre crop, bicubic resize).

    Read by mode: 8-bit modes (greyscale, palette, RGB, RGBA and LA, whose alpha is
    dropped, CMYK, ...) through RGB over [0, 255]; 16-bit greyscale over [0, 65535];
    float greyscale over [0, 1], a file with values outside it refused in one line (not
    used clipped). The header's size is checked before anything is decoded.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise WorkbenchError(f"image {path} is too large ({w}x{h} pixels)")
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            box = (left, top, left + side, top + side)
            if img.mode in HIGH_BIT_MODES:
                return _high_bit(img, box, size, path)
            img = img.convert("RGB").crop(box)
            if side != size:
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            array = np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise WorkbenchError(f"image not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise WorkbenchError(f"image {path} is too large (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, WorkbenchError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"cannot read image {path}: {first}") from None
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def _high_bit(img: Image.Image, box: tuple[int, ...], size: int, path: Path) -> torch.Tensor:
    """A 16-bit or float greyscale image at its own range, resized in float."""
    array = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        if not np.isfinite(array).all():
            raise WorkbenchError(f"image {path}: float pixels must lie in [0, 1], found NaN/inf")
        if array.min() < 0 or array.max() > 1:
            raise WorkbenchError(
                f"image {path}: float pixels must lie in [0, 1], found "
                f"[{array.min():.4g}, {array.max():.4g}]"
            )
    else:
        if array.min() < 0 or array.max() > 65535:
            raise WorkbenchError(f"image {path}: pixel values outside 16 bits")
        array = array / 65535.0
    grey = Image.fromarray(array.astype(np.float32), mode="F").crop(box)
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.Resampling.BICUBIC)
    values = np.clip(np.asarray(grey, dtype=np.float32), 0.0, 1.0)
    return torch.from_numpy(values)[None].expand(3, -1, -1).clone() * 2.0 - 1.0


def _pick_positive(names: list[str], positive: str | None, where: str) -> str:
    if len(names) != 2:
        raise WorkbenchError(
            f"{where}: expected exactly two classes, found {len(names)}: {', '.join(names)}"
        )
    if positive is not None:
        if positive not in names:
            raise WorkbenchError(
                f"{where}: positive class {positive!r} is not one of {', '.join(names)}"
            )
        return positive
    lowered = {n.lower(): n for n in names}
    for negative_name, positive_name in OBVIOUS_PAIRS:
        if set(lowered) == {negative_name, positive_name}:
            return lowered[positive_name]
    raise WorkbenchError(
        f"{where}: say which class is positive (positive=...); classes: {', '.join(names)}"
    )


def _from_folder(root: Path) -> tuple[list[Path], list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, names = [], []
    for name in classes:
        files = sorted(
            p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        paths += files
        names += [name] * len(files)
    if not paths:
        raise WorkbenchError(f"{root}: no images in sub-folders (expected root/<class>/*.png)")
    return paths, names


def _from_csv(path: Path) -> tuple[list[Path], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise WorkbenchError(f"{path}: no rows (expected path,label per line)")
    paths, names = [], []
    for number, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise WorkbenchError(f"{path}: row {number} is not 'path,label': {','.join(row)}")
        paths.append(path.parent / row[0].strip())
        names.append(row[1].strip())
    return paths, names


def load_images(folder: str | Path, size: int) -> torch.Tensor:
    """Every image file directly in ``folder`` (sorted by name) as ``[N, 3, size, size]`` in
    [-1, 1], read as :func:`load_image` reads one (unlabelled: reference images)."""
    if not Path(folder).is_dir():
        raise WorkbenchError(f"{folder}: not a folder of images")
    return read_images(folder, size).images


def load_labelled(source: str | Path, size: int, positive: str | None = None) -> LabelledImages:
    """Images and boolean labels from a class-folder layout or a CSV file (module docs)."""
    source = Path(source)
    if source.is_dir():
        paths, names = _from_folder(source)
    elif source.is_file() and source.suffix.lower() == ".csv":
        paths, names = _from_csv(source)
    elif source.exists():
        raise WorkbenchError(f"{source}: expected a folder of class folders or a .csv file")
    else:
        raise WorkbenchError(f"labelled images not found: {source}")
    classes = sorted(set(names))
    chosen = _pick_positive(classes, positive, str(source))
    negative = next(c for c in classes if c != chosen)
    images = torch.stack([load_image(p, size) for p in paths])
    labels = torch.tensor([n == chosen for n in names], dtype=torch.bool)
    return LabelledImages(images, labels, paths, chosen, negative)
