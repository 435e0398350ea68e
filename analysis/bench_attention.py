"""Time the data-free attention engine: ``python analysis/bench_attention.py [--model M]``.

Discovering every candidate matrix (q, k, v, o, qk, ov) of the mid-block self-attention,
side by side with one forward pass of the U-Net on one image as the unit of comparison.
"""

from __future__ import annotations

import argparse

import workbench as wb
from workbench.bench import BenchReport, timed
from workbench.engines.attention import all_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    model = wb.load(args.model)
    x = model.noise([0])
    report = BenchReport(f"attention engine on {model!r}", info={"device": str(model.device)})
    report.add(
        "one U-Net forward, 1 image (baseline)", timed(lambda: model.eps(x, 500), args.repeats)
    )
    report.add(
        f"all 6 variants, k={args.k}", timed(lambda: all_variants(model, k=args.k), args.repeats)
    )
    print(report.table(baseline="one U-Net forward, 1 image (baseline)"))


if __name__ == "__main__":
    main()
