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

Images are read as RGB, centre-cropped to a square and resized (bicubic) to the model's
sample size, and returned in [-1, 1] as ``[N, 3, S, S]`` float32, in a stable order
(sorted file names per class; CSV row order).
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
    resized = 0
    for path in paths:
        try:
            with Image.open(path) as img:
                resized += img.size != (size, size)
        except (UnidentifiedImageError, OSError):
            pass  # load_image says what is wrong with it
    return ReadImages(torch.stack([load_image(p, size) for p in paths]), paths, resized)


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """One image file as ``[3, size, size]`` in [-1, 1] (centre crop, bicubic resize)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise WorkbenchError(f"image {path} is too large ({w}x{h} pixels)")
            img = img.convert("RGB")
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side))
            if side != size:
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            array = np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise WorkbenchError(f"image not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise WorkbenchError(f"image {path} is too large (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise WorkbenchError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


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
