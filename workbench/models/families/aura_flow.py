"""AuraFlow (``AuraFlowTransformer2DModel``): an MMDiT with a UMT5 text encoder.

Dual-stream ``joint_transformer_blocks`` then single-stream blocks over the joint sequence
(register tokens and text first); h points ``block.i`` and ``single.i`` (the image tokens
on the patch grid), default the middle of all. Text inputs from the pipeline's own
``encode_prompt`` (UMT5 states of 256 tokens, zeroed at the padding); classifier-free
guidance as a doubled batch, 3.5 by default as ``AuraFlowPipeline``, the negative prompt
defaulting to the empty one; flow matching with the scheduler's own (static) shift; the
network takes the timestep as ``t / T``.
"""

from __future__ import annotations

import torch

from workbench.models.families.base import DualStreamPoints, Family


class AuraFlow(DualStreamPoints, Family):
    """AuraFlow: joint then single DiT blocks, UMT5, flow matching, CFG."""

    name = "auraflow"
    title = "AuraFlow"
    network_class = "AuraFlowTransformer2DModel"
    default_guidance = 3.5
    text_encoders = {"": ("UMT5EncoderModel", "T5EncoderModel")}
    pipeline = "AuraFlowPipeline"
    dual_blocks = "joint_transformer_blocks"
    image_index = 1  # a joint block returns (text, image)
    max_sequence_length = 256

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """UMT5's states ``[1, L, D]``, zero at the padding, by the pipeline's code."""
        model = self.model
        with self.encoder() as pipe:
            states, *_ = pipe.encode_prompt(
                prompt,
                do_classifier_free_guidance=False,
                device=model.device,
                max_sequence_length=self.text_length(),
            )
        return {"encoder_hidden_states": states.to(model.dtype)}

    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """The network with the timestep as ``t / T`` (cast to x's dtype after the
        division, as the pipeline)."""
        T = self.model.num_train_timesteps
        out = self.model.network(
            x, timestep=(timesteps / T).to(x.dtype), return_dict=False, **context
        )[0]
        return out
