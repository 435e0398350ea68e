"""Stable Diffusion 3 (``SD3Transformer2DModel``): an MMDiT with a rectified-flow schedule.

Two CLIP text encoders with projection and an optional T5 (text inputs from diffusers' own
``encode_prompt``: T5's states or zeros where there is no T5); the text encoders are
optional as a whole (then zero prompt embeddings, or ``prompt_embeds`` given). Guidance 7.0
by default as ``StableDiffusion3Pipeline``. h points ``block.i``: a joint block returns
``(context, image)``, h is the image stream.
"""

from __future__ import annotations

import torch

from workbench.errors import WorkbenchError
from workbench.models.families.base import Family, TokenPoints


class StableDiffusion3(TokenPoints, Family):
    """SD3 / SD3.5: joint attention over image and text tokens, flow matching."""

    name = "sd3"
    title = "Stable Diffusion 3"
    network_class = "SD3Transformer2DModel"
    default_guidance = 7.0
    text_encoders = {
        "": ("CLIPTextModelWithProjection",),
        "_2": ("CLIPTextModelWithProjection",),
        "_3": ("T5EncoderModel",),
    }
    optional_text = True
    pipeline = "StableDiffusion3Pipeline"
    image_index = 1

    def check(self) -> None:
        """Both CLIPs with their tokenizers, or none."""
        parts = self.model.parts
        one, two = parts.get("text_encoder"), parts.get("text_encoder_2")
        if (one is None) != (two is None) or (one is not None and parts.get("tokenizer") is None):
            raise WorkbenchError(
                "an SD3 model needs both CLIP text encoders and tokenizers, or none"
            )
        super().check()

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """``encoder_hidden_states`` and ``pooled_projections`` by the pipeline's own code."""
        model = self.model
        with self.encoder() as pipe:
            states, _, pooled, _ = pipe.encode_prompt(
                prompt, None, None, device=model.device, do_classifier_free_guidance=False
            )
        return {
            "encoder_hidden_states": states.to(model.dtype),
            "pooled_projections": pooled.to(model.dtype),
        }

    def empty_inputs(self) -> dict[str, torch.Tensor]:
        """Zero prompt embeddings: ``[1, 77 + 256, joint_attention_dim]`` states (CLIP's and
        T5's lengths in the pipeline) and ``[1, pooled_projection_dim]`` pooled ones."""
        model, config = self.model, self.config
        states = torch.zeros(1, 77 + 256, config.joint_attention_dim)
        pooled = torch.zeros(1, config.pooled_projection_dim)
        return {
            "encoder_hidden_states": states.to(model.device, model.dtype),
            "pooled_projections": pooled.to(model.device, model.dtype),
        }

    def embed_keys(self) -> set[str]:
        """States and the pooled projection."""
        return {"encoder_hidden_states", "pooled_projections"}
