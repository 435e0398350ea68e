"""Why the default demo's sizes on shapes64: sample validity of the grid's first seeds by
number of DDIM steps, and the boundary's held-out accuracy by inversion steps.

    python analysis/demo_sizes.py [--model shapes64] \
        > docs/measurements/demo_sizes_shapes64.txt

Prints, per number of sampling steps, which of seeds 0-7 the read-out calls valid (the
demo's grids show seeds 0..n-1), and per number of inversion steps the held-out accuracy
and seconds of ``discover boundary --attribute large`` on 64 images (the demo's).
"""

from __future__ import annotations

import argparse
import time

import workbench as wb
from workbench.trajectories import model_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    args = parser.parse_args()
    model = wb.load(args.model, device="cpu")
    scene = model_scene(model)
    for steps in (10, 12, 14, 15, 16, 20):
        images = wb.sample(model, seeds=range(8), num_steps=steps, progress=False)
        valid = scene.read(images).valid.int().tolist()
        print(f"{steps:>2} sampling steps: seeds 0-7 valid {valid}")
    for steps in (5, 10, 20):
        began = time.perf_counter()
        ds = wb.discover("boundary", model, attribute="large", images=64, num_steps=steps,
                         progress=False)  # fmt: skip
        print(f"{steps:>2} inversion steps: held-out accuracy {float(ds.scores[0]):.3f}, "
              f"{time.perf_counter() - began:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
