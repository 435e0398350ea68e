"""Stable Diffusion 1.x/2.x (``UNet2DConditionModel`` with one CLIP text encoder).

Latent text-to-image; h points ``down.i``, ``mid`` (default), ``up.i``; classifier-free
guidance as a doubled batch, 7.5 by default as ``StableDiffusionPipeline``; the negative
prompt defaults to the empty one.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.models.families.base import Family, UNetPoints


class StableDiffusion(UNetPoints, Family):
    """Stable Diffusion 1.x/2.x: a text-conditional latent U-Net."""

    name = "sd"
    title = "Stable Diffusion 1.x/2.x"
    network_class = "UNet2DConditionModel"
    folder = "unet"
    default_guidance = 7.5
    text_encoders = {"": ("CLIPTextModel",)}
    pipeline = "StableDiffusionPipeline"

    @classmethod
    def recognise(cls, config: dict[str, Any], pipeline: str | None = None) -> bool:
        """A ``UNet2DConditionModel`` without SDXL's added text and size conditions."""
        return (
            super().recognise(config, pipeline) and config.get("addition_embed_type") != "text_time"
        )

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Added, class or guidance-embedding conditions are refused in one line."""
        added = config.get("addition_embed_type")
        if added not in (None, "text_time"):
            raise WorkbenchError(
                f"UNet2DConditionModel with added conditions {added!r} is not supported yet"
            )
        if config.get("class_embed_type") is not None or config.get("time_cond_proj_dim"):
            raise WorkbenchError(
                "UNet2DConditionModel with class or guidance-embedding conditions "
                "(a latent consistency model's w embedding) is not supported yet"
            )

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """CLIP's last hidden states ``[1, L, D]`` of the prompt padded to the tokenizer's
        maximum length (truncated beyond it, with a warning)."""
        model = self.model
        tok, encoder = model.tokenizer, model.text_encoder
        length = int(tok.model_max_length)
        ids = tok(prompt, padding="max_length", max_length=length, truncation=True)
        full = tok(prompt, padding="longest").input_ids
        if len(full) > length:
            warnings.warn(
                f"the prompt is {len(full)} tokens long; the text encoder sees the first {length}",
                stacklevel=4,
            )
        input_ids = torch.tensor([ids.input_ids], device=model.device)
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = torch.tensor([ids.attention_mask], device=model.device)
        with torch.no_grad():
            states = encoder(input_ids, attention_mask=mask)[0]
        return {"encoder_hidden_states": states.to(model.dtype)}
