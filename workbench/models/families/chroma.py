"""Chroma (``ChromaTransformer2DModel``): a FLUX.1-schnell derivative with real guidance.

The FLUX layout (packed 2 x 2 latents, ``block.i``/``single.i`` points, ``FluxAttention``,
dynamic-shift flow matching with the pipeline's sigmas) with one T5 text encoder, whose
states and attention mask (every real token and the first padding one) condition the
network; classifier-free guidance as a doubled batch, 5.0 by default as ``ChromaPipeline``,
the negative prompt defaulting to the empty one. The text mask, extended by the image
tokens, reaches the attention as the pipeline passes it.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.models.families.flux import Flux


class Chroma(Flux):
    """Chroma: FLUX blocks, T5 only, CFG."""

    name = "chroma"
    title = "Chroma"
    network_class = "ChromaTransformer2DModel"
    default_guidance = 5.0
    text_encoders = {"": ("T5EncoderModel",)}
    pipeline = "ChromaPipeline"
    text_tokenizer = "tokenizer"

    @staticmethod
    def guidance_of(config: Any) -> str:
        """Classifier-free guidance as a doubled batch."""
        return "cfg"

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """T5's states ``[1, L, D]`` and the pipeline's text mask ``[1, L]``."""
        model = self.model
        with self.encoder() as pipe:
            states, _, mask, *_ = pipe.encode_prompt(
                prompt,
                device=model.device,
                do_classifier_free_guidance=False,
                max_sequence_length=self.text_length(),
            )
        return {"encoder_hidden_states": states.to(model.dtype), "attention_mask": mask}

    def embed_keys(self) -> set[str]:
        """T5's states and the text mask."""
        return {"encoder_hidden_states", "attention_mask"}

    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """Pack, extend the text mask by the image tokens, call, unpack."""
        states, mask = context["encoder_hidden_states"], context["attention_mask"]
        packed, img_ids, txt_ids = self.pack(x, states)
        image = torch.ones(x.shape[0], packed.shape[1], device=x.device, dtype=torch.bool)
        T = self.model.num_train_timesteps
        out = self.model.network(
            hidden_states=packed,
            timestep=timesteps.to(x.dtype) / T,
            encoder_hidden_states=states,
            txt_ids=txt_ids,
            img_ids=img_ids,
            attention_mask=torch.cat([mask, image], dim=1),
            return_dict=False,
        )[0]
        return self.unpack(out, x.shape)
