"""Time DDIM sampling on a model: ``python analysis/bench_sampling.py [--model shapes32]``.

Prints the wall time of sampling ``--n`` images with ``--steps`` DDIM steps (eta 0) side
by side with the same run at one thread, as a baseline for the thread scaling.
"""

from __future__ import annotations

import argparse

import torch

import workbench as wb
from workbench.bench import BenchReport, timed
from workbench.options import add_renamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n", type=int, default=64)
    add_renamed(parser, "--num-steps", "--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = wb.load(args.model)
    threads = torch.get_num_threads()
    report = BenchReport(
        f"DDIM sampling, {args.n} images x {args.num_steps} steps, {model!r}",
        info={"device": str(model.device)},
    )
    run = lambda: wb.sample(model, seeds=range(args.n), num_steps=args.num_steps, progress=False)
    torch.set_num_threads(1)
    report.add("1 thread (baseline)", timed(run, args.repeats))
    torch.set_num_threads(threads)
    report.add(f"{threads} threads", timed(run, args.repeats))
    print(report.table(baseline="1 thread (baseline)"))


if __name__ == "__main__":
    main()
