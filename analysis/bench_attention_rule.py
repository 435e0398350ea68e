"""The attention's derivative rule against PyTorch's AD: a pullback basis side by side.

    python analysis/bench_attention_rule.py --model shapes64 \\
        --out docs/measurements/bench_attention_rule_shapes64_cpu.txt
    python analysis/bench_attention_rule.py --model sd15 --device cuda --dtype bfloat16

One x_t (``--model sd15``: Stable Diffusion 1.5's configs with random weights, guidance
7.5 on a prompt, x_T of seed 0 at t = 601, as ``analysis/bench_memory.py --plan``; else
seed 0's DDIM trajectory at ``--t``), one basis of ``--k`` directions with ``--oversample``
more columns, ``--max-iter`` iterations (no early stop), every column in one pass, under
each way of differentiating the attention (``workbench.models.attention.RECOMPUTE``):

- ``autograd`` (the baseline): blocks of queries by plain matrix products under
  PyTorch's forward- and reverse-mode AD, which keeps every block's probabilities for the
  reverse pass;
- ``recomputed`` (the default): the value from the stock fused kernel, the derivatives
  from ``RecomputedAttention``, which recomputes the probabilities a block at a time.

Per row: seconds (``--repeats`` runs each, the two taking turns, median) and per
iteration, the ratio to the baseline, the peak counted by ``workbench.memory.TensorBytes``
(one run, beside the timed ones: the count slows every operator), on a GPU also
``torch.cuda.max_memory_allocated`` above what was allocated before, and the largest
principal angle and singular-value difference to the baseline's basis (the same basis up
to rounding).
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from bench_memory import run, write  # analysis/, beside this script
from bench_pullback import load_model, start_point

from workbench.models import attention
from workbench.stats import principal_angles

RULES = {"autograd": False, "recomputed": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--t", type=int, default=800)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--oversample", type=int, default=4)
    parser.add_argument("--max-iter", type=int, default=4, help="iterations of every basis")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    condition = {}
    if args.model == "sd15":
        from bench_models import build

        model = build("sd15", "real", args.device, dtype)
        condition = {"prompt": "a photo of a red square", "guidance_scale": 7.5}
        t, x = 601, model.noise([0])
    else:
        model = load_model(args.model, args.device, dtype)
        t, x = args.t, start_point(model, args.t)
    width = args.k + args.oversample
    default = attention.RECOMPUTE
    seconds: dict[str, list[float]] = {name: [] for name in RULES}
    counted, on_device, bases = {}, {}, {}
    try:
        with model.conditioned(**condition):
            for name, rule in RULES.items():
                attention.RECOMPUTE = rule
                run(model, x, t, args, count=False, chunk=width)  # untimed warm-up
                _, counted[name], on_device[name], bases[name] = run(model, x, t, args, chunk=width)
            for _ in range(args.repeats):  # the rules take turns
                for name, rule in RULES.items():
                    attention.RECOMPUTE = rule
                    seconds[name].append(run(model, x, t, args, count=False, chunk=width)[0])
    finally:
        attention.RECOMPUTE = default
    where = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"{torch.get_num_threads()} threads"
    )
    lines = [
        f"$ python analysis/bench_attention_rule.py --model {args.model} --device {args.device} "
        f"--dtype {args.dtype} --t {t} --k {args.k} --oversample {args.oversample} "
        f"--max-iter {args.max_iter} --repeats {args.repeats}",
        f"{args.model}, t={t}, k={args.k}, p={args.oversample} ({width} columns in one pass), "
        f"{args.max_iter} iterations, {args.dtype}, {args.device}, {where}",
        f"{'attention':<12}{'s (median)':>12}{'s/iter':>9}{'vs autograd':>13}{'peak MiB':>10}"
        f"{'device MiB':>12}{'deg to autograd':>17}{'sv rel diff':>13}",
    ]
    base = statistics.median(seconds["autograd"])
    ref = bases["autograd"]
    for name in RULES:
        secs, basis = statistics.median(seconds[name]), bases[name]
        angle = principal_angles(
            ref.V.reshape(ref.V.shape[0], args.k, -1).transpose(1, 2).double(),
            basis.V.reshape(basis.V.shape[0], args.k, -1).transpose(1, 2).double(),
        )
        sv = float(((basis.s - ref.s).abs() / ref.s.abs()).max())
        device_mib = "-" if on_device[name] is None else f"{on_device[name] / 2**20:.1f}"
        lines.append(
            f"{name:<12}{secs:>12.2f}{secs / args.max_iter:>9.3f}{base / secs:>12.2f}x"
            f"{counted[name] / 2**20:>10.1f}{device_mib:>12}"
            f"{float(angle.max()) * 180 / math.pi:>17.4f}{sv:>13.1e}"
        )
    write(lines, args.out)


if __name__ == "__main__":
    main()
