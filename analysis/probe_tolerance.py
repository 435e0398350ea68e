"""How much the probes' statistics move between basis tolerances (0.5 vs 0.1 degrees),
against their own sampling error across samples: the evidence that the probes can stop
their bases at the engines' ``tol_deg`` (``engines.pullback.BASIS_OPTIONS``).

    python analysis/probe_tolerance.py --model shapes32 --n 6 \
        --out docs/measurements/probe_tolerance_shapes32.json

For each tolerance: the consistency probe's mean cos^2 across samples and the spectrum
probe's top-k energy share per timestep, and the wall time. The change between the two
tolerances is printed beside the standard error of the same statistic over samples
(the spread a user sees from another draw of n samples).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import workbench as wb
from workbench.engines.pullback import TOL_DEG
from workbench.store import write_text


def _se(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values`` (one per sample)."""
    return float(values.std() / len(values) ** 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n", type=int, default=6, help="samples")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--timesteps", default="999,600,200")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model, device="cpu")
    timesteps = [int(t) for t in args.timesteps.split(",")]
    common = dict(n=args.n, k=args.k, num_steps=args.num_steps, timesteps=timesteps)
    rows: dict[str, dict] = {}
    for tol in (0.5, TOL_DEG.default):
        began = time.perf_counter()
        cons = wb.probe("consistency", model, tol_deg=tol, max_iter=100, **common)
        spec = wb.probe("spectrum", model, tol_deg=tol, max_iter=100, hutchinson=16, **common)
        seconds = time.perf_counter() - began
        n = cons.across_samples.shape[-1]
        off = ~torch.eye(n, dtype=torch.bool)
        per_sample = torch.stack(  # [T, n]: each sample's mean cos^2 with the others
            [m[off].reshape(n, n - 1).mean(-1) for m in cons.across_samples]
        )
        rows[str(tol)] = {
            "seconds": seconds,
            "cos2_across": [float(v.mean()) for v in per_sample],
            "cos2_se": [_se(v) for v in per_sample],
            "energy_top_k": [float(e.mean()) for e in spec.energy_top_k],
            "energy_se": [_se(e) for e in spec.energy_top_k],
        }
    coarse, fine = rows["0.5"], rows[str(TOL_DEG.default)]
    print(f"{args.model}, {args.n} samples, k = {args.k}, timesteps {timesteps}")
    print("t      stat          tol 0.5   tol 0.1   |change|  SE over samples")
    for i, t in enumerate(timesteps):
        for stat, se in (("cos2_across", "cos2_se"), ("energy_top_k", "energy_se")):
            a, b = coarse[stat][i], fine[stat][i]
            print(f"{t:<6} {stat:<13} {a:8.4f}  {b:8.4f}  {abs(a - b):8.4f}  {fine[se][i]:8.4f}")
    print(f"wall time: tol 0.5 {coarse['seconds']:.0f} s, tol 0.1 {fine['seconds']:.0f} s")
    if args.out:
        record = {"command": "python analysis/probe_tolerance.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None
        ), "rows": rows}  # fmt: skip
        write_text(args.out, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
