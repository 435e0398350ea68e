"""``load(name_or_path)``: bundled names, local diffusers folders, Hub ids.

Resolution order: a bundled name (``shapes32``; ``tiny-test`` is a test-only random
model built from a config), then an existing local folder, then a Hub id of the form
``owner/name`` (the same ``from_pretrained`` code path as a local folder). A folder may be
a pipeline layout (``unet/`` and ``scheduler/`` subfolders) or a bare U-Net folder with
``config.json`` and ``scheduler_config.json`` side by side. A latent text-to-image model
(Stable Diffusion 1.x/2.x: ``UNet2DConditionModel``) needs the pipeline layout, with
``vae/``, ``text_encoder/`` (CLIP) and ``tokenizer/`` beside ``unet/`` and ``scheduler/``.
A diffusion transformer loads from a pipeline layout with ``transformer/``: DiT
(``DiTTransformer2DModel``, ``vae/``, ``scheduler/``) or Stable Diffusion 3
(``SD3Transformer2DModel``, ``vae/``, a ``FlowMatchEulerDiscreteScheduler`` and, optionally,
``text_encoder/`` + ``text_encoder_2/`` (CLIP with projection), ``text_encoder_3/`` (T5)
with their tokenizers). A flow-matching scheduler is sampled with its deterministic Euler
step; any other scheduler's config is used as DDIM.
"""

from __future__ import annotations

import importlib.util
import json
import re
import warnings
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)

from workbench.errors import WorkbenchError
from workbench.models.configs import ARCHITECTURES, ZERO_SNR_V_SCHEDULER
from workbench.models.presets import NO_SCENE, Preset
from workbench.models.wrapper import DiffusionModel
from workbench.settings import show_progress

BUNDLED_DIR = Path(__file__).parent / "bundled"

#: Bundled model names -> presets. A name with a folder under ``bundled/`` loads from it.
PRESETS: dict[str, Preset] = {
    # Steps calibrated on the trained model by analysis/shapes32_report.py (docs/shapes.md):
    # x_step = 0.1 E||x_t|| at t = 800 (55.4), h_step = 0.25 E||h|| over t in [600, 999] (104.8).
    "shapes32": Preset(
        num_inference_steps=50,
        x_step=5.5,
        h_step=26.0,
        x_timestep=800,
        h_window=(999, 600),
        pullback_timesteps=(880, 580),
        # find_mixing_step(n=128, 50 steps) in analysis/boundary_report.py, twice (docs/boundary.md)
        mixing_step=59,
    ),
    # Lit Shapes at 64 px, skips of the 4x4 and 8x8 levels cut (docs/shapes64.md). Steps
    # calibrated as shapes32's by analysis/shapes64_report.py: x_step = 0.1 E||x_t|| at
    # t = 800, h_step = 0.25 E||h|| over t in [600, 999].
    "shapes64": Preset(
        num_inference_steps=50,
        x_step=11.07,
        h_step=107.53,
        x_timestep=800,
        h_window=(999, 600),
        pullback_timesteps=(880, 580),
        # workbench probe mixing-step --n 128 --num-steps 50 (docs/shapes64.md)
        mixing_step=19,
        scene="lit-shapes",
    ),
    "tiny-test": Preset(
        num_inference_steps=20,
        x_step=2.0,
        h_step=4.0,
        x_timestep=700,
        h_window=(999, 500),
        pullback_timesteps=(800, 400),
        mixing_step=500,
    ),
}


def bundled_names() -> list[str]:
    """Names of the models bundled with the package."""
    return sorted(PRESETS)


def _build_tiny() -> tuple[UNet2DModel, DDIMScheduler]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DModel(**ARCHITECTURES["tiny"])
        # Random weights give a wildly non-smooth denoiser; shrink the output layer so the
        # tiny model behaves like a (useless but) well-conditioned one.
        with torch.no_grad():
            unet.conv_out.weight.mul_(0.1)
    return unet, DDIMScheduler(**ZERO_SNR_V_SCHEDULER)


#: Network classes by the ``_class_name`` of their config, and the folder they live in.
NETWORKS = {
    "UNet2DModel": "unet",
    "UNet2DConditionModel": "unet",
    "DiTTransformer2DModel": "transformer",
    "SD3Transformer2DModel": "transformer",
}


def _read_scheduler(
    source: str | Path, subfolder: str | None, **kwargs: Any
) -> DDIMScheduler | FlowMatchEulerDiscreteScheduler:
    """The folder's scheduler: flow matching as saved, anything else read as DDIM (said
    once, see :func:`load`)."""
    config = DDIMScheduler.load_config(source, subfolder=subfolder, **kwargs)
    _SCHEDULER_CLASS[str(source)] = config.get("_class_name") or "DDIMScheduler"
    if str(config.get("_class_name", "")).startswith("FlowMatch"):
        if config["_class_name"] != "FlowMatchEulerDiscreteScheduler":
            raise WorkbenchError(f"{source}: {config['_class_name']} is not supported yet")
        return FlowMatchEulerDiscreteScheduler.from_config(config)
    return DDIMScheduler.from_config(config)


#: The scheduler class each folder or Hub id names (read as DDIM unless flow matching).
_SCHEDULER_CLASS: dict[str, str] = {}
#: Notices already given in this process (each is given once).
_NOTICED: set[str] = set()


def _notice(text: str) -> None:
    """A one-line ``UserWarning``, once per process."""
    if text not in _NOTICED:
        _NOTICED.add(text)
        warnings.warn(text, UserWarning, stacklevel=3)


def _text_parts(
    source: str | Path,
    torch_dtype: torch.dtype,
    suffix: str = "",
    allowed: tuple[str, ...] = ("CLIPTextModel", "CLIPTextModelWithProjection"),
    **kwargs: Any,
) -> dict[str, Any]:
    """A text encoder and its tokenizer (folders ``text_encoder{suffix}/`` and
    ``tokenizer{suffix}/``): CLIP for Stable Diffusion; CLIP with projection or T5 for SD3."""
    import transformers

    config = transformers.PretrainedConfig.get_config_dict(
        source, subfolder=f"text_encoder{suffix}", **kwargs
    )[0]
    arch = (config.get("architectures") or ["CLIPTextModel"])[0]
    if arch not in allowed:
        raise WorkbenchError(
            f"{source}: text encoder {arch} is not supported yet ({', '.join(allowed)})"
        )
    bars = transformers.utils.logging
    was_on = bars.is_progress_bar_enabled()
    if not show_progress(None):  # the package setting covers transformers' loading bar too
        bars.disable_progress_bar()
    try:
        encoder_class = getattr(transformers, arch)
        text_encoder = encoder_class.from_pretrained(
            source, subfolder=f"text_encoder{suffix}", **kwargs
        )
    finally:
        if was_on:
            bars.enable_progress_bar()
    text_encoder = text_encoder.to(torch_dtype)
    clip = arch.startswith("CLIP")
    tokenizer_class = transformers.CLIPTokenizer if clip else transformers.AutoTokenizer
    tokenizer = tokenizer_class.from_pretrained(source, subfolder=f"tokenizer{suffix}", **kwargs)
    return {f"text_encoder{suffix}": text_encoder, f"tokenizer{suffix}": tokenizer}


def _sd3_text_parts(
    source: str | Path, torch_dtype: torch.dtype, present: set[str], **kwargs: Any
) -> dict[str, Any]:
    """SD3's text encoders, each where the folder has it: the two CLIPs together or not at
    all, T5 optional."""
    parts: dict[str, Any] = {}
    if {"text_encoder", "text_encoder_2"} <= present:
        clip = ("CLIPTextModelWithProjection",)
        for suffix in ("", "_2"):
            parts |= _text_parts(source, torch_dtype, suffix, clip, **kwargs)
        if "text_encoder_3" in present:
            parts |= _text_parts(source, torch_dtype, "_3", ("T5EncoderModel",), **kwargs)
    return parts


def _present(source: str | Path, **kwargs: Any) -> set[str]:
    """The component folders a pipeline holds: the subfolders of a local folder, the
    non-null entries of a Hub repo's ``model_index.json``."""
    local = Path(source)
    if local.is_dir():
        return {p.name for p in local.iterdir() if p.is_dir()}
    try:
        index = diffusers.DiffusionPipeline.load_config(source, **kwargs)
    except Exception:  # noqa: BLE001 - no index: a bare model
        return set()
    return {k for k, v in index.items() if isinstance(v, list | tuple) and v and v[0]}


def _from_pretrained(source: str | Path, torch_dtype: torch.dtype, **kwargs: Any) -> dict[str, Any]:
    """The components (``unet``, ``scheduler``; ``vae``, ``text_encoder``, ``tokenizer`` for
    a latent text-to-image model) from a folder or Hub id, pipeline or bare layout."""
    local = Path(source)
    if local.is_dir():
        subfolder = next(
            (s for s in ("unet", "transformer") if (local / s / "config.json").is_file()), None
        )
        if subfolder is None and not (local / "config.json").is_file():
            raise WorkbenchError(
                f"{source}: no diffusers model here (no unet/config.json, "
                "transformer/config.json or config.json)"
            )
        sched_sub = "scheduler" if (local / "scheduler").is_dir() else None
        config = json.loads((local / (subfolder or "") / "config.json").read_text())
    else:
        subfolder, sched_sub, config = None, None, None
        for candidate in ("unet", "transformer"):
            try:
                config = UNet2DModel.load_config(source, subfolder=candidate, **kwargs)
            except Exception:  # noqa: BLE001 - not this layout
                continue
            subfolder, sched_sub = candidate, "scheduler"
            break
        if config is None:
            config = UNet2DModel.load_config(source, **kwargs)
    cls_name = config.get("_class_name", "UNet2DModel")
    if cls_name not in NETWORKS:
        raise WorkbenchError(f"{source}: {cls_name} is not supported yet ({', '.join(NETWORKS)})")
    if cls_name != "UNet2DModel" and subfolder != NETWORKS[cls_name]:
        raise WorkbenchError(
            f"{source}: a {cls_name} loads from a pipeline folder "
            f"({NETWORKS[cls_name]}/, vae/, scheduler/, ...)"
        )
    # Without accelerate, diffusers warns on every load unless told not to try.
    fast = importlib.util.find_spec("accelerate") is not None
    options = {"torch_dtype": torch_dtype, "low_cpu_mem_usage": fast, **kwargs}
    cls = getattr(diffusers, cls_name)
    parts: dict[str, Any] = {
        "network": cls.from_pretrained(source, subfolder=subfolder, **options),
        "scheduler": _read_scheduler(source, sched_sub, **kwargs),
    }
    if cls_name != "UNet2DModel":
        parts["vae"] = AutoencoderKL.from_pretrained(source, subfolder="vae", **options)
    if cls is UNet2DConditionModel:
        parts.update(_text_parts(source, torch_dtype, **kwargs))
        if config.get("addition_embed_type") == "text_time":  # SDXL: a second CLIP
            clip = ("CLIPTextModelWithProjection",)
            parts.update(_text_parts(source, torch_dtype, "_2", clip, **kwargs))
    elif cls_name == "SD3Transformer2DModel":
        parts.update(_sd3_text_parts(source, torch_dtype, _present(source, **kwargs), **kwargs))
    return parts


def check_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a usable torch device (default: CUDA when available, else the CPU),
    or a one-line error: an unknown name, ``meta``, a GPU this machine does not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise WorkbenchError(f"unknown device {str(device)!r}: use e.g. cpu or cuda") from None
    if dev.type == "meta":
        raise WorkbenchError("device 'meta' holds no data: use e.g. cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise WorkbenchError(f"device {str(device)!r}: CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise WorkbenchError(
                f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except Exception:  # noqa: BLE001 - any backend failure means "not usable here"
            raise WorkbenchError(f"device {str(device)!r} is not available here") from None
    return dev


def _from_folder(folder: str | Path, dtype: torch.dtype) -> dict[str, Any]:
    """:func:`_from_pretrained` on a local folder, a broken folder reported in one line
    (bad or missing config, missing or truncated weights, bad scheduler config)."""
    try:
        return _from_pretrained(folder, dtype)
    except WorkbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever diffusers/safetensors raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WorkbenchError(
            f"{folder}: not a loadable diffusers model folder ({type(exc).__name__}: {first})"
        ) from exc


def load(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    preset: Preset | None = None,
    **hub_kwargs: Any,
) -> DiffusionModel:
    """Load a diffusion model as a :class:`DiffusionModel`.

    Args:
        name_or_path: a bundled name (see :func:`bundled_names`), a local diffusers folder,
            or a Hub id ``owner/name``.
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA when available, else CPU.
        dtype: parameter dtype (float32 by default; Jacobian work wants float32).
        preset: overrides the model's preset (bundled table or ``workbench_preset.json``).
        hub_kwargs: passed to ``from_pretrained`` (``revision``, ``cache_dir``, ...).
    """
    device = check_device(device)
    name = str(name_or_path)
    if name == "tiny-test":
        unet, scheduler = _build_tiny()
        if dtype != torch.float32:  # plain Module.to: nothing in a random model needs fp32
            torch.nn.Module.to(unet, dtype=dtype)
        parts = {"network": unet, "scheduler": scheduler}
        source, found_preset = name, PRESETS[name]
    elif name in PRESETS:
        folder = BUNDLED_DIR / name
        if not folder.is_dir():
            raise WorkbenchError(f"bundled model {name!r} has no weights in {folder}")
        parts = _from_folder(folder, dtype)
        source, found_preset = str(folder), PRESETS[name]
    elif Path(name).exists():
        if not Path(name).is_dir():
            raise WorkbenchError(f"{name}: not a folder (expected a diffusers model folder)")
        parts = _from_folder(name, dtype)
        source, found_preset = name, Preset.from_folder(name)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        try:
            parts = _from_pretrained(name, dtype, **hub_kwargs)
        except WorkbenchError:
            raise
        except Exception as exc:  # network, missing repo, ...: keep it to one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WorkbenchError(f"could not load {name!r} from the Hub: {first}") from exc
        source, found_preset = name, Preset.from_pretrained(name, **hub_kwargs)
    else:
        raise WorkbenchError(
            f"unknown model {name!r}: not a bundled name ({', '.join(bundled_names())}), "
            "a local folder, or a Hub id owner/name"
        )
    used = type(parts["scheduler"]).__name__
    original = _SCHEDULER_CLASS.get(str(source), used)
    # a model with no preset has no ground truth: Shapes read-outs are refused on it
    chosen = preset or found_preset or Preset(scene=NO_SCENE)
    model = DiffusionModel(preset=chosen, name=name, source=source, **parts)
    if preset is None and found_preset is None:
        _notice(
            f"{name}: no workbench_preset.json, so edit strengths use generic steps that "
            "mean different things on different models; measure them once with "
            f"`workbench calibrate --model {name}` (or wb.calibrate)"
        )
    if original != used:
        _notice(
            f"{name}: sampling with DDIM ({model.preset.num_inference_steps} steps by default) "
            f"from the model's {original} config"
            + (", clipping x0 as it says" if model.schedule.clip_sample else "")
        )
    for module in model.components().values():  # some classes load float64 as float32
        if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
            torch.nn.Module.to(module, dtype=dtype)
    return model.to(device)


def save(model: DiffusionModel, folder: str | Path) -> Path:
    """Save ``model`` as a diffusers folder (``unet/`` or ``transformer/``, ``scheduler/``;
    ``vae/`` for a latent model; text encoders and tokenizers) plus its preset."""
    from workbench.store import atomic_dir

    with atomic_dir(folder) as tmp:
        for part, module in model.components().items():
            module.save_pretrained(tmp / part)
        for part, tokenizer in model.tokenizers().items():
            tokenizer.save_pretrained(tmp / part)
        model.scheduler.save_pretrained(tmp / "scheduler")
        model.preset.save_pretrained(tmp)
    return Path(folder)
