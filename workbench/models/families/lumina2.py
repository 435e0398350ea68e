"""Lumina 2 (``Lumina2Transformer2DModel``): a unified single-stream DiT with Gemma-2 text.

Caption tokens are refined alone, image tokens alone, then both run through the joint
``layers`` as one sequence per sample, ``[caption; image; padding]``, the caption cut to
its real tokens (so the image tokens start at a per-sample offset, which the family
records at each call and reads h at). The network runs its time backwards (``1 - t/T``)
and predicts ``x0 - eps``: the family feeds ``1 - t/T`` and negates the output, as the
pipeline does. Text inputs from the pipeline's own ``encode_prompt``: Gemma-2's
second-to-last states of the prompt after the pipeline's system prompt (256 tokens,
attention mask); the negative prompt (default empty) without it. Guidance 4.0 by default
with the pipeline's normalisation (the guided output rescaled to the conditional one's
norm along the last axis; ``cfg_trunc_ratio`` 1, the pipeline's default, never truncates).
Flow matching with the pipeline's sigmas ``linspace(1, 1/N, N)``; h points ``block.i``
(the joint layers' image tokens); grouped-query attention's keys and values repeated per
query head for the attention engine; the stock attention runs on the math SDPA backend
under ``jacobian_safe``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.models.families.base import Family, TokenPoints, is_flow
from workbench.models.schedule import FlowSchedule, Schedule


class Lumina2(TokenPoints, Family):
    """Lumina 2: Gemma-2 text, unified joint layers, reversed time, normalised CFG."""

    name = "lumina2"
    title = "Lumina 2"
    network_class = "Lumina2Transformer2DModel"
    default_guidance = 4.0
    text_encoders = {"": ("Gemma2Model", "Gemma2ForCausalLM")}
    pipeline = "Lumina2Pipeline"
    max_sequence_length = 256

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self._offsets: torch.Tensor | None = None  # caption lengths of the current call

    # ------------------------------------------------------------------ schedule
    def seq_len(self) -> int:
        """What the pipeline passes as the image sequence length for the dynamic shift:
        ``latents.shape[1]``, which for its unpacked latents is the channel count."""
        return self.in_channels

    def schedule(self, scheduler: Any) -> Schedule | FlowSchedule:
        """Flow matching with the pipeline's sigmas ``linspace(1, 1/N, N)``."""
        if not is_flow(scheduler):
            return super().schedule(scheduler)
        return FlowSchedule.from_scheduler(
            scheduler, image_seq_len=self.seq_len(), pipeline_sigmas=True
        )

    # ------------------------------------------------------------------ activation points
    def blocks(self) -> list[nn.Module]:
        """The joint layers."""
        return list(self.model.network.layers)

    def self_attention(self, point: str) -> str | None:
        """The layer's ``attn``."""
        name = f"layers.{point.partition('.')[2]}.attn"
        return name if name in self.attention_modules() else None

    def _index(self, output: torch.Tensor) -> torch.Tensor:
        """Positions ``[B, L_img, D]`` of each sample's image tokens in the joint sequence."""
        height, width = self.grid()
        offsets = self._offsets
        if offsets is None or offsets.shape[0] != output.shape[0]:
            raise RuntimeError("the caption lengths of this call were not recorded")
        index = offsets[:, None] + torch.arange(height * width, device=output.device)[None]
        return index[..., None].expand(-1, -1, output.shape[-1])

    def read(self, output: Any, point: str) -> torch.Tensor:
        """The image tokens of each sample, from its caption length on."""
        tokens = output.gather(1, self._index(output))
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid())

    def write(self, output: Any, h: torch.Tensor, point: str) -> Any:
        """The joint sequence with each sample's image tokens from ``h``."""
        tokens = h.flatten(2).transpose(1, 2).to(output.dtype)
        return output.scatter(1, self._index(output), tokens)

    def attention_weights(
        self, name: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Keys' and values' projections repeated per query head (grouped-query)."""
        w_q, w_k, w_v, w_o, heads = super().attention_weights(name)
        groups = w_q.shape[0] // w_k.shape[0]
        if groups > 1:
            d = w_q.shape[0] // heads
            w_k, w_v = (
                w.reshape(-1, d, w.shape[1]).repeat_interleave(groups, 0).reshape(-1, w.shape[1])
                for w in (w_k, w_v)
            )
        return w_q, w_k, w_v, w_o, heads

    def safe_processor(self, module: nn.Module) -> Any:
        """The stock processor (its SDPA on the math backend under ``jacobian_safe``)."""
        return module.processor

    # ------------------------------------------------------------------ conditioning
    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """States ``[1, L, D]`` and mask ``[1, L]`` of the system prompt and ``prompt``."""
        model = self.model
        with self.encoder() as pipe:
            states, mask, _, _ = pipe.encode_prompt(
                prompt,
                do_classifier_free_guidance=False,
                device=model.device,
                max_sequence_length=self.text_length(),
            )
        return {"encoder_hidden_states": states.to(model.dtype), "encoder_attention_mask": mask}

    def negative_inputs(
        self, cond: dict[str, torch.Tensor], negative_prompt: str | None
    ) -> dict[str, torch.Tensor]:
        """The negative prompt (default empty) without the system prompt."""
        model = self.model
        with self.encoder() as pipe:
            states, mask = pipe._get_gemma_prompt_embeds(
                ["" if negative_prompt is None else negative_prompt],
                device=model.device,
                max_sequence_length=self.text_length(),
            )
        return {"encoder_hidden_states": states.to(model.dtype), "encoder_attention_mask": mask}

    def embed_keys(self) -> set[str]:
        """States and their attention mask."""
        return {"encoder_hidden_states", "encoder_attention_mask"}

    # ------------------------------------------------------------------ the network call
    def combine(self, uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
        """CFG, then rescaled to the conditional output's norm along the last axis."""
        guided = uncond + scale * (cond - uncond)
        norm = torch.linalg.vector_norm
        return guided * (norm(cond, dim=-1, keepdim=True) / norm(guided, dim=-1, keepdim=True))

    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """The network at the reversed time ``1 - t/T``, its output negated (to the
        flow velocity ``eps - x0``); the caption lengths recorded for h."""
        self._offsets = context["encoder_attention_mask"].sum(dim=1)
        T = self.model.num_train_timesteps
        out = self.model.network(
            hidden_states=x, timestep=1 - timesteps / T, return_dict=False, **context
        )[0]
        return -out
