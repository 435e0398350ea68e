"""DiT (``DiTTransformer2DModel``): a class-conditional latent diffusion transformer.

Learned sigma (the variance half of the output is dropped); class labels in
``[0, num_embeds_ada_norm)``, the null class at ``num_embeds_ada_norm``; guidance 4.0 by
default as ``DiTPipeline`` (a doubled batch against the null class); h points ``block.i``.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.models.families.base import Family, TokenPoints


class DiT(TokenPoints, Family):
    """DiT: class labels, learned sigma, DDIM over its discrete schedule."""

    name = "dit"
    title = "DiT"
    network_class = "DiTTransformer2DModel"
    condition = "class"
    default_guidance = 4.0
    pipeline = "DiTPipeline"
    image_index = 1  # a DiT block returns one tensor: the image tokens

    def check(self) -> None:
        """A DiT takes no text encoder and must have classes."""
        if any(v is not None for k, v in self.model.parts.items() if k.startswith("text")):
            raise WorkbenchError("a DiT is class-conditional: it takes no text encoder")
        super().check()

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """A DiT must have classes."""
        if not config.get("num_embeds_ada_norm"):
            raise WorkbenchError("a DiTTransformer2DModel without classes is not supported yet")

    @property
    def num_classes(self) -> int:
        """``num_embeds_ada_norm`` (1000 for ImageNet)."""
        return int(self.config.num_embeds_ada_norm)

    def class_input(self, label: int) -> dict[str, torch.Tensor]:
        """``class_labels`` ``[1]``."""
        return {"class_labels": torch.tensor([label], device=self.model.device)}
