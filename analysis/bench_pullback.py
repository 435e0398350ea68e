"""Pullback local basis: this engine against the published algorithm's cost structure.

    python analysis/bench_pullback.py [--model shapes32] [--t 800] [--k 8] [--target 1.0]

Both methods start from the same x_t (seed 0's DDIM trajectory at ``--t``). Accuracy is
the largest principal angle (degrees) to a reference basis converged to 0.001 degrees by
this engine in float64. Reported side by side: wall time until the angle first falls
below ``--target`` degrees, iterations, and peak resident memory (each method runs in a
child process of its own, so ``ru_maxrss`` is its own peak).

"published" re-implements the cost structure of the released code: fp32, batch 1,
forward mode in chunks of 25 directions (U = J V), one reverse pass per direction
(M = U^T J), V <- right singular vectors of M, at least 12 iterations (it runs
``--published-iters``). "workbench" is ``local_basis`` with oversampling 4, all columns
in one vmapped forward and one vmapped reverse pass per iteration.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch

import workbench as wb
from workbench.engines.pullback import local_basis, principal_angles
from workbench.sampling import ddim, make_timesteps


def start_point(model, t: int) -> torch.Tensor:
    grid = make_timesteps(model, None, include=[t])
    x = model.noise([0])
    return ddim(model, x, grid[: grid.index(t) + 1], progress=False) if grid.index(t) else x


def published(model, x, t: int, k: int, iters: int, trace) -> None:
    d = model.d
    f = lambda z: model.h(z, t)
    gen = torch.Generator().manual_seed(0)
    v = torch.linalg.qr(torch.randn(d, k, generator=gen))[0]
    with model.jacobian_safe():
        _, vjp_fn = torch.func.vjp(f, x)
        for it in range(1, iters + 1):
            cols = []
            for c in range(0, k, 25):  # forward mode, chunks of 25 directions
                block = v[:, c : c + 25].T.reshape(-1, *model.sample_shape)
                jv = torch.func.vmap(lambda u: torch.func.jvp(f, (x,), (u[None],))[1][0])(block)
                cols.append(jv.reshape(block.shape[0], -1))
            u = torch.cat(cols).T  # [m, k]
            rows = [vjp_fn(u[:, j].reshape(1, *model.h_shape))[0].reshape(-1) for j in range(k)]
            m = torch.stack(rows)  # [k, d] = U^T J, one reverse pass per direction
            v = torch.linalg.svd(m, full_matrices=False)[2][:k].T
            trace(it, v[None])


def child(args) -> None:
    model = wb.load(args.model, device="cpu")
    x = start_point(model, args.t)
    reference = torch.load(args.reference)
    times, angles = [], []
    began = time.perf_counter()

    def trace(it, top):
        times.append(time.perf_counter() - began)
        ang = principal_angles(reference.double(), top[0].double())
        angles.append(float(ang.max()) * 180 / math.pi)

    if args.method == "published":
        published(model, x, args.t, args.k, args.published_iters, trace)
    else:
        local_basis(
            model,
            x,
            args.t,
            k=args.k,
            oversample=4,
            max_iter=args.published_iters,
            tol_deg=args.target / 10,
            callback=trace,
        )
    reached = next((i for i, a in enumerate(angles) if a <= args.target), None)
    print(
        json.dumps(
            {
                "method": args.method,
                "seconds_to_target": times[reached] if reached is not None else None,
                "iterations_to_target": reached + 1 if reached is not None else None,
                "final_angle_deg": angles[-1],
                "seconds_total": times[-1],
                "iterations_total": len(times),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--t", type=int, default=800)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--target", type=float, default=1.0, help="degrees")
    parser.add_argument("--published-iters", type=int, default=40)
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return
    model = wb.load(args.model, device="cpu", dtype=torch.float64)
    x = start_point(model, args.t)
    ref = local_basis(
        model, x, args.t, k=args.k, oversample=8, max_iter=200, tol_deg=0.001, dtype=torch.float64
    )
    ref_path = "/tmp/workbench_pullback_reference.pt"
    torch.save(ref.V[0].reshape(args.k, -1).T.contiguous(), ref_path)
    print(
        f"reference: {ref.iterations} iterations, converged={ref.converged}, s={ref.s[0].tolist()}"
    )
    rows = []
    for method in ("published", "workbench"):
        cmd = [sys.executable, __file__, "--method", method, "--reference", ref_path]
        cmd += ["--model", args.model, "--t", str(args.t), "--k", str(args.k)]
        cmd += ["--target", str(args.target), "--published-iters", str(args.published_iters)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]["seconds_to_target"]
    lower_bound = base is None  # the published method never reached the target
    if lower_bound:
        base = rows[0]["seconds_total"]
    print(
        f"\nlocal basis, {args.model}, t={args.t}, k={args.k}, target {args.target} deg, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'method':<12}{'s to target':>13}{'iterations':>12}{'final deg':>11}{'peak MB':>10}"
        f"{'speed-up':>10}"
    )
    for r in rows:
        sec = r["seconds_to_target"]
        speed = "        -"
        if sec:
            speed = f"{'>' if lower_bound and r is not rows[0] else ' '}{base / sec:8.1f}x"
        sec_s = f"{sec:13.2f}" if sec is not None else f"{'not reached':>13}"
        its = r["iterations_to_target"] or f">{r['iterations_total']}"
        print(
            f"{r['method']:<12}{sec_s}{its:>12}{r['final_angle_deg']:>11.3f}"
            f"{r['peak_rss_mb']:>10.0f}{speed}"
        )


if __name__ == "__main__":
    main()
