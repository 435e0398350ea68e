"""Does the boundary engine's fitting step move with the inversion? Fit the boundary of one
attribute at (inversion, timestep) pairs and score each against the ground truth.

For each pair: ``wb.discover("boundary", ...)`` inverts ``--images`` labelled scene images to
t (plain DDIM or the fixed-point inversion) and fits the SVM (its held-out accuracy is the
set's score); the direction is then edited with the set's recorded working edit on
``--seeds`` sampled seeds and scored against the read-out (``score_directions``: effect of
the dominant factor in factor spreads per unit strength, purity, validity).

    python analysis/boundary_inversion.py --out docs/measurements/boundary_inversion_shapes32.json
"""

from __future__ import annotations

import argparse
import time

import workbench as wb
from workbench.eval.directions import score_directions
from workbench.options import add_renamed
from workbench.store import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--attribute", default="large")
    parser.add_argument("--space", default="x", choices=("x", "h"))
    parser.add_argument(
        "--pairs",
        default="ddim:59,fixed-point:59,fixed-point:249",
        help="inversion:timestep pairs, comma-separated",
    )
    parser.add_argument("--images", type=int, default=128, help="labelled images fitted")
    add_renamed(
        parser, "--n-seeds", "--seeds", type=int, default=16, help="sampled seeds edited and scored"
    )
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument(
        "--strengths",
        default=None,
        help="signed distances in x_step / h_step units (default: -2..2 for x, the demo's "
        "-0.3..0.3 for h)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model)
    default = "-2,-1,0,1,2" if args.space == "x" else "-0.3,-0.15,0,0.15,0.3"
    strengths = [float(s) for s in (args.strengths or default).split(",")]
    rows = []
    print(
        f"{'inversion':<12}{'t':>5}{'accuracy':>10}{'dominant':>12}{'effect':>9}"
        f"{'purity':>8}{'valid':>7}{'seconds':>9}"
    )
    for pair in args.pairs.split(","):
        inversion, t = pair.split(":")
        began = time.perf_counter()
        directions = wb.discover(
            "boundary",
            model,
            attribute=args.attribute,
            space=args.space,
            timestep=int(t),
            images=args.images,
            num_steps=args.num_steps,
            inversion=inversion,
        )
        fitted = time.perf_counter() - began
        scores = score_directions(
            model,
            directions,
            strengths=strengths,
            seeds=range(args.n_seeds),
            num_steps=args.num_steps,
            progress=False,
        )
        row = {
            "inversion": inversion,
            "t": int(t),
            "accuracy": float(directions.scores[0]),
            "dominant": scores.dominant[0],
            "effect": float(scores.effect[0].max()),
            "purity": float(scores.purity[0]),
            "validity": float(scores.validity[0]),
            "strengths": scores.strengths,
            "seconds_fit": round(fitted, 1),
        }
        rows.append(row)
        print(
            f"{inversion:<12}{int(t):>5}{row['accuracy']:>10.3f}{row['dominant']:>12}"
            f"{row['effect']:>9.3f}{row['purity']:>8.2f}{row['validity']:>7.2f}{fitted:>9.0f}"
        )
    if args.out:
        write_json(args.out, {"command": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
