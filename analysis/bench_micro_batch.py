"""What bit-exactness across batch sizes costs: sampling with ``model.micro_batch`` set
against the default (one U-Net call per batch), side by side.

    python analysis/bench_micro_batch.py [--model shapes32] [--micro-batch 8]
        [--seeds 1,8,64] [--steps 20] [--repeats 3]

For each number of seeds: the wall time of ``wb.sample`` (eta 0) without and with
micro-batches (median of ``--repeats``, the two taking turns), their ratio, and the
largest difference between the images of batch size 1 and of one batch of all seeds
without micro-batches (with them it is 0 by construction, asserted here).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import workbench as wb
from workbench.options import add_renamed


def timed(model: wb.DiffusionModel, seeds: list[int], steps: int) -> tuple[float, torch.Tensor]:
    began = time.perf_counter()
    images = wb.sample(model, seeds=seeds, num_steps=steps, progress=False)
    return time.perf_counter() - began, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--micro-batch", type=int, default=8)
    add_renamed(parser, "--batch-sizes", "--seeds", default="1,8,64")
    add_renamed(parser, "--num-steps", "--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = wb.load(args.model, device="cpu")
    timed(model, [0], 2)  # warm-up
    print(
        f"{args.model}, {args.num_steps} DDIM steps, micro-batch {args.micro_batch}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| seeds | default s | micro-batch s | ratio | max diff, batch 1 vs all (default) |")
    print("| --- | --- | --- | --- | --- |")
    for n in [int(v) for v in args.batch_sizes.split(",")]:
        seeds = list(range(n))
        plain, micro = [], []
        for _ in range(args.repeats):
            model.micro_batch = None
            t, together = timed(model, seeds, args.num_steps)
            plain.append(t)
            model.micro_batch = args.micro_batch
            t, chunked = timed(model, seeds, args.num_steps)
            micro.append(t)
        model.micro_batch = None
        alone = torch.cat([timed(model, [s], args.num_steps)[1] for s in seeds])
        model.micro_batch = args.micro_batch
        alone_micro = torch.cat([timed(model, [s], args.num_steps)[1] for s in seeds])
        assert torch.equal(alone_micro, chunked), "micro-batches must be exact"
        p, m = statistics.median(plain), statistics.median(micro)
        diff = float((alone - together).abs().max())
        print(f"| {n} | {p:.2f} | {m:.2f} | {m / p:.2f}x | {diff:.2e} |")


if __name__ == "__main__":
    main()
