"""Tiny diffusion-transformer folders built from configs (nothing downloaded).

- :func:`build_dit`: the DiT layout (``transformer/`` ``DiTTransformer2DModel``, learned
  sigma, 1000 classes plus the null class, as DiT-XL/2; ``vae/``; a DDIM ``scheduler/``),
  saved by ``DiTPipeline.save_pretrained``.
- :func:`build_sd3`: the Stable Diffusion 3 layout (``transformer/``
  ``SD3Transformer2DModel``, an MMDiT with joint attention; ``vae/`` with SD3's scaling and
  shift factors; a ``FlowMatchEulerDiscreteScheduler`` with shift 3; two CLIP text encoders
  with projection and their tokenizers, no T5, or no text encoders at all), saved by
  ``StableDiffusion3Pipeline.save_pretrained``.

Both run on 4 x 8 x 8 latents and 16 px images, the tiny Stable Diffusion VAE's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from tiny_sd import MAX_LENGTH, VAE, tokenizer
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

DIT = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,  # learned sigma: eps and the variance part
    num_layers=4,
    sample_size=8,
    patch_size=2,
    num_embeds_ada_norm=1000,  # DiTPipeline's null class is 1000
    norm_num_groups=8,
)
#: DiT's training schedule (linear betas), read as DDIM.
DIT_SCHEDULER = dict(
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    num_train_timesteps=1000,
    clip_sample=False,
)
SD3 = dict(
    sample_size=8,
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_layers=3,
    attention_head_dim=8,
    num_attention_heads=2,
    joint_attention_dim=32,
    caption_projection_dim=16,
    pooled_projection_dim=32,
    pos_embed_max_size=8,
)
#: SD3's scheduler config.
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)


def _vae(seed: int, **extra: float) -> AutoencoderKL:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**VAE, **extra)
        with torch.no_grad():  # images inside [-1, 1], not clipped, so comparisons see them
            vae.decoder.conv_out.weight.mul_(0.3)
    return vae


def _quiet(output_layer: torch.nn.Module) -> None:
    """Shrink a random network's output layer: a well-conditioned (if useless) denoiser."""
    with torch.no_grad():
        output_layer.weight.mul_(0.1)


def build_dit(folder: str | Path, seed: int = 0) -> DiTPipeline:
    """Write a tiny DiT folder to ``folder``; returns its pipeline."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = DiTTransformer2DModel(**DIT)
        _quiet(transformer.proj_out_2)
        with torch.no_grad():  # labels that matter: a class embedding as large as the time's
            transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight.mul_(
                3
            )
    pipe = DiTPipeline(  # eval mode: a training-mode DiT drops class labels at random
        transformer=transformer.eval(),
        vae=_vae(seed + 1).eval(),
        scheduler=DDIMScheduler(**DIT_SCHEDULER),
    )
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _clip(seed: int, hidden: int) -> CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=1000,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config).eval()


def build_sd3(folder: str | Path, seed: int = 0, text: bool = True) -> StableDiffusion3Pipeline:
    """Write a tiny SD3 folder to ``folder`` (``text=False``: without text encoders);
    returns its pipeline."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(**SD3)
        _quiet(transformer.proj_out)
        with torch.no_grad():  # a denoiser that listens to the prompt
            transformer.context_embedder.weight.mul_(10)
        parts = {}
        if text:
            with tempfile.TemporaryDirectory() as tmp:
                parts = {
                    "text_encoder": _clip(seed + 2, 8),
                    "tokenizer": tokenizer(Path(tmp) / "1"),
                    "text_encoder_2": _clip(seed + 3, 16),
                    "tokenizer_2": tokenizer(Path(tmp) / "2"),
                }
    pipe = StableDiffusion3Pipeline(
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
        vae=_vae(seed + 1, scaling_factor=1.5305, shift_factor=0.0609).eval(),
        text_encoder=parts.get("text_encoder"),
        tokenizer=parts.get("tokenizer"),
        text_encoder_2=parts.get("text_encoder_2"),
        tokenizer_2=parts.get("tokenizer_2"),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe
