"""Model families, one file each, behind one protocol (:class:`~.base.Family`).

:data:`FAMILIES` lists them in the order they are tried; :func:`family_for` picks the one
that recognises a network config, or refuses in one line naming what the folder holds and
why it cannot run. A new family is one file here and one row of :data:`FAMILIES` (and of
the conformance suite, tests/test_families.py).
"""

from __future__ import annotations

from typing import Any

from workbench.errors import WorkbenchError
from workbench.models.families.aura_flow import AuraFlow
from workbench.models.families.base import Family
from workbench.models.families.chroma import Chroma
from workbench.models.families.dit import DiT
from workbench.models.families.flux import Flux
from workbench.models.families.hunyuandit import HunyuanDiT
from workbench.models.families.kandinsky3 import Kandinsky3
from workbench.models.families.ldm import LatentDiffusion
from workbench.models.families.lumina2 import Lumina2
from workbench.models.families.pixart import PixArtAlpha, PixArtSigma
from workbench.models.families.pixel import PixelUNet
from workbench.models.families.sana import Sana
from workbench.models.families.sd import StableDiffusion
from workbench.models.families.sd3 import StableDiffusion3
from workbench.models.families.sdxl import StableDiffusionXL

__all__ = ["FAMILIES", "Family", "UNSUPPORTED", "family_for", "refusal"]

#: Every family, in the order they are asked to recognise a config.
FAMILIES: tuple[type[Family], ...] = (
    PixelUNet,
    StableDiffusionXL,
    LatentDiffusion,
    StableDiffusion,
    DiT,
    StableDiffusion3,
    PixArtSigma,
    PixArtAlpha,
    Flux,
    Chroma,
    AuraFlow,
    Sana,
    Lumina2,
    Kandinsky3,
    HunyuanDiT,
)

#: Pipelines and networks the workbench knows it cannot run, with the reason (a folder
#: naming one is refused in one line rather than loaded and sampled wrongly).
UNSUPPORTED: dict[str, str] = {
    "ConsistencyModelPipeline": "a consistency model samples with its own multistep "
    "consistency sampler, which the workbench does not implement",
    "LatentConsistencyModelPipeline": "a latent consistency model (guidance-embedding "
    "U-Net, LCM sampler) is not supported yet",
    "KolorsPipeline": "Kolors (a ChatGLM text encoder) is not supported yet",
    "CogView4Pipeline": "CogView4 is not supported yet",
    "QwenImagePipeline": "Qwen-Image is not supported yet",
    "Flux2Pipeline": "FLUX.2 is not supported yet",
}


def family_for(
    config: dict[str, Any], source: Any = "this model", pipeline: str | None = None
) -> type[Family]:
    """The family whose network a config describes (in a folder whose
    ``model_index.json`` names ``pipeline``), or a one-line refusal."""
    for family in FAMILIES:
        if family.recognise(config, pipeline):
            return family
    return refusal(config.get("_class_name"), source)


def refusal(class_name: Any, source: Any = "this model") -> Any:
    """Raise the one-line refusal for a network or pipeline class no family runs."""
    if class_name in UNSUPPORTED:
        raise WorkbenchError(f"{source}: {class_name}: {UNSUPPORTED[class_name]}")
    names = ", ".join(dict.fromkeys(f.network_class for f in FAMILIES))
    raise WorkbenchError(f"{source}: {class_name} is not supported yet (supported: {names})")
