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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models.attention import JacobianSafeAttnProcessor
from workbench.models.presets import Preset

TimestepLike = int | torch.Tensor


@dataclass
class Prediction:
    """What the U-Net says about ``x_t``: the noise ``eps`` and the clean image ``x0``.

    Both have the shape of ``x_t``.
    """

    eps: torch.Tensor
    x0: torch.Tensor


class DiffusionModel:
    """A pixel-space diffusion model: a ``UNet2DModel`` plus its alpha-bar schedule.

    Build one with :func:`workbench.load`. The U-Net is kept in eval mode with its
    parameters frozen; every hook this class installs is removed again, also when the
    forward raises.
    """

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: Any,
        preset: Preset | None = None,
        name: str = "model",
        source: str | None = None,
    ) -> None:
        if not isinstance(unet, UNet2DModel):
            raise WorkbenchError(
                f"{type(unet).__name__} is not supported yet: only pixel-space UNet2DModel"
            )
        if unet.config.get("class_embed_type") is not None or unet.config.get("num_class_embeds"):
            raise WorkbenchError("class-conditional UNet2DModel is not supported")
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.preset = preset or Preset()
        self.name = name
        self.source = source or name
        self.prediction_type: str = scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise WorkbenchError(f"unsupported prediction_type {self.prediction_type!r}")
        alphas = scheduler.alphas_cumprod.detach().to(torch.float64).cpu()
        if self.prediction_type == "epsilon" and float(alphas.min()) <= 0.0:
            raise WorkbenchError(
                "a zero-terminal-SNR schedule needs prediction_type='v_prediction' or 'sample'"
            )
        self.alphas_cumprod: torch.Tensor = alphas  # float64, CPU, [num_train_timesteps]
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
        return int(self.alphas_cumprod.shape[0])

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
        """Shape ``(C, H, W)`` of the mid-block output h for one sample."""
        _, height, width = self.sample_shape
        factor = 2 ** (len(self.config.down_block_types) - 1)
        return (int(self.config.block_out_channels[-1]), height // factor, width // factor)

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> DiffusionModel:
        """Move (and cast) the weights; returns the model."""
        if device is not None:
            self.unet.to(device)
        if dtype is not None and dtype != self.dtype:
            self.unet.to(dtype=dtype)
        return self

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.unet.parameters())
        return (
            f"DiffusionModel({self.name!r}, {n / 1e6:.2f}M params, x {self.sample_shape}, "
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
            state = self.unet.state_dict()
            for key in sorted(state):
                digest.update(key.encode())
                tensor = state[key].detach().to("cpu", torch.float32).contiguous()
                digest.update(tensor.numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def _weights_signature(self) -> tuple:
        tensors = [*self.unet.parameters(), *self.unet.buffers()]
        return tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors)

    def refresh_fingerprint(self) -> str:
        """Forget the cached fingerprint (after writes the version counters miss)."""
        self._fingerprint = None
        return self.fingerprint

    # ------------------------------------------------------------------ schedule
    def check_timestep(self, t: int, allow_clean: bool = False) -> int:
        """Return ``t`` as int, or raise a one-line error if it is out of range."""
        if isinstance(t, torch.Tensor):
            t = int(t.item())
        if not isinstance(t, int) or isinstance(t, bool):
            raise WorkbenchError(f"timestep must be an integer, got {t!r}")
        low = -1 if allow_clean else 0
        if not low <= t < self.num_train_timesteps:
            raise WorkbenchError(
                f"timestep {t} out of range [{low}, {self.num_train_timesteps - 1}]"
            )
        return t

    def alpha_bar(self, t: int) -> float:
        """alpha-bar at integer timestep ``t``; 1.0 for the clean end ``t = -1``."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

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

    # ------------------------------------------------------------------ forward passes
    def h(self, x_t: torch.Tensor, t: TimestepLike) -> torch.Tensor:
        """Mid-block output h for ``x_t`` at ``t``; runs only the encoder half of the U-Net.

        Args:
            x_t: ``[B, C, H, W]``.
            t: an int, or a ``[B]`` integer tensor.
        Returns:
            ``[B, *h_shape]``.
        """
        self.check_x(x_t)
        unet = self.unet
        sample = x_t.to(self.dtype)
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = unet.time_embedding(unet.time_proj(self._timesteps(t, x_t.shape[0])).to(self.dtype))
        skip_sample = sample
        sample = unet.conv_in(sample)
        for block in unet.down_blocks:
            if hasattr(block, "skip_conv"):
                sample, _, skip_sample = block(
                    hidden_states=sample, temb=emb, skip_sample=skip_sample
                )
            else:
                sample, _ = block(hidden_states=sample, temb=emb)
        return unet.mid_block(sample, emb)

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
        with self.h_edit(delta_h):
            out = self.unet(x_t.to(self.dtype), timesteps).sample
        if out.shape[1] == 2 * x_t.shape[1]:  # learned variance: keep the mean part
            out = out[:, : x_t.shape[1]]
        return out

    def predict(self, x_t: torch.Tensor, t: int, delta_h: torch.Tensor | None = None) -> Prediction:
        """eps and x0 predicted from ``x_t`` at integer ``t`` (optionally with an h edit)."""
        t = self.check_timestep(t)
        return self.convert(self.raw(x_t, t, delta_h), x_t, self.alpha_bar(t))

    def convert(self, raw: torch.Tensor, x: torch.Tensor, a: float) -> Prediction:
        """eps and x0 from the raw U-Net output ``raw`` for ``x`` at alpha-bar ``a``."""
        sa, s1a = math.sqrt(a), math.sqrt(1.0 - a)
        x = x.to(raw.dtype)
        if self.prediction_type == "epsilon":
            return Prediction(eps=raw, x0=(x - s1a * raw) / sa)
        if self.prediction_type == "v_prediction":
            return Prediction(eps=sa * raw + s1a * x, x0=sa * x - s1a * raw)
        return Prediction(eps=(x - sa * raw) / s1a, x0=raw)

    def ddim_coefficients(self, a_noisy: float, a_clean: float) -> tuple[float, float]:
        """(A, B) of the deterministic DDIM step from alpha-bar ``a_noisy`` to ``a_clean``:
        ``x_clean = A x_noisy + B r`` with ``r`` the raw output at ``x_noisy``.

        Linear in ``x_noisy`` for every parameterisation, so DDIM inversion with the raw
        output held fixed is the exact solve ``x_noisy = (x_clean - B r) / A``.
        """
        sa, s1a = math.sqrt(a_noisy), math.sqrt(1.0 - a_noisy)
        sc, s1c = math.sqrt(a_clean), math.sqrt(1.0 - a_clean)
        if self.prediction_type == "epsilon":
            return sc / sa, s1c - sc * s1a / sa
        if self.prediction_type == "v_prediction":
            return sc * sa + s1c * s1a, s1c * sa - sc * s1a
        return s1c / s1a, sc - s1c * sa / s1a

    def eps(self, x_t: torch.Tensor, t: int, delta_h: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise at ``t``, with an optional additive edit ``delta_h`` of h."""
        return self.predict(x_t, t, delta_h).eps

    # ------------------------------------------------------------------ hooks and modes
    @contextlib.contextmanager
    def h_edit(self, delta_h: torch.Tensor | None) -> Iterator[None]:
        """Within the block, the mid-block output is replaced by ``h + delta_h``."""
        if delta_h is None:
            yield
            return
        delta = delta_h.to(self.device, self.dtype)

        def add_delta(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return output + delta

        handle = self.unet.mid_block.register_forward_hook(add_delta)
        try:
            yield
        finally:
            handle.remove()

    @contextlib.contextmanager
    def record_h(self) -> Iterator[list[torch.Tensor]]:
        """Within the block, every mid-block output is appended (detached, CPU) to the list
        yielded; the hook is removed on exit, also after an exception."""
        seen: list[torch.Tensor] = []

        def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            h = output.detach().to("cpu", torch.float32)
            if self._h_parts is not None:  # one micro-batch of a call: joined by ``raw``
                self._h_parts.append((seen, h))
            else:
                seen.append(h)

        handle = self.unet.mid_block.register_forward_hook(keep)
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
    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        """``[..., C, H, W]`` in [-1, 1] -> ``[..., H, W, C]`` uint8 (CPU)."""
        x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.movedim(-3, -1).contiguous()

    @staticmethod
    def from_uint8(images: torch.Tensor) -> torch.Tensor:
        """``[..., H, W, C]`` uint8 -> ``[..., C, H, W]`` float in [-1, 1]."""
        return images.movedim(-1, -3).float() / 127.5 - 1.0


def _memory_bytes() -> int:
    """Physical memory of this machine (bytes); a large number where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62
