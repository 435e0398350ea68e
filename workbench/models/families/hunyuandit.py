"""HunyuanDiT (``HunyuanDiT2DModel``): a bilingual DiT with a BERT and an mT5 encoder.

Text inputs as ``HunyuanDiTPipeline`` computes them: the first encoder's states (77
tokens) and the second's (256), each with its attention mask, the negative prompt
(default empty) the same way. Beside them the network takes the image size conditions
(original size 1024 x 1024 as the pipeline's default, target size the image's, crop at
(0, 0)), the style (0) and a 2-D rotary embedding of the patch grid, computed as the
pipeline does (its grid assumes the 8x VAE of the released model). Classifier-free
guidance as a doubled batch, 5.0 by default; learned sigma (dropped); the network takes the
timestep as a float. h points ``block.i``: the blocks' outputs (the first half's also feed
the long skips). The stock attention (rotary, QK norms) runs on the math SDPA backend
under ``jacobian_safe``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.models.families.base import Family, TokenPoints


class HunyuanDiT(TokenPoints, Family):
    """HunyuanDiT: BERT + mT5 text, size and style conditions, rotary DiT blocks."""

    name = "hunyuandit"
    title = "HunyuanDiT"
    network_class = "HunyuanDiT2DModel"
    default_guidance = 5.0
    text_encoders = {"": ("BertModel",), "_2": ("T5EncoderModel", "MT5EncoderModel")}
    pipeline = "HunyuanDiTPipeline"
    encoder_extra = {
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    image_index = 0
    #: The pipeline's default ``original_size``.
    original_size = (1024, 1024)

    def blocks(self) -> list[nn.Module]:
        """The DiT blocks."""
        return list(self.model.network.blocks)

    def self_attention(self, point: str) -> str | None:
        """The block's ``attn1``."""
        name = f"blocks.{point.partition('.')[2]}.attn1"
        return name if name in self.attention_modules() else None

    def safe_processor(self, module: nn.Module) -> Any:
        """The stock processor (its SDPA on the math backend under ``jacobian_safe``)."""
        return module.processor

    # ------------------------------------------------------------------ conditioning
    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """Both encoders' states and masks, by the pipeline's code."""
        model = self.model
        out: dict[str, torch.Tensor] = {}
        with self.encoder() as pipe:
            for index, length, suffix in ((0, 77, ""), (1, 256, "_t5")):
                states, _, mask, _ = pipe.encode_prompt(
                    prompt,
                    device=model.device,
                    dtype=model.dtype,
                    do_classifier_free_guidance=False,
                    max_sequence_length=length,
                    text_encoder_index=index,
                )
                out[f"encoder_hidden_states{suffix}"] = states.to(model.dtype)
                out[f"text_embedding_mask{suffix}"] = mask
        return out

    def embed_keys(self) -> set[str]:
        """Both encoders' states and masks."""
        return {
            "encoder_hidden_states",
            "text_embedding_mask",
            "encoder_hidden_states_t5",
            "text_embedding_mask_t5",
        }

    # ------------------------------------------------------------------ the network call
    def rotary(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's 2-D rotary embedding of the patch grid (its 8x VAE grid),
        computed once per device (it depends on the image size alone)."""
        cached = self.__dict__.setdefault("_rotary", {})
        if device not in cached:
            cached[device] = self._rotary_of(device)
        return cached[device]

    def _rotary_of(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.embeddings import get_2d_rotary_pos_embed
        from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import (
            get_resize_crop_region_for_grid,
        )

        net = self.model.network
        _, height, width = self.model.image_shape
        p = int(net.config.patch_size)
        grid = (height // 8 // p, width // 8 // p)
        crops = get_resize_crop_region_for_grid(grid, 512 // 8 // p)
        return get_2d_rotary_pos_embed(
            net.inner_dim // net.num_heads, crops, grid, device=device, output_type="pt"
        )

    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """The network with the size and style conditions and the rotary embedding."""
        n = x.shape[0]
        _, height, width = self.model.image_shape
        dtype = context["encoder_hidden_states"].dtype
        sizes = [*self.original_size, height, width, 0, 0]
        meta = torch.tensor([sizes], dtype=dtype, device=x.device).repeat(n, 1)
        style = torch.zeros(n, dtype=torch.long, device=x.device)
        context = {k: v.contiguous() for k, v in context.items()}  # the network views them
        out = self.model.network(
            x,
            timesteps.to(x.dtype),
            image_meta_size=meta,
            style=style,
            image_rotary_emb=self.rotary(x.device),
            return_dict=False,
            **context,
        )[0]
        return self.mean_part(out, x)
