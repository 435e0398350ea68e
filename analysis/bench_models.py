"""Real model architectures with random weights: time and memory of sampling and of the
pullback basis, in float32 and half precision, and what half precision costs in angle.

    python analysis/bench_models.py --model sd15 --device cuda \
        --out docs/measurements/bench_sd15_h100.json
    python analysis/bench_models.py --model dit --device cuda --dtypes float32,bfloat16 \
        --out docs/measurements/bench_dit_xl_h100.json
    python analysis/bench_models.py --model sd15 --size tiny   # tiny configs, on the CPU

The networks are the real configs, built with random weights (seed 0): enough for time
and memory, nothing downloaded.
- ``sd15``: Stable Diffusion 1.5 (``UNet2DConditionModel`` 860M parameters on 4 x 64 x 64
  latents, ``AutoencoderKL`` 512 px, CLIP ViT-L/14 text encoder). The tokenizer is written
  from a small vocabulary (``tests/tiny_sd.py``); prompts are tokenised as the real one
  pads them (77 tokens). Guidance 7.5 on a prompt.
- ``dit``: DiT-XL/2-256 (``DiTTransformer2DModel`` 675M parameters, 28 blocks, patch 2 on
  4 x 32 x 32 latents, learned sigma; the SD VAE at 256 px). Guidance 4 on class 207 (the
  DiT pipeline's default scale); h at the middle block ``block.14``.
``--size tiny`` runs the same code on the tests' tiny configs.

Measured, each in the same process after one untimed warm-up of its kind:
- ``sample``: one image, 50 DDIM steps, classifier-free guidance (two network halves
  per step), VAE decode included: seconds and peak GPU memory (float32, float16, bfloat16).
- ``pullback k=K``: ``local_basis`` at t = 601 of the seed-0 sample's x_t (conditional branch),
  K = 8 and 50 directions, oversampling 4, tolerance 0.5 degrees, at most 20 iterations:
  seconds, seconds per iteration, iterations, peak memory, the columns per pass; for the
  half-precision runs, the largest principal angle to the float32 basis of the same x_t
  and the largest relative singular-value error.
``--chunk`` fixes the columns per vmapped pass; without it the basis takes as many as the
device's free memory allows (``local_basis``), and a run that does not fit all the same
is retried with chunk 8.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import workbench as wb
from workbench.engines.pullback import local_basis
from workbench.options import add_renamed
from workbench.sampling import make_timesteps, run_chain
from workbench.stats import principal_angles

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_dit  # noqa: E402  (the tiny configs)
import tiny_sd  # noqa: E402  (the vocabulary writer and the tiny configs)

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD15_VAE = dict(
    sample_size=512,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
)
CLIP_L = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
)
DIT_XL_2 = dict(
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    sample_size=32,
    patch_size=2,
    num_embeds_ada_norm=1000,
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_dit(size: str, device: str, dtype: torch.dtype) -> wb.DiffusionModel:
    from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

    config, vae_cfg = (
        (DIT_XL_2, SD15_VAE | {"sample_size": 256})
        if size != "tiny"
        else (tiny_dit.DIT, tiny_sd.VAE)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = DiTTransformer2DModel(**config)
        vae = AutoencoderKL(**vae_cfg)
    scheduler = DDIMScheduler(**tiny_dit.DIT_SCHEDULER)
    model = wb.DiffusionModel(transformer, scheduler, name=f"random:dit-{size}", vae=vae)
    return model.to(device, dtype)


def build(model_name: str, size: str, device: str, dtype: torch.dtype) -> wb.DiffusionModel:
    """The named architecture (``size="tiny"``: the tests' tiny configs) on ``device``."""
    if model_name == "dit":
        return build_dit(size, device, dtype)
    return build_sd(size, device, dtype)


def build_sd(size: str, device: str, dtype: torch.dtype) -> wb.DiffusionModel:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_cfg, vae_cfg = (SD15_UNET, SD15_VAE) if size != "tiny" else (tiny_sd.UNET, tiny_sd.VAE)
    text_cfg = dict(CLIP_L)
    if size == "tiny":
        text_cfg.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
        text_cfg.update(num_attention_heads=4, max_position_embeddings=tiny_sd.MAX_LENGTH)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text = CLIPTextModel(CLIPTextConfig(**text_cfg, bos_token_id=0, eos_token_id=1))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_sd.tokenizer(Path(tmp))
    tokenizer.model_max_length = text_cfg["max_position_embeddings"]
    scheduler = DDIMScheduler(
        **{k: v for k, v in tiny_sd.SCHEDULER.items() if k != "skip_prk_steps"},
        clip_sample=False,
    )
    model = wb.DiffusionModel(
        unet, scheduler, name=f"random:{size}", vae=vae, text_encoder=text, tokenizer=tokenizer
    )
    return model.to(device, dtype)


def peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def timed(fn, device: str) -> tuple[float, object]:
    peak_reset(device)
    began = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - began, out


def basis_at(model, x_t, t, k, chunk, dtype, device):
    def run(c):
        return local_basis(
            model, x_t, t, k=k, oversample=4, tol_deg=0.5, max_iter=20, chunk=c, dtype=dtype
        )

    try:
        return timed(lambda: run(chunk), device), chunk
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return timed(lambda: run(8), device), 8


def save(path: str | None, result: dict) -> None:
    """Write what is measured so far: a run cut short keeps it."""
    if path:
        from workbench.store import write_json

        write_json(path, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["sd15", "dit"], default="sd15")
    parser.add_argument("--size", choices=["real", "tiny"], default="real")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--ks", default="8,50")
    add_renamed(parser, "--num-steps", "--steps", type=int, default=50)
    parser.add_argument("--t", type=int, default=601)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--prompt", default="a photo of a red square", help="sd15")
    parser.add_argument("--class-label", type=int, default=207, help="dit")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32
    torch.backends.cudnn.allow_tf32 = False
    device = args.device
    ks = [int(k) for k in args.ks.split(",")]
    rows: dict[str, dict] = {}
    result = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "model": args.model,
        "size": args.size,
        "steps": args.num_steps,
        "t": args.t,
        "results": rows,
    }
    references: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    x_t = None
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        model = build(args.model, args.size, device, dtype)
        row: dict[str, object] = {
            "parameters_M": sum(p.numel() for p in model.network.parameters()) / 1e6,
            "h_point": model.h_point,
            "h_shape": list(model.h_shape),
        }
        rows[name] = row
        if args.model == "dit":
            condition = {"class_label": args.class_label, "guidance_scale": 4.0}
        else:
            condition = {"prompt": args.prompt, "guidance_scale": 7.5}
        with model.conditioned(**condition):
            wb.sample(model, seeds=[0], num_steps=2, progress=False)  # warm-up
            seconds, _ = timed(
                lambda m=model: wb.sample(m, seeds=[0], num_steps=args.num_steps, progress=False),
                device,
            )
            row["sample_s"], row["sample_peak_GiB"] = seconds, peak_gib(device)
            save(args.out, result)
            if x_t is None:  # the same x_t for every dtype: float32's seed-0 trajectory
                grid = make_timesteps(model, args.num_steps, include=[args.t])
                x_t = run_chain(
                    model, model.noise([0]), grid[: grid.index(args.t) + 1], progress=False
                )
                x_t = x_t.float().cpu()
            for k in ks:
                (seconds, basis), chunk = basis_at(model, x_t, args.t, k, args.chunk, dtype, device)
                entry = {
                    "seconds": seconds,
                    "seconds_per_iteration": seconds / basis.iterations,
                    "iterations": basis.iterations,
                    "converged": basis.converged,
                    "peak_GiB": peak_gib(device),
                    "chunk": basis.chunk if chunk is None else chunk,  # None: all at once
                }
                V = basis.V[0].reshape(k, -1).T.float().cpu()
                s = basis.s[0].float().cpu()
                if dtype == torch.float32:
                    references[k] = (V, s)
                elif k in references:
                    ref_v, ref_s = references[k]
                    entry["angle_deg_to_float32"] = (
                        float(principal_angles(ref_v, V).max()) * 180 / math.pi
                    )
                    entry["s_rel_error"] = float(((s - ref_s) / ref_s).abs().max())
                row[f"pullback_k{k}"] = entry
                save(args.out, result)
        print(name, json.dumps(row, indent=1))
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
