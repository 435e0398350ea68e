"""h edits under several h windows, scored against the ground truth: where should the
window end, at the peak of the h reach curve (``analysis/h_effect.py``), at the preset's
end, or where the curve falls under half its peak? (docs/findings.md, "Where h reaches
the image"; the three runs behind docs/measurements/h_window_compare_shapes64_equal.json:)

    python analysis/h_window_compare.py --model shapes64 --windows 999,600 999,479 \
        --engines pca attention --k 6 --seeds 24 --equal-total \
        --out docs/measurements/h_window_compare_shapes64_equal.json
    python analysis/h_window_compare.py --model shapes64 --windows 999,719 \
        --engines attention --k 6 --seeds 24 --equal-total --reference-steps 8
    python analysis/h_window_compare.py --model shapes64 --windows 999,719 \
        --engines pca --k 6 --seeds 24 --equal-total --reference-steps 8

The top ``--k`` directions of each h-space engine (one set per engine, the same vectors
under every window) are applied with the additive h edit at ``--strengths`` on
``--seeds`` seeds, once per window, and scored by the scene's read-out
(``workbench.eval.directions``): the change of the dominant factor (in factor spreads)
at the largest strength, purity (the dominant factor's share of the change), validity
(edited images the read-out still accepts). A longer window adds h_step at more steps;
``--equal-total`` scales each window's strengths by (steps in the first window) / (steps
in this one; ``--reference-steps`` sets the first), so that every window adds the same
total shift to h.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time

import torch

import workbench as wb
from workbench.engines import get_engine
from workbench.eval.directions import score_directions
from workbench.options import add_renamed
from workbench.sampling import make_timesteps
from workbench.store import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--windows", nargs="+", default=["999,600", "999,479"])
    parser.add_argument("--engines", nargs="+", default=["pca"])
    parser.add_argument("--k", type=int, default=4)
    add_renamed(parser, "--n-seeds", "--seeds", type=int, default=16)
    parser.add_argument("--strengths", default="-2,0,2")
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--equal-total", action="store_true")
    parser.add_argument(
        "--reference-steps",
        type=int,
        default=None,
        help="with --equal-total: the steps whose total every window matches "
        "(default: the first window's)",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    grid = make_timesteps(model, args.num_steps)[:-1]
    windows = [tuple(int(v) for v in text.split(",")) for text in args.windows]
    counts = [sum(lo <= t <= hi for t in grid) for hi, lo in windows]
    reference = args.reference_steps or counts[0]
    rows: dict[str, dict] = {}
    for engine in args.engines:
        takes = {o.name for o in get_engine(engine).spec.options}
        steps = {"num_steps": args.num_steps} if "num_steps" in takes else {}
        directions = wb.discover(engine, model, k=args.k, **steps)
        rows[engine] = {}
        for window, count in zip(windows, counts, strict=True):
            scale = reference / count if args.equal_total else 1.0
            strengths = [scale * float(v) for v in args.strengths.split(",")]
            start = time.perf_counter()
            windowed = dataclasses.replace(directions, timestep=list(window))  # same vectors
            scores = score_directions(
                model, windowed, strengths=strengths, seeds=range(args.n_seeds),
                num_steps=args.num_steps, progress=False,
            )  # fmt: skip
            top = max(scores.levels)
            dominant = [scores.factors.index(f) for f in scores.dominant]
            change = [float(scores.effect_by_level[i, -1, f]) * top for i, f in enumerate(dominant)]
            key = f"{window[0]},{window[1]}"
            rows[engine][key] = {
                "seconds": time.perf_counter() - start,
                "steps_in_window": count,
                "strengths": strengths,
                "dominant": scores.dominant,
                "change_dominant_at_top": [round(v, 4) for v in change],
                "purity": [round(float(v), 4) for v in scores.purity],
                "validity": [round(float(v), 4) for v in scores.validity],
            }
            r = rows[engine][key]
            print(
                f"{engine} window {window} ({count} steps, strengths {strengths}): dominant "
                f"{scores.dominant}, change {r['change_dominant_at_top']} (mean "
                f"{sum(change) / len(change):.3f}), purity {r['purity']} (mean "
                f"{float(scores.purity.mean()):.3f}), validity mean "
                f"{float(scores.validity.mean()):.3f}",
                flush=True,
            )
        first, *others = rows[engine].values()
        for key, other in zip(args.windows[1:], others, strict=True):
            diff = [b - a for a, b in zip(first["purity"], other["purity"], strict=True)]
            wins = sum(d > 0 for d in diff)
            rows[engine][key]["purity_minus_first"] = [round(d, 4) for d in diff]
            print(
                f"{engine}: purity {key} minus {args.windows[0]}: mean "
                f"{sum(diff) / len(diff):+.3f}, higher for {wins} of {len(diff)} directions"
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
