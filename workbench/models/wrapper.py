"""`DiffusionModel`: one wrapper over a diffusers U-Net and its noise schedule.

Activation names (stable, used across the package and its docs):

- ``x_t``: the noisy input of the U-Net at timestep ``t``, shape ``[B, C, H, W]``.
- ``h``: the output of the U-Net mid block ("h-space"), shape ``[B, *model.h_shape]``.
- ``eps``: the predicted noise at ``t``; ``x0``: the predicted clean image at ``t``.

Timesteps are integers in ``[0, num_train_timesteps - 1]``; ``-1`` stands for the clean
end of the chain (alpha-bar = 1) wherever a sampler needs it.
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
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel
from diffusers.models.attention_processor import Attention
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models.attention import JacobianSafeAttnProcessor
from workbench.models.presets import Preset
from workbench.models.schedule import Prediction, Schedule

__all__ = ["Conditioning", "DiffusionModel", "Prediction", "Schedule"]

TimestepLike = int | torch.Tensor


#: Guidance scale when a prompt is given without one (diffusers' pipelines use 7.5 too).
DEFAULT_GUIDANCE = 7.5


@dataclass(frozen=True, eq=False)
class Conditioning:
    """What a text-conditional U-Net is conditioned on during a call.

    ``cond`` ``[1, L, D]``: the prompt's text-encoder states; ``uncond`` ``[1, L, D]``: the
    negative prompt's, used (classifier-free guidance) when ``guidance_scale > 1``.
    """

    prompt: str
    negative_prompt: str
    guidance_scale: float
    cond: torch.Tensor
    uncond: torch.Tensor | None

    @property
    def guided(self) -> bool:
        """Whether the output is guided: ``uncond + g (cond - uncond)``, two U-Net halves."""
        return self.uncond is not None

    def describe(self) -> dict[str, Any]:
        """Prompt, negative prompt and guidance as plain data (recorded in results)."""
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
    """A diffusion model: a U-Net plus its noise :class:`Schedule`, and for a latent
    text-to-image model its VAE, text encoder and tokenizer.

    Pixel-space ``UNet2DModel`` (unconditional) and latent ``UNet2DConditionModel``
    (the Stable Diffusion 1.x/2.x layout: text-conditioned, x_t is the VAE latent). Build
    one with :func:`workbench.load`. The networks are kept in eval mode with their
    parameters frozen; every hook this class installs is removed again, also when the
    forward raises.
    """

    def __init__(
        self,
        unet: UNet2DModel | UNet2DConditionModel,
        scheduler: Any,
        preset: Preset | None = None,
        name: str = "model",
        source: str | None = None,
        vae: AutoencoderKL | None = None,
        text_encoder: nn.Module | None = None,
        tokenizer: Any = None,
    ) -> None:
        config = unet.config
        if isinstance(unet, UNet2DConditionModel):
            if config.get("addition_embed_type") is not None:
                raise WorkbenchError(
                    f"UNet2DConditionModel with added conditions "
                    f"({config.get('addition_embed_type')}, e.g. SDXL) is not supported yet"
                )
            if config.get("class_embed_type") is not None or config.get("time_cond_proj_dim"):
                raise WorkbenchError(
                    "UNet2DConditionModel with class or guidance-embedding conditions "
                    "is not supported yet"
                )
            if text_encoder is None or tokenizer is None:
                raise WorkbenchError(
                    "a text-conditional U-Net needs its text_encoder and tokenizer"
                )
        elif isinstance(unet, UNet2DModel):
            if config.get("class_embed_type") is not None or config.get("num_class_embeds"):
                raise WorkbenchError("class-conditional UNet2DModel is not supported")
            if text_encoder is not None:
                raise WorkbenchError("an unconditional UNet2DModel takes no text encoder")
        else:
            raise WorkbenchError(
                f"{type(unet).__name__} is not supported yet: UNet2DModel (pixel space) or "
                f"UNet2DConditionModel (Stable Diffusion layout)"
            )
        if vae is not None and vae.config.latent_channels != config.in_channels:
            raise WorkbenchError(
                f"the VAE has {vae.config.latent_channels} latent channels, the U-Net "
                f"takes {config.in_channels}"
            )
        self.unet = unet.eval().requires_grad_(False)
        #: The VAE of a latent model (None in pixel space): x_t is its latent.
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.text_encoder = (
            text_encoder.eval().requires_grad_(False) if text_encoder is not None else None
        )
        self.tokenizer = tokenizer
        self._conditioning: Conditioning | None = None
        self._unprompted: Conditioning | None = None
        self._doubled = False  # inside a guided forward: the batch is [uncond; cond]
        self._h_point = "mid"
        self._h_shapes: dict[str, tuple[int, ...]] = {}
        self.scheduler = scheduler
        self.preset = preset or Preset()
        self.name = name
        self.source = source or name
        #: The DDIM maths of the model's own scheduler config (:class:`Schedule`).
        self.schedule = Schedule.from_scheduler(scheduler)
        self._fingerprint: str | None = None
        self._signature: tuple = ()
        #: Evaluate the U-Net (:meth:`raw`, so sampling, inversion and edits) in
        #: micro-batches of exactly this many samples, the last one padded: a sample's
        #: result is then the same bit for bit whatever batch it is run in (the kernels
        #: see one shape). ``None`` (default): one call per batch, results depend on the
        #: batch size at the 1e-6 level (docs/architecture.md, "Determinism").
        self._micro_batch: int | None = None
        self._h_parts: list | None = None

    # ------------------------------------------------------------------ basic facts
    @property
    def config(self) -> Any:
        """The U-Net's diffusers config."""
        return self.unet.config

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        return next(self.unet.parameters()).dtype

    @property
    def num_train_timesteps(self) -> int:
        """Length T of the training schedule."""
        return self.schedule.num_train_timesteps

    @property
    def prediction_type(self) -> str:
        """What the network outputs: ``epsilon``, ``v_prediction`` or ``sample``."""
        return self.schedule.prediction_type

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha-bar ``[T]`` (float64, CPU)."""
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
        if point == "mid":
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
        """Names of the block outputs that can serve as h, in forward order: ``down.i``
        (the i-th down block's output), ``mid`` (the mid block's: the default), ``up.i``."""
        unet = self.unet
        names = [f"down.{i}" for i in range(len(unet.down_blocks))]
        names += ["mid"] if unet.mid_block is not None else []
        return names + [f"up.{i}" for i in range(len(unet.up_blocks))]

    @property
    def h_point(self) -> str:
        """The activation point h is read and edited at (``"mid"`` unless set)."""
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
        if kind == "mid":
            return self.unet.mid_block
        return (self.unet.down_blocks if kind == "down" else self.unet.up_blocks)[int(index)]

    @property
    def latent(self) -> bool:
        """Whether x_t is a VAE latent (a :meth:`decode` away from an image)."""
        return self.vae is not None

    @property
    def conditional(self) -> bool:
        """Whether the U-Net is text-conditioned (takes prompts)."""
        return self.text_encoder is not None

    def components(self) -> dict[str, nn.Module]:
        """The networks of the model by their diffusers folder names (``unet`` first)."""
        parts = {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}
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
        n = sum(p.numel() for p in self.unet.parameters())
        kind = "latent text-to-image, " if self.conditional else ""
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
        """E||x_t|| for x_0 = 0 (the noise part only): sqrt(d * (1 - alpha-bar_t))."""
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
            for value in t.tolist():
                self.check_timestep(int(value))
            return t.to(self.device, torch.long)
        t = self.check_timestep(t)
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
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Text-encoder states ``[1, L, D]`` of ``prompt``, as diffusers' Stable Diffusion
        pipeline computes them (padded to the tokenizer's maximum length, truncated beyond
        it with a warning)."""
        if not self.conditional:
            raise WorkbenchError(f"model {self.name!r} is unconditional: it takes no prompt")
        if not isinstance(prompt, str):
            raise WorkbenchError(f"a prompt must be a string, got {type(prompt).__name__}")
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
        return states.to(self.dtype)

    @property
    def conditioning(self) -> Conditioning | None:
        """The conditioning forwards use now: the innermost :meth:`conditioned` block's,
        else the empty prompt without guidance; None for an unconditional model."""
        if not self.conditional:
            return None
        if self._conditioning is not None:
            return self._conditioning
        if self._unprompted is None:
            self._unprompted = Conditioning("", "", 1.0, self.encode_prompt(""), None)
        return self._unprompted

    @contextlib.contextmanager
    def conditioned(
        self,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        guidance_scale: float | None = None,
    ) -> Iterator[Conditioning | None]:
        """Within the block every forward (sampling, inversion, h, Jacobians) is conditioned
        on ``prompt``, guided by ``guidance_scale`` (default 7.5 with a prompt, else 1:
        unguided) against ``negative_prompt`` (default: the empty prompt).

        On an unconditional model the block changes nothing when all three are None and
        refuses a prompt (one line). Blocks nest; the previous conditioning is restored on
        exit, also after an exception.
        """
        given = (prompt, negative_prompt, guidance_scale)
        if not self.conditional:
            if any(v is not None for v in given):
                raise WorkbenchError(
                    f"model {self.name!r} is unconditional: it takes no prompt, "
                    "negative_prompt or guidance_scale"
                )
            yield None
            return
        if guidance_scale is not None:
            if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, int | float):
                raise WorkbenchError(f"guidance_scale must be a number, got {guidance_scale!r}")
            if not math.isfinite(guidance_scale) or not 0 <= guidance_scale <= 100:
                raise WorkbenchError(f"guidance_scale must be in [0, 100], got {guidance_scale}")
        text = "" if prompt is None else prompt
        scale = float(
            guidance_scale if guidance_scale is not None else (DEFAULT_GUIDANCE if text else 1.0)
        )
        negative = "" if negative_prompt is None else negative_prompt
        if negative_prompt is not None and scale <= 1:
            raise WorkbenchError(
                f"a negative_prompt needs guidance_scale > 1 (got {scale:g}): without guidance "
                "it is not used"
            )
        cond = self.encode_prompt(text)
        # diffusers guides when the scale exceeds 1; at 1 the result is the prompt's alone
        uncond = self.encode_prompt(negative) if scale > 1 else None
        previous = self._conditioning
        self._conditioning = Conditioning(text, negative, scale, cond, uncond)
        try:
            yield self._conditioning
        finally:
            self._conditioning = previous

    def _context(self, batch: int, doubled: bool) -> dict[str, torch.Tensor]:
        """Keyword arguments that condition a U-Net call on a batch of ``batch``."""
        c = self.conditioning
        if c is None:
            return {}
        states = c.cond.expand(batch, -1, -1)
        if doubled:
            states = torch.cat([c.uncond.expand(batch, -1, -1), states])
        return {"encoder_hidden_states": states}

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
            raise _Stop(_first(output))

        handle = self._h_module().register_forward_hook(stop)
        try:
            self.unet(x_t, timesteps, **self._context(x_t.shape[0], doubled=False))
        except _Stop as stopped:
            return stopped.value
        finally:
            handle.remove()
        raise RuntimeError(f"the U-Net forward never reached block {self._h_point}")

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
                    out = self.unet(
                        torch.cat([x, x]),
                        torch.cat([timesteps, timesteps]),
                        **self._context(x.shape[0], doubled=True),
                    ).sample
            finally:
                self._doubled = False
            out = out[:, : x.shape[1]]
            uncond, cond = out.chunk(2)
            return uncond + c.guidance_scale * (cond - uncond)
        with self.h_edit(delta_h):
            out = self.unet(x, timesteps, **self._context(x.shape[0], doubled=False)).sample
        if out.shape[1] == 2 * x_t.shape[1]:  # learned variance: keep the mean part
            out = out[:, : x_t.shape[1]]
        return out

    def predict(self, x_t: torch.Tensor, t: int, delta_h: torch.Tensor | None = None) -> Prediction:
        """eps and x0 predicted from ``x_t`` at integer ``t`` (optionally with an h edit)."""
        t = self.check_timestep(t)
        return self.schedule.convert(self.raw(x_t, t, delta_h), x_t, self.alpha_bar(t))

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
            h = _first(output)
            if self._doubled and delta.ndim == h.ndim and 1 < delta.shape[0]:
                return _with_first(output, h + torch.cat([delta, delta]))  # both halves
            return _with_first(output, h + delta)

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
            output = _first(output)
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
        """Every attention module of the U-Net, by its qualified name."""
        return {n: m for n, m in self.unet.named_modules() if isinstance(m, Attention)}

    @contextlib.contextmanager
    def jacobian_safe(self) -> Iterator[None]:
        """Within the block, ``torch.func.jvp``/``vjp``/``vmap`` run through :meth:`h`.

        Swaps every attention processor for :class:`JacobianSafeAttnProcessor` and puts
        the originals back on exit, also after an exception.
        """
        modules = self.attention_modules()
        saved = {name: module.processor for name, module in modules.items()}
        safe = JacobianSafeAttnProcessor()
        try:
            for module in modules.values():
                module.set_processor(safe)
            yield
        finally:
            for name, module in modules.items():
                module.set_processor(saved[name])

    def hook_count(self) -> int:
        """Number of forward (pre-)hooks on any U-Net module; 0 when nothing is left over."""
        count = 0
        for module in self.unet.modules():
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


def _memory_bytes() -> int:
    """Physical memory of this machine (bytes); a large number where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62
