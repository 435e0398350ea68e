"""Are shapes64's missing squares the model's or the read-out's?

    python analysis/shapes64_shape_check.py --num-steps 20,50 --grids DIR \\
        --out docs/measurements/shapes64_shape_check.json

Samples seeds 0..N-1 at each step count, reads the shape of every sample, and writes the
counts per shape (disc, square, triangle) and, with ``--grids DIR``, one PNG grid per read
shape (every sample read as that shape, to check the read-out by eye).
"""

from __future__ import annotations

import argparse
import time

import torch

import workbench as wb
from workbench.options import add_renamed
from workbench.store import write_json
from workbench.trajectories import model_scene
from workbench.viz.images import image_grid, save_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--n", type=int, default=96)
    add_renamed(parser, "--num-steps", "--steps", default="20,50,200")
    parser.add_argument("--grids", default=None, help="folder for the per-shape grids")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model, device="cpu")
    scene = model_scene(model)
    rows = {}
    for steps in [int(s) for s in args.num_steps.split(",")]:
        began = time.perf_counter()
        images = wb.sample(model, seeds=range(args.n), num_steps=steps, progress=False)
        read = scene.read(images)
        counts = torch.bincount(read.factors.shape[read.valid].long(), minlength=3).tolist()
        rows[steps] = {
            "valid": float(read.valid.float().mean()),
            "disc_square_triangle": counts,
            "seconds": time.perf_counter() - began,
        }
        print(steps, "steps:", rows[steps], flush=True)
        if args.grids and steps == 50:
            pictures = model.to_uint8(images).numpy()
            for shape in range(3):
                chosen = [
                    i
                    for i in range(args.n)
                    if read.valid[i] and int(read.factors.shape[i]) == shape
                ]
                if chosen:
                    save_png(f"{args.grids}/shape{shape}.png", image_grid(pictures[chosen][None]))
    if args.out:
        write_json(
            args.out,
            {"command": "python analysis/shapes64_shape_check.py", "n": args.n, "runs": rows},
        )


if __name__ == "__main__":
    main()
