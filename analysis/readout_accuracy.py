"""Accuracy of a scene's analytic read-out on generated images, and generator speed.

    python analysis/readout_accuracy.py [--scene shapes|lit-shapes] [--n 4096] [--size 32]

Prints the worst-case and mean errors of every factor against the generating factors,
shape accuracy and validity; then images per second of the generator and the read-out.
"""

from __future__ import annotations

import argparse
import time

import torch

from workbench.data.readout import hue_distance
from workbench.data.scenes import SCENES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--scene", default="shapes", choices=sorted(SCENES))
    parser.add_argument("--size", type=int, default=None, help="32 for shapes, 64 for lit-shapes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scene = SCENES[args.scene]
    args.size = args.size or (32 if args.scene == "shapes" else 64)
    scene.generate(64, size=args.size)  # warm-up
    start = time.perf_counter()
    images, truth = scene.generate(args.n, size=args.size, seed=args.seed)
    gen_rate = args.n / (time.perf_counter() - start)
    start = time.perf_counter()
    read = scene.read(images)
    read_rate = args.n / (time.perf_counter() - start)
    got = read.factors
    errors = {
        "x (px)": (got.x - truth.x).abs(),
        "y (px)": (got.y - truth.y).abs(),
        "scale (relative)": ((got.scale - truth.scale) / truth.scale).abs(),
        "hue (circular)": hue_distance(got.hue, truth.hue),
        "background": (got.background - truth.background).abs(),
    }
    if "light" in scene.factor_names:
        errors["light (circular, turns)"] = hue_distance(got.light, truth.light)
    print(
        f"{args.scene} read-out on {args.n} generated {args.size}x{args.size} images "
        f"(seed {args.seed})"
    )
    print("| factor | mean error | max error |\n| --- | --- | --- |")
    for name, err in errors.items():
        print(f"| {name} | {float(err.mean()):.4f} | {float(err.max()):.4f} |")
    print(f"| shape accuracy | {float((got.shape == truth.shape).float().mean()):.4f} | |")
    print(f"| validity | {float(read.valid.float().mean()):.4f} | |")
    print(
        f"\ngenerator: {gen_rate:,.0f} images/s; read-out: {read_rate:,.0f} images/s "
        f"({torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
