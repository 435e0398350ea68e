"""Sana (``SanaTransformer2DModel``): linear-attention DiT on a deep-compression autoencoder.

x_t is the latent of an ``AutoencoderDC`` (32x compression for the released models; its
latent is ``z * scaling_factor``, no shift); the network's self-attention is linear
(ReLU kernels: forward-mode AD runs through it as it is), its cross-attention to the text
softmax. Text inputs from the pipeline's own ``encode_prompt``: Gemma-2 states and their
attention mask, the prompt prefixed with the pipeline's default "complex human
instruction" and cut to its first token and last 299 (300 in all); the negative prompt
(default empty) without the instruction, padded to 300. Classifier-free guidance as a
doubled batch, 4.5 by default as ``SanaPipeline``. The released models sample with a
DPM-Solver on flow sigmas: their config is read as the flow Euler step with the same
shift (said once); a flow-matching Euler config is used as saved. h points ``block.i``.
Sana-Sprint (a guidance embedding) is refused.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models.families.base import Family, TokenPoints, load_strictly


class Sana(TokenPoints, Family):
    """Sana: Gemma-2 text, linear self-attention, a DC-AE latent, flow matching, CFG."""

    name = "sana"
    title = "Sana"
    network_class = "SanaTransformer2DModel"
    default_guidance = 4.5
    text_encoders = {"": ("Gemma2Model", "Gemma2ForCausalLM")}
    pipeline = "SanaPipeline"
    image_index = 0
    max_sequence_length = 300

    @classmethod
    def load_latent(cls, source: str | Path, options: dict[str, Any]) -> dict[str, Any]:
        """The ``vae/`` deep-compression autoencoder (``AutoencoderDC``)."""
        from diffusers import AutoencoderDC

        return {"vae": load_strictly(AutoencoderDC, source, "vae", **options)}

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Sana-Sprint's guidance embedding is refused."""
        if config.get("guidance_embeds"):
            raise WorkbenchError(
                "a Sana transformer with a guidance embedding (Sana-Sprint, its own "
                "consistency sampler) is not supported yet"
            )

    # ------------------------------------------------------------------ the autoencoder
    def vae_factor(self) -> int:
        """The DC-AE's compression: 2 per encoder level after the first."""
        return 2 ** (len(self.model.vae.config.encoder_block_out_channels) - 1)

    def vae_scale(self) -> tuple[float, float]:
        """``(scaling_factor, 0)``."""
        return float(self.model.vae.config.scaling_factor), 0.0

    def image_channels(self) -> int:
        """The autoencoder's image channels."""
        return int(self.model.vae.config.in_channels)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``encoder(images) * scaling_factor`` (the DC-AE is deterministic)."""
        return self.model.vae.encode(images).latent * self.vae_scale()[0]

    # ------------------------------------------------------------------ attention
    def safe_processor(self, module: nn.Module) -> Any:
        """The linear self-attention as it is (matrix products, AD-safe); the softmax
        cross-attention explicit."""
        if "Linear" in type(module.processor).__name__:
            return module.processor
        return super().safe_processor(module)

    # ------------------------------------------------------------------ conditioning
    def instruction(self) -> list[str]:
        """The pipeline's default complex human instruction (read from its signature)."""
        import diffusers

        call = inspect.signature(diffusers.SanaPipeline.__call__)
        return list(call.parameters["complex_human_instruction"].default or [])

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """Gemma-2's states ``[1, 300, D]`` and mask ``[1, 300]`` by the pipeline's code."""
        model = self.model
        with self.encoder() as pipe:
            states, mask, _, _ = pipe.encode_prompt(
                prompt,
                do_classifier_free_guidance=False,
                device=model.device,
                max_sequence_length=self.text_length(),
                complex_human_instruction=self.instruction(),
            )
        return {"encoder_hidden_states": states.to(model.dtype), "encoder_attention_mask": mask}

    def negative_inputs(
        self, cond: dict[str, torch.Tensor], negative_prompt: str | None
    ) -> dict[str, torch.Tensor]:
        """The negative prompt (default empty) without the instruction, as the pipeline."""
        if not self.model.conditional:
            return self.empty_inputs()
        model = self.model
        with self.encoder() as pipe:
            states, mask = pipe._get_gemma_prompt_embeds(
                ["" if negative_prompt is None else negative_prompt],
                device=model.device,
                dtype=model.text_encoder.dtype,
                max_sequence_length=self.text_length(),
                complex_human_instruction=False,
            )
        return {"encoder_hidden_states": states.to(model.dtype), "encoder_attention_mask": mask}

    def embed_keys(self) -> set[str]:
        """States and their attention mask."""
        return {"encoder_hidden_states", "encoder_attention_mask"}

    # ------------------------------------------------------------------ the network call
    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """The network with the timestep times ``timestep_scale``; float output."""
        scale = self.config.get("timestep_scale", 1.0)
        out = self.model.network(x, timestep=timesteps * scale, return_dict=False, **context)[
            0
        ].float()
        return self.mean_part(out, x)
