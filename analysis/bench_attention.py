"""Time the data-free attention engine: ``python analysis/bench_attention.py [--model M]``.

Two tables, side by side in one run:

1. Discovery: every candidate matrix (q, k, v, o, qk, ov) of the mid-block self-attention,
   against one U-Net forward pass on one image as the unit of comparison.
2. Time per edited image, full pipeline, same model and the same number of DDIM steps
   (the preset's) from x_T to the image:

   - pullback (baseline): DDIM from x_T to the preset's ``x_timestep``, the local basis
     of that sample there (k directions, our fast engine), one edit along its top
     direction down to 0;
   - attention: the directions of one matrix (weights only) and one edit over the h
     window from x_T.

   The published claim for the attention method is about 60% less editing time than
   existing methods.
"""

from __future__ import annotations

import argparse

import workbench as wb
from workbench.bench import BenchReport, timed
from workbench.directions import DirectionSet
from workbench.engines.attention import all_variants, attention_directions
from workbench.engines.pullback import local_basis
from workbench.sampling import make_timesteps, run_chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--device", default=None)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--edit-repeats", type=int, default=3)
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    x = model.noise([0])
    report = BenchReport(f"attention engine on {model!r}", info={"device": str(model.device)})
    report.add(
        "one U-Net forward, 1 image (baseline)", timed(lambda: model.eps(x, 500), args.repeats)
    )
    report.add(
        f"all 6 variants, k={args.k}", timed(lambda: all_variants(model, k=args.k), args.repeats)
    )
    print(report.table(baseline="one U-Net forward, 1 image (baseline)"))

    t = model.preset.x_timestep
    grid = make_timesteps(model, include=[t])
    trunk, rest = grid[: grid.index(t) + 1], len(grid) - 1 - grid.index(t)

    def pullback_pipeline() -> None:
        x_t = run_chain(model, model.noise([0]), trunk, progress=False)
        basis = local_basis(model, x_t, t, k=args.k, dtype=model.dtype)
        ds = DirectionSet(
            vectors=basis.V[0],
            space="x",
            timestep=t,
            engine="pullback",
            model_fingerprint=model.fingerprint,
        )
        wb.edit(model, ds, 0, [1.0], x=x_t, t_start=t, num_steps=rest, progress=False)

    def attention_pipeline() -> None:
        ds = attention_directions(model, k=args.k, matrix="qk")
        wb.edit(model, ds, 0, [1.0], seeds=[0], progress=False)

    steps = model.preset.num_inference_steps
    per_image = BenchReport(
        f"time per edited image, {steps} DDIM steps from x_T, k={args.k}",
        info={"device": str(model.device), "pullback timestep": str(t)},
    )
    base = f"pullback: x_T->x_{t}, basis, edit"
    per_image.add(base, timed(pullback_pipeline, args.edit_repeats))
    per_image.add("attention (qk): directions, edit", timed(attention_pipeline, args.edit_repeats))
    print()
    print(per_image.table(baseline=base))


if __name__ == "__main__":
    main()
