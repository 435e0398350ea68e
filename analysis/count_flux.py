"""What a pullback basis takes on FLUX.1-dev, counted on the CPU from shallow copies.

    python analysis/count_flux.py --out docs/measurements/basis_memory_flux_dev_counted_cpu.txt
    python analysis/count_flux.py \
        --counted docs/measurements/basis_memory_flux_dev_counted_cpu.txt \
        --out docs/measurements/basis_memory_flux_dev_cpu.txt
    python analysis/count_flux.py --checkpoint \
        --out docs/measurements/basis_memory_flux_dev_checkpointed_cpu.txt

The second takes the counts of the first (24 min) and applies the bounds on the
iteration's own tensors that ``local_basis`` uses now, which are computed, not counted.
The third counts the reverse-mode passes that run the blocks again (``local_basis``'
``checkpoint``): the forward pass then keeps the blocks' inputs only (not run to the
end yet: on 2 cores, other jobs beside it part of the time, its first network took more
than 36 min).

FLUX.1-dev's transformer (``FluxTransformer2DModel``: 19 dual-stream and 38 single-stream
blocks of width 3072, 24 heads of 128; 12B parameters) does not fit this machine's
memory, and a basis at the default h (the middle of the 57 blocks, ``single.9``) runs
through the first 19 + 10 of them. What a basis holds grows with the blocks before h in
a way a few blocks show: what the forward pass keeps for the reverse pass adds up block
by block, while a pass's transient tensors (a block's attention, its tangents per
column) do not. So this counts (``workbench.engines.pullback.basis_memory``: the forward
pass, the linear algebra with an h-space and with an x-space Ritz step, a pass's fixed
bytes and bytes per column) with random weights at the real width and token count
(1024 px: 4096 image tokens, and FLUX's 512 T5 tokens) on networks of two dual-stream
blocks and one single-stream block, and of one more block of either kind, h at the last
block each time, takes what the one more block of each kind adds to each part of the
count, and extends that to ``--dual`` + ``--single``
blocks (19 + 10: h at ``single.9``). On a small config (``tests/test_memory.py``) the
forward pass kept and a pass's fixed bytes grow by the same amount with every block of
a kind, and the bytes per column do not grow once both kinds are there (a pass's
transient tensors are one block's); the first block of each kind is irregular, hence
the base of 2 + 1. ``--check D,S`` also counts a network of D + S
blocks to compare with what the extension predicts for it (the tests do this on a small
config). The text inputs are random embeddings given as ``prompt_embeds`` (a model
loaded without its T5 and CLIP encoders); guidance 3.5, t = 601, x_T of seed 0. The
weights: the full transformer's parameters (built on the ``meta`` device, no memory) in
the counted dtype, all of which sit on the GPU while a basis runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

import workbench as wb
from workbench.engines.pullback import BasisMemory, _algebra_bytes, basis_memory
from workbench.models.families.flux import Flux

here = Path(__file__).resolve().parent
sys.path[:0] = [str(here), str(here.parent / "tests")]
from bench_memory import write  # noqa: E402  (print, and write atomically)
from tiny_families import FLUX_SCHEDULER  # noqa: E402  (FLUX.1-dev's scheduler config)

#: FLUX.1-dev's transformer config (its ``transformer/config.json``).
DEV = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
PARTS = ("forward", "fixed", "per_column")


class FluxWithoutEncoders(Flux):
    """FLUX.1 whose text inputs are given as ``prompt_embeds``: no T5 or CLIP built."""

    optional_text = True


def config(args) -> dict:
    """The transformer config at ``--heads`` x ``--head-dim`` (FLUX.1-dev's by default)."""
    head = args.head_dim
    return DEV | dict(
        num_attention_heads=args.heads,
        attention_head_dim=head,
        joint_attention_dim=args.text_dim,
        axes_dims_rope=(head // 8, 7 * head // 16, 7 * head // 16),
    )


def build(args, dual: int, single: int) -> wb.DiffusionModel:
    """A FLUX network of ``dual`` + ``single`` blocks, random weights (seed 0), h at its
    last block; a VAE with FLUX's 16 latent channels and factor 8 (its weights never run)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = FluxTransformer2DModel(
            **config(args) | dict(num_layers=dual, num_single_layers=single)
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 8, 8),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=8,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    model = wb.DiffusionModel(
        network.eval(),
        FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        name=f"random:flux-{dual}+{single}",
        vae=vae.eval(),
        family=FluxWithoutEncoders,
        resolution=args.side * 8,
    ).to("cpu", getattr(torch, args.dtype))
    model.h_point = f"single.{single - 1}" if single else f"block.{dual - 1}"
    return model


#: The bases counted: (Ritz step, directions), p = 4.
RUNS = (("h", 8), ("h", 50), ("x", 8), ("x", 50))


def count(args, dual: int, single: int) -> tuple[BasisMemory, ...]:
    """``basis_memory`` of the bases of :data:`RUNS` on ``dual`` + ``single`` blocks (all
    but the first reuse its count: one more forward pass each)."""
    model = build(args, dual, single)
    with model.conditioned(**conditioning(args, model.dtype)):
        x = model.noise([0])
        return tuple(
            basis_memory(model, x, 601, k=k, oversample=4, ritz=ritz, checkpoint=args.checkpoint)
            for ritz, k in RUNS
        )


def conditioning(args, dtype: torch.dtype) -> dict:
    """Random T5 and CLIP embeddings (seed 0) as ``prompt_embeds``, guidance 3.5."""
    gen = torch.Generator().manual_seed(0)
    embeds = {
        "encoder_hidden_states": torch.randn(1, args.text, args.text_dim, generator=gen),
        "pooled_projections": torch.randn(1, DEV["pooled_projection_dim"], generator=gen),
    }
    embeds = {key: value.to(dtype) for key, value in embeds.items()}
    return dict(prompt_embeds=embeds, guidance_scale=3.5)


#: The networks counted: two dual-stream blocks and one single-stream block, and one
#: more block of either kind.
SHAPES = ((2, 1), (3, 1), (2, 2))


def extend(counts: dict[tuple[int, int], BasisMemory], dual: int, single: int) -> BasisMemory:
    """The count for ``dual`` + ``single`` blocks from those of :data:`SHAPES`: each part
    grows by what one more block of its kind added to 2 + 1 (the linear algebra's does
    not depend on the blocks)."""
    base, more_dual, more_single = (counts[shape] for shape in SHAPES)
    parts = {
        part: getattr(base, part)
        + (dual - 2) * (getattr(more_dual, part) - getattr(base, part))
        + (single - 1) * (getattr(more_single, part) - getattr(base, part))
        for part in PARTS
    }
    return dataclasses.replace(base, **parts)


def recounted(args, path: str) -> dict[tuple[int, int], tuple[BasisMemory, ...]]:
    """The bases of :data:`RUNS` on the networks of :data:`SHAPES` from the counted parts
    (:data:`PARTS`, GiB) of an earlier output of this script at ``path``, with the
    iteration's own bytes as ``local_basis`` bounds them now (they are not counted: see
    ``workbench.engines.pullback._algebra_bytes``). x is FLUX's 64 packed latent channels
    per image token and h at a single-stream block its image tokens' width."""
    tokens = (args.side // 2) ** 2
    d, m = DEV["in_channels"] * tokens, tokens * args.heads * args.head_dim
    found = {}
    for line in Path(path).read_text().splitlines():
        name, numbers = line[:20].strip(), line[20:].split()
        if not name.endswith("(counted)"):
            continue
        shape = tuple(int(n) for n in name.split(" (")[0].split(" + "))
        if shape in SHAPES:
            numbers = numbers[1:] if numbers[0] in ("h", "x") else numbers  # a Ritz column
            forward, fixed, per_column = (float(numbers[i]) * 2**30 for i in (0, -8, -7))
            found[shape] = [int(forward), int(fixed), int(per_column)]
    if set(found) != set(SHAPES):
        raise SystemExit(f"{path} has no counted rows for {sorted(set(SHAPES) - set(found))}")
    runs = {}
    for shape, (forward, fixed, per_column) in found.items():
        needs = []
        for ritz, k in RUNS:
            held, peak = _algebra_bytes(1, d, m, k + 4, 8, torch.float32, ritz)
            needs.append(
                BasisMemory(forward, peak, fixed, per_column, k + 4, held, ritz, args.checkpoint)
            )
        runs[shape] = tuple(needs)
    return runs


def weight_bytes(args) -> int:
    """The full transformer's parameters in the counted dtype (built on ``meta``)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        network = FluxTransformer2DModel(**config(args))
    size = torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
    return sum(p.numel() for p in network.parameters()) * size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--text-dim", type=int, default=4096, help="T5's width")
    parser.add_argument("--text", type=int, default=512, help="T5 tokens")
    parser.add_argument("--side", type=int, default=128, help="latent positions per side")
    parser.add_argument("--dual", type=int, default=19, help="dual-stream blocks up to h")
    parser.add_argument("--single", type=int, default=10, help="single-stream blocks up to h")
    parser.add_argument("--check", default=None, help="D,S: also count D + S blocks")
    parser.add_argument(
        "--checkpoint", action="store_true", help="reverse-mode passes that run the blocks again"
    )
    parser.add_argument(
        "--counted", default=None, help="an earlier output: take its counted parts from it"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    began = time.perf_counter()
    if args.counted:
        counts = recounted(args, args.counted)
    else:
        counts = {shape: count(args, *shape) for shape in SHAPES}
    by_run = [{shape: runs[i] for shape, runs in counts.items()} for i in range(len(RUNS))]
    rows = [(f"{d} + {s} (counted)", counts[d, s]) for d, s in counts]
    if args.check:
        dual, single = (int(n) for n in args.check.split(","))
        rows.append((f"{dual} + {single} (counted)", count(args, dual, single)))
        rows.append((f"{dual} + {single} (extended)", [extend(c, dual, single) for c in by_run]))
    target = (args.dual, args.single)
    rows.append((f"{target[0]} + {target[1]} (extended)", [extend(c, *target) for c in by_run]))
    weights = weight_bytes(args)
    gib = lambda n: f"{n / 2**30:.2f}"
    lines = [
        f"$ python analysis/count_flux.py --dtype {args.dtype} --heads {args.heads} "
        f"--head-dim {args.head_dim} --text-dim {args.text_dim} --text {args.text} "
        f"--side {args.side} --dual {args.dual} --single {args.single}"
        + (f" --check {args.check}" if args.check else "")
        + (" --checkpoint" if args.checkpoint else "")
        + (f" --counted {args.counted}" if args.counted else ""),
        f"FLUX transformer, {args.heads} heads x {args.head_dim}, {args.dtype}, batch 1, "
        f"{(args.side // 2) ** 2} image + {args.text} text tokens, t=601, k=8 and 50, p=4; "
        f"weights of the full transformer {weights / 2**30:.1f} GiB; GiB as "
        f"workbench.memory.TensorBytes counts them; Ritz step in h or x (local_basis' "
        f"ritz); blocks {'checkpointed' if args.checkpoint else 'kept'}; "
        f"{time.perf_counter() - began:.0f} s",
        f"{'blocks to h':<20}{'ritz':>5}{'forward':>9}{'held k8/k50':>14}"
        f"{'algebra k8/k50':>16}{'fixed':>8}{'per col':>9}{'k8 all':>9}{'k8 1/pass':>11}"
        f"{'k50 8/pass':>12}{'+ weights:':>12}{'k8 all':>8}{'k8 1/pass':>11}{'k50 8/pass':>12}",
    ]
    for name, runs in rows:
        for ritz in ("h", "x"):
            need, wide = (runs[RUNS.index((ritz, k))] for k in (8, 50))
            lines.append(
                f"{name:<20}{ritz:>5}{gib(need.forward):>9}"
                f"{gib(need.held) + '/' + gib(wide.held):>14}"
                f"{gib(need.algebra) + '/' + gib(wide.algebra):>16}{gib(need.fixed):>8}"
                f"{gib(need.per_column):>9}{gib(need.peak()):>9}{gib(need.peak(1)):>11}"
                f"{gib(wide.peak(8)):>12}{'':>12}{gib(need.peak() + weights):>8}"
                f"{gib(need.peak(1) + weights):>11}{gib(wide.peak(8) + weights):>12}"
            )
    write(lines, args.out)


if __name__ == "__main__":
    main()
