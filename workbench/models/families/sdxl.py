"""Stable Diffusion XL (``UNet2DConditionModel`` with added text and size conditions).

Two CLIP text encoders: their penultimate states side by side, the second's pooled
projection and the size conditions (original = target = the image size, no crop) as added
inputs; guidance 5.0 by default as ``StableDiffusionXLPipeline``, whose empty negative
prompt is zero embeddings (``force_zeros_for_empty_prompt``). The refiner (second encoder
only) is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.models.families.sd import StableDiffusion


class StableDiffusionXL(StableDiffusion):
    """SDXL base: a latent U-Net with two CLIP text encoders and size conditions."""

    name = "sdxl"
    title = "Stable Diffusion XL"
    default_guidance = 5.0
    text_encoders = {"": ("CLIPTextModel",), "_2": ("CLIPTextModelWithProjection",)}
    pipeline = "StableDiffusionXLPipeline"
    encoder_extra = {"add_watermarker": False}

    @classmethod
    def recognise(cls, config: dict[str, Any], pipeline: str | None = None) -> bool:
        """A ``UNet2DConditionModel`` with ``addition_embed_type == "text_time"``."""
        return (
            config.get("_class_name") == cls.network_class
            and config.get("addition_embed_type") == "text_time"
        )

    def check(self) -> None:
        """Both text encoders are needed (the refiner is refused)."""
        parts = self.model.parts
        if parts.get("text_encoder") is None or parts.get("text_encoder_2") is None:
            raise WorkbenchError(
                "an SDXL U-Net needs both text encoders (the refiner, with only the second, "
                "is not supported yet)"
            )
        super().check()

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """diffusers' own ``encode_prompt`` on this model's encoders, plus ``time_ids``."""
        model = self.model
        with self.encoder() as pipe:
            states, _, pooled, _ = pipe.encode_prompt(
                prompt, None, device=model.device, do_classifier_free_guidance=False
            )
        return {
            "encoder_hidden_states": states.to(model.dtype),
            "text_embeds": pooled.to(model.dtype),
            "time_ids": self.time_ids(),
        }

    def time_ids(self) -> torch.Tensor:
        """The size conditions ``[1, 6]``: original size, crop corner (0, 0), target size."""
        model = self.model
        _, height, width = model.image_shape
        ids = torch.tensor([[height, width, 0, 0, height, width]], device=model.device)
        return ids.to(model.dtype)

    def negative_inputs(
        self, cond: dict[str, torch.Tensor], negative_prompt: str | None
    ) -> dict[str, torch.Tensor]:
        """Zero embeddings for no negative prompt (the pipeline's
        ``force_zeros_for_empty_prompt``), else the negative prompt's."""
        if negative_prompt is None:
            return {k: v if k == "time_ids" else torch.zeros_like(v) for k, v in cond.items()}
        return self.encode_prompt(negative_prompt)

    def embed_keys(self) -> set[str]:
        """States, pooled projection and the size conditions."""
        return {"encoder_hidden_states", "text_embeds", "time_ids"}

    def complete_embeds(self, embeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``time_ids`` added (the image size) unless given."""
        return {"time_ids": self.time_ids(), **embeds} if isinstance(embeds, dict) else embeds

    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """The added conditions go in as one dict (``added_cond_kwargs``)."""
        context = dict(context)
        added = {k: context.pop(k) for k in ("text_embeds", "time_ids")}
        return self.model.network(x, timestep=timesteps, added_cond_kwargs=added, **context).sample
