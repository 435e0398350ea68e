"""Memory-bounded pullback bases: does a budget hold, and what does it cost in time?

    python analysis/bench_memory.py --model shapes64 \\
        --out docs/measurements/bench_memory_shapes64_cpu.txt
    python analysis/bench_memory.py --model random:celebahq256 --device cuda --k 50

One x_t (seed 0's DDIM trajectory at ``--t``, ``--batch`` samples), one basis with every
column in one pass (``chunk = k + p``), the same with its blocks checkpointed
(``checkpoint="on"``: the time a reverse-mode pass's second forward pass through the
blocks costs), then one basis per budget, the budgets being
shares (``--shares``) of the one-pass basis' peak. Per row: the columns per pass the
budget gave, the Ritz step and whether the blocks were checkpointed (what
``"auto"`` chose for either), the measured peak (bytes of tensors alive at once inside the call,
``workbench.memory.TensorBytes``; on a GPU also ``torch.cuda.max_memory_allocated``
above what was allocated before), whether it stayed within the budget, the seconds and
their ratio to the one-pass basis (run side by side, ``--repeats`` times each, taking
turns, median, without the count, which slows every operator call), and the largest
principal angle to the one-pass basis; beside the peak, the ``estimate`` that
``basis_memory`` gives for that many columns per pass. A budget below what one column
per pass needs is refused, in one line. A last row gives the default budget (the
device's free memory) on this machine.

``--model random:NAME`` builds the architecture ``NAME`` of
``workbench.models.configs.ARCHITECTURES`` with random weights (seed 0).

    python analysis/bench_memory.py --model sd15 --plan \
        --out docs/measurements/basis_memory_sd15_cpu.txt

``--plan`` runs no basis: it counts what one takes (``basis_memory``: the forward pass,
the linear algebra, a pass's fixed bytes and bytes per column, from a forward pass and
four small product passes, counted once and used for k = 8 and k = 50), for three
ways of differentiating the attention: every score matrix whole under PyTorch's AD (as
before blocks), blocks of queries (``SCORE_BLOCK``) under PyTorch's AD, and blocks with
the recomputing rule (``RECOMPUTE``, the default: a reverse pass keeps no
probabilities), the last also with checkpointed blocks (``ckpt``); and the peak that
gives with all columns in one pass and with 8 and 1
per pass, and with all at once plus the network's weights (as
``torch.cuda.max_memory_allocated`` counts them). ``--dtype bfloat16``: the model in
bfloat16; ``--attention default``: the default rule alone. Tensor bytes do not
depend on the device, so a CPU count predicts a GPU's peak up to the
allocator's rounding and the kernels' workspaces. ``--model sd15`` is Stable Diffusion
1.5's configs with random weights (``analysis/bench_models.py``), guidance 7.5 on a
prompt, x_T of seed 0 at t = 601.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time

import torch
from bench_pullback import load_model, start_point  # analysis/, beside this script

from workbench.engines.pullback import basis_memory, local_basis
from workbench.errors import WorkbenchError
from workbench.memory import GIB, TensorBytes, free_bytes
from workbench.stats import principal_angles
from workbench.store import write_text


def run(model, x, t, args, count=True, **size) -> tuple[float, int, int | None, object]:
    """Seconds, counted peak bytes (0 without ``count``: the count slows every operator
    call, so the timed runs go without it), CUDA peak bytes above the start (or None) and
    the basis."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    began = time.perf_counter()
    counter = TensorBytes() if count else contextlib.nullcontext()
    with counter:
        basis = local_basis(
            model, x, t, k=args.k, oversample=args.oversample, max_iter=args.max_iter,
            min_iter=args.max_iter, tol_deg=0.0, **size,
        )  # fmt: skip
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    device_peak = torch.cuda.max_memory_allocated() - before if cuda else None
    return seconds, counter.peak if count else 0, device_peak, basis


def plan(args) -> list[str]:
    """``--plan``: the counted cost of a basis, attention in blocks and whole."""
    from workbench.models import attention

    dtype = getattr(torch, args.dtype)
    if args.model == "sd15":
        from bench_models import build

        model = build("sd15", "real", args.device, dtype)
        condition = {"prompt": "a photo of a red square", "guidance_scale": 7.5}
        t, x = 601, model.noise([0])
    else:
        model, condition = load_model(args.model, args.device, dtype), {}
        t, x = args.t, start_point(model, args.t)
    weights = sum(p.numel() * p.element_size() for p in model.network.parameters())
    weights += sum(
        p.numel() * p.element_size()
        for part in (model.vae, model.text_encoder)
        if part is not None
        for p in part.parameters()
    )
    mib = lambda n: f"{n / 2**20:.0f}"
    lines = [
        f"$ python analysis/bench_memory.py --model {args.model} --plan --dtype {args.dtype} "
        f"--attention {args.attention}",
        f"{args.model}, {args.dtype}, batch 1, t={t}, h {list(model.h_shape)}; weights on the "
        f"device {mib(weights)} MiB; MiB as workbench.memory.TensorBytes counts them",
        f"{'attention':<18}{'k':>4}{'ritz':>5}{'ckpt':>5}{'forward':>9}{'held':>7}{'algebra':>9}"
        f"{'fixed':>8}{'per col':>9}{'peak all':>10}{'peak 8/pass':>13}{'peak 1/pass':>13}"
        f"{'+ weights, all':>16}",
    ]
    default_block, default_rule = attention.SCORE_BLOCK, attention.RECOMPUTE
    with model.conditioned(**condition):
        kinds = [
            ("whole, autograd", 2**62, False),
            ("blocks, autograd", default_block, False),
            ("blocks, recomputed", default_block, True),
        ]
        for name, block, rule in kinds if args.attention == "all" else kinds[2:]:
            attention.SCORE_BLOCK, attention.RECOMPUTE = block, rule
            try:
                ways = [(ritz, on) for on in (False, True) for ritz in ("h", "x")]
                for k in (8, 50):
                    for ritz, on in ways if rule else ways[:1]:  # the default rule's only
                        need = basis_memory(
                            model, x, t, k=k, oversample=4, ritz=ritz, checkpoint=on
                        )
                        lines.append(
                            f"{name:<18}{k:>4}{ritz:>5}{'yes' if on else 'no':>5}"
                            f"{mib(need.forward):>9}{mib(need.held):>7}{mib(need.algebra):>9}{mib(need.fixed):>8}"
                            f"{mib(need.per_column):>9}{mib(need.peak()):>10}"
                            f"{mib(need.peak(8)):>13}{mib(need.peak(1)):>13}"
                            f"{mib(need.peak() + weights):>16}"
                        )
                        print(lines[-1], flush=True)
            finally:
                attention.SCORE_BLOCK, attention.RECOMPUTE = default_block, default_rule
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--t", type=int, default=800)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--oversample", type=int, default=4)
    parser.add_argument("--max-iter", type=int, default=4, help="iterations of every basis")
    parser.add_argument("--shares", default="1.0,0.8,0.7,0.5")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plan", action="store_true", help="count, run no basis")
    parser.add_argument("--dtype", default="float32", help="--plan: the model's dtype")
    parser.add_argument(
        "--attention", default="all", choices=["all", "default"], help="--plan: which rows"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.plan:
        write(plan(args), args.out)
        return
    model = load_model(args.model, args.device, torch.float32)
    x = start_point(model, args.t).expand(args.batch, -1, -1, -1).clone()
    width = args.k + args.oversample
    run(model, x, args.t, args, count=False, chunk=width)  # untimed: kernels, allocations
    need = {  # the count every budget below reuses, for each Ritz step and checkpointing
        (ritz, on): basis_memory(
            model,
            x,
            args.t,
            k=args.k,
            oversample=args.oversample,
            max_iter=args.max_iter,
            ritz=ritz,
            checkpoint=on,
        )  # fmt: skip
        for ritz in ("h", "x")
        for on in (False, True)
    }
    _, whole, _, one_pass = run(model, x, args.t, args, chunk=width)
    ref = one_pass.V.reshape(args.batch, args.k, -1).transpose(1, 2).double()
    shares = [float(s) for s in args.shares.split(",")]
    budgets = [("one pass", dict(chunk=width), None)]
    budgets.append(("one pass, ckpt", dict(chunk=width, checkpoint="on"), None))
    budgets += [(f"{s:.2f} of it", dict(memory=s * whole / GIB), s * whole) for s in shares]
    budgets.append(("free memory", {}, free_bytes(x.device)))
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in budgets}
    rows: dict[str, tuple | str] = {}
    for name, size, _ in budgets:  # the count, and whether the budget is refused
        try:
            _, peak, device_peak, basis = run(model, x, args.t, args, **size)
        except WorkbenchError as error:
            rows[name] = str(error)
            continue
        angle = principal_angles(
            ref, basis.V.reshape(args.batch, args.k, -1).transpose(1, 2).double()
        )
        degrees = float(angle.max()) * 180 / math.pi
        rows[name] = (
            basis.chunk or width,
            basis.ritz,
            basis.checkpoint,
            peak,
            device_peak,
            degrees,
        )
    for _ in range(args.repeats):  # the configurations take turns
        for name, size, _ in budgets:
            if not isinstance(rows[name], str):
                seconds[name].append(run(model, x, args.t, args, count=False, **size)[0])
    where = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"{torch.get_num_threads()} threads"
    )
    lines = [
        f"$ python analysis/bench_memory.py --model {args.model} --device {args.device} "
        f"--t {args.t} --batch {args.batch} --k {args.k} --oversample {args.oversample} "
        f"--max-iter {args.max_iter} --shares {args.shares} --repeats {args.repeats}",
        f"{args.model}, t={args.t}, batch {args.batch}, k={args.k}, p={args.oversample} "
        f"({width} columns), {args.max_iter} iterations, float32, {args.device}, {where}",
        f"{'budget':<16}{'MiB':>8}{'columns/pass':>14}{'ritz':>6}{'ckpt':>6}{'peak MiB':>10}"
        f"{'estimate':>10}"
        f"{'device MiB':>12}"
        f"{'within':>8}{'s (median)':>12}{'vs one pass':>13}{'deg to one pass':>17}",
    ]
    base = statistics.median(seconds["one pass"])
    for name, _, budget in budgets:
        if isinstance(rows[name], str):
            lines.append(f"{name:<16}{budget / 2**20:>8.1f}  refused: {rows[name]}")
            continue
        cols, ritz, on, peak, device_peak, angle = rows[name]
        secs = statistics.median(seconds[name])
        within = (
            "-" if budget is None else ("yes" if max(peak, device_peak or 0) <= budget else "NO")
        )
        shown = "-" if budget is None else f"{budget / 2**20:.1f}"
        on_device = "-" if device_peak is None else f"{device_peak / 2**20:.1f}"
        lines.append(
            f"{name:<16}{shown:>8}{cols:>14}{ritz:>6}{'yes' if on else 'no':>6}"
            f"{peak / 2**20:>10.1f}{need[ritz, on].peak(cols) / 2**20:>10.1f}{on_device:>12}"
            f"{within:>8}{secs:>12.2f}{base / secs:>12.2f}x{angle:>17.4f}"
        )
    write(lines, args.out)


def write(lines: list[str], path: str | None) -> None:
    """Print the table; also write it to ``path`` (atomically)."""
    text = "\n".join(lines)
    print(text)
    if path:
        write_text(path, text + "\n")


if __name__ == "__main__":
    main()
