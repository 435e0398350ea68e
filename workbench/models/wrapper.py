"""`DiffusionModel`: one wrapper over a diffusers denoising network and its noise schedule.

The kind of network is its family (``model.family``, one file each in
``workbench/models/families/``: pixel U-Nets, Stable Diffusion 1.x/2.x, SDXL, DiT, SD3,
PixArt, FLUX.1, ...); this class keeps what every family shares.

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
from torch import nn

from workbench.errors import WorkbenchError, check_finite
from workbench.models.families import Family, family_for
from workbench.models.presets import Preset
from workbench.models.schedule import FlowSchedule, Prediction, Schedule

__all__ = ["Conditioning", "DiffusionModel", "FlowSchedule", "Prediction", "Schedule"]

TimestepLike = int | float | torch.Tensor

#: How far past [-1, 1] a user's image may lie and still count as float rounding (clamped
#: without a word), and how far it may overshoot as a model's own samples do (shapes32's
#: pass 1 and stay under it: tests/test_hardening.py; clipped with a warning); beyond that
#: it is on another scale: refused.
IMAGE_SLACK = 1e-3
IMAGE_OVERSHOOT = 1.5

#: The text encoders and tokenizers a model may hold, by their diffusers folder names.
TEXT_PARTS = (
    "text_encoder",
    "tokenizer",
    "text_encoder_2",
    "tokenizer_2",
    "text_encoder_3",
    "tokenizer_3",
)


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


#: Pixels of x (samples times height times width) per network call on the CPU
#: (:attr:`DiffusionModel.max_batch`): 16 samples of 64 x 64, 64 of 32 x 32.
CPU_BATCH_PIXELS = 1 << 16


def _batch_size(name: str, value: int | None) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1
    ):
        raise WorkbenchError(f"{name} must be a positive integer or None, got {value!r}")
    return None if value is None else int(value)


class DiffusionModel:
    """A diffusion model: a denoising network plus its noise schedule, and for a latent model
    its VAE, for a text-to-image model its text encoders and tokenizers.

    What depends on the kind of network (its activation points, conditioning, call,
    schedule and attention) is answered by its family, :attr:`arch` (one file each in
    ``workbench/models/families/``; :attr:`family` is its tag). Build one with
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
        vae: nn.Module | None = None,
        family: type[Family] | None = None,
        resolution: int | None = None,
        **parts: Any,
    ) -> None:
        if preset is not None and not isinstance(preset, Preset):
            raise WorkbenchError(
                f"preset must be a wb.Preset (wb.Preset.from_dict for plain data), "
                f"got {type(preset).__name__}"
            )
        unknown = set(parts) - set(TEXT_PARTS)
        if unknown:
            raise WorkbenchError(f"unknown model parts {sorted(unknown)}; known: vae, {TEXT_PARTS}")
        config = {"_class_name": type(network).__name__, **dict(network.config)}
        family = family or family_for(config, type(network).__name__)
        #: The denoising network (a U-Net or a transformer).
        self.network = network.eval().requires_grad_(False)
        #: The VAE of a latent model (None in pixel space): x_t is its latent.
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        #: Text encoders and tokenizers by folder name (``text_encoder``, ``tokenizer``, ...).
        self.parts: dict[str, Any] = {
            k: v.eval().requires_grad_(False) if isinstance(v, nn.Module) else v
            for k, v in parts.items()
            if v is not None
        }
        self._conditioning: Conditioning | None = None
        self._unprompted: Conditioning | None = None
        self._doubled = False  # inside a guided forward: the batch is [uncond; cond]
        self._h_shapes: dict[str, tuple[int, ...]] = {}
        self.scheduler = scheduler
        self.preset = preset or Preset()
        self.name = name
        self.source = source or name
        if resolution is not None and (
            isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral)
        ):
            raise WorkbenchError(f"resolution must be an integer, got {resolution!r}")
        #: Image pixels per side the model runs at (None: its config's size).
        self.resolution = None if resolution is None else int(resolution)
        #: The model's family (``workbench/models/families/``): everything that depends
        #: on the kind of network.
        self.arch: Family = family(self)
        #: The family's tag: ``unet``, ``sd``, ``sdxl``, ``dit``, ``sd3``, ...
        self.family = family.name
        #: The sampler maths of the model's own scheduler config: :class:`Schedule`
        #: (DDIM over a discrete variance-preserving schedule) or :class:`FlowSchedule`.
        self.schedule = self.arch.schedule(scheduler)
        self._h_point = self.arch.default_point()
        self._fingerprint: str | None = None
        self._signature: tuple = ()
        #: Evaluate the network (:meth:`raw`, so sampling, inversion and edits) in
        #: micro-batches of exactly this many samples, the last one padded: a sample's
        #: result is then the same bit for bit whatever batch it is run in (the kernels
        #: see one shape). ``None`` (default): one call per batch, results depend on the
        #: batch size at the 1e-6 level (docs/architecture.md, "Determinism").
        self._micro_batch: int | None = None
        #: Split a network call of more samples than this into calls of at most this many
        #: (no padding; ``micro_batch``, when set, takes precedence): it bounds the memory
        #: of activations. ``None``: no limit. ``wb.load`` sets it on the CPU
        #: (:data:`CPU_BATCH_PIXELS` pixels of x per call), where a larger call is no
        #: faster: 64 ``shapes64`` samples in calls of 16 took 0.91 of the time of one call
        #: of 64 and 693 against 1,149 MiB peak (``analysis/bench_allocator.py``).
        self._max_batch: int | None = None
        self._h_parts: list | None = None

    def _part(name: str) -> property:  # noqa: N805 - a property factory, not a method
        def get(self: DiffusionModel) -> Any:
            return self.parts.get(name)

        get.__doc__ = f"The ``{name}`` part (None when the model has none)."
        return property(get)

    text_encoder = _part("text_encoder")
    tokenizer = _part("tokenizer")
    text_encoder_2 = _part("text_encoder_2")
    tokenizer_2 = _part("tokenizer_2")
    text_encoder_3 = _part("text_encoder_3")
    tokenizer_3 = _part("tokenizer_3")
    del _part

    @property
    def unet(self) -> nn.Module:
        """The denoising network (:attr:`network`; the name of the U-Net-only days)."""
        return self.network

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
        return self.schedule.alphas_cumprod

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image / one x_t."""
        return self.arch.sample_shape

    @property
    def d(self) -> int:
        """Dimension of x-space (pixels times channels)."""
        return math.prod(self.sample_shape)

    @property
    def h_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of h for one sample, at the current :attr:`h_point`."""
        point = self._h_point
        known = self.arch.known_h_shape(point)
        if known is not None:
            return known
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
        on the patch grid; FLUX also ``single.i``, its single-stream blocks)."""
        return self.arch.points()

    @property
    def default_point(self) -> str:
        """The point h is read at unless told: a U-Net's mid block (its bottleneck); a
        transformer's middle block (see the family)."""
        return self.arch.default_point()

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
        return self.arch.module(self._h_point)

    def _read(self, output: Any) -> torch.Tensor:
        """h ``[B, *h_shape]`` from the output of the block at :attr:`h_point`."""
        return self.arch.read(output, self._h_point)

    def _write(self, output: Any, h: torch.Tensor) -> Any:
        """``output`` of the block at :attr:`h_point` with its h replaced by ``h``."""
        return self.arch.write(output, h, self._h_point)

    @property
    def latent(self) -> bool:
        """Whether x_t is a VAE latent (a :meth:`decode` away from an image)."""
        return self.vae is not None

    @property
    def conditional(self) -> bool:
        """Whether the model takes prompts (a text-to-image model with its text encoders)."""
        return self.arch.condition == "text" and self.text_encoder is not None

    @property
    def class_conditional(self) -> bool:
        """Whether the model takes class labels (DiT)."""
        return self.arch.condition == "class"

    @property
    def num_classes(self) -> int:
        """Number of classes of a class-conditional model (its null class is this index)."""
        return self.arch.num_classes

    def components(self) -> dict[str, nn.Module]:
        """The networks of the model by their diffusers folder names (``unet`` or
        ``transformer`` first)."""
        parts = {self.arch.folder: self.network, "vae": self.vae}
        parts |= {k: v for k, v in self.parts.items() if k.startswith("text_encoder")}
        return {k: v for k, v in parts.items() if v is not None}

    def tokenizers(self) -> dict[str, Any]:
        """The tokenizers by their folder names (none for a model without text)."""
        return {k: v for k, v in self.parts.items() if k.startswith("tokenizer")}

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
        return (
            f"DiffusionModel({self.name!r}, {self.arch.describe()}, {n / 1e6:.2f}M params, "
            f"x {self.sample_shape}, h {self.h_shape}, {self.prediction_type}, {self.device}, "
            f"{self.dtype})"
        )

    @property
    def micro_batch(self) -> int | None:
        """Fixed U-Net batch for bit-exact results across batch sizes (see ``__init__``)."""
        return self._micro_batch

    @micro_batch.setter
    def micro_batch(self, value: int | None) -> None:
        self._micro_batch = _batch_size("micro_batch", value)

    @property
    def max_batch(self) -> int | None:
        """Most samples per network call; larger calls are split (see ``__init__``)."""
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int | None) -> None:
        self._max_batch = _batch_size("max_batch", value)

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
            digest.update(self.schedule.identity())
            if self.resolution is not None:  # results at another size are other results
                digest.update(f"resolution={self.resolution}".encode())
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

    # ------------------------------------------------------------------ inputs
    def check_x(self, x: torch.Tensor, name: str = "x_t") -> None:
        """A one-line error unless ``x`` is a ``[B, C, H, W]`` tensor of this model's shape."""
        if not isinstance(x, torch.Tensor):
            raise WorkbenchError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.sample_shape:
            expected = ", ".join(map(str, self.sample_shape))
            raise WorkbenchError(f"{name} has shape {list(x.shape)}, expected [B, {expected}]")
        if x.shape[0] == 0:
            raise WorkbenchError(f"{name} is an empty batch (B = 0)")

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
        computes them (e.g. ``encoder_hidden_states`` ``[1, L, D]``, padded to the
        tokenizer's maximum length and truncated beyond it with a warning; SD3's also
        ``pooled_projections`` ``[1, P]``)."""
        if not self.conditional:
            if self.class_conditional:
                what = "class-conditional: it takes class_label"
            elif self.arch.condition == "text":
                what = "loaded without its text encoders: it takes no prompt"
            else:
                what = "unconditional: it takes no prompt"
            raise WorkbenchError(f"model {self.name!r} is {what}")
        if not isinstance(prompt, str):
            raise WorkbenchError(f"a prompt must be a string, got {type(prompt).__name__}")
        return self.arch.encode_prompt(prompt)

    def zero_prompt(self) -> dict[str, torch.Tensor]:
        """Text inputs of zero prompt embeddings, for a model loaded without its text
        encoders (SD3: ``[1, 77 + 256, joint_attention_dim]`` states and
        ``[1, pooled_projection_dim]`` pooled ones)."""
        return self.arch.empty_inputs()

    @property
    def conditioning(self) -> Conditioning | None:
        """The conditioning forwards use now: the innermost :meth:`conditioned` block's,
        else the empty prompt (a text model; without text encoders: zero embeddings) or
        the null class, without guidance (a guidance-distilled model: its default embedded
        guidance); None for an unconditional model."""
        if self.arch.condition == "none":
            return None
        if self._conditioning is not None:
            return self._conditioning
        if self._unprompted is None:
            scale = self._unguided_scale()
            if self.class_conditional:
                cond = self.arch.class_input(self.num_classes)
                self._unprompted = Conditioning(None, None, scale, cond, None, None)
            else:
                cond = self.encode_prompt("") if self.conditional else self.zero_prompt()
                self._unprompted = Conditioning("", None, scale, cond, None)
        return self._unprompted

    def _unguided_scale(self) -> float:
        """The guidance of an unguided forward: 1, or a guidance-distilled family's default
        embedded value (it has no unguided output)."""
        return self.arch.default_guidance if self.arch.guidance == "embedded" else 1.0

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
        on ``prompt`` (text-to-image) or ``class_label`` (class-conditional), guided by
        ``guidance_scale`` (default with a prompt or label: the family pipeline's, e.g. 7.5
        SD, 7.0 SD3, 4.0 DiT; else 1: unguided) against ``negative_prompt`` (default: the
        empty prompt) or the null class. A guidance-distilled family (FLUX.1-dev) takes
        ``guidance_scale`` as an input of the network (its pipeline's default without
        one) and no negative prompt.

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
        if self.arch.condition == "none":
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
            if self.arch.guidance == "none" and guidance_scale != 1:
                raise WorkbenchError(
                    f"model {self.name!r} ({self.arch.title}) is not guided: it takes no "
                    f"guidance_scale (got {guidance_scale:g})"
                )
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
        default = self.arch.default_guidance if class_label is not None else 1.0
        scale = float(default if guidance_scale is None else guidance_scale)
        if class_label is None and scale > 1:
            raise WorkbenchError("guidance_scale > 1 needs a class_label to guide towards")
        label = self.num_classes if class_label is None else int(class_label)
        uncond = self.arch.class_input(self.num_classes) if scale > 1 else None
        return Conditioning(None, None, scale, self.arch.class_input(label), uncond, label)

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
        embedded = self.arch.guidance == "embedded"
        prompted = bool(text) or prompt_embeds is not None
        guided = self.arch.guidance != "none" and (prompted or embedded)
        default = self.arch.default_guidance if guided else 1.0
        scale = float(default if guidance_scale is None else guidance_scale)
        negative_given = negative_prompt is not None or negative_prompt_embeds is not None
        if negative_given and embedded:
            raise WorkbenchError(
                f"model {self.name!r} ({self.arch.title}) is guidance-distilled: its guidance "
                "is an input of the network, a negative_prompt is not used"
            )
        if negative_given and scale <= 1:
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
        if scale > 1 and not embedded:  # diffusers guides above 1; at 1 the prompt's alone
            if negative_prompt_embeds is not None:
                uncond = self._embeds(negative_prompt_embeds)
            else:
                uncond = self.arch.negative_inputs(cond, negative_prompt)
        shown = text if prompt_embeds is None else "<prompt_embeds>"
        negative = None if embedded else ("" if negative_prompt is None else negative_prompt)
        return Conditioning(shown, negative, scale, cond, uncond)

    def _embeds(self, embeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Given text inputs, checked against the network's keyword inputs."""
        needed = self.arch.embed_keys()
        embeds = self.arch.complete_embeds(embeds)
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
        by default); the network's own forward, stopped there (for a U-Net's ``mid`` only
        the encoder half runs).
        A text-conditional model gives h of the prompt's branch (guidance does not enter).

        Args:
            x_t: ``[B, C, H, W]``.
            t: an int, or a ``[B]`` integer tensor.
        Returns:
            ``[B, *h_shape]``.
        """
        self.check_x(x_t)
        x_t, timesteps, m = x_t.to(self.dtype), self._timesteps(t, x_t.shape[0]), self._max_batch
        if m is None or x_t.shape[0] <= m:
            return self._h_of_forward(x_t, timesteps)
        return torch.cat([  # in calls of at most max_batch samples, as raw makes them
            self._h_of_forward(x_t[i : i + m], timesteps[i : i + m])
            for i in range(0, x_t.shape[0], m)
        ])  # fmt: skip

    def _h_of_forward(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """h at the current point: the network's forward (the prompt's branch of a
        conditional model), stopped by a hook once that block has run."""

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
        """The network's raw output for ``x`` (already doubled when ``doubled``)."""
        batch = x.shape[0] // 2 if doubled else x.shape[0]
        c = self.conditioning
        embedded = c.guidance_scale if c is not None and self.arch.guidance == "embedded" else None
        return self.arch.call(x, timesteps, self._context(batch, doubled), embedded)

    def raw(
        self, x_t: torch.Tensor, t: TimestepLike, delta_h: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The network's output as trained (eps, v, x0 or a flow velocity, by the family's
        call: timestep scaling, packing, guidance), with h shifted by ``delta_h``.

        ``delta_h`` is added to the output of the block that is h (the current point,
        :meth:`h_at`; by default :attr:`default_point`: a U-Net's mid block, a
        transformer's middle block); it must broadcast against ``[B, *h_shape]`` (e.g.
        ``[B, C, H, W]``, ``[C, H, W]`` or ``[C, 1, 1]``).
        """
        self.check_x(x_t)
        batch = x_t.shape[0]
        timesteps = self._timesteps(t, batch)
        m, pad = self._micro_batch, True
        if m is None:
            m, pad = self._max_batch, False
        if m is None or batch == m or (not pad and batch < m):
            return self._raw(x_t, timesteps, delta_h)
        per_sample = delta_h is not None and delta_h.ndim == 4 and delta_h.shape[0] == batch
        outs, sizes = [], []
        self._h_parts = []
        try:
            for i in range(0, batch, m):
                n = min(m, batch - i)
                xs, ts = x_t[i : i + n], timesteps[i : i + n]
                d = delta_h[i : i + n] if per_sample else delta_h
                if pad and n < m:  # pad to the fixed shape: every sample sees the same kernels
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
            uncond, cond = out.chunk(2)
            return self.arch.combine(uncond, cond, c.guidance_scale)
        with self.h_edit(delta_h):
            return self._call(x, timesteps, doubled=False)

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

    def attention_modules(self) -> dict[str, nn.Module]:
        """Every attention module of the network, by its qualified name."""
        return self.arch.attention_modules()

    @contextlib.contextmanager
    def jacobian_safe(self) -> Iterator[None]:
        """Within the block, ``torch.func.jvp``/``vjp``/``vmap`` run through :meth:`h`.

        Swaps every attention processor for the family's Jacobian-safe one (attention
        whose derivatives recompute the probabilities in blocks of queries, contiguous
        output; equal to the stock processor) and puts the originals back on exit, also
        after an exception; a processor the family keeps runs its
        ``scaled_dot_product_attention`` the same way (``sdpa_in_blocks``; the fused
        kernels have no forward-mode rule of their own). A
        half-precision network also gets a pre-hook on every linear and convolution
        layer that casts its input (value and tangent) to the layer's dtype: on CUDA
        (torch 2.11, an H100) vmapped forward-mode tangents came out of a bfloat16
        network's layers in float32 beside bfloat16 values, and the next matrix product
        refused the mix (which op upcasts was not located: plain ``forward_ad`` without
        vmap did not show it). The hooks are
        removed on exit too.
        """
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from workbench.models.attention import sdpa_in_blocks

        modules = self.attention_modules()
        saved = {name: module.processor for name, module in modules.items()}
        handles = []
        try:
            for module in modules.values():
                module.set_processor(self.arch.safe_processor(module))
            if self.dtype in (torch.float16, torch.bfloat16):
                for module in self.network.modules():
                    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                        handles.append(module.register_forward_pre_hook(_cast_input))
            # a kept stock processor's SDPA: in blocks of queries, else the math backend
            with sdpa_in_blocks(), sdpa_kernel(SDPBackend.MATH):
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
        factor = self.arch.vae_factor()
        _, h, w = self.sample_shape
        return (self.arch.image_channels(), h * factor, w * factor)

    def check_images(self, images: torch.Tensor, name: str = "images") -> None:
        """A one-line error unless ``images`` is a ``[B, *image_shape]`` tensor."""
        if not isinstance(images, torch.Tensor):
            raise WorkbenchError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise WorkbenchError(
                f"{name} have shape {list(images.shape)}, expected [B, {expected}]"
            )
        if images.shape[0] == 0:
            raise WorkbenchError(f"{name} are an empty batch (B = 0)")

    def check_real_images(self, images: torch.Tensor, name: str = "images") -> torch.Tensor:
        """A user's images ``[B, *image_shape]`` as float32 in [-1, 1], checked: a tensor
        of the shape (:meth:`check_images`), finite, and in [-1, 1]. Past it by float
        rounding (:data:`IMAGE_SLACK`): clamped; by a model's own overshoot (up to
        :data:`IMAGE_OVERSHOOT`, e.g. ``wb.sample`` output): clipped with a warning that
        says how much; further (uint8 values, [0, 255] floats): refused in one line that
        says how to convert them."""
        self.check_images(images, name)
        check_finite(name, images)
        images = images.float()
        low, high = float(images.min()), float(images.max())
        if low < -IMAGE_OVERSHOOT or high > IMAGE_OVERSHOOT:
            raise WorkbenchError(
                f"{name} must be in [-1, 1], got values in [{low:.4g}, {high:.4g}] (from "
                "[0, 255]: x / 127.5 - 1; from [0, 1]: 2 x - 1)"
            )
        if low < -1 - IMAGE_SLACK or high > 1 + IMAGE_SLACK:
            outside = float((images.abs() > 1).float().mean())
            warnings.warn(
                f"{name}: {outside:.2%} of the values lie outside [-1, 1] (in [{low:.4g}, "
                f"{high:.4g}]) and are clipped to it",
                UserWarning,
                stacklevel=2,
            )
        return images.clamp(-1, 1)

    @torch.no_grad()
    def decode(self, x: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Images ``[B, *image_shape]`` (about [-1, 1], float32) of clean ``x``
        ``[B, *sample_shape]``: the VAE decoder of ``x / scaling_factor + shift_factor``,
        ``batch_size`` latents at a time (VAE slicing); ``x`` itself in pixel space."""
        self.check_x(x, "x")
        if self.vae is None:
            return x
        return self._vae_batches(x, batch_size, self.arch.decode_latent)

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
        return self._vae_batches(images, batch_size, self.arch.encode_image).to(self.dtype)

    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        """``[..., C, H, W]`` in [-1, 1] -> ``[..., H, W, C]`` uint8 (CPU)."""
        x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.movedim(-3, -1).contiguous()


def _cast_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: floating tensors cast to the layer's weight dtype, copied so that
    the cast reaches a forward-mode tangent as well as the value."""
    dtype = module.weight.dtype
    return tuple(
        a.to(dtype, copy=True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    )


def _memory_bytes() -> int:
    """Physical memory of this machine (bytes); a large number where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62
