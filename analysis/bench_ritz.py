"""The Krylov Ritz step in h-space or in x-space: time, memory and accuracy side by side.

    python analysis/bench_ritz.py --out docs/measurements/bench_ritz_cpu.txt

``local_basis(..., ritz="h")`` keeps every Krylov block's image J Q_i in h and takes an
SVD of them; ``ritz="x"`` keeps none and takes the Gram matrix K^T J^T J K from x-space
(then U costs one forward pass of k columns at the end). Per model and k: the seconds
of each (``--repeats`` runs taking turns, median, without the count) and their ratio,
the iterations, the peak of tensor bytes inside the call
(``workbench.memory.TensorBytes``, one counted run each) and its ratio, and how far the
x-space basis lies from the h-space one: the largest principal angle between the top-k
subspaces and the largest relative difference of the singular values. Models:
``shapes64`` (trained; h is 1/6 of x) and ``flux-small``, a FLUX transformer of 2 + 1
blocks at width 768 with random weights (``analysis/count_flux.py``'s ``build``; 256
image tokens: h is 12 times x, as FLUX.1-dev's is 48 times), both float32, x_t of seed 0
at t = 600 (flux: 601), tolerance 0.1 degrees, p = 4.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time

import torch
from bench_memory import write  # analysis/, beside this script
from bench_pullback import start_point

import workbench as wb
from workbench.engines.pullback import local_basis
from workbench.memory import TensorBytes
from workbench.stats import principal_angles


def flux_small() -> tuple[wb.DiffusionModel, int, dict]:
    """FLUX, 2 + 1 blocks of 12 heads x 64, 256 image and 16 text tokens, random weights;
    its text inputs as random embeddings."""
    import count_flux

    args = argparse.Namespace(dtype="float32", heads=12, head_dim=64, text_dim=64, text=16, side=32)
    model = count_flux.build(args, 2, 1)
    return model, 601, count_flux.conditioning(args, model.dtype)


def load(name: str) -> tuple[wb.DiffusionModel, int, dict]:
    """The model, its timestep and its conditioning."""
    if name == "flux-small":
        return flux_small()
    return wb.load(name, device="cpu"), 600, {}


def basis(model, x, t, k: int, ritz: str, count: bool = False):
    """Seconds, counted peak bytes (0 without ``count``) and the basis."""
    counter = TensorBytes()
    began = time.perf_counter()
    if count:
        with counter:
            result = local_basis(model, x, t, k=k, ritz=ritz)
    else:
        result = local_basis(model, x, t, k=k, ritz=ritz)
    return time.perf_counter() - began, counter.peak if count else 0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="shapes64,flux-small")
    parser.add_argument("--ks", default="8,30")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [
        f"$ python analysis/bench_ritz.py --models {args.models} --ks {args.ks} "
        f"--repeats {args.repeats}",
        f"float32, cpu, {torch.get_num_threads()} threads; p=4, tol 0.1 deg; seconds: median "
        f"of {args.repeats}, taking turns; peak: tensor bytes (TensorBytes)",
        f"{'model':<12}{'d':>7}{'m':>8}{'k':>4}{'s h':>8}{'s x':>8}{'x/h':>7}{'iter h/x':>10}"
        f"{'MiB h':>8}{'MiB x':>8}{'x/h':>7}{'deg h-x':>10}{'sv rel':>10}",
    ]
    for name in args.models.split(","):
        model, t, condition = load(name)
        with model.conditioned(**condition) if condition else contextlib.nullcontext():
            x = start_point(model, t)
            m = math.prod(model.h_shape)
            for k in (int(n) for n in args.ks.split(",")):
                basis(model, x, t, k, "h")  # untimed: first calls
                runs = {ritz: basis(model, x, t, k, ritz, count=True) for ritz in ("h", "x")}
                seconds = {"h": [], "x": []}
                for _ in range(args.repeats):
                    for ritz in ("h", "x"):
                        seconds[ritz].append(basis(model, x, t, k, ritz)[0])
                (_, peak_h, h), (_, peak_x, xs) = runs["h"], runs["x"]
                flat = lambda b: b.V.flatten(2).transpose(1, 2).double()
                degrees = float(principal_angles(flat(h), flat(xs)).max()) * 180 / math.pi
                rel = float(((xs.s - h.s).abs() / h.s).max())
                sec_h, sec_x = (statistics.median(seconds[r]) for r in ("h", "x"))
                lines.append(
                    f"{name:<12}{model.d:>7}{m:>8}{k:>4}{sec_h:>8.2f}{sec_x:>8.2f}"
                    f"{sec_x / sec_h:>6.2f}x{f'{h.iterations}/{xs.iterations}':>10}"
                    f"{peak_h / 2**20:>8.1f}{peak_x / 2**20:>8.1f}{peak_x / peak_h:>6.2f}x"
                    f"{degrees:>10.5f}{rel:>10.1e}"
                )
                print(lines[-1], flush=True)
    write(lines, args.out)


if __name__ == "__main__":
    main()
