"""Pullback local basis: this engine against the published algorithm's cost structure.

    python analysis/bench_pullback.py [--model shapes32] [--t 800] [--k 8] [--target 1.0]
    python analysis/bench_pullback.py --passes    # the cost of one pass of each kind
    python analysis/bench_pullback.py --model random:celebahq256 --device cuda --k 50 \\
        --reference-dtype float32 --chunks 16,4

Both methods start from the same x_t (seed 0's DDIM trajectory at ``--t``). Accuracy is
the largest principal angle (degrees) to a reference basis converged to
``--reference-tol`` degrees by this engine's subspace iteration (float64 by default; on a
GPU, float32 with TF32 switched off). Reported side by side: wall time until the angle
first falls below ``--target`` degrees, iterations, and peak memory (each method runs in
a child process of its own: ``ru_maxrss`` on the CPU, ``torch.cuda.max_memory_allocated``
on a GPU).
``--chunks`` runs the engine once more per chunk size, to show the peak memory it bounds.

``--model random:NAME`` builds the architecture ``NAME`` of
``workbench.models.configs.ARCHITECTURES`` with random weights (seed 0), e.g.
``celebahq256``, the 256px CelebA-HQ DDPM U-Net: enough for timing.

"published" re-implements the cost structure of the released code: fp32, batch 1,
forward mode in chunks of 25 directions (U = J V), one reverse pass per direction
(M = U^T J), V <- right singular vectors of M, at least 12 iterations (it runs
``--published-iters``). "workbench" is ``local_basis`` with oversampling
``--oversample``, all columns in one vmapped forward and one vmapped reverse pass per
iteration (or ``chunk`` columns at a time); "krylov" is ``local_basis(method="krylov")``:
the same passes, with the Rayleigh-Ritz step on the whole block Krylov space built so far.

Two times per method: "cold", one run in a fresh process (what a first call costs:
kernel selection and allocations included; its peak memory is reported), and "warm", the
median of ``--repeats`` runs in one process after an untimed first run, the methods taking
turns so that a slow spell of a shared machine hits all of them alike, run r starting
every method from random seed r (the cold run: seed 0).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

import torch

import workbench as wb
from workbench.engines.pullback import local_basis
from workbench.sampling import make_timesteps, run_chain
from workbench.stats import principal_angles


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
    return run_chain(model, x, grid[: grid.index(t) + 1], progress=False) if grid.index(t) else x


def published(model, x, t: int, k: int, iters: int, trace, seed: int = 0) -> None:
    d = model.d
    f = lambda z: model.h(z, t)
    gen = torch.Generator().manual_seed(seed)
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
            if trace(it, v[None]):  # the warm runs stop at the target
                break


def run_once(args, method, chunk, model, x, reference, cuda: bool, stop=False, seed=0) -> dict:
    """One run of ``method`` from ``x`` with random start ``seed``: seconds and iterations
    to the target angle (``stop``: the published loop ends there instead of running all
    its iterations)."""
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
        return stop and angles[-1] <= args.target

    if method == "published":
        published(model, x, args.t, args.k, args.published_iters, trace, seed)
    else:
        local_basis(
            model,
            x,
            args.t,
            method="krylov" if method == "krylov" else "subspace",
            k=args.k,
            oversample=args.oversample,
            max_iter=args.published_iters,
            tol_deg=args.target / 10,
            chunk=chunk,
            callback=trace,
            seed=seed,
        )
    reached = next((i for i, a in enumerate(angles) if a <= args.target), None)
    return {
        "seconds_to_target": times[reached] if reached is not None else None,
        "iterations_to_target": reached + 1 if reached is not None else None,
        "final_angle_deg": angles[-1],
        "seconds_total": times[-1],
        "iterations_total": len(times),
    }


def pass_costs(args) -> None:
    """Seconds of one plain forward to h and of one vmapped forward-mode (J V) and
    reverse-mode (J^T U) pass over 1 and ``k + oversample`` columns: min of 5 calls each,
    after a warm-up call. First, the first forward-mode pass of the process on its own:
    what it costs beyond a later one is the one-time set-up of forward-mode AD in torch
    (loading its decomposition tables), which any forward-mode code pays once per process,
    the published algorithm's included."""
    model = load_model(args.model, args.device, torch.float32)
    x = start_point(model, args.t)
    f = lambda z: model.h(z, args.t)

    def ms(fn) -> float:
        began = time.perf_counter()
        fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - began) * 1000

    def best(fn) -> float:
        fn()
        return min(ms(fn) for _ in range(5))

    def forward_mode(tangents: torch.Tensor) -> torch.Tensor:
        return torch.func.vmap(lambda v: torch.func.jvp(f, (x,), (v,))[1])(tangents)

    with model.jacobian_safe(), torch.enable_grad():
        first = ms(lambda: forward_mode(torch.randn(1, *x.shape, device=x.device)))
        print(f"first forward-mode pass in this process, 1 column: {first:.1f} ms")
        print(f"forward to h, batch 1: {best(lambda: f(x)):.1f} ms")
        _, vjp_fn = torch.func.vjp(f, x)
        for w in (1, args.k + args.oversample):
            tan = torch.randn(w, *x.shape, device=x.device)
            cot = torch.randn(w, 1, *model.h_shape, device=x.device)
            jvp = best(lambda t=tan: forward_mode(t))
            vjp = best(lambda c=cot: torch.func.vmap(lambda u: vjp_fn(u)[0])(c))
            print(f"{w:>3} columns: forward mode {jvp:.1f} ms, reverse mode {vjp:.1f} ms")


def setup(args, reference_path: str):
    """The fp32 model, the start x_t, the reference basis, and whether on a GPU."""
    model = load_model(args.model, args.device, torch.float32)
    reference = torch.load(reference_path).to(args.device)
    return model, start_point(model, args.t), reference, args.device.startswith("cuda")


def child(args) -> None:
    """A cold run in a fresh process: seconds (kernel selection and allocations included)
    and peak memory."""
    model, x, reference, cuda = setup(args, args.reference)
    row = run_once(args, args.method, args.chunk, model, x, reference, cuda)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["method"] = args.method if args.chunk is None else f"{args.method}/{args.chunk}"
    row["seconds_cold"] = row.pop("seconds_to_target")
    row["peak_mb"] = peak
    print(json.dumps(row))


def warm_runs(args, runs, reference_path: str) -> tuple[dict[str, list], dict[str, list]]:
    """Every method ``args.repeats`` times in this process, in turns (published, workbench,
    krylov, published, ...), so that a slow spell of a shared machine hits all of them;
    run r starts every method from random seed r. Returns seconds and iterations to the
    target per method."""
    model, x, reference, cuda = setup(args, reference_path)
    seconds: dict[str, list] = {}
    iterations: dict[str, list] = {}
    for method, chunk in runs:  # one untimed run each: kernels and allocations
        run_once(args, method, chunk, model, x, reference, cuda)
    for seed in range(1, args.repeats + 1):  # run r: every method starts from seed r
        for method, chunk in runs:
            row = run_once(args, method, chunk, model, x, reference, cuda, True, seed)
            name = method if chunk is None else f"{method}/{chunk}"
            seconds.setdefault(name, []).append(row["seconds_to_target"])
            iterations.setdefault(name, []).append(row["iterations_to_target"])
    return seconds, iterations


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
    parser.add_argument("--repeats", type=int, default=5, help="warm runs per method")
    parser.add_argument("--oversample", type=int, default=4, help="this engine's p")
    parser.add_argument(
        "--passes", action="store_true", help="only time one pass of each kind, then stop"
    )
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.passes:
        pass_costs(args)
        return
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
        method="subspace",
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
        cmd += ["--device", args.device, "--oversample", str(args.oversample)]
        cmd += ["--chunk", str(chunk)] if chunk else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    warm, warm_iterations = warm_runs(args, runs, ref_path)
    for r in rows:
        times = warm[r["method"]]
        r["seconds_warm_all"] = times
        r["iterations_warm_all"] = warm_iterations[r["method"]]
        r["seconds_warm"] = statistics.median(times) if times and None not in times else None
        print(json.dumps({k: r[k] for k in ("method", "seconds_warm_all", "iterations_warm_all")}))
    where = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} threads"
    print(f"\nlocal basis, {args.model}, t={args.t}, k={args.k}, target {args.target} deg, {where}")
    print(
        f"seconds to the target: 'cold' = one run in a fresh process (seed 0), 'warm' = median "
        f"of {args.repeats} runs (seeds 1..{args.repeats}) in one process after an untimed "
        "one, methods taking turns; iterations: cold run's (warm runs' range)"
    )
    memory = "peak GPU MB" if cuda else "peak RSS MB"
    print(
        f"{'method':<14}{'cold s':>9}{'warm s':>9}{'iterations':>16}{'final deg':>11}"
        f"{memory:>13}{'speed-up cold':>15}{'speed-up warm':>15}"
    )
    for r in rows:
        cells = []
        for key in ("seconds_cold", "seconds_warm"):
            base, sec = rows[0][key], r[key]
            lower_bound = base is None  # the published method never reached the target
            if lower_bound:
                base = rows[0]["seconds_total"]
            speed = "-" if not sec else f"{'>' if lower_bound else ''}{base / sec:.1f}x"
            cells.append((f"{sec:.2f}" if sec is not None else "n/a", speed))
        its = str(r["iterations_to_target"] or f">{r['iterations_total']}")
        spread = [i for i in r["iterations_warm_all"] if i is not None]
        if spread:
            its += f" ({min(spread)}-{max(spread)})"
        print(
            f"{r['method']:<14}{cells[0][0]:>9}{cells[1][0]:>9}{its:>16}"
            f"{r['final_angle_deg']:>11.3f}{r['peak_mb']:>13.0f}{cells[0][1]:>15}{cells[1][1]:>15}"
        )


if __name__ == "__main__":
    main()
