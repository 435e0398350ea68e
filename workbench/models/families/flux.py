"""FLUX.1 (``FluxTransformer2DModel``): dev (guidance-distilled) and schnell.

x_t is the VAE latent ``[B, C, H, W]`` (16 channels for the released models); the network
sees it packed into 2 x 2 patches, ``[B, (H/2)(W/2), 4C]``, with position ids of the patch
grid and of the text tokens (all zero), packed and unpacked in :meth:`Flux.call`. Text
inputs from the pipeline's own ``encode_prompt``: CLIP's pooled projection and T5's states
(512 tokens, or the tokenizer's maximum where it is shorter). Guidance: dev's is an input
of the network (``guidance_embeds``; 3.5 by default as ``FluxPipeline``), there is no
unguided output and no negative prompt; schnell takes no guidance. The schedule is flow
matching with the resolution-dependent shift and the pipeline's own sigmas
``linspace(1, 1/N, N)``. h points: ``block.i`` (the dual-stream blocks' image stream) and
``single.i`` (the single-stream blocks' image tokens), both on the packed patch grid;
default the middle one of all. Resolution: 1024 px unless the model is loaded with another
(``wb.load(..., resolution=512)``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.models.families.base import DualStreamPoints, Family, is_flow
from workbench.models.schedule import FlowSchedule, Schedule


class Flux(DualStreamPoints, Family):
    """FLUX.1: packed latents, CLIP + T5, embedded guidance, dynamic-shift flow matching."""

    name = "flux"
    title = "FLUX.1"
    network_class = "FluxTransformer2DModel"
    default_guidance = 3.5
    text_encoders = {"": ("CLIPTextModel",), "_2": ("T5EncoderModel",)}
    pipeline = "FluxPipeline"
    image_index = 1  # both kinds of block return (text, image)
    #: The pipeline's default image size, in latent positions per side.
    default_sample_size = 128
    max_sequence_length = 512
    text_tokenizer = "tokenizer_2"  # T5's

    def __init__(self, model: Any) -> None:
        #: ``embedded`` for dev (a guidance input), ``none`` for schnell.
        self.guidance = self.guidance_of(model.network.config)
        super().__init__(model)

    @staticmethod
    def guidance_of(config: Any) -> str:
        """dev's guidance is an input of the network; schnell has none."""
        return "embedded" if config.get("guidance_embeds") else "none"

    # ------------------------------------------------------------------ shapes
    @property
    def in_channels(self) -> int:
        """Latent channels: the packed input's, divided by the 2 x 2 patch."""
        return int(self.config.in_channels) // 4

    def default_side(self) -> int:
        """1024 px: the pipeline's ``default_sample_size`` latent positions."""
        return self.default_sample_size

    def resolution_multiple(self) -> int:
        """Pixels per packed token along a side: the VAE factor times the 2 x 2 patch."""
        return self.vae_factor() * 2

    def seq_len(self) -> int:
        """Packed image tokens: ``(H/2)(W/2)``."""
        height, width = self.grid()
        return height * width

    def grid(self) -> tuple[int, int]:
        """The packed patch grid ``(H/2, W/2)``."""
        _, height, width = self.model.sample_shape
        return height // 2, width // 2

    def schedule(self, scheduler: Any) -> Schedule | FlowSchedule:
        """Flow matching with the pipeline's sigmas ``linspace(1, 1/N, N)``."""
        if not is_flow(scheduler):
            return super().schedule(scheduler)
        return FlowSchedule.from_scheduler(
            scheduler, image_seq_len=self.seq_len(), pipeline_sigmas=True
        )

    def attention_modules(self) -> dict[str, nn.Module]:
        """Every ``FluxAttention`` (not a subclass of diffusers' ``Attention``)."""
        from diffusers.models.transformers.transformer_flux import FluxAttention

        net = self.model.network
        return {n: m for n, m in net.named_modules() if isinstance(m, FluxAttention)}

    def attention_weights(
        self, name: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """A single-stream block's attention has no output projection of its own: its
        output goes through the attention columns of the block's ``proj_out``."""
        attn = self.attention_modules()[name]
        if getattr(attn, "to_out", None) is not None:
            return super().attention_weights(name)
        block = self.model.network.get_submodule(name.rsplit(".", 1)[0])
        w_o = block.proj_out.weight[:, : attn.inner_dim]
        return attn.to_q.weight, attn.to_k.weight, attn.to_v.weight, w_o, int(attn.heads)

    def safe_processor(self, module: nn.Module) -> Any:
        """Explicit softmax attention with FLUX's rotary embedding."""
        from workbench.models.attention import JacobianSafeFluxProcessor

        return JacobianSafeFluxProcessor()

    # ------------------------------------------------------------------ conditioning
    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """T5's states ``[1, 512, D]`` and CLIP's pooled projection ``[1, P]``."""
        model = self.model
        with self.encoder() as pipe:
            states, pooled, _ = pipe.encode_prompt(
                prompt,
                None,
                device=model.device,
                max_sequence_length=self.text_length(),
            )
        return {
            "encoder_hidden_states": states.to(model.dtype),
            "pooled_projections": pooled.to(model.dtype),
        }

    def embed_keys(self) -> set[str]:
        """T5's states and CLIP's pooled projection."""
        return {"encoder_hidden_states", "pooled_projections"}

    # ------------------------------------------------------------------ the network call
    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """Pack, call with the position ids, the timestep as ``t / T`` (in x's dtype, as the
        pipeline) and the embedded guidance, unpack."""
        batch, channels, height, width = x.shape
        states = context["encoder_hidden_states"]
        packed, img_ids, txt_ids = self.pack(x, states)
        embedded = None
        if self.guidance == "embedded":
            embedded = torch.full((batch,), float(guidance), device=x.device, dtype=torch.float32)
        T = self.model.num_train_timesteps
        out = self.model.network(
            hidden_states=packed,
            timestep=timesteps.to(x.dtype) / T,
            guidance=embedded,
            pooled_projections=context["pooled_projections"],
            encoder_hidden_states=states,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return self.unpack(out, x.shape)

    @staticmethod
    def pack(
        x: torch.Tensor, states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x ``[B, C, H, W]`` as 2 x 2 patches ``[B, (H/2)(W/2), 4C]``, the patches' position
        ids ``[(H/2)(W/2), 3]`` (row, column) and the text tokens' (zeros)."""
        batch, channels, height, width = x.shape
        packed = x.reshape(batch, channels, height // 2, 2, width // 2, 2)
        packed = packed.permute(0, 2, 4, 1, 3, 5).reshape(batch, -1, channels * 4)
        ids = torch.zeros(height // 2, width // 2, 3)
        ids[..., 1] += torch.arange(height // 2)[:, None]
        ids[..., 2] += torch.arange(width // 2)[None, :]
        img_ids = ids.reshape(-1, 3).to(x.device, states.dtype)
        txt_ids = torch.zeros(states.shape[1], 3, device=x.device, dtype=states.dtype)
        return packed, img_ids, txt_ids

    @staticmethod
    def unpack(out: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The network's packed output back to ``shape`` ``[B, C, H, W]``."""
        batch, channels, height, width = shape
        out = out.reshape(batch, height // 2, width // 2, channels, 2, 2)
        return out.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height, width)
