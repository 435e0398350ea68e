"""Pullback local basis: this engine against the published algorithm's cost structure.

    python analysis/bench_pullback.py [--model shapes32] [--t 800] [--k 8] [--target 1.0]
    python analysis/bench_pullback.py --model random:celebahq256 --device cuda --k 50 \\
        --reference-dtype float32 --chunks 16,4

Both methods start from the same x_t (seed 0's DDIM trajectory at ``--t``). Accuracy is
the largest principal angle (degrees) to a reference basis converged to
``--reference-tol`` degrees by this engine (float64 by default; on a GPU, float32 with
TF32 switched off). Reported side by side: wall time until the angle first falls below
``--target`` degrees, iterations, and peak memory (each method runs in a child process of
its own: ``ru_maxrss`` on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU).
``--chunks`` runs the engine once more per chunk size, to show the peak memory it bounds.

``--model random:NAME`` builds the architecture ``NAME`` of
``workbench.models.configs.ARCHITECTURES`` with random weights (seed 0), e.g.
``celebahq256``, the 256px CelebA-HQ DDPM U-Net: enough for timing.

"published" re-implements the cost structure of the released code: fp32, batch 1,
forward mode in chunks of 25 directions (U = J V), one reverse pass per direction
(M = U^T J), V <- right singular vectors of M, at least 12 iterations (it runs
``--published-iters``). "workbench" is ``local_basis`` with oversampling 4, all columns
in one vmapped forward and one vmapped reverse pass per iteration (or ``chunk`` columns
at a time); "krylov" is ``local_basis(method="krylov")``: the same passes, with the
Rayleigh-Ritz step on the whole block Krylov space built so far.
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


def load_model(name: str, device: str, dtype: torch.dtype) -> wb.DiffusionModel:
    if not name.startswith("random:"):
        return wb.load(name, device=device, dtype=dtype)
    from diffusers import DDIMScheduler, UNet2DModel

    from workbench.models.configs import ARCHITECTURES

    torch.manual_seed(0)
    unet = UNet2DModel(**ARCHITECTURES[name.split(":", 1)[1]]).to(device, dtype).eval()
    return wb.DiffusionModel(unet, DDIMScheduler(), name=name)


def start_point(model, t: int) -> torch.Tensor:
    grid = make_timesteps(model, None, include=[t])
    x = model.noise([0])
    return ddim(model, x, grid[: grid.index(t) + 1], progress=False) if grid.index(t) else x


def published(model, x, t: int, k: int, iters: int, trace) -> None:
    d = model.d
    f = lambda z: model.h(z, t)
    gen = torch.Generator().manual_seed(0)
    v = torch.linalg.qr(torch.randn(d, k, generator=gen))[0].to(x.device)
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
    model = load_model(args.model, args.device, torch.float32)
    x = start_point(model, args.t)
    reference = torch.load(args.reference).to(args.device)
    cuda = args.device.startswith("cuda")
    times, angles = [], []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()

    def trace(it, top):
        if cuda:
            torch.cuda.synchronize()
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
            method="krylov" if args.method == "krylov" else "subspace",
            k=args.k,
            oversample=4,
            max_iter=args.published_iters,
            tol_deg=args.target / 10,
            chunk=args.chunk,
            callback=trace,
        )
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reached = next((i for i, a in enumerate(angles) if a <= args.target), None)
    print(
        json.dumps(
            {
                "method": args.method if args.chunk is None else f"{args.method}/{args.chunk}",
                "seconds_to_target": times[reached] if reached is not None else None,
                "iterations_to_target": reached + 1 if reached is not None else None,
                "final_angle_deg": angles[-1],
                "seconds_total": times[-1],
                "iterations_total": len(times),
                "peak_mb": peak,
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
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference-dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--reference-tol", type=float, default=0.001, help="degrees")
    parser.add_argument("--reference-max-iter", type=int, default=200)
    parser.add_argument("--chunks", default="", help="comma-separated chunk sizes, extra runs")
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return
    cuda = args.device.startswith("cuda")
    if cuda:  # an exact reference: no TF32 in convolutions or matrix products
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    dtype = getattr(torch, args.reference_dtype)
    model = load_model(args.model, args.device, dtype)
    x = start_point(model, args.t)
    began = time.perf_counter()
    ref = local_basis(
        model,
        x,
        args.t,
        k=args.k,
        oversample=max(8, args.k // 2),
        max_iter=args.reference_max_iter,
        tol_deg=args.reference_tol,
        dtype=dtype,
    )
    ref_path = "/tmp/workbench_pullback_reference.pt"
    torch.save(ref.V[0].reshape(args.k, -1).T.contiguous().double().cpu(), ref_path)
    s = ref.s[0].tolist()
    last = ref.angles[-1] if ref.angles else float("nan")
    print(
        f"reference ({args.reference_dtype}, {time.perf_counter() - began:.0f} s): "
        f"{ref.iterations} iterations, converged={ref.converged}, last change {last:.4f} deg, "
        f"s[0]={s[0]:.4g}, s[k-1]/s[0]={s[-1] / s[0]:.3f}",
        flush=True,
    )
    del model, ref
    runs = [("published", None), ("workbench", None), ("krylov", None)]
    runs += [("workbench", int(c)) for c in args.chunks.split(",") if c]
    rows = []
    for method, chunk in runs:
        cmd = [sys.executable, __file__, "--method", method, "--reference", ref_path]
        cmd += ["--model", args.model, "--t", str(args.t), "--k", str(args.k)]
        cmd += ["--target", str(args.target), "--published-iters", str(args.published_iters)]
        cmd += ["--device", args.device] + (["--chunk", str(chunk)] if chunk else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["seconds_to_target"]
    lower_bound = base is None  # the published method never reached the target
    if lower_bound:
        base = rows[0]["seconds_total"]
    where = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} threads"
    print(f"\nlocal basis, {args.model}, t={args.t}, k={args.k}, target {args.target} deg, {where}")
    memory = "peak GPU MB" if cuda else "peak RSS MB"
    print(
        f"{'method':<14}{'s to target':>13}{'iterations':>12}{'final deg':>11}{memory:>13}"
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
            f"{r['method']:<14}{sec_s}{its:>12}{r['final_angle_deg']:>11.3f}"
            f"{r['peak_mb']:>13.0f}{speed}"
        )


if __name__ == "__main__":
    main()
