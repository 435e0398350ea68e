"""Pixel-space DDPM/DDIM U-Nets (``UNet2DModel``: ddpm-cifar10, the bundled Shapes models).

Unconditional; x_t is the image itself; h points ``down.i``, ``mid`` (default), ``up.i``.
A folder is a pipeline layout (``unet/``, ``scheduler/``) or a bare U-Net folder with
``config.json`` and ``scheduler_config.json`` side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.models.families.base import Family, UNetPoints


class PixelUNet(UNetPoints, Family):
    """``UNet2DModel`` in pixel space, sampled as its DDPM/DDIM pipeline."""

    name = "unet"
    title = "pixel-space U-Net"
    network_class = "UNet2DModel"
    folder = "unet"
    condition = "none"
    guidance = "none"
    latent = False
    pipeline = "DDIMPipeline"
    bare = True

    @classmethod
    def load_latent(cls, source: str | Path, options: dict[str, Any]) -> dict[str, Any]:
        """No VAE: x_t is the image."""
        return {}

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Class-conditional U-Nets are refused."""
        if config.get("class_embed_type") is not None or config.get("num_class_embeds"):
            raise WorkbenchError("class-conditional UNet2DModel is not supported")

    def check(self) -> None:
        """Text encoders are refused."""
        if any(v is not None for k, v in self.model.parts.items() if k.startswith("text")):
            raise WorkbenchError("an unconditional UNet2DModel takes no text encoder")
        super().check()

    def describe(self) -> str:
        """Pixel-space, unconditional."""
        return "pixel-space unconditional U-Net"
