"""PixArt-alpha and PixArt-Sigma (``PixArtTransformer2DModel``): a T5-conditioned DiT.

Text inputs from the pipeline's own ``encode_prompt`` (T5 states and their attention mask,
padded to 120 tokens for alpha and 300 for Sigma; captions cleaned as the pipeline cleans
them where ``bs4`` and ``ftfy`` are installed); the mask goes to the network as
``encoder_attention_mask``; at 1024 px (``sample_size == 128``) the resolution and aspect
ratio as added inputs. Guidance 4.5 by default as the pipelines; learned sigma (the
variance half is dropped); h points ``block.i`` (self-attention ``attn1``, cross-attention
to the text ``attn2``). Which of the two pipelines a folder is comes from its
``model_index.json`` (alpha when it has none).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from workbench.models.families.base import Family, TokenPoints


class PixArtAlpha(TokenPoints, Family):
    """PixArt-alpha: T5 text encoder, DiT blocks with cross-attention, learned sigma."""

    name = "pixart"
    title = "PixArt-alpha"
    network_class = "PixArtTransformer2DModel"
    default_guidance = 4.5
    text_encoders = {"": ("T5EncoderModel",)}
    pipeline = "PixArtAlphaPipeline"
    #: The number of T5 tokens the pipeline pads a prompt to.
    max_sequence_length = 120

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """T5's states ``[1, L, D]`` and attention mask ``[1, L]`` by the pipeline's code."""
        model = self.model
        clean = all(importlib.util.find_spec(m) is not None for m in ("bs4", "ftfy"))
        with self.encoder() as pipe:
            states, mask, _, _ = pipe.encode_prompt(
                prompt,
                do_classifier_free_guidance=False,
                device=model.device,
                clean_caption=clean,
                max_sequence_length=self.text_length(),
            )
        return {"encoder_hidden_states": states.to(model.dtype), "encoder_attention_mask": mask}

    def embed_keys(self) -> set[str]:
        """States and their attention mask."""
        return {"encoder_hidden_states", "encoder_attention_mask"}

    def complete_embeds(self, embeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An all-ones mask when only the states are given."""
        if isinstance(embeds, dict) and set(embeds) == {"encoder_hidden_states"}:
            states = embeds["encoder_hidden_states"]
            if isinstance(states, torch.Tensor) and states.ndim == 3:
                ones = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
                return {**embeds, "encoder_attention_mask": ones}
        return embeds

    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """The network with the micro-conditions of the 1024-px model (none below it)."""
        added: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
        if int(self.config.sample_size) == 128:
            _, height, width = self.model.image_shape
            dtype = context["encoder_hidden_states"].dtype
            n = x.shape[0]
            added = {
                "resolution": torch.tensor([[height, width]], dtype=dtype, device=x.device).repeat(
                    n, 1
                ),
                "aspect_ratio": torch.tensor(
                    [[height / width]], dtype=dtype, device=x.device
                ).repeat(n, 1),
            }
        out = self.model.network(
            x, timestep=timesteps, added_cond_kwargs=added, return_dict=False, **context
        )[0]
        return self.mean_part(out, x)


class PixArtSigma(PixArtAlpha):
    """PixArt-Sigma: the same network class, prompts of up to 300 T5 tokens."""

    name = "pixart-sigma"
    title = "PixArt-Sigma"
    pipeline = "PixArtSigmaPipeline"
    max_sequence_length = 300

    @classmethod
    def recognise(cls, config: dict[str, Any], pipeline: str | None = None) -> bool:
        """The network class of alpha's, in a folder whose pipeline is Sigma's."""
        return super().recognise(config, pipeline) and pipeline == cls.pipeline
