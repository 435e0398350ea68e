"""A tiny Stable-Diffusion-layout folder built from configs (nothing downloaded).

The same diffusers/transformers classes as Stable Diffusion 1.x/2.x, small: a
``UNet2DConditionModel`` on 4 x 8 x 8 latents, an ``AutoencoderKL`` (16 px images, one
down-sampling), a 2-layer ``CLIPTextModel`` and a ``CLIPTokenizer`` written from a
vocabulary made here, saved by ``StableDiffusionPipeline.save_pretrained`` so that loading
it is the code path of a Hub id.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

MAX_LENGTH = 16
#: Words the tiny tokenizer knows whole (others fall apart into letters).
WORDS = ("red", "square", "circle", "blue", "photo", "of", "a", "large", "small")

UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
)
VAE = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
)
#: Stable Diffusion 1.x's own scheduler config (PNDM as saved on the Hub, where it also
#: says ``"clip_sample": false`` for the DDIM it is read as; added on saving).
SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)


def tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over letters, digits and :data:`WORDS`."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + ".,!?-'"
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    merges = []
    for word in WORDS:  # merge each word left to right: r e -> re, re d</w> -> red</w>
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            if pieces[0] not in tokens:
                tokens.append(pieces[0])
    merges = list(dict.fromkeys(merges))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_LENGTH
    )


def build(
    folder: str | Path, seed: int = 0, prediction_type: str = "epsilon"
) -> StableDiffusionPipeline:
    """Write a tiny Stable Diffusion folder to ``folder``; returns its pipeline (DDIM)."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET)
        with torch.no_grad():  # a well-conditioned (if useless) random denoiser ...
            unet.conv_out.weight.mul_(0.1)
            for name, module in unet.named_modules():  # ... that listens to the prompt
                if name.endswith("attn2.to_out.0"):
                    module.weight.mul_(30)
        vae = AutoencoderKL(**VAE)
        with torch.no_grad():  # images inside [-1, 1], not clipped, so comparisons see them
            vae.decoder.conv_out.weight.mul_(0.3)
        text_encoder = CLIPTextModel(_clip_config()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        vocabulary = tokenizer(Path(tmp))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=vocabulary,
        unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER, prediction_type=prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text()) | {"clip_sample": False}
    path.write_text(json.dumps(config, indent=2))
    pipe.scheduler = DDIMScheduler.from_config(config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


#: SDXL's U-Net layout, small: added text (pooled, 32) and size (6 x 8) embeddings; the
#: cross-attention reads both CLIPs' states side by side (32 + 32).
UNET_XL = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 2),
    projection_class_embeddings_input_dim=6 * 8 + 32,
    norm_num_groups=8,
)


def _clip_config(**extra: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **extra,
    )


def build_xl(folder: str | Path, seed: int = 0):
    """Write a tiny SDXL folder to ``folder``; returns its pipeline (DDIM)."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET_XL)
        with torch.no_grad():
            unet.conv_out.weight.mul_(0.1)
            for name, module in unet.named_modules():
                if name.endswith("attn2.to_out.0"):
                    module.weight.mul_(30)
        vae = AutoencoderKL(**VAE)
        with torch.no_grad():
            vae.decoder.conv_out.weight.mul_(0.3)
        text_encoder = CLIPTextModel(_clip_config()).eval()
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(projection_dim=32)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        one, two = tokenizer(Path(tmp) / "1"), tokenizer(Path(tmp) / "2")
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=one,
        tokenizer_2=two,
        unet=unet.eval(),
        scheduler=DDIMScheduler(**{k: v for k, v in SCHEDULER.items() if k != "skip_prk_steps"}),
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe
