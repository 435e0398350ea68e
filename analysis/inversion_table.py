"""Inversion methods side by side on shapes32: reconstruction, cost, where the latents land,
and what that does to the mixing step.

    python analysis/inversion_table.py --out docs/measurements/inversion_shapes32.json

For each method (plain DDIM inversion; fixed-point inversion with 3 and 10 refinements per
step) and grid (20 and 50 steps): ``n`` images of the Shapes scene inverted to the top of
the chain and sampled back on the same grid. Reported: MSE and PSNR (images in [-1, 1],
peak-to-peak 2) of the reconstruction, seconds of the inversion and its ratio to plain
DDIM's in the same run, and ||x_T|| / sqrt(d) (sampled x_T: about 1). Then the mixing step
(``find_mixing_step``, ``--mixing-n`` sampled and as many inverted trajectories on a
``--mixing-steps`` grid) with each inversion.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

import workbench as wb
from workbench.data.scenes import get_scene
from workbench.options import add_renamed
from workbench.probes.mixing import find_mixing_step
from workbench.sampling import invert, make_timesteps, run_chain

METHODS = (("ddim", 0), ("fixed-point", 3), ("fixed-point", 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    add_renamed(parser, "--num-steps", "--steps", default="20,50")
    parser.add_argument("--mixing-n", type=int, default=64)
    parser.add_argument("--mixing-steps", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = wb.load("shapes32", device="cpu")
    images = get_scene(None).generate(args.n, size=32, seed=3)[0]
    rows = []
    for steps in (int(s) for s in args.num_steps.split(",")):
        grid = make_timesteps(model, steps)
        base = None
        for method, refine in METHODS:
            began = time.perf_counter()
            x_T = invert(model, images, steps, method=method, refine=refine, progress=False)
            seconds = time.perf_counter() - began
            base = seconds if base is None else base
            back = run_chain(model, x_T, grid, progress=False)
            mse = float(((back - images) ** 2).mean())
            norms = x_T.flatten(1).norm(dim=1) / math.sqrt(model.d)
            rows.append(
                {
                    "steps": steps,
                    "method": method,
                    "refine": refine,
                    "mse": mse,
                    "psnr_db": 10 * math.log10(4 / mse),
                    "seconds": seconds,
                    "time_vs_ddim": seconds / base,
                    "norm_x_T_over_sqrt_d": float(norms.mean()),
                    "norm_x_T_std": float(norms.std()),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    mixing = {}
    for method in ("ddim", "fixed-point"):
        found = find_mixing_step(
            model, n=args.mixing_n, num_steps=args.mixing_steps, inversion=method, progress=False
        )
        mixing[method] = {"mixing_step": found.mixing_step, "summary": found.summary()}
        print(method, found.summary(), flush=True)
    result = {
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "n": args.n,
        "rows": rows,
        "mixing_steps": args.mixing_steps,
        "mixing_step": mixing,
    }
    if args.out:
        from workbench.store import write_json

        write_json(args.out, result)
        print("wrote", args.out)


if __name__ == "__main__":
    main()
