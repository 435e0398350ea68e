"""Kandinsky 3 (``Kandinsky3UNet``): a T5-conditioned U-Net on a MoVQ latent.

Text inputs as ``Kandinsky3Pipeline`` computes them: T5 states of the prompt padded to 128
tokens, zero past its real tokens, cut to the longest real length plus one, with their
mask; the negative prompt cut to the prompt's length, or, when none is given, zero
embeddings with a zero mask. Guidance 3.0 by default in the pipeline's own form
``(g + 1) cond - g uncond`` (classifier-free guidance at ``g + 1``). The latent is the
MoVQ's (a ``VQModel`` under ``movq/``), decoded without quantisation and without scaling.
The U-Net has no mid block: h points ``down.i`` and ``up.i``, default the last down block
(the lowest resolution).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.models.families.base import Family, UNetPoints, load_strictly


class Kandinsky3(UNetPoints, Family):
    """Kandinsky 3: T5 text, a U-Net without a mid block, MoVQ latents, CFG at g + 1."""

    name = "kandinsky3"
    title = "Kandinsky 3"
    network_class = "Kandinsky3UNet"
    folder = "unet"
    default_guidance = 3.0
    text_encoders = {"": ("T5EncoderModel",)}
    pipeline = "Kandinsky3Pipeline"
    folders = {"vae": "movq"}
    max_length = 128

    @classmethod
    def load_latent(cls, source: str | Path, options: dict[str, Any]) -> dict[str, Any]:
        """The ``movq/`` VQ model."""
        from diffusers import VQModel

        return {"vae": load_strictly(VQModel, source, "movq", **options)}

    # ------------------------------------------------------------------ shapes, latent
    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """The U-Net config has no ``sample_size``: 1024 px (the pipeline's default), or
        the resolution the model is loaded with."""
        resolution = self.model.resolution or 1024
        side = resolution // self.vae_factor()
        return (self.in_channels, side, side)

    def vae_scale(self) -> tuple[float, float]:
        """The pipeline neither scales nor shifts the MoVQ latent."""
        return 1.0, 0.0

    def decode_latent(self, z: torch.Tensor) -> Any:
        """The MoVQ decoder without quantisation, as the pipeline."""
        return self.model.vae.decode(z, force_not_quantize=True)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The MoVQ encoder's latents (before quantisation)."""
        return self.model.vae.encode(images).latents

    # ------------------------------------------------------------------ activation points
    def points(self) -> list[str]:
        """``down.i`` then ``up.i`` (no mid block)."""
        net = self.model.network
        return [f"down.{i}" for i in range(len(net.down_blocks))] + [
            f"up.{i}" for i in range(len(net.up_blocks))
        ]

    def default_point(self) -> str:
        """The last down block: the U-Net's lowest resolution."""
        return f"down.{len(self.model.network.down_blocks) - 1}"

    def known_h_shape(self, point: str) -> tuple[int, ...] | None:
        """Measured by a forward."""
        return None

    def self_attention(self, point: str) -> str | None:
        """An up block's self-attention (its first attention block, run last on the
        block's output channels: h's). A down block runs its self-attention first, on
        its input, so its directions do not act on h there: None. (Every Kandinsky 3
        ``Attention`` is built with a context dimension, so ``is_cross_attention`` does
        not tell them apart.)"""
        kind, _, index = point.partition(".")
        block = self.module(point)
        if kind != "up" or not getattr(block, "self_attention", False):
            return None
        return f"up_blocks.{index}.attentions.0.attention"

    def is_self_attention(self, name: str) -> bool:
        """The first attention block of a block with self-attention."""
        block_name = name.split(".attentions.")[0]
        block = self.model.network.get_submodule(block_name)
        return name == f"{block_name}.attentions.0.attention" and bool(
            getattr(block, "self_attention", False)
        )

    def safe_processor(self, module: nn.Module) -> Any:
        """The stock processor (its SDPA on the math backend under ``jacobian_safe``)."""
        return module.processor

    # ------------------------------------------------------------------ conditioning
    def _tokens(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        tokens = model.tokenizer(
            text, padding="max_length", max_length=self.max_length, truncation=True
        )
        ids = torch.tensor([tokens.input_ids], device=model.device)
        mask = torch.tensor([tokens.attention_mask], device=model.device)
        with torch.no_grad():
            states = model.text_encoder(ids, attention_mask=mask)[0]
        return states, mask

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """T5 states zeroed past the real tokens and cut to their length plus one."""
        states, mask = self._tokens(prompt)
        states = states.masked_fill(mask[..., None] == 0, 0.0)
        length = int(mask.sum(-1).max()) + 1
        states, mask = states[:, :length], mask[:, :length]
        states = states * mask.unsqueeze(2)
        return {
            "encoder_hidden_states": states.to(self.model.dtype),
            "encoder_attention_mask": mask,
        }

    def negative_inputs(
        self, cond: dict[str, torch.Tensor], negative_prompt: str | None
    ) -> dict[str, torch.Tensor]:
        """Zeros (states and mask) without a negative prompt; else its states cut to the
        prompt's length."""
        if negative_prompt is None:
            return {k: torch.zeros_like(v) for k, v in cond.items()}
        states, mask = self._tokens(negative_prompt)
        length = cond["encoder_hidden_states"].shape[1]
        states, mask = states[:, :length], mask[:, :length]
        return {
            "encoder_hidden_states": (states * mask.unsqueeze(2)).to(self.model.dtype),
            "encoder_attention_mask": mask,
        }

    def embed_keys(self) -> set[str]:
        """States and their attention mask."""
        return {"encoder_hidden_states", "encoder_attention_mask"}

    # ------------------------------------------------------------------ the network call
    def combine(self, uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
        """The pipeline's ``(g + 1) cond - g uncond``."""
        return (scale + 1.0) * cond - scale * uncond

    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """The U-Net (its output is a plain tuple)."""
        return self.model.network(x, timesteps, return_dict=False, **context)[0]
