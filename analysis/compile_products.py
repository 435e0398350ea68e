"""Does ``torch.compile`` speed up the Jacobian products of a pullback basis?

    python analysis/compile_products.py --model shapes64 \\
        --out docs/measurements/compile_products_shapes64_cpu.txt

One x_t (x_T of seed 0), the products a basis iteration makes: a vmapped forward-mode
pass (J Q) and a vmapped reverse-mode pass (J^T P) over ``--columns`` columns, under
``jacobian_safe``. Each runs eager, with the whole vmapped product compiled, and with
the map x_t -> h compiled inside the transforms; per variant the graphs TorchDynamo
captured (``torch._dynamo.explain``; 0 means the call ran eager), the first call's
seconds (compilation included), the median of ``--repeats`` later calls and their ratio
to eager, and the largest difference from the eager result.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import workbench as wb
from workbench.store import write_text


def timed(fn, repeats: int) -> tuple[float, float, torch.Tensor]:
    began = time.perf_counter()
    out = fn()
    first = time.perf_counter() - began
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return first, statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--columns", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model)
    t = model.preset.x_timestep
    x = model.noise([0])
    gen = torch.Generator().manual_seed(0)
    tangents = torch.randn(args.columns, *x.shape, generator=gen)
    cotangents = torch.randn(args.columns, 1, *model.h_shape, generator=gen)
    lines = [
        f"$ python analysis/compile_products.py --model {args.model} --columns {args.columns} "
        f"--repeats {args.repeats}",
        f"{args.model}, t={t}, {args.columns} columns, float32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"{'product':<10}{'variant':<22}{'graphs':>8}{'first s':>9}{'median s':>10}"
        f"{'vs eager':>10}{'max diff':>11}",
    ]
    with model.jacobian_safe(), torch.enable_grad():
        f = lambda z: model.h(z, t)
        compiled_f = torch.compile(f)
        _, vjp_eager = torch.func.vjp(f, x)
        _, vjp_compiled = torch.func.vjp(compiled_f, x)
        variants = {
            "forward": {
                "eager": torch.func.vmap(lambda v: torch.func.jvp(f, (x,), (v,))[1]),
                "compiled product": torch.compile(
                    torch.func.vmap(lambda v: torch.func.jvp(f, (x,), (v,))[1])
                ),
                "compiled map inside": torch.func.vmap(
                    lambda v: torch.func.jvp(compiled_f, (x,), (v,))[1]
                ),
            },
            "reverse": {
                "eager": torch.func.vmap(lambda u: vjp_eager(u)[0]),
                "compiled product": torch.compile(torch.func.vmap(lambda u: vjp_eager(u)[0])),
                "compiled map inside": torch.func.vmap(lambda u: vjp_compiled(u)[0]),
            },
        }
        for product, fns in variants.items():
            columns = tangents if product == "forward" else cotangents
            base = reference = None
            for name, fn in fns.items():
                torch._dynamo.reset()
                graphs = torch._dynamo.explain(fn)(columns).graph_count if name != "eager" else 0
                first, median, out = timed(lambda fn=fn, c=columns: fn(c), args.repeats)
                if reference is None:
                    base, reference = median, out
                diff = float((out - reference).abs().max())
                lines.append(
                    f"{product:<10}{name:<22}{graphs:>8}{first:>9.2f}{median:>10.3f}"
                    f"{base / median:>9.2f}x{diff:>11.2e}"
                )
                print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
