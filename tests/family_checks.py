"""What every family's end-to-end test runs: each engine and probe at tiny sizes, on image
folders written for the model's image shape (test_transformers and test_families)."""

from __future__ import annotations

from pathlib import Path

import torch

#: Options of each engine but the boundary (which needs labelled images).
ENGINES = {
    "random": {"space": "h"},
    "attention": {},
    "pca": {"n": 4, "num_steps": 4, "progress": False},
    "pullback": {"num_steps": 4, "max_iter": 3},
    "local": {"num_steps": 4, "max_iter": 3, "outside": 2},  # centre box, pooled to x_t
}


def probes(images: Path) -> dict[str, dict]:
    """Options of each probe (``images``: a folder of real images for norm, mixing-step)."""
    return {
        "norm": {"n": 8, "images": str(images)},
        "mixing-step": {"n": 8, "images": str(images), "projections": 4},
        "curvedness": {"n": 2, "points": 3, "timesteps": [801, 401]},
        "spectrum": {"n": 1, "k": 2, "timesteps": [801], "hutchinson": 2},
        "consistency": {"n": 2, "k": 2, "timesteps": [801]},
        "umap": {"n": 8, "timesteps": [801, 401], "umap_neighbors": 4, "neighbours_count": 3},
    }


def labelled_boundary(model, labelled: Path, space: str):
    """The boundary of the ``bright`` class of ``labelled`` (``write_images``) at t = 301,
    fitted in ``space``; then no hook, point or conditioning is left on ``model``."""
    import workbench as wb

    ds = wb.discover("boundary", model, labels=str(labelled), positive="bright", timestep=301,
                     num_steps=4, space=space)  # fmt: skip
    assert model.hook_count() == 0 and model.h_point == model.default_point
    assert model._conditioning is None
    return ds


def write_images(folder: Path, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    """16 random images in ``folder`` and a ``labelled/`` folder of 12 bright and 12 dark
    ones (classes ``bright``/``dark``), all of image shape ``(3, H, W)``; the two folders."""
    from PIL import Image

    _, height, width = shape
    gen = torch.Generator().manual_seed(1)
    for i in range(16):
        pixels = torch.randint(0, 256, (height, width, 3), generator=gen, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{i:02d}.png")
    for cls, level in (("bright", 200), ("dark", 50)):
        (folder / "labelled" / cls).mkdir(parents=True)
        for i in range(12):
            noise = torch.randint(-30, 31, (height, width, 3), generator=gen)
            pixels = (level + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / "labelled" / cls / f"{i}.png")
    return folder, folder / "labelled"
