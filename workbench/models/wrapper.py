"""`DiffusionModel`: one wrapper over a diffusers denoising network and its noise schedule.

Networks (``family``): ``unet`` (pixel-space ``UNet2DModel``), ``sd`` (latent
text-to-image ``UNet2DConditionModel``, Stable Diffusion 1.x/2.x), ``sdxl`` (the same
class with SDXL's added text and size conditions and two text encoders), ``dit``
(class-conditional ``DiTTransformer2DModel``) and ``sd3`` (``SD3Transformer2DModel``, the
MMDiT of Stable Diffusion 3, with a rectified-flow schedule).

Activation names (stable, used across the package and its docs):

- ``x_t``: the noisy input of the network at timestep ``t``, shape ``[B, C, H, W]``.
- ``h``: the output of one block ("h-space"), shape ``[B, *model.h_shape]``: the U-Net mid
  block by default; a transformer block's image tokens laid out on the patch grid
  ``[C, H/p, W/p]`` (``block.N``).
- ``eps``: the predicted noise at ``t``; ``x0``: the predicted clean image at ``t``.

Timesteps are integers in ``[0, num_train_timesteps - 1]`` (a flow model's are real numbers
in ``[0, T]``); ``-1`` stands for the clean end of the chain wherever a sampler needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiTTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.models.attention_processor import Attention
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models.attention import JacobianSafeAttnProcessor
from workbench.models.presets import Preset
from workbench.models.schedule import FlowSchedule, Prediction, Schedule

__all__ = ["Conditioning", "DiffusionModel", "FlowSchedule", "Prediction", "Schedule"]

TimestepLike = int | float | torch.Tensor

#: The network classes and their family names.
FAMILIES = {
    UNet2DModel: "unet",
    UNet2DConditionModel: "sd",
    DiTTransformer2DModel: "dit",
    SD3Transformer2DModel: "sd3",
}

#: Guidance scale when a prompt or class label is given without one: the default of each
#: family's diffusers pipeline (StableDiffusionPipeline 7.5, DiTPipeline 4.0,
#: StableDiffusion3Pipeline 7.0).
DEFAULT_GUIDANCE = {"sd": 7.5, "sdxl": 5.0, "dit": 4.0, "sd3": 7.0}


@dataclass(frozen=True, eq=False)
class Conditioning:
    """What a conditional network is conditioned on during a call.

    ``cond``: the network's keyword inputs for the prompt (text-encoder states
    ``encoder_hidden_states`` ``[1, L, D]``, SD3's ``pooled_projections`` ``[1, P]``) or the
    class (``class_labels`` ``[1]``); ``uncond``: the same for the negative prompt or the
    null class, used (classifier-free guidance) when ``guidance_scale > 1``.
    """

    prompt: str | None
    negative_prompt: str | None
    guidance_scale: float
    cond: dict[str, torch.Tensor]
    uncond: dict[str, torch.Tensor] | None
    class_label: int | None = None

    @property
    def guided(self) -> bool:
        """Whether the output is guided: ``uncond + g (cond - uncond)``, two U-Net halves."""
        return self.uncond is not None

    def describe(self) -> dict[str, Any]:
        """Prompt (or class label), negative prompt and guidance as plain data (recorded in
        results)."""
        if self.prompt is None:  # a class-conditional model
            return {"class_label": self.class_label, "guidance_scale": self.guidance_scale}
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "guidance_scale": self.guidance_scale,
        }


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a hook to end a forward once the wanted activation is seen."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value


class DiffusionModel:
    """A diffusion model: a denoising network plus its noise schedule, and for a latent model
    its VAE, for a text-to-image model its text encoders and tokenizers.

    Families (:attr:`family`): pixel-space ``UNet2DModel`` (unconditional); latent
    ``UNet2DConditionModel`` (the Stable Diffusion 1.x/2.x layout: text-conditioned, x_t is
    the VAE latent); latent ``DiTTransformer2DModel`` (class-conditional, learned sigma);
    latent ``SD3Transformer2DModel`` (MMDiT, rectified flow; its text encoders are
    optional: without them it runs on zero prompt embeddings or given ones). Build one with
    :func:`workbench.load`. The networks are kept in eval mode with their parameters
    frozen; every hook this class installs is removed again, also when the forward raises.
    """

    def __init__(
        self,
        network: nn.Module,
        scheduler: Any,
        preset: Preset | None = None,
        name: str = "model",
        source: str | None = None,
        vae: AutoencoderKL | None = None,
        text_encoder: nn.Module | None = None,
        tokenizer: Any = None,
        text_encoder_2: nn.Module | None = None,
        tokenizer_2: Any = None,
        text_encoder_3: nn.Module | None = None,
        tokenizer_3: Any = None,
    ) -> None:
        family = FAMILIES.get(type(network))
        if family == "sd" and network.config.get("addition_embed_type") == "text_time":
            family = "sdxl"
        if family is None:
            raise WorkbenchError(
                f"{type(network).__name__} is not supported yet: UNet2DModel (pixel space), "
                "UNet2DConditionModel (Stable Diffusion), DiTTransformer2DModel (DiT) or "
                "SD3Transformer2DModel (Stable Diffusion 3)"
            )
        _check_family(family, network.config, vae, text_encoder, tokenizer, text_encoder_2)
        #: ``unet``, ``sd``, ``sdxl``, ``dit`` or ``sd3`` (see the module docstring).
        self.family = family
        #: The denoising network (a U-Net or a transformer).
        self.network = network.eval().requires_grad_(False)
        #: The VAE of a latent model (None in pixel space): x_t is its latent.
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        encoders = (text_encoder, text_encoder_2, text_encoder_3)
        self.text_encoder, self.text_encoder_2, self.text_encoder_3 = (
            e.eval().requires_grad_(False) if e is not None else None for e in encoders
        )
        self.tokenizer, self.tokenizer_2, self.tokenizer_3 = tokenizer, tokenizer_2, tokenizer_3
        self._conditioning: Conditioning | None = None
        self._unprompted: Conditioning | None = None
        self._encoder_pipeline: Any = None
        self._doubled = False  # inside a guided forward: the batch is [uncond; cond]
        self._h_shapes: dict[str, tuple[int, ...]] = {}
        self.scheduler = scheduler
        self.preset = preset or Preset()
        self.name = name
        self.source = source or name
        #: The sampler maths of the model's own scheduler config: :class:`Schedule`
        #: (DDIM over a discrete variance-preserving schedule) or :class:`FlowSchedule`.
        self.schedule = _schedule_of(scheduler, network.config)
        self._h_point = self.default_point
        self._fingerprint: str | None = None
        self._signature: tuple = ()
        #: Evaluate the network (:meth:`raw`, so sampling, inversion and edits) in
        #: micro-batches of exactly this many samples, the last one padded: a sample's
        #: result is then the same bit for bit whatever batch it is run in (the kernels
        #: see one shape). ``None`` (default): one call per batch, results depend on the
        #: batch size at the 1e-6 level (docs/architecture.md, "Determinism").
        self._micro_batch: int | None = None
        self._h_parts: list | None = None

    @property
    def unet(self) -> nn.Module:
        """The denoising network (:attr:`network`; the name of the U-Net-only days)."""
        return self.network

    @property
    def transformer(self) -> bool:
        """Whether the network is a transformer (h points are ``block.N``)."""
        return self.family in ("dit", "sd3")

    # ------------------------------------------------------------------ basic facts
    @property
    def config(self) -> Any:
        """The network's diffusers config."""
        return self.network.config

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        return next(self.network.parameters()).dtype

    @property
    def num_train_timesteps(self) -> int:
        """Length T of the training schedule."""
        return self.schedule.num_train_timesteps

    @property
    def prediction_type(self) -> str:
        """What the network outputs: ``epsilon``, ``v_prediction``, ``sample`` or ``flow``
        (the velocity ``eps - x_0`` of a rectified-flow model)."""
        return self.schedule.prediction_type

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha-bar ``[T]`` (float64, CPU); a flow model's is that of the
        variance-preserving schedule with the same signal-to-noise ratio."""
        if isinstance(self.schedule, FlowSchedule):
            T = self.num_train_timesteps
            return torch.tensor([self.schedule.alpha_bar(t) for t in range(T)], dtype=torch.float64)
        return self.schedule.alphas_cumprod

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image / one x_t."""
        size = self.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (int(self.config.in_channels), int(h), int(w))

    @property
    def d(self) -> int:
        """Dimension of x-space (pixels times channels)."""
        return math.prod(self.sample_shape)

    @property
    def h_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of h for one sample, at the current :attr:`h_point`."""
        point = self._h_point
        if point == "mid" and not self.transformer:
            _, height, width = self.sample_shape
            factor = 2 ** (len(self.config.down_block_types) - 1)
            return (int(self.config.block_out_channels[-1]), height // factor, width // factor)
        if point not in self._h_shapes:  # one small forward, stopped at the point
            x = torch.zeros(1, *self.sample_shape, device=self.device, dtype=self.dtype)
            with torch.no_grad():
                self._h_shapes[point] = tuple(self.h(x, 0).shape[1:])
        return self._h_shapes[point]

    # ------------------------------------------------------------------ activation points
    def h_points(self) -> list[str]:
        """Names of the block outputs that can serve as h, in forward order: for a U-Net
        ``down.i`` (the i-th down block's output), ``mid`` (the mid block's: the default),
        ``up.i``; for a transformer ``block.i`` (the i-th transformer block's image tokens,
        on the patch grid)."""
        net = self.network
        if self.transformer:
            return [f"block.{i}" for i in range(len(net.transformer_blocks))]
        names = [f"down.{i}" for i in range(len(net.down_blocks))]
        names += ["mid"] if net.mid_block is not None else []
        return names + [f"up.{i}" for i in range(len(net.up_blocks))]

    @property
    def default_point(self) -> str:
        """The point h is read at unless told: a U-Net's mid block (its bottleneck); a
        transformer's middle block ``block.{N // 2}``: the first blocks are close to the
        patch embedding and the last to the output prediction, while the middle of the
        residual stream is where diffusion transformers' features are most semantic."""
        if self.transformer:
            return f"block.{len(self.network.transformer_blocks) // 2}"
        return "mid"

    @property
    def h_point(self) -> str:
        """The activation point h is read and edited at (:attr:`default_point` unless set)."""
        return self._h_point

    @h_point.setter
    def h_point(self, point: str) -> None:
        self._h_point = self._check_point(point)

    def _check_point(self, point: str) -> str:
        if not isinstance(point, str) or point not in self.h_points():
            raise WorkbenchError(
                f"unknown activation point {point!r}; this model has {', '.join(self.h_points())}"
            )
        return point

    @contextlib.contextmanager
    def h_at(self, point: str | None) -> Iterator[str]:
        """Within the block h is the output of block ``point`` (see :meth:`h_points`; None:
        unchanged); the previous point is restored on exit, also after an exception."""
        previous = self._h_point
        self._h_point = previous if point is None else self._check_point(point)
        try:
            yield self._h_point
        finally:
            self._h_point = previous

    def _h_module(self) -> nn.Module:
        """The block whose output is h now."""
        kind, _, index = self._h_point.partition(".")
        net = self.network
        if kind == "block":
            return net.transformer_blocks[int(index)]
        if kind == "mid":
            return net.mid_block
        return (net.down_blocks if kind == "down" else net.up_blocks)[int(index)]

    def _read(self, output: Any) -> torch.Tensor:
        """h ``[B, *h_shape]`` from the output of the block at :attr:`h_point`: a U-Net
        block's hidden state, or a transformer block's image tokens ``[B, L, C]`` (SD3's
        joint block returns ``(context, image)``) laid out on the patch grid."""
        if not self.transformer:
            return _first(output)
        tokens = output[1] if isinstance(output, tuple) else output
        _, height, width = self.sample_shape
        p = int(self.config.patch_size)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height // p, width // p)

    def _write(self, output: Any, h: torch.Tensor) -> Any:
        """``output`` of the block at :attr:`h_point` with its h replaced by ``h``."""
        if not self.transformer:
            return _with_first(output, h)
        tokens = h.flatten(2).transpose(1, 2).contiguous()
        return (output[0], tokens) if isinstance(output, tuple) else tokens

    @property
    def latent(self) -> bool:
        """Whether x_t is a VAE latent (a :meth:`decode` away from an image)."""
        return self.vae is not None

    @property
    def conditional(self) -> bool:
        """Whether the model takes prompts (a text-to-image model with its text encoders)."""
        return self.text_encoder is not None

    @property
    def class_conditional(self) -> bool:
        """Whether the model takes class labels (DiT)."""
        return self.family == "dit"

    @property
    def num_classes(self) -> int:
        """Number of classes of a class-conditional model (its null class is this index)."""
        return int(self.config.num_embeds_ada_norm) if self.class_conditional else 0

    def components(self) -> dict[str, nn.Module]:
        """The networks of the model by their diffusers folder names (``unet`` or
        ``transformer`` first)."""
        parts = {
            "transformer" if self.transformer else "unet": self.network,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
            "text_encoder_3": self.text_encoder_3,
        }
        return {k: v for k, v in parts.items() if v is not None}

    def tokenizers(self) -> dict[str, Any]:
        """The tokenizers by their folder names (none for a model without text)."""
        parts = {"tokenizer": self.tokenizer, "tokenizer_2": self.tokenizer_2}
        parts["tokenizer_3"] = self.tokenizer_3
        return {k: v for k, v in parts.items() if v is not None}

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> DiffusionModel:
        """Move (and cast) the weights of every component; returns the model."""
        for module in self.components().values():
            if device is not None:
                module.to(device)
            if dtype is not None:
                module.to(dtype=dtype)
        self._unprompted = None
        return self

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.network.parameters())
        kind = "latent class-conditional, " if self.family == "dit" else "latent text-to-image, "
        kind = "" if self.family == "unet" else kind
        return (
            f"DiffusionModel({self.name!r}, {kind}{n / 1e6:.2f}M params, x {self.sample_shape}, "
            f"h {self.h_shape}, {self.prediction_type}, {self.device}, {self.dtype})"
        )

    @property
    def micro_batch(self) -> int | None:
        """Fixed U-Net batch for bit-exact results across batch sizes (see ``__init__``)."""
        return self._micro_batch

    @micro_batch.setter
    def micro_batch(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1
        ):
            raise WorkbenchError(f"micro_batch must be a positive integer or None, got {value!r}")
        self._micro_batch = None if value is None else int(value)

    # ------------------------------------------------------------------ fingerprint
    @property
    def fingerprint(self) -> str:
        """Stable hash of the architecture, the noise schedule and the weights.

        Weights are hashed as float32 so that the same weights loaded in fp16 or fp32 give
        the same fingerprint; the device does not matter either. Recomputed when the
        weights may have changed: a parameter or buffer replaced, moved, or modified in
        place through torch (``copy_``, ``load_state_dict``, ``mul_`` under ``no_grad``:
        each bumps the tensor's version counter). Writes through ``.data`` bypass the
        counter; call :meth:`refresh_fingerprint` after them.
        """
        signature = self._weights_signature()
        if signature != self._signature:
            self._fingerprint, self._signature = None, signature
        if self._fingerprint is None:
            digest = hashlib.sha256()
            config = {k: v for k, v in dict(self.config).items() if not k.startswith("_")}
            digest.update(json.dumps(config, sort_keys=True, default=str).encode())
            digest.update(self.prediction_type.encode())
            if isinstance(self.schedule, FlowSchedule):
                digest.update(json.dumps(self.schedule.describe(), sort_keys=True).encode())
            else:
                digest.update(self.alphas_cumprod.numpy().tobytes())
            for part, module in self.components().items():
                if part != "unet":  # a pixel model's fingerprint is the U-Net's alone
                    digest.update(part.encode())
                    digest.update(type(module).__name__.encode())
                state = module.state_dict()
                for key in sorted(state):
                    digest.update(key.encode())
                    tensor = state[key].detach().to("cpu", torch.float32).contiguous()
                    digest.update(tensor.numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def _weights_signature(self) -> tuple:
        tensors = [t for m in self.components().values() for t in (*m.parameters(), *m.buffers())]
        return tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors)

    def refresh_fingerprint(self) -> str:
        """Forget the cached fingerprint (after writes the version counters miss)."""
        self._fingerprint = None
        return self.fingerprint

    # ------------------------------------------------------------------ schedule
    def check_timestep(self, t: int, allow_clean: bool = False) -> int:
        """Return ``t`` as int, or raise a one-line error if it is out of range."""
        return self.schedule.check_timestep(t, allow_clean)

    def alpha_bar(self, t: int) -> float:
        """alpha-bar at integer timestep ``t``; the schedule's final value at ``t = -1``."""
        return self.schedule.alpha_bar(t)

    def expected_norm(self, t: int) -> float:
        """E||x_t|| for x_0 = 0 (the noise part only): sqrt(d * (1 - alpha-bar_t)); a flow
        model's s sqrt(d)."""
        if isinstance(self.schedule, FlowSchedule):
            return self.schedule.coefficients(t)[1] * math.sqrt(self.d)
        return math.sqrt(self.d * (1.0 - self.alpha_bar(t)))

    # ------------------------------------------------------------------ inputs
    def check_x(self, x: torch.Tensor, name: str = "x_t") -> None:
        """A one-line error unless ``x`` is a ``[B, C, H, W]`` tensor of this model's shape."""
        if not isinstance(x, torch.Tensor):
            raise WorkbenchError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.sample_shape:
            expected = ", ".join(map(str, self.sample_shape))
            raise WorkbenchError(f"{name} has shape {list(x.shape)}, expected [B, {expected}]")

    def _timesteps(self, t: TimestepLike, batch: int) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            if t.shape[0] != batch:
                raise WorkbenchError(f"got {t.shape[0]} timesteps for a batch of {batch}")
            continuous = self.schedule.continuous
            for value in t.tolist():
                self.check_timestep(value if continuous else int(value))
            return t.to(self.device, torch.float32 if continuous else torch.long)
        t = self.check_timestep(t)
        if self.schedule.continuous:  # the network's own (real) timestep value
            return torch.full((batch,), float(t), dtype=torch.float32, device=self.device)
        return torch.full((batch,), t, dtype=torch.long, device=self.device)

    def noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """x_T for each seed: standard normal, drawn on the CPU so any device agrees.

        Returns ``[len(seeds), C, H, W]`` on the model's device and dtype. Refuses (one
        line) seeds that are not integers in [0, 2**63) and batches whose x_T alone would
        take more than half of this machine's memory.
        """
        seeds = list(seeds)
        if not seeds:
            raise WorkbenchError("give at least one seed")
        for seed in seeds:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise WorkbenchError(f"seeds must be integers, got {seed!r}")
            if not 0 <= int(seed) < 2**63:
                raise WorkbenchError(f"seeds must be in [0, 2**63), got {seed}")
        need = len(seeds) * self.d * 4
        if need > _memory_bytes() // 2:
            raise WorkbenchError(
                f"{len(seeds)} seeds need {need / 2**30:.1f} GiB for x_T alone, more than half "
                f"of this machine's memory: use fewer seeds"
            )
        out = torch.empty(len(seeds), *self.sample_shape)
        for i, seed in enumerate(seeds):
            gen = torch.Generator().manual_seed(int(seed))
            out[i] = torch.randn(self.sample_shape, generator=gen)
        return out.to(self.device, self.dtype)

    # ------------------------------------------------------------------ conditioning
    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """The network's text inputs for ``prompt``, as the family's diffusers pipeline
        computes them: ``encoder_hidden_states`` ``[1, L, D]`` (padded to the tokenizer's
        maximum length, truncated beyond it with a warning), and for SD3 also
        ``pooled_projections`` ``[1, P]``."""
        if not self.conditional:
            what = (
                "class-conditional: it takes class_label"
                if self.class_conditional
                else (
                    "loaded without its text encoders: it takes no prompt"
                    if self.family == "sd3"
                    else "unconditional: it takes no prompt"
                )
            )
            raise WorkbenchError(f"model {self.name!r} is {what}")
        if not isinstance(prompt, str):
            raise WorkbenchError(f"a prompt must be a string, got {type(prompt).__name__}")
        if self.family in ("sd3", "sdxl"):
            return self._encode_with_pipeline(prompt)
        tok = self.tokenizer
        length = int(tok.model_max_length)
        ids = tok(prompt, padding="max_length", max_length=length, truncation=True)
        full = tok(prompt, padding="longest").input_ids
        if len(full) > length:
            warnings.warn(
                f"the prompt is {len(full)} tokens long; the text encoder sees the first {length}",
                stacklevel=3,
            )
        input_ids = torch.tensor([ids.input_ids], device=self.device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = torch.tensor([ids.attention_mask], device=self.device)
        with torch.no_grad():
            states = self.text_encoder(input_ids, attention_mask=mask)[0]
        return {"encoder_hidden_states": states.to(self.dtype)}

    def _encode_with_pipeline(self, prompt: str) -> dict[str, torch.Tensor]:
        """SD3's and SDXL's prompt inputs by diffusers' own ``encode_prompt`` on this
        model's text encoders (SD3: two CLIPs, T5 when there is one, zeros otherwise; SDXL:
        two CLIPs' penultimate states side by side, the second's pooled projection), plus
        SDXL's size conditions ``time_ids`` (original = target = the image size, no crop,
        as the pipeline's defaults)."""
        encoders = {
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "text_encoder_2": self.text_encoder_2,
            "tokenizer_2": self.tokenizer_2,
        }
        if self._encoder_pipeline is None:
            import diffusers

            if self.family == "sd3":
                self._encoder_pipeline = diffusers.StableDiffusion3Pipeline(
                    transformer=self.network,  # read for its config only
                    scheduler=None,
                    vae=None,
                    text_encoder_3=self.text_encoder_3,
                    tokenizer_3=self.tokenizer_3,
                    **encoders,
                )
            else:
                self._encoder_pipeline = diffusers.StableDiffusionXLPipeline(
                    unet=self.network,  # read for its config only
                    scheduler=None,
                    vae=None,
                    add_watermarker=False,
                    **encoders,
                )
        pipe = self._encoder_pipeline
        args = (None, None) if self.family == "sd3" else (None,)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            states, _, pooled, _ = pipe.encode_prompt(
                prompt, *args, device=self.device, do_classifier_free_guidance=False
            )
        if self.family == "sd3":
            return {
                "encoder_hidden_states": states.to(self.dtype),
                "pooled_projections": pooled.to(self.dtype),
            }
        return {
            "encoder_hidden_states": states.to(self.dtype),
            "text_embeds": pooled.to(self.dtype),
            "time_ids": self._time_ids(),
        }

    def _time_ids(self) -> torch.Tensor:
        """SDXL's size conditions ``[1, 6]``: original size, crop corner (0, 0), target
        size, the image size for both."""
        _, height, width = self.image_shape
        return torch.tensor([[height, width, 0, 0, height, width]], device=self.device).to(
            self.dtype
        )

    def zero_prompt(self) -> dict[str, torch.Tensor]:
        """SD3's text inputs of zero prompt embeddings (a model without text encoders):
        ``[1, 77 + 256, joint_attention_dim]`` states (CLIP's and T5's lengths in the
        pipeline) and ``[1, pooled_projection_dim]`` pooled ones."""
        config = self.config
        states = torch.zeros(1, 77 + 256, config.joint_attention_dim)
        pooled = torch.zeros(1, config.pooled_projection_dim)
        return {
            "encoder_hidden_states": states.to(self.device, self.dtype),
            "pooled_projections": pooled.to(self.device, self.dtype),
        }

    def _class_input(self, label: int) -> dict[str, torch.Tensor]:
        return {"class_labels": torch.tensor([label], device=self.device)}

    @property
    def conditioning(self) -> Conditioning | None:
        """The conditioning forwards use now: the innermost :meth:`conditioned` block's,
        else the empty prompt (SD; SD3 without text encoders: zero embeddings) or the null
        class (DiT), without guidance; None for an unconditional model."""
        if self.family == "unet":
            return None
        if self._conditioning is not None:
            return self._conditioning
        if self._unprompted is None:
            if self.class_conditional:
                cond = self._class_input(self.num_classes)
                self._unprompted = Conditioning(None, None, 1.0, cond, None, None)
            else:
                cond = self.encode_prompt("") if self.conditional else self.zero_prompt()
                self._unprompted = Conditioning("", "", 1.0, cond, None)
        return self._unprompted

    @contextlib.contextmanager
    def conditioned(
        self,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        guidance_scale: float | None = None,
        class_label: int | None = None,
        prompt_embeds: dict[str, torch.Tensor] | None = None,
        negative_prompt_embeds: dict[str, torch.Tensor] | None = None,
    ) -> Iterator[Conditioning | None]:
        """Within the block every forward (sampling, inversion, h, Jacobians) is conditioned
        on ``prompt`` (text-to-image) or ``class_label`` (DiT), guided by
        ``guidance_scale`` (default with a prompt or label: the family pipeline's, 7.5 SD,
        7.0 SD3, 4.0 DiT; else 1: unguided) against ``negative_prompt`` (default: the empty
        prompt) or the null class.

        ``prompt_embeds``/``negative_prompt_embeds``: the network's text inputs given
        directly (``{"encoder_hidden_states": [1, L, D], "pooled_projections": [1, P]}``
        for SD3), e.g. on a model loaded without text encoders.

        On an unconditional model the block changes nothing when nothing is given and
        refuses a prompt or label (one line). Blocks nest; a block given nothing keeps the
        enclosing block's conditioning; the previous one is restored on exit, also after
        an exception.
        """
        given = (prompt, negative_prompt, guidance_scale, class_label)
        embeds = (prompt_embeds, negative_prompt_embeds)
        if self.family == "unet":
            if any(v is not None for v in (*given, *embeds)):
                raise WorkbenchError(
                    f"model {self.name!r} is unconditional: it takes no prompt, "
                    "negative_prompt, guidance_scale or class_label"
                )
            yield None
            return
        if all(v is None for v in (*given, *embeds)) and self._conditioning is not None:
            yield self._conditioning
            return
        if guidance_scale is not None:
            if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, int | float):
                raise WorkbenchError(f"guidance_scale must be a number, got {guidance_scale!r}")
            if not math.isfinite(guidance_scale) or not 0 <= guidance_scale <= 100:
                raise WorkbenchError(f"guidance_scale must be in [0, 100], got {guidance_scale}")
        if self.class_conditional:
            made = self._class_conditioning(prompt, negative_prompt, guidance_scale, class_label)
        else:
            if class_label is not None:
                raise WorkbenchError(
                    f"model {self.name!r} is text-conditional: it takes a prompt, not class_label"
                )
            made = self._text_conditioning(
                prompt, negative_prompt, guidance_scale, prompt_embeds, negative_prompt_embeds
            )
        previous = self._conditioning
        self._conditioning = made
        try:
            yield made
        finally:
            self._conditioning = previous

    def _class_conditioning(
        self,
        prompt: str | None,
        negative_prompt: str | None,
        guidance_scale: float | None,
        class_label: int | None,
    ) -> Conditioning:
        if prompt is not None or negative_prompt is not None:
            raise WorkbenchError(
                f"model {self.name!r} is class-conditional: give class_label, not a prompt"
            )
        if class_label is not None and (
            isinstance(class_label, bool)
            or not isinstance(class_label, numbers.Integral)
            or not 0 <= class_label < self.num_classes
        ):
            raise WorkbenchError(
                f"class_label must be an integer in [0, {self.num_classes - 1}], "
                f"got {class_label!r}"
            )
        default = DEFAULT_GUIDANCE["dit"] if class_label is not None else 1.0
        scale = float(default if guidance_scale is None else guidance_scale)
        if class_label is None and scale > 1:
            raise WorkbenchError("guidance_scale > 1 needs a class_label to guide towards")
        label = self.num_classes if class_label is None else int(class_label)
        uncond = self._class_input(self.num_classes) if scale > 1 else None
        return Conditioning(None, None, scale, self._class_input(label), uncond, label)

    def _text_conditioning(
        self,
        prompt: str | None,
        negative_prompt: str | None,
        guidance_scale: float | None,
        prompt_embeds: dict[str, torch.Tensor] | None,
        negative_prompt_embeds: dict[str, torch.Tensor] | None,
    ) -> Conditioning:
        if prompt_embeds is not None and prompt is not None:
            raise WorkbenchError("give a prompt or prompt_embeds, not both")
        text = "" if prompt is None else prompt
        default = DEFAULT_GUIDANCE[self.family] if (text or prompt_embeds is not None) else 1.0
        scale = float(default if guidance_scale is None else guidance_scale)
        negative = "" if negative_prompt is None else negative_prompt
        if (negative_prompt is not None or negative_prompt_embeds is not None) and scale <= 1:
            raise WorkbenchError(
                f"a negative_prompt needs guidance_scale > 1 (got {scale:g}): without guidance "
                "it is not used"
            )
        if prompt_embeds is not None:
            cond = self._embeds(prompt_embeds)
        elif self.conditional or prompt is not None or negative_prompt is not None:
            cond = self.encode_prompt(text)  # without text encoders: the one-line refusal
        else:
            cond = self.zero_prompt()
        uncond = None
        if scale > 1:  # diffusers guides above 1; at 1 the result is the prompt's alone
            if negative_prompt_embeds is not None:
                uncond = self._embeds(negative_prompt_embeds)
            elif self.family == "sdxl" and negative_prompt is None:
                # SDXL's pipeline (force_zeros_for_empty_prompt): zero negative embeddings
                uncond = {k: v if k == "time_ids" else torch.zeros_like(v) for k, v in cond.items()}
            else:
                uncond = self.encode_prompt(negative) if self.conditional else self.zero_prompt()
        shown = text if prompt_embeds is None else "<prompt_embeds>"
        return Conditioning(shown, negative, scale, cond, uncond)

    def _embeds(self, embeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Given text inputs, checked against the network's keyword inputs."""
        needed = {"encoder_hidden_states"}
        if self.family == "sd3":
            needed.add("pooled_projections")
        if self.family == "sdxl":
            needed.add("text_embeds")
            embeds = (
                {"time_ids": self._time_ids(), **embeds} if isinstance(embeds, dict) else embeds
            )
            needed.add("time_ids")
        if not isinstance(embeds, dict) or set(embeds) != needed:
            raise WorkbenchError(f"prompt embeddings must be a dict with keys {sorted(needed)}")
        out = {}
        for key, value in embeds.items():
            if not isinstance(value, torch.Tensor) or value.shape[0] != 1:
                raise WorkbenchError(f"prompt embeddings {key!r} must be a tensor of batch 1")
            out[key] = value.to(self.device, self.dtype)
        return out

    def _context(self, batch: int, doubled: bool) -> dict[str, torch.Tensor]:
        """Keyword arguments that condition a network call on a batch of ``batch``."""
        c = self.conditioning
        if c is None:
            return {}
        out = {}
        for key, value in c.cond.items():
            value = value.expand(batch, *value.shape[1:])
            if doubled:
                uncond = c.uncond[key]
                value = torch.cat([uncond.expand(batch, *uncond.shape[1:]), value])
            out[key] = value
        return out

    # ------------------------------------------------------------------ forward passes
    def h(self, x_t: torch.Tensor, t: TimestepLike) -> torch.Tensor:
        """h for ``x_t`` at ``t``: the output of the block at :attr:`h_point` (the mid block
        by default); the U-Net's own forward, stopped there (for ``mid`` only the encoder
        half runs).
        A text-conditional model gives h of the prompt's branch (guidance does not enter).

        Args:
            x_t: ``[B, C, H, W]``.
            t: an int, or a ``[B]`` integer tensor.
        Returns:
            ``[B, *h_shape]``.
        """
        self.check_x(x_t)
        return self._h_of_forward(x_t.to(self.dtype), self._timesteps(t, x_t.shape[0]))

    def _h_of_forward(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """h at the current point: the U-Net forward (the prompt's branch of a conditional
        model), stopped by a hook once that block has run (nothing after it is computed)."""

        def stop(module: nn.Module, args: tuple, output: Any) -> None:
            raise _Stop(self._read(output))

        handle = self._h_module().register_forward_hook(stop)
        try:
            self._call(x_t, timesteps, doubled=False)
        except _Stop as stopped:
            return stopped.value
        finally:
            handle.remove()
        raise RuntimeError(f"the network's forward never reached block {self._h_point}")

    def _call(self, x: torch.Tensor, timesteps: torch.Tensor, doubled: bool) -> torch.Tensor:
        """The network's output for ``x`` (already doubled when ``doubled``)."""
        batch = x.shape[0] // 2 if doubled else x.shape[0]
        context = self._context(batch, doubled)
        if self.family == "sdxl":  # the added conditions go in as one dict
            added = {k: context.pop(k) for k in ("text_embeds", "time_ids")}
            context["added_cond_kwargs"] = added
        return self.network(x, timestep=timesteps, **context).sample

    def raw(
        self, x_t: torch.Tensor, t: TimestepLike, delta_h: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The U-Net's output as trained (eps, v or x0), with h shifted by ``delta_h``.

        ``delta_h`` is added to the mid-block output; it must broadcast against
        ``[B, *h_shape]`` (e.g. ``[B, C, H, W]``, ``[C, H, W]`` or ``[C, 1, 1]``).
        """
        self.check_x(x_t)
        batch = x_t.shape[0]
        timesteps = self._timesteps(t, batch)
        m = self._micro_batch
        if m is None or batch == m:
            return self._raw(x_t, timesteps, delta_h)
        per_sample = delta_h is not None and delta_h.ndim == 4 and delta_h.shape[0] == batch
        outs, sizes = [], []
        self._h_parts = []
        try:
            for i in range(0, batch, m):
                n = min(m, batch - i)
                xs, ts = x_t[i : i + n], timesteps[i : i + n]
                d = delta_h[i : i + n] if per_sample else delta_h
                if n < m:  # pad to the fixed shape: every sample sees the same kernels
                    xs = torch.cat([xs, xs.new_zeros(m - n, *xs.shape[1:])])
                    ts = torch.cat([ts, ts[-1:].expand(m - n)])
                    if per_sample:
                        d = torch.cat([d, d.new_zeros(m - n, *d.shape[1:])])
                outs.append(self._raw(xs, ts, d)[:n])
                sizes.append(n)
        finally:
            parts, self._h_parts = self._h_parts, None
        for seen in {id(seen): seen for seen, _ in parts}.values():  # one entry per call
            chunks = [h for owner, h in parts if owner is seen]
            seen.append(torch.cat([h[:n] for h, n in zip(chunks, sizes, strict=True)]))
        return torch.cat(outs)

    def _raw(
        self, x_t: torch.Tensor, timesteps: torch.Tensor, delta_h: torch.Tensor | None
    ) -> torch.Tensor:
        x = x_t.to(self.dtype)
        c = self.conditioning
        if c is not None and c.guided:  # one call on [x; x]: unconditional, then prompted
            self._doubled = True
            try:
                with self.h_edit(delta_h):
                    doubled = torch.cat([x, x]), torch.cat([timesteps, timesteps])
                    out = self._call(*doubled, doubled=True)
            finally:
                self._doubled = False
            out = out[:, : x.shape[1]]
            uncond, cond = out.chunk(2)
            return uncond + c.guidance_scale * (cond - uncond)
        with self.h_edit(delta_h):
            out = self._call(x, timesteps, doubled=False)
        if out.shape[1] == 2 * x_t.shape[1]:  # learned variance: keep the mean part
            out = out[:, : x_t.shape[1]]
        return out

    def predict(self, x_t: torch.Tensor, t: int, delta_h: torch.Tensor | None = None) -> Prediction:
        """eps and x0 predicted from ``x_t`` at integer ``t`` (optionally with an h edit)."""
        t = self.check_timestep(t)
        return self.schedule.convert_at(self.raw(x_t, t, delta_h), x_t, t)

    def eps(self, x_t: torch.Tensor, t: int, delta_h: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise at ``t``, with an optional additive edit ``delta_h`` of h."""
        return self.predict(x_t, t, delta_h).eps

    # ------------------------------------------------------------------ hooks and modes
    @contextlib.contextmanager
    def h_edit(self, delta_h: torch.Tensor | None) -> Iterator[None]:
        """Within the block, h (the output at :attr:`h_point`) is replaced by ``h + delta_h``."""
        if delta_h is None:
            yield
            return
        delta = delta_h.to(self.device, self.dtype)

        def add_delta(module: nn.Module, args: tuple, output: Any) -> Any:
            h = self._read(output)
            if self._doubled and delta.ndim == h.ndim and 1 < delta.shape[0]:
                return self._write(output, h + torch.cat([delta, delta]))  # both halves
            return self._write(output, h + delta)

        handle = self._h_module().register_forward_hook(add_delta)
        try:
            yield
        finally:
            handle.remove()

    @contextlib.contextmanager
    def record_h(self) -> Iterator[list[torch.Tensor]]:
        """Within the block, every h (output at :attr:`h_point`) is appended (detached, CPU)
        to the list yielded; the hook is removed on exit, also after an exception."""
        seen: list[torch.Tensor] = []

        def keep(module: nn.Module, args: tuple, output: Any) -> None:
            output = self._read(output)
            if self._doubled:  # a guided batch: keep the prompted half
                output = output[output.shape[0] // 2 :]
            h = output.detach().to("cpu", torch.float32)
            if self._h_parts is not None:  # one micro-batch of a call: joined by ``raw``
                self._h_parts.append((seen, h))
            else:
                seen.append(h)

        handle = self._h_module().register_forward_hook(keep)
        try:
            yield seen
        finally:
            handle.remove()

    def attention_modules(self) -> dict[str, Attention]:
        """Every attention module of the network, by its qualified name."""
        return {n: m for n, m in self.network.named_modules() if isinstance(m, Attention)}

    @contextlib.contextmanager
    def jacobian_safe(self) -> Iterator[None]:
        """Within the block, ``torch.func.jvp``/``vjp``/``vmap`` run through :meth:`h`.

        Swaps every attention processor for :class:`JacobianSafeAttnProcessor` and puts
        the originals back on exit, also after an exception. A half-precision network also
        gets a pre-hook on every linear and convolution layer that casts its input (value
        and tangent) to the layer's dtype: on CUDA (torch 2.11, an H100) vmapped
        forward-mode tangents came out of a bfloat16 network's layers in float32 beside
        bfloat16 values, and the next matrix product refused the mix (which op upcasts was
        not located: plain ``forward_ad`` without vmap did not show it). The hooks are
        removed on exit too.
        """
        modules = self.attention_modules()
        saved = {name: module.processor for name, module in modules.items()}
        safe = JacobianSafeAttnProcessor()
        handles = []
        try:
            for module in modules.values():
                module.set_processor(safe)
            if self.dtype in (torch.float16, torch.bfloat16):
                for module in self.network.modules():
                    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                        handles.append(module.register_forward_pre_hook(_cast_input))
            yield
        finally:
            for handle in handles:
                handle.remove()
            for name, module in modules.items():
                module.set_processor(saved[name])

    def hook_count(self) -> int:
        """Number of forward (pre-)hooks on any network module; 0 when nothing is left over."""
        count = 0
        for module in self.network.modules():
            count += len(module._forward_hooks) + len(module._forward_pre_hooks)
        return count

    # ------------------------------------------------------------------ images
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image: :attr:`sample_shape` in pixel space, the VAE
        decoder's output for a latent model."""
        if self.vae is None:
            return self.sample_shape
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        _, h, w = self.sample_shape
        return (int(self.vae.config.out_channels), h * factor, w * factor)

    def check_images(self, images: torch.Tensor, name: str = "images") -> None:
        """A one-line error unless ``images`` is a ``[B, *image_shape]`` tensor."""
        if not isinstance(images, torch.Tensor):
            raise WorkbenchError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise WorkbenchError(
                f"{name} have shape {list(images.shape)}, expected [B, {expected}]"
            )

    def _vae_scale(self) -> tuple[float, float]:
        config = self.vae.config
        return float(config.scaling_factor), float(config.get("shift_factor") or 0.0)

    @torch.no_grad()
    def decode(self, x: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Images ``[B, *image_shape]`` (about [-1, 1], float32) of clean ``x``
        ``[B, *sample_shape]``: the VAE decoder of ``x / scaling_factor + shift_factor``,
        ``batch_size`` latents at a time (VAE slicing); ``x`` itself in pixel space."""
        self.check_x(x, "x")
        if self.vae is None:
            return x
        scale, shift = self._vae_scale()
        return self._vae_batches(x, batch_size, lambda z: self.vae.decode(z / scale + shift))

    def _vae_batches(
        self, x: torch.Tensor, batch_size: int, fn: Callable[[torch.Tensor], Any]
    ) -> torch.Tensor:
        """``fn`` on ``batch_size`` inputs at a time in the VAE's dtype (VAE slicing); the
        outputs (``.sample`` of diffusers' output objects) joined, float32."""
        vae_dtype = next(self.vae.parameters()).dtype
        outs = []
        for i in range(0, x.shape[0], batch_size):
            out = fn(x[i : i + batch_size].to(self.device, vae_dtype))
            outs.append(getattr(out, "sample", out).float())
        return torch.cat(outs)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Clean x ``[B, *sample_shape]`` of images ``[B, *image_shape]`` in [-1, 1]: the
        VAE encoder's mean, ``(mean - shift_factor) * scaling_factor``; the images
        themselves in pixel space."""
        self.check_images(images)
        if self.vae is None:
            return images
        scale, shift = self._vae_scale()

        def latents(batch: torch.Tensor) -> torch.Tensor:
            return (self.vae.encode(batch).latent_dist.mode() - shift) * scale

        return self._vae_batches(images, batch_size, latents).to(self.dtype)

    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        """``[..., C, H, W]`` in [-1, 1] -> ``[..., H, W, C]`` uint8 (CPU)."""
        x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.movedim(-3, -1).contiguous()

    @staticmethod
    def from_uint8(images: torch.Tensor) -> torch.Tensor:
        """``[..., H, W, C]`` uint8 -> ``[..., C, H, W]`` float in [-1, 1]."""
        return images.movedim(-1, -3).float() / 127.5 - 1.0


def _cast_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: floating tensors cast to the layer's weight dtype, copied so that
    the cast reaches a forward-mode tangent as well as the value."""
    dtype = module.weight.dtype
    return tuple(
        a.to(dtype, copy=True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    )


def _first(output: Any) -> torch.Tensor:
    """The hidden state of a block's output (down blocks also return their skips)."""
    return output[0] if isinstance(output, tuple) else output


def _with_first(output: Any, h: torch.Tensor) -> Any:
    """``output`` with its hidden state replaced by ``h``; a down block's last skip is that
    same hidden state, so it is replaced too (the up path sees the edited block output)."""
    if not isinstance(output, tuple):
        return h
    rest = list(output[1:])
    if rest and isinstance(rest[0], tuple) and rest[0] and rest[0][-1] is output[0]:
        rest[0] = (*rest[0][:-1], h)
    return (h, *rest)


def _check_family(
    family: str,
    config: Any,
    vae: AutoencoderKL | None,
    text_encoder: nn.Module | None,
    tokenizer: Any,
    text_encoder_2: nn.Module | None,
) -> None:
    """One-line errors for networks and parts the workbench cannot run together."""
    if family in ("sd", "sdxl"):
        added = config.get("addition_embed_type")
        if added not in (None, "text_time"):
            raise WorkbenchError(
                f"UNet2DConditionModel with added conditions {added!r} is not supported yet"
            )
        if family == "sdxl" and (text_encoder is None or text_encoder_2 is None):
            raise WorkbenchError(
                "an SDXL U-Net needs both text encoders (the refiner, with only the second, "
                "is not supported yet)"
            )
        if config.get("class_embed_type") is not None or config.get("time_cond_proj_dim"):
            raise WorkbenchError(
                "UNet2DConditionModel with class or guidance-embedding conditions "
                "is not supported yet"
            )
        if text_encoder is None or tokenizer is None:
            raise WorkbenchError("a text-conditional U-Net needs its text_encoder and tokenizer")
    elif family == "unet":
        if config.get("class_embed_type") is not None or config.get("num_class_embeds"):
            raise WorkbenchError("class-conditional UNet2DModel is not supported")
        if text_encoder is not None:
            raise WorkbenchError("an unconditional UNet2DModel takes no text encoder")
    elif family == "dit":
        if text_encoder is not None:
            raise WorkbenchError("a DiT is class-conditional: it takes no text encoder")
        if not config.get("num_embeds_ada_norm"):
            raise WorkbenchError("a DiTTransformer2DModel without classes is not supported yet")
    elif (text_encoder is None) != (text_encoder_2 is None) or (
        text_encoder is not None and tokenizer is None
    ):
        raise WorkbenchError("an SD3 model needs both CLIP text encoders and tokenizers, or none")
    if family != "unet" and vae is None:
        raise WorkbenchError(f"a {family.upper()} model is latent: it needs its vae")
    if vae is not None and vae.config.latent_channels != config.in_channels:
        raise WorkbenchError(
            f"the VAE has {vae.config.latent_channels} latent channels, the network "
            f"takes {config.in_channels}"
        )


def _schedule_of(scheduler: Any, config: Any) -> Schedule | FlowSchedule:
    """The schedule of a diffusers scheduler: a flow-matching one for
    ``FlowMatchEulerDiscreteScheduler``, else DDIM over its alpha-bar table."""
    if "FlowMatch" in type(scheduler).__name__:
        size = config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        p = int(config.get("patch_size") or 1)
        return FlowSchedule.from_scheduler(scheduler, image_seq_len=(h // p) * (w // p))
    return Schedule.from_scheduler(scheduler)


def _memory_bytes() -> int:
    """Physical memory of this machine (bytes); a large number where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62
