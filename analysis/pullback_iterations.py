"""Iterations and network passes a pullback basis needs to come within 1 degree of the
true top-k subspace, per method and oversampling, on a bundled model's trained weights.

    python analysis/pullback_iterations.py --model shapes64 \\
        --out docs/measurements/pullback_iterations_shapes64_cpu.txt

For each timestep and seed, x_t is the seed's DDIM trajectory at t (the preset's
sampling grid). The reference is that x_t's top-k basis in float64 (block Krylov, 16
extra columns, run until successive bases move less than 1e-4 degrees). Then every
method (``subspace``, ``krylov``) with every oversampling ``p`` runs in float32 from the
seed's own random start, the way the engine runs it, and records after each iteration
the largest principal angle to the reference (``--device cuda``: on the GPU, float32
with TF32 off unless ``--tf32``, which shows what TF32 costs in iterations and angle).
Reported per configuration, over the samples (seeds x timesteps):

- ``iters``: the iterations until the angle first falls below ``--target`` degrees
  (median, and the most any sample needed);
- ``passes``: network column passes to get there, ``(k + p) (2 iters + 1)``: each
  iteration pushes its ``k + p`` columns through one forward-mode and one reverse-mode
  pass, and the random start costs one reverse-mode pass (the cost a vmapped pass
  scales with, since every column is one more network evaluation);
- ``s``: seconds to get there (median, this machine);
- ``default stop``: where the engine's own rule (successive bases within ``tol_deg`` =
  0.1 degrees, at least 2 iterations; at most ``--max-iter``) stops each sample (the
  range over the samples), and the angle to the reference there (the most), read off
  the same run: the rule only decides which iteration's basis a sample keeps.

The last line names the configuration that reaches the target on every sample with the
fewest passes (its worst sample's passes, then the median).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import workbench as wb
from workbench.engines.pullback import local_basis
from workbench.sampling import make_timesteps, run_chain
from workbench.stats import principal_angles
from workbench.store import write_text


def start_points(model: wb.DiffusionModel, t: int, seeds: list[int]) -> torch.Tensor:
    """x_t ``[B, C, H, W]`` of the seeds' DDIM trajectories (the preset's grid, t on it)."""
    grid = make_timesteps(model, None, include=[t])
    x = model.noise(seeds).to(model.device)
    return run_chain(model, x, grid[: grid.index(t) + 1], progress=False) if grid.index(t) else x


def reference_bases(model64, x: torch.Tensor, t: int, k: int) -> torch.Tensor:
    """Float64 top-k bases ``[B, d, k]`` converged to 1e-4 degrees, or an error."""
    ref = local_basis(
        model64, x.double(), t, k=k, oversample=16, max_iter=300, tol_deg=1e-4,
        dtype=torch.float64, method="krylov",
    )  # fmt: skip
    if not ref.converged:
        raise RuntimeError(f"the reference at t={t} did not converge: {ref.angles[-3:]}")
    return ref.V.reshape(x.shape[0], k, -1).transpose(1, 2)


def trace(model, x, t, k, p, method, seeds, reference, max_iter):
    """Run ``max_iter`` iterations; return per iteration and sample ``[iterations, B]``
    the angle (degrees) to the reference and the angle to the previous iteration's basis
    (inf at the first), and the seconds at each iteration. Stopping only keeps a
    sample's basis from an iteration while the batch goes on, so where the engine's own
    rule stops each sample follows from the second angle (:func:`default_stop`)."""
    to_reference, moved, times = [], [], []
    previous = []
    began = time.perf_counter()

    def record(it: int, top: torch.Tensor) -> None:
        times.append(time.perf_counter() - began)
        top = top.double()
        to_reference.append(principal_angles(reference, top).amax(-1) * (180 / math.pi))
        step = principal_angles(previous[-1], top).amax(-1) * (180 / math.pi) if previous else None
        moved.append(step if step is not None else torch.full((top.shape[0],), math.inf))
        previous[:] = [top]

    local_basis(
        model, x, t, k=k, oversample=p, max_iter=max_iter, min_iter=max_iter, tol_deg=0.0,
        method=method, sample_seeds=seeds, callback=record,
    )  # fmt: skip
    return torch.stack(to_reference), torch.stack(moved), times


def default_stop(moved: torch.Tensor, tol_deg: float = 0.1, min_iter: int = 2) -> list[int]:
    """Per sample, the iteration where the engine's rule stops it (moved less than
    ``tol_deg`` at or after ``min_iter``), or the last one."""
    stops = []
    for j in range(moved.shape[1]):
        hit = [i for i in range(min_iter - 1, moved.shape[0]) if moved[i, j] < tol_deg]
        stops.append(hit[0] + 1 if hit else moved.shape[0])
    return stops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--timesteps", default=None, help="comma-separated (default: 200,500,800)")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--oversamples", default="0,2,4,8,16")
    parser.add_argument("--methods", default="subspace,krylov")
    parser.add_argument("--target", type=float, default=1.0, help="degrees")
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tf32", action="store_true", help="CUDA: TF32 in float32 products")
    parser.add_argument("--out", default=None, help="also write the table here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.device.startswith("cuda"):  # float32 means float32 unless --tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    model = wb.load(args.model, device=args.device)
    model64 = wb.load(args.model, device=args.device, dtype=torch.float64)
    steps = [int(s) for s in (args.timesteps or "200,500,800").split(",")]
    steps = [model.check_timestep(s) for s in steps]
    configs = [(m, int(p)) for m in args.methods.split(",") for p in args.oversamples.split(",")]
    rows: dict[tuple[str, int], dict[str, list]] = {c: {} for c in configs}
    lines = [
        f"$ python analysis/pullback_iterations.py --model {args.model} --timesteps "
        f"{','.join(map(str, steps))} --seeds {args.seeds} --k {args.k} --oversamples "
        f"{args.oversamples} --methods {args.methods} --target {args.target} --device "
        f"{args.device}" + (" --tf32" if args.tf32 else ""),
    ]
    for t in steps:
        x = start_points(model, t, seeds)
        began = time.perf_counter()
        reference = reference_bases(model64, x, t, args.k)
        print(f"t={t}: reference in {time.perf_counter() - began:.0f} s", flush=True)
        for method, p in configs:
            angles, moved, times = trace(
                model, x, t, args.k, p, method, seeds, reference, args.max_iter
            )
            below = angles <= args.target  # [iterations, B]
            row = rows[(method, p)]
            for j in range(len(seeds)):
                hit = torch.nonzero(below[:, j])
                iters = int(hit[0]) + 1 if len(hit) else None
                row.setdefault("iters", []).append(iters)
                row.setdefault("s", []).append(times[iters - 1] if iters else None)
            stops = default_stop(moved)
            row.setdefault("stop_iters", []).extend(stops)
            row.setdefault("stop_deg", []).extend(
                float(angles[i - 1, j]) for j, i in enumerate(stops)
            )
            print(
                f"  {method} p={p}: iterations to {args.target} deg {row['iters'][-4:]}", flush=True
            )

    samples = len(seeds) * len(steps)
    lines.append(
        f"{args.model}, k={args.k}, target {args.target} deg to a float64 reference, "
        f"timesteps {steps}, seeds {seeds} ({samples} samples), float32"
        f"{' with TF32' if args.tf32 else ''}, "
        + (
            torch.cuda.get_device_name()
            if args.device.startswith("cuda")
            else f"{torch.get_num_threads()} threads"
        )
    )
    lines.append(
        f"{'method':<10}{'p':>4}{'iters med':>11}{'iters max':>11}{'passes med':>12}"
        f"{'passes max':>12}{'s med':>8}{'default stop: iters':>21}{'deg max':>9}"
    )
    best = None
    for (method, p), row in rows.items():
        width = args.k + p
        reached = [i for i in row["iters"] if i is not None]
        missed = samples - len(reached)
        med = statistics.median(reached) if reached else None
        worst = max(reached) if reached and not missed else None
        passes_med = width * (2 * med + 1) if med is not None else None
        passes_max = width * (2 * worst + 1) if worst is not None else None
        secs = [s for s in row["s"] if s is not None]
        stops = row["stop_iters"]
        cells = [
            f"{med:.1f}" if med is not None else "n/a",
            str(worst) if worst is not None else f">{args.max_iter} ({missed})",
            f"{passes_med:.0f}" if passes_med is not None else "n/a",
            f"{passes_max}" if passes_max is not None else "n/a",
            f"{statistics.median(secs):.2f}" if secs else "n/a",
            f"{min(stops)}-{max(stops)}",
            f"{max(row['stop_deg']):.3f}",
        ]
        lines.append(
            f"{method:<10}{p:>4}{cells[0]:>11}{cells[1]:>11}{cells[2]:>12}{cells[3]:>12}"
            f"{cells[4]:>8}{cells[5]:>21}{cells[6]:>9}"
        )
        if passes_max is not None:
            key = (passes_max, passes_med)
            if best is None or key < best[0]:
                best = (key, method, p)
    if best is not None:
        (worst, med), method, p = best
        lines.append(
            f"fewest passes to {args.target} deg on every sample: {method}, p={p} "
            f"({worst} at most, {med:.0f} median)"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
