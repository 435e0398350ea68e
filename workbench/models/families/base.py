"""The family protocol: what one diffusers model family tells the rest of the workbench.

A family (one file in this folder) answers every question whose answer depends on the kind
of network: which folder and config it is recognised by and how its parts load; its named
activation points and how h is read from and written to a block's output; how a prompt, a
class label or nothing becomes the network's keyword inputs (and the null condition that
classifier-free guidance pushes away from); how the network is called for
``(x, t, condition)`` (timestep scaling, packing, learned variance, embedded guidance); its
noise schedule; and which attention modules it has and the processor under which forward-
and reverse-mode AD run through them. :class:`~workbench.models.wrapper.DiffusionModel`
keeps what every family shares (hooks and their removal, micro-batching, the conditioning
stack, the fingerprint, precision) and asks its :class:`Family` for the rest; nothing
outside ``workbench/models/families/`` asks which family a model is.

Conventions every family keeps:

- x_t is ``[B, C, H, W]`` (a latent model's unpacked VAE latent); a family that packs
  tokens (FLUX) packs and unpacks inside :meth:`Family.call`.
- h at a point is ``[B, C, h, w]``: a U-Net block's hidden state, or a transformer block's
  image tokens laid out on the patch grid.
- The network's raw output has x_t's shape and is what its schedule converts (eps, v, x0
  or the flow velocity): a learned-variance half is dropped by the family.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models.schedule import FlowSchedule, Schedule

if TYPE_CHECKING:
    from workbench.models.wrapper import DiffusionModel

#: Most positions per side of x_t a config may give (its sample_size).
MAX_SIDE = 16384

#: Scheduler classes whose sampler is not an ODE solver of the model's diffusion: a model
#: that needs one of them is refused rather than sampled with another (reason given).
FOREIGN_SAMPLERS = {
    "CMStochasticIterativeScheduler": "a consistency model samples with its own "
    "multistep consistency sampler, which the workbench does not implement",
    "LCMScheduler": "a latent consistency model samples with its own consistency "
    "sampler, which the workbench does not implement",
    "TCDScheduler": "a trajectory-consistency model samples with its own sampler, which "
    "the workbench does not implement",
}


class Family:
    """One model family. Subclasses set the class attributes and override what differs.

    Class attributes: ``name`` (the tag, ``model.family``), ``title`` (for people),
    ``network_class`` (the diffusers class of the denoiser), ``folder`` (its subfolder in a
    pipeline layout), ``condition`` (``none``, ``text`` or ``class``), ``guidance``
    (``cfg``: a doubled batch ``[null; condition]``; ``embedded``: a guidance value the
    network takes as an input; ``none``), ``default_guidance`` (the scale of the family's
    diffusers pipeline when a condition is given without one), ``text_encoders``
    (folder suffix -> allowed ``transformers`` architectures), ``optional_text`` (whether
    the model may load without its text encoders), ``pipeline`` (the diffusers pipeline
    class the family reproduces).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    network_class: ClassVar[str] = ""
    folder: ClassVar[str] = "transformer"
    condition: ClassVar[str] = "text"
    guidance: ClassVar[str] = "cfg"
    default_guidance: ClassVar[float] = 1.0
    text_encoders: ClassVar[dict[str, tuple[str, ...]]] = {}
    optional_text: ClassVar[bool] = False
    pipeline: ClassVar[str | None] = None
    #: Folder names of parts that a pipeline keeps elsewhere than ``vae/`` and
    #: ``text_encoder/`` (LDM: ``vqvae/``, ``bert/``).
    folders: ClassVar[dict[str, str]] = {}
    #: Whether a bare model folder (``config.json`` and ``scheduler_config.json`` at the
    #: top, no pipeline layout) can hold this family.
    bare: ClassVar[bool] = False

    #: Most text tokens the family's pipeline pads a prompt to (its default
    #: ``max_sequence_length``), and the tokenizer that caps it.
    max_sequence_length: ClassVar[int] = 0
    text_tokenizer: ClassVar[str] = "tokenizer"
    #: Arguments the pipeline's constructor needs beyond the model's parts.
    encoder_extra: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: DiffusionModel) -> None:
        self.model = model
        self._encoder: Any = None
        self.check()

    # ------------------------------------------------------------------ recognise, load
    @classmethod
    def recognise(cls, config: dict[str, Any], pipeline: str | None = None) -> bool:
        """Whether a network config (its ``config.json`` as a dict) is this family's, in a
        folder whose ``model_index.json`` names ``pipeline`` (None: no index, or a model
        built in Python)."""
        return config.get("_class_name") == cls.network_class

    @classmethod
    def load(cls, source: str | Path, subfolder: str | None, **options: Any) -> dict[str, Any]:
        """The parts of a model of this family from a folder or Hub id: ``network``,
        ``scheduler``, ``vae`` and the text encoders and tokenizers by folder name.
        ``options`` go to every ``from_pretrained`` (``torch_dtype``, Hub arguments)."""
        import diffusers

        hub = {k: v for k, v in options.items() if k != "torch_dtype"}
        dtype = options.get("torch_dtype", torch.float32)
        fast = importlib.util.find_spec("accelerate") is not None
        model_options = {"low_cpu_mem_usage": fast, **options}
        network_cls = getattr(diffusers, cls.network_class)
        cls.check_config(network_cls.load_config(source, subfolder=subfolder, **hub))
        parts: dict[str, Any] = {
            "network": load_strictly(network_cls, source, subfolder, **model_options),
            "scheduler": read_scheduler(source, "scheduler" if subfolder else None, **hub),
        }
        parts |= cls.load_latent(source, model_options)
        parts |= cls.load_text(source, dtype, present(source, **hub), **hub)
        return parts

    @classmethod
    def load_latent(cls, source: str | Path, options: dict[str, Any]) -> dict[str, Any]:
        """The VAE (``vae/``, ``AutoencoderKL``) of a latent family."""
        from diffusers import AutoencoderKL

        return {"vae": load_strictly(AutoencoderKL, source, "vae", **options)}

    @classmethod
    def load_text(
        cls, source: str | Path, dtype: torch.dtype, folders: set[str], **kwargs: Any
    ) -> dict[str, Any]:
        """The text encoders and tokenizers of :attr:`text_encoders` that the folder holds
        (:meth:`check` then refuses, in one line, a model that lacks one it needs)."""
        parts: dict[str, Any] = {}
        for suffix, allowed in cls.text_encoders.items():
            if f"text_encoder{suffix}" in folders:
                parts |= text_parts(source, dtype, suffix, allowed, **kwargs)
        return parts

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """One-line errors for a network config the family cannot run (called before any
        weight is read, and again on construction)."""

    def check(self) -> None:
        """One-line errors for parts that cannot run together (called on construction)."""
        self.check_config(dict(self.config))
        self.sample_shape  # noqa: B018 - a config's sample_size checked (one line)
        model = self.model
        for suffix in () if self.optional_text else self.text_encoders:
            if model.parts.get(f"text_encoder{suffix}") is None:
                raise WorkbenchError(
                    f"a {self.title} model needs its text_encoder{suffix} and tokenizer{suffix}"
                )
        unknown = {k for k in model.parts if k.startswith("text_encoder")} - {
            f"text_encoder{s}" for s in self.text_encoders
        }
        if any(model.parts[k] is not None for k in unknown):
            raise WorkbenchError(f"a {self.title} model takes no {', '.join(sorted(unknown))}")
        if self.latent and model.vae is None:
            raise WorkbenchError(f"a {self.title} model is latent: it needs its vae")
        resolution = model.resolution
        if resolution is not None:
            step = self.resolution_multiple()
            if resolution <= 0 or resolution % step:
                raise WorkbenchError(
                    f"resolution must be a positive multiple of {step} for this "
                    f"{self.title} model, got {resolution}"
                )
        vae = model.vae
        if vae is not None and self.latent_channels(vae) != self.in_channels:
            raise WorkbenchError(
                f"the VAE has {self.latent_channels(vae)} latent channels, the network "
                f"takes {self.in_channels}"
            )

    # ------------------------------------------------------------------ shapes
    latent: ClassVar[bool] = True

    @property
    def config(self) -> Any:
        """The network's diffusers config."""
        return self.model.network.config

    @property
    def in_channels(self) -> int:
        """Channels of x_t as the network takes them."""
        return int(self.config.in_channels)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one x_t: the model's ``resolution`` (pixels per side) when
        it was loaded with one, else the config's ``sample_size`` (or the family's
        default)."""
        resolution = self.model.resolution
        if resolution is not None:
            side = resolution // self.vae_factor() if self.latent else resolution
            return (self.in_channels, side, side)
        size = self.config.get("sample_size") or self.default_side()
        sides = list(size) if isinstance(size, list | tuple) else [size, size]
        if len(sides) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in sides
        ):
            raise WorkbenchError(
                "the network config's sample_size must be a positive integer or a pair of "
                f"them (at most {MAX_SIDE}), got {size!r}"
            )
        return (self.in_channels, *sides)

    def default_side(self) -> int:
        """Latent positions per side when the config has no ``sample_size``."""
        raise WorkbenchError(f"a {self.title} config without sample_size needs a resolution")

    def resolution_multiple(self) -> int:
        """What an image side must be a multiple of: the VAE factor times the patch size."""
        p = int(self.config.get("patch_size") or 1)
        return (self.vae_factor() if self.latent else 1) * p

    @staticmethod
    def latent_channels(vae: nn.Module) -> int:
        """Channels of the VAE's latent."""
        return int(vae.config.latent_channels)

    def vae_factor(self) -> int:
        """How many pixels one latent position spans along a side."""
        return 2 ** (len(self.model.vae.config.block_out_channels) - 1)

    def vae_scale(self) -> tuple[float, float]:
        """``(scaling_factor, shift_factor)`` of the latent: ``z = (mean - shift) * scale``."""
        config = self.model.vae.config
        return float(config.scaling_factor), float(config.get("shift_factor") or 0.0)

    def image_channels(self) -> int:
        """Channels of an image the VAE decodes to."""
        return int(self.model.vae.config.out_channels)

    def decode_latent(self, z: torch.Tensor) -> Any:
        """The VAE decoder's output for clean latents ``z``: of ``z / scale + shift``."""
        scale, shift = self.vae_scale()
        return self.model.vae.decode(z / scale + shift)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Latents of images in [-1, 1]: the VAE encoder's mean, ``(mean - shift) * scale``."""
        scale, shift = self.vae_scale()
        return (self.model.vae.encode(images).latent_dist.mode() - shift) * scale

    def seq_len(self) -> int:
        """Image tokens the network sees (the dynamic flow shift depends on it)."""
        _, h, w = self.sample_shape
        p = int(self.config.get("patch_size") or 1)
        return (h // p) * (w // p)

    # ------------------------------------------------------------------ schedule
    def schedule(self, scheduler: Any) -> Schedule | FlowSchedule:
        """The sampler maths of the model's scheduler: the flow Euler step for a
        flow-matching scheduler, else DDIM over its alpha-bar table."""
        if is_flow(scheduler):
            return FlowSchedule.from_scheduler(scheduler, image_seq_len=self.seq_len())
        return Schedule.from_scheduler(scheduler)

    # ------------------------------------------------------------------ activation points
    def points(self) -> list[str]:
        """Names of the block outputs that can serve as h, in forward order."""
        raise NotImplementedError

    def default_point(self) -> str:
        """The point h is read at unless told."""
        raise NotImplementedError

    def module(self, point: str) -> nn.Module:
        """The block whose output is h at ``point``."""
        raise NotImplementedError

    def read(self, output: Any, point: str) -> torch.Tensor:
        """h ``[B, C, h, w]`` from the output of the block at ``point``."""
        raise NotImplementedError

    def write(self, output: Any, h: torch.Tensor, point: str) -> Any:
        """The block's ``output`` with its h replaced by ``h``."""
        raise NotImplementedError

    def known_h_shape(self, point: str) -> tuple[int, ...] | None:
        """h's shape at ``point`` when it follows from the config alone (else None: one
        small forward measures it)."""
        return None

    # ------------------------------------------------------------------ attention
    def attention_modules(self) -> dict[str, nn.Module]:
        """Every attention module of the network, by qualified name."""
        from diffusers.models.attention_processor import Attention

        return {n: m for n, m in self.model.network.named_modules() if isinstance(m, Attention)}

    def self_attention(self, point: str) -> str | None:
        """The self-attention module of the block at ``point`` whose directions act on h
        there (None: the block has none)."""
        raise NotImplementedError

    def is_self_attention(self, name: str) -> bool:
        """Whether attention module ``name`` attends within the image (not to a text)."""
        return not getattr(self.attention_modules()[name], "is_cross_attention", False)

    def attention_weights(
        self, name: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(W_q, W_k, W_v, W_o, heads)`` of attention module ``name`` (``nn.Linear``
        weights: ``[inner, C]`` for q, k, v and ``[C, inner]`` for the output)."""
        attn = self.attention_modules()[name]
        weights = (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight, attn.to_out[0].weight)
        return (*weights, int(attn.heads))

    def safe_processor(self, module: nn.Module) -> Any:
        """A processor under which forward- and reverse-mode AD run through ``module``
        (explicit softmax attention, contiguous output), equal to the stock one. A family
        may keep a stock processor that calls ``scaled_dot_product_attention``: inside
        ``jacobian_safe`` that runs on the math backend, which has forward-mode rules."""
        from workbench.models.attention import JacobianSafeAttnProcessor

        return JacobianSafeAttnProcessor()

    # ------------------------------------------------------------------ conditioning
    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional family (its null class is this index); else 0."""
        return 0

    def class_input(self, label: int) -> dict[str, torch.Tensor]:
        """The network's keyword inputs for class ``label`` (the null class too)."""
        raise WorkbenchError(f"a {self.title} model takes no class label")

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """The network's text inputs for ``prompt``, as the family's pipeline computes them."""
        raise NotImplementedError

    @contextlib.contextmanager
    def encoder(self) -> Iterator[Any]:
        """The family's diffusers pipeline, built once around this model's network (read
        for its config only), text encoders and tokenizers, without VAE or scheduler: for
        its own ``encode_prompt``. Inside, no gradients and diffusers' warnings about the
        missing parts silenced."""
        import warnings

        if self._encoder is None:
            import diffusers

            parts: dict[str, Any] = {self.folder: self.model.network, "vae": None}
            parts["scheduler"] = None
            for suffix in self.text_encoders:
                for part in (f"text_encoder{suffix}", f"tokenizer{suffix}"):
                    parts[part] = self.model.parts.get(part)
            self._encoder = getattr(diffusers, self.pipeline)(**parts, **self.encoder_extra)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield self._encoder

    def text_length(self) -> int:
        """Text tokens a prompt is padded to: the pipeline's default, or the tokenizer's
        maximum where that is shorter (a small test tokenizer)."""
        tokenizer = self.model.parts[self.text_tokenizer]
        return min(self.max_sequence_length, int(tokenizer.model_max_length))

    def empty_inputs(self) -> dict[str, torch.Tensor]:
        """Text inputs of a model loaded without its text encoders (zero embeddings)."""
        raise WorkbenchError(f"a {self.title} model needs its text encoders")

    def negative_inputs(
        self, cond: dict[str, torch.Tensor], negative_prompt: str | None
    ) -> dict[str, torch.Tensor]:
        """The inputs guidance pushes away from: the negative prompt's (default: the empty
        prompt's; zeros without text encoders)."""
        if not self.model.conditional:
            return self.empty_inputs()
        return self.encode_prompt("" if negative_prompt is None else negative_prompt)

    def embed_keys(self) -> set[str]:
        """The keys of given prompt embeddings (``prompt_embeds=``)."""
        return {"encoder_hidden_states"}

    def complete_embeds(self, embeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Given prompt embeddings with what the family adds itself (SDXL's size inputs)."""
        return embeds

    # ------------------------------------------------------------------ the network call
    def call(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: dict[str, torch.Tensor],
        guidance: float | None,
    ) -> torch.Tensor:
        """The network's raw output ``[B, *sample_shape]`` for ``x`` ``[B, *sample_shape]``
        at ``timesteps`` ``[B]`` (the schedule's values) under the keyword inputs
        ``context`` (batched); ``guidance``: the embedded guidance value of a family with
        ``guidance == "embedded"`` (else None)."""
        out = self.model.network(x, timestep=timesteps, **context).sample
        return self.mean_part(out, x)

    def combine(self, uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guidance of the raw outputs: ``uncond + scale (cond - uncond)``."""
        return uncond + scale * (cond - uncond)

    @staticmethod
    def mean_part(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The prediction without a learned-variance half (channels beyond x's)."""
        if out.shape[1] == 2 * x.shape[1]:
            return out[:, : x.shape[1]]
        return out

    def describe(self) -> str:
        """A few words for ``repr``: what the model is conditioned on and where x_t lives."""
        space = "latent" if self.latent else "pixel"
        cond = {"none": "unconditional", "text": "text-to-image", "class": "class-conditional"}
        return f"{self.title}, {space} {cond[self.condition]}"


# ---------------------------------------------------------------------- shared pieces
class UNetPoints:
    """Activation points of a diffusers U-Net: ``down.i``, ``mid``, ``up.i`` (block outputs;
    a down block's hidden state, whose last skip is the same tensor, edited together)."""

    model: DiffusionModel

    def points(self) -> list[str]:
        """``down.i``, ``mid`` (when the U-Net has one), ``up.i``."""
        net = self.model.network
        names = [f"down.{i}" for i in range(len(net.down_blocks))]
        names += ["mid"] if net.mid_block is not None else []
        return names + [f"up.{i}" for i in range(len(net.up_blocks))]

    def default_point(self) -> str:
        """The mid block: the U-Net's bottleneck (Asyrp's h-space)."""
        return "mid"

    def module(self, point: str) -> nn.Module:
        """The U-Net block of ``point``."""
        kind, _, index = point.partition(".")
        net = self.model.network
        if kind == "mid":
            return net.mid_block
        return (net.down_blocks if kind == "down" else net.up_blocks)[int(index)]

    def read(self, output: Any, point: str) -> torch.Tensor:
        """The block's hidden state (down blocks also return their skips)."""
        return output[0] if isinstance(output, tuple) else output

    def write(self, output: Any, h: torch.Tensor, point: str) -> Any:
        """``output`` with its hidden state replaced by ``h``; a down block's last skip is
        that same hidden state, so it is replaced too (the up path sees the edit)."""
        if not isinstance(output, tuple):
            return h
        rest = list(output[1:])
        if rest and isinstance(rest[0], tuple) and rest[0] and rest[0][-1] is output[0]:
            rest[0] = (*rest[0][:-1], h)
        return (h, *rest)

    def known_h_shape(self, point: str) -> tuple[int, ...] | None:
        """The mid block's shape from the config (channels of the last level, the input
        halved at every down-sampling)."""
        if point != "mid":
            return None
        config = self.model.network.config
        _, height, width = self.model.sample_shape
        factor = 2 ** (len(config.down_block_types) - 1)
        return (int(config.block_out_channels[-1]), height // factor, width // factor)

    def self_attention(self, point: str) -> str | None:
        """The mid block's first self-attention (``UNet2DModel``'s
        ``mid_block.attentions.0``; ``UNet2DConditionModel``'s first transformer block's
        ``attn1``), or a down or up block's last one (nearest the block's output)."""
        modules = self.model.attention_modules()
        prefix = "mid_block." if point == "mid" else "{}_blocks.{}.".format(*point.split("."))
        own = [
            n
            for n, m in modules.items()
            if n.startswith(prefix) and not getattr(m, "is_cross_attention", False)
        ]
        if not own:
            return None
        return own[0] if point == "mid" else own[-1]


class TokenPoints:
    """Activation points of a diffusion transformer: ``block.i``, the i-th block's image
    tokens ``[B, L, C]`` on the patch grid ``[B, C, H/p, W/p]``."""

    model: DiffusionModel
    #: The index of the image tokens in a block's tuple output (SD3's joint blocks return
    #: ``(context, image)``); a block returning one tensor returns the image tokens.
    image_index: ClassVar[int] = 1

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, in forward order."""
        return list(self.model.network.transformer_blocks)

    def points(self) -> list[str]:
        """``block.0`` ... ``block.{N-1}``."""
        return [f"block.{i}" for i in range(len(self.blocks()))]

    def default_point(self) -> str:
        """The middle block ``block.{N // 2}``: the first blocks are close to the patch
        embedding and the last to the output prediction, while the middle of the residual
        stream is where diffusion transformers' features are most semantic."""
        return self.points()[len(self.points()) // 2]

    def module(self, point: str) -> nn.Module:
        """The block of ``point``."""
        return self.blocks()[int(point.partition(".")[2])]

    def grid(self) -> tuple[int, int]:
        """The patch grid ``(H/p, W/p)`` the image tokens lie on."""
        _, height, width = self.model.sample_shape
        p = int(self.model.network.config.get("patch_size") or 1)
        return height // p, width // p

    def read(self, output: Any, point: str) -> torch.Tensor:
        """The block's image tokens on the patch grid (a block that returns the joint
        sequence ``[text; image]`` as one tensor: its last ``H/p W/p`` tokens)."""
        tokens = output[self.image_index] if isinstance(output, tuple) else output
        height, width = self.grid()
        tokens = tokens[:, tokens.shape[1] - height * width :]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)

    def write(self, output: Any, h: torch.Tensor, point: str) -> Any:
        """The block's output with its image tokens from ``h``."""
        tokens = h.flatten(2).transpose(1, 2).contiguous()
        if isinstance(output, tuple):
            out = list(output)
            out[self.image_index] = tokens
            return tuple(out)
        if output.shape[1] > tokens.shape[1]:  # the joint sequence: text tokens first
            return torch.cat([output[:, : output.shape[1] - tokens.shape[1]], tokens], dim=1)
        return tokens

    def self_attention(self, point: str) -> str | None:
        """The block's own self-attention (its first attention module that is not
        cross-attention to the condition)."""
        prefix = f"transformer_blocks.{point.partition('.')[2]}."
        own = [
            n
            for n, m in self.model.attention_modules().items()
            if n.startswith(prefix) and not getattr(m, "is_cross_attention", False)
        ]
        return own[0] if own else None


class DualStreamPoints(TokenPoints):
    """Activation points of an MMDiT with dual-stream blocks followed by single-stream
    ones (FLUX.1, Chroma, AuraFlow): ``block.i`` (a dual-stream block's image stream) and
    ``single.i`` (a single-stream block's image tokens); the default is the middle of
    all of them."""

    #: The network's attributes holding the two kinds of block.
    dual_blocks: ClassVar[str] = "transformer_blocks"
    single_blocks: ClassVar[str] = "single_transformer_blocks"

    def points(self) -> list[str]:
        """``block.i`` (dual-stream), then ``single.i`` (single-stream)."""
        net = self.model.network
        dual, single = getattr(net, self.dual_blocks), getattr(net, self.single_blocks)
        return [f"block.{i}" for i in range(len(dual))] + [
            f"single.{i}" for i in range(len(single))
        ]

    def module(self, point: str) -> nn.Module:
        """The block of ``point``."""
        kind, _, index = point.partition(".")
        name = self.dual_blocks if kind == "block" else self.single_blocks
        return getattr(self.model.network, name)[int(index)]

    def self_attention(self, point: str) -> str | None:
        """The block's ``attn`` (dual stream: its ``to_q/k/v/out`` are the image
        stream's)."""
        kind, _, index = point.partition(".")
        prefix = self.dual_blocks if kind == "block" else self.single_blocks
        name = f"{prefix}.{index}.attn"
        return name if name in self.attention_modules() else None


# ---------------------------------------------------------------------- loading helpers
def is_flow(scheduler: Any) -> bool:
    """Whether a diffusers scheduler is a flow-matching one."""
    return type(scheduler).__name__.startswith("FlowMatch")


#: The scheduler class each folder or Hub id names (read as DDIM unless flow matching).
SCHEDULER_CLASS: dict[str, str] = {}


def read_scheduler(source: str | Path, subfolder: str | None, **kwargs: Any) -> Any:
    """The folder's scheduler: flow matching as saved, an ODE solver's config read as DDIM
    (said once by ``load``), a sampler the workbench does not have refused in one line."""
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    config = DDIMScheduler.load_config(source, subfolder=subfolder, **kwargs)
    name = str(config.get("_class_name") or "DDIMScheduler")
    SCHEDULER_CLASS[str(source)] = name
    if name in FOREIGN_SAMPLERS:
        raise WorkbenchError(f"{source}: {name} is not supported: {FOREIGN_SAMPLERS[name]}")
    if name.startswith("FlowMatch"):
        if name != "FlowMatchEulerDiscreteScheduler":
            raise WorkbenchError(f"{source}: {name} is not supported yet")
        return FlowMatchEulerDiscreteScheduler.from_config(config)
    if config.get("prediction_type") == "flow_prediction" or config.get("use_flow_sigmas"):
        # an ODE solver on flow sigmas (Sana's DPM-Solver): the flow Euler step, same shift
        shift = float(config.get("flow_shift") or config.get("shift") or 1.0)
        if config.get("use_dynamic_shifting"):
            raise WorkbenchError(f"{source}: {name} with dynamic flow shifting is not supported")
        steps = int(config.get("num_train_timesteps", 1000))
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=steps, shift=shift)
    return DDIMScheduler.from_config(config)


def text_parts(
    source: str | Path,
    torch_dtype: torch.dtype,
    suffix: str = "",
    allowed: tuple[str, ...] = ("CLIPTextModel",),
    **kwargs: Any,
) -> dict[str, Any]:
    """A text encoder and its tokenizer (folders ``text_encoder{suffix}/`` and
    ``tokenizer{suffix}/``), of one of the ``allowed`` ``transformers`` architectures."""
    import transformers

    from workbench.settings import show_progress

    config = transformers.PretrainedConfig.get_config_dict(
        source, subfolder=f"text_encoder{suffix}", **kwargs
    )[0]
    arch = (config.get("architectures") or [allowed[0]])[0]
    if arch not in allowed:
        raise WorkbenchError(
            f"{source}: text encoder {arch} is not supported here ({', '.join(allowed)})"
        )
    bars = transformers.utils.logging
    was_on = bars.is_progress_bar_enabled()
    if not show_progress(None):  # the package setting covers transformers' loading bar too
        bars.disable_progress_bar()
    try:
        encoder = load_strictly(
            getattr(transformers, arch), source, f"text_encoder{suffix}", **kwargs
        )
    finally:
        if was_on:
            bars.enable_progress_bar()
    encoder = encoder.to(torch_dtype)
    clip = arch.startswith("CLIP")
    tokenizer_class = transformers.CLIPTokenizer if clip else transformers.AutoTokenizer
    tokenizer = tokenizer_class.from_pretrained(source, subfolder=f"tokenizer{suffix}", **kwargs)
    return {f"text_encoder{suffix}": encoder, f"tokenizer{suffix}": tokenizer}


@contextlib.contextmanager
def _libraries_quiet() -> Iterator[None]:
    """diffusers' and transformers' loggers at ERROR inside (their loading warnings are
    turned into our one-line errors by :func:`load_strictly`), restored on exit."""
    import diffusers
    import transformers

    loggers = (diffusers.utils.logging, transformers.utils.logging)
    levels = [lib.get_verbosity() for lib in loggers]
    try:
        for lib in loggers:
            lib.set_verbosity_error()
        yield
    finally:
        for lib, level in zip(loggers, levels, strict=True):
            lib.set_verbosity(level)


def load_strictly(cls: Any, source: str | Path, subfolder: str | None, **options: Any) -> Any:
    """``cls.from_pretrained`` that refuses, in one line, weights the files lack (which
    the library would initialise at random), weights of another shape, and, for a
    diffusers model, weights the model has no place for. A ``transformers`` text encoder
    may carry extra weights (a checkpoint's unused heads): those are dropped, as
    ``transformers`` does."""
    where = f"{source}/{subfolder}" if subfolder else str(source)
    try:
        with _libraries_quiet():
            model, info = cls.from_pretrained(
                source, subfolder=subfolder, output_loading_info=True, **options
            )
    except RuntimeError as exc:  # torch's state-dict check: shapes that do not fit
        import re

        shapes = re.findall(r"size mismatch for ([\w.]+)", str(exc))
        if not shapes:
            raise
        info = {"mismatched_keys": shapes}
        model = None
    problems = {
        "missing from the weight files": info.get("missing_keys") or [],
        "of another shape in the weight files": info.get("mismatched_keys") or [],
    }
    if model is not None and "transformers" not in type(model).__module__:
        problems["in the weight files but not in the model"] = info.get("unexpected_keys") or []
    for what, keys in problems.items():
        keys = sorted(str(k if isinstance(k, str) else k[0]) for k in keys)
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise WorkbenchError(
                f"{where}: weights {what}: {', '.join(keys[:3])}{more} (a damaged or "
                "mismatched checkpoint; refused rather than run with random weights)"
            )
    return model


def present(source: str | Path, **kwargs: Any) -> set[str]:
    """The component folders a pipeline holds: the subfolders of a local folder, the
    non-null entries of a Hub repo's ``model_index.json``."""
    import diffusers

    local = Path(source)
    if local.is_dir():
        return {p.name for p in local.iterdir() if p.is_dir()}
    try:
        index = diffusers.DiffusionPipeline.load_config(source, **kwargs)
    except Exception:  # noqa: BLE001 - no index: a bare model
        return set()
    return {k for k, v in index.items() if isinstance(v, list | tuple) and v and v[0]}


def pipeline_class(source: str | Path, **kwargs: Any) -> str | None:
    """The pipeline class a folder's or Hub id's ``model_index.json`` names (None without)."""
    local = Path(source)
    if local.is_dir():
        index = local / "model_index.json"
        if not index.is_file():
            return None
        try:
            return json.loads(index.read_text()).get("_class_name")
        except (ValueError, AttributeError):
            return None
    import diffusers

    try:
        return diffusers.DiffusionPipeline.load_config(source, **kwargs).get("_class_name")
    except Exception:  # noqa: BLE001 - no index
        return None
