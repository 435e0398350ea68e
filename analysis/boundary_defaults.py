"""The boundary engine's defaults as the command line applies them: ``workbench discover
boundary --attribute large`` (default space) then ``workbench edit`` with the set's
recorded working edit (mode, eta, strengths), scored with the read-out, against random
x directions moved as far in x_t at the same step.

    python analysis/boundary_defaults.py --model shapes32 \
        > docs/measurements/boundary_defaults_shapes32.txt
    python analysis/boundary_defaults.py --model shapes64 --timestep 99 --levels 0.5,1 \
        > docs/measurements/boundary_defaults_shapes64_t99.txt

Prints the fit, the working edit's scores (dominant factor, its spread per unit strength,
purity, validity), the mean move it makes in x_t (in preset x steps) and the scores of a
random x direction edited additively by that move.
"""

from __future__ import annotations

import argparse
import time

import workbench as wb
from workbench.engines.boundary import distance_move
from workbench.eval import score_directions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--attribute", default="large")
    parser.add_argument("--n-seeds", type=int, default=16)
    parser.add_argument("--space", default=None, help="h or x (default: the engine's)")
    parser.add_argument(
        "--timestep", type=int, default=None, help="fit there (default: the engine's step)"
    )
    parser.add_argument(
        "--levels",
        default=None,
        help="also score +-each of these strengths on its own, e.g. 4,2,1 (default: none)",
    )
    args = parser.parse_args()
    model = wb.load(args.model, device="cpu")
    seeds = list(range(args.n_seeds))
    began = time.time()
    given = {"space": args.space, "timestep": args.timestep}
    options = {k: v for k, v in given.items() if v is not None}
    ds = wb.discover("boundary", model, attribute=args.attribute, progress=False, **options)
    edit = ds.params["edit"]
    print(
        f"{args.model}: {ds.space}-space boundary of {args.attribute!r} at t = {ds.timestep}, "
        f"held-out accuracy {float(ds.scores[0]):.2f}, {time.time() - began:.0f} s; "
        f"recorded edit {edit}"
    )
    strengths = [s for s in edit["strengths"] if s != 0]
    scores = score_directions(model, ds, strengths=strengths, seeds=seeds, progress=False)
    print(scores.table())
    for level in [] if args.levels is None else [float(v) for v in args.levels.split(",")]:
        alone = score_directions(model, ds, strengths=[-level, level], seeds=seeds, progress=False)
        print(f"at +-{level:g} alone:")
        print(alone.table())
        if ds.space == "h" and edit.get("via_x"):
            move = float(distance_move(model, ds, [-level, level], seeds).mean())
            print(f"mean x_t move: {move:.2f} x steps")
    if ds.space == "h" and edit.get("via_x"):
        move = float(distance_move(model, ds, [min(strengths), max(strengths)], seeds).mean())
        print(f"mean x_t move at the end strengths: {move:.2f} x steps")
    else:
        move = max(abs(s) for s in strengths)
    rnd = wb.discover("random", model, k=3, space="x", seed=3, timestep=ds.timestep)
    control = score_directions(
        model, rnd, strengths=[-move, move], seeds=seeds, mode="additive", progress=False
    )
    print(f"random x directions, additive, +-{move:.2f} x steps:")
    print(control.table())
    factor = scores.dominant[0]  # effects are per unit strength: times the largest one
    j = scores.factors.index(factor)
    size = float(scores.effect[0, j]) * max(strengths)
    random_size = float(control.effect[:, j].max()) * move
    print(
        f"{factor} change at the largest strength: boundary {size:.3f} spreads, random x "
        f"at most {random_size:.3f} ({size / random_size:.1f}x); boundary valid "
        f"{float(scores.validity[0]):.2f}"
    )


if __name__ == "__main__":
    main()
