"""h edits with the preset's h window against a measured one, scored against the ground
truth: does the window that ``analysis/h_effect.py`` reads (from T down to where the
effect along the top pullback direction first falls under half its mid-chain peak) edit
better than the preset's?

    python analysis/h_window_compare.py --model shapes64 --windows 999,600 999,479 \
        --out docs/measurements/h_window_compare_shapes64.json

The top ``--k`` PCA directions of h (the ``pca`` engine, one set for every window) are
applied with the additive h edit at ``--strengths`` on ``--seeds`` seeds, once per
window, and scored by the scene's read-out (``workbench.eval.directions``): effect per
unit strength on the dominant factor, purity (the dominant factor's share of the
change), validity (edited images the read-out still accepts).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time

import torch

import workbench as wb
from workbench.eval.directions import score_directions
from workbench.store import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--windows", nargs="+", default=["999,600", "999,479"])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--strengths", default="-2,0,2")
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    directions = wb.discover("pca", model, k=args.k, num_steps=args.num_steps)
    strengths = [float(v) for v in args.strengths.split(",")]
    rows = {}
    for text in args.windows:
        window = tuple(int(v) for v in text.split(","))
        start = time.perf_counter()
        windowed = dataclasses.replace(directions, timestep=list(window))  # same vectors
        scores = score_directions(
            model, windowed, strengths=strengths, seeds=range(args.seeds),
            num_steps=args.num_steps, progress=False,
        )  # fmt: skip
        dominant = scores.effect.max(1).values
        rows[text] = {
            "seconds": time.perf_counter() - start,
            "dominant": scores.dominant,
            "effect_dominant": [round(float(v), 4) for v in dominant],
            "purity": [round(float(v), 4) for v in scores.purity],
            "validity": [round(float(v), 4) for v in scores.validity],
        }
        print(
            f"window {window}: dominant {scores.dominant}, effect "
            f"{rows[text]['effect_dominant']} (mean {float(dominant.mean()):.3f}), purity "
            f"{rows[text]['purity']} (mean {float(scores.purity.mean()):.3f}), validity mean "
            f"{float(scores.validity.mean()):.3f}"
        )
    if args.out:
        write_json(
            args.out,
            {
                "command": "python analysis/h_window_compare.py " + shlex.join(sys.argv[1:]),
                "torch": torch.__version__,
                "results": rows,
            },
        )


if __name__ == "__main__":
    main()
