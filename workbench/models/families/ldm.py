"""LDM text-to-image (``LDMTextToImagePipeline``): the CompVis latent diffusion model.

A ``UNet2DConditionModel`` (as Stable Diffusion's) under a ``vqvae/`` autoencoder (an
``AutoencoderKL`` or a ``VQModel``) and a ``bert/`` text encoder (``LDMBertModel``, or
another ``transformers`` text model) with its tokenizer. Prompts are padded to 77 tokens
and encoded without an attention mask, the null condition is the empty prompt, and
guidance is off by default (1.0, as the pipeline's). Recognised by the pipeline its
``model_index.json`` names (the network class is Stable Diffusion's).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.models.families.base import load_strictly
from workbench.models.families.sd import StableDiffusion


class LatentDiffusion(StableDiffusion):
    """LDM text-to-image: SD's U-Net class, a VQ-VAE or KL autoencoder, an LDMBert."""

    name = "ldm"
    title = "LDM text-to-image"
    default_guidance = 1.0
    pipeline = "LDMTextToImagePipeline"
    folders = {"vae": "vqvae", "text_encoder": "bert"}
    max_length = 77

    @classmethod
    def recognise(cls, config: dict[str, Any], pipeline: str | None = None) -> bool:
        """SD's network class in a folder whose pipeline is LDM text-to-image."""
        return config.get("_class_name") == cls.network_class and pipeline == cls.pipeline

    @classmethod
    def load_latent(cls, source: str | Path, options: dict[str, Any]) -> dict[str, Any]:
        """The ``vqvae/`` autoencoder, of the class ``model_index.json`` names."""
        return {"vae": _component(source, "vqvae", options)}

    @classmethod
    def load_text(
        cls, source: str | Path, dtype: torch.dtype, folders: set[str], **kwargs: Any
    ) -> dict[str, Any]:
        """The ``bert/`` text encoder and the tokenizer, of the classes the index names."""
        encoder = _component(source, "bert", {"torch_dtype": dtype, **kwargs})
        return {"text_encoder": encoder, "tokenizer": _component(source, "tokenizer", kwargs)}

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """The text encoder's last states ``[1, 77, D]`` of the prompt padded to 77 tokens,
        as the pipeline computes them."""
        model = self.model
        ids = model.tokenizer(
            prompt, padding="max_length", max_length=self.max_length, truncation=True
        ).input_ids
        with torch.no_grad():
            states = model.text_encoder(torch.tensor([ids], device=model.device))[0]
        return {"encoder_hidden_states": states.to(model.dtype)}

    def decode_latent(self, z: torch.Tensor) -> Any:
        """The autoencoder's decoder of ``z / scale`` (a VQ model quantises, as the
        pipeline's decode does)."""
        return self.model.vae.decode(z / self.vae_scale()[0])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's mean (KL) or its pre-quantisation latents (VQ), scaled."""
        out = self.model.vae.encode(images)
        latent = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
        return latent * self.vae_scale()[0]


#: ``model_index.json`` library names -> importable modules.
_LIBRARIES = {
    "diffusers": "diffusers",
    "transformers": "transformers",
    "latent_diffusion": "diffusers.pipelines.latent_diffusion",
}


def _component(source: str | Path, name: str, options: dict[str, Any]) -> Any:
    """Component ``name`` of a pipeline folder, of the class its index names."""
    local = Path(source)
    if local.is_dir():
        index = json.loads((local / "model_index.json").read_text())
    else:
        import diffusers

        hub = {k: v for k, v in options.items() if k not in ("torch_dtype", "low_cpu_mem_usage")}
        index = diffusers.DiffusionPipeline.load_config(source, **hub)
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in _LIBRARIES):
        raise WorkbenchError(f"{source}: model_index.json has no loadable {name!r} entry")
    cls = getattr(importlib.import_module(_LIBRARIES[entry[0]]), str(entry[1]), None)
    if cls is None:
        raise WorkbenchError(f"{source}: unknown class {entry[1]!r} for {name}/")
    if name == "tokenizer":
        options = {k: v for k, v in options.items() if k not in ("torch_dtype",)}
    elif "transformers" in cls.__module__:
        options = {k: v for k, v in options.items() if k != "low_cpu_mem_usage"}
    if name == "tokenizer":
        return cls.from_pretrained(source, subfolder=name, **options)
    return load_strictly(cls, source, name, **options)
