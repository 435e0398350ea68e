"""``load(name_or_path)``: bundled names, local diffusers folders, Hub ids.

Resolution order: a bundled name (``shapes32``; ``tiny-test`` is a test-only random
model built from a config), then an existing local folder, then a Hub id of the form
``owner/name`` (the same ``from_pretrained`` code path as a local folder). A folder may be
a pipeline layout (``unet/`` and ``scheduler/`` subfolders) or a bare U-Net folder with
``config.json`` and ``scheduler_config.json`` side by side. Which family a folder
holds is decided by the network's config (``workbench/models/families/``: each family
loads its own parts, e.g. ``vae/``, text encoders and tokenizers beside ``unet/`` or
``transformer/`` and ``scheduler/``). A flow-matching scheduler is sampled with its
deterministic Euler step; another ODE solver's config (PNDM, DPM-Solver, Euler) is used as
DDIM, said once; a sampler of another kind (consistency models) is refused.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, UNet2DModel

from workbench import settings
from workbench.errors import WorkbenchError
from workbench.models.configs import ARCHITECTURES, ZERO_SNR_V_SCHEDULER
from workbench.models.families import UNSUPPORTED, family_for, refusal
from workbench.models.families.base import SCHEDULER_CLASS, pipeline_class
from workbench.models.presets import NO_SCENE, Preset
from workbench.models.wrapper import CPU_BATCH_PIXELS, DiffusionModel

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
        # too near the data end for a one-step edit (size 0.08 spreads, 72-84% valid); at
        # t = 199 the h boundary's edit to +-2 h_step moves size 0.29 spreads, 24x random x
        # at that step, all valid (analysis/boundary_defaults.py, docs/boundary.md)
        boundary_step=199,
        boundary_distance=2.0,
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


#: Notices already given in this process (each is given once).
_NOTICED: set[str] = set()


def _notice(text: str) -> None:
    """A one-line ``UserWarning``, once per process."""
    if text not in _NOTICED:
        _NOTICED.add(text)
        warnings.warn(text, UserWarning, stacklevel=3)


def _from_pretrained(source: str | Path, torch_dtype: torch.dtype, **kwargs: Any) -> dict[str, Any]:
    """The model's parts (``network``, ``scheduler``, ``family``; ``vae``, text encoders and
    tokenizers where its family has them) from a folder or Hub id, pipeline or bare layout.
    The family is the one that recognises the network's config; a pipeline the workbench
    knows it cannot run is refused in one line by name."""
    local = Path(source)
    pipeline = pipeline_class(source, **kwargs)
    if pipeline in UNSUPPORTED:
        refusal(pipeline, source)
    if local.is_dir():
        subfolder = next(
            (s for s in ("unet", "transformer") if (local / s / "config.json").is_file()), None
        )
        if subfolder is None and not (local / "config.json").is_file():
            found = f" (its model_index.json names {pipeline})" if pipeline else ""
            raise WorkbenchError(
                f"{source}: no diffusers model here{found}: no unet/config.json, "
                "transformer/config.json or config.json"
            )
        config = json.loads((local / (subfolder or "") / "config.json").read_text())
    else:
        subfolder, config = None, None
        for candidate in ("unet", "transformer"):
            try:
                config = UNet2DModel.load_config(source, subfolder=candidate, **kwargs)
            except Exception:  # noqa: BLE001 - not this layout
                continue
            subfolder = candidate
            break
        if config is None:
            config = UNet2DModel.load_config(source, **kwargs)
    if not isinstance(config, dict):
        raise WorkbenchError(f"{source}: the network's config.json is not a JSON object")
    config.setdefault("_class_name", "UNet2DModel")
    family = family_for(config, source, pipeline)
    if subfolder is None and not family.bare:
        raise WorkbenchError(
            f"{source}: a {config['_class_name']} loads from a pipeline folder "
            f"({family.folder}/, vae/, scheduler/, ...)"
        )
    if subfolder is not None and subfolder != family.folder:
        raise WorkbenchError(
            f"{source}: a {config['_class_name']} belongs in {family.folder}/, not {subfolder}/"
        )
    parts = family.load(source, subfolder, torch_dtype=torch_dtype, **kwargs)
    return {"family": family} | parts


#: The parameter dtypes a model loads in, by name.
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def check_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``dtype`` (a torch dtype or its name, ``"float16"``) as one of :data:`DTYPES`, or a
    one-line error."""
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise WorkbenchError(
        f"dtype must be one of {', '.join(DTYPES)} (a torch dtype or its name), got {dtype!r}"
    )


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
    dtype: torch.dtype | str = torch.float32,
    preset: Preset | None = None,
    resolution: int | None = None,
    **hub_kwargs: Any,
) -> DiffusionModel:
    """Load a diffusion model as a :class:`DiffusionModel`.

    Args:
        name_or_path: a bundled name (see :func:`bundled_names`), a local diffusers folder,
            or a Hub id ``owner/name``.
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA when available, else CPU.
        dtype: parameter dtype, float32 (the default; Jacobian work wants it), float16,
            bfloat16 or float64 (exact checks), as a torch dtype or its name.
        preset: overrides the model's preset (bundled table or ``workbench_preset.json``).
        resolution: image pixels per side to run at (default: the network config's size,
            or its family's default: 1024 for FLUX.1).
        hub_kwargs: passed to ``from_pretrained`` (``revision``, ``cache_dir``, ...).
    """
    device, dtype = check_device(device), check_dtype(dtype)
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
    original = SCHEDULER_CLASS.get(str(source), used)
    # a model with no preset has no ground truth: Shapes read-outs are refused on it
    chosen = preset or found_preset or Preset(scene=NO_SCENE)
    model = DiffusionModel(preset=chosen, name=name, source=source, resolution=resolution, **parts)
    if preset is None and found_preset is None:
        _notice(
            f"{name}: no workbench_preset.json, so edit strengths use generic steps that "
            "mean different things on different models; measure them once with "
            f"`workbench calibrate --model {name}` (or wb.calibrate)"
        )
    if original != used:
        _notice(
            f"{name}: sampling with {model.schedule.label} "
            f"({model.preset.num_inference_steps} steps by default) "
            f"from the model's {original} config"
            + (", clipping x0 as it says" if model.schedule.clip_sample else "")
        )
    for module in model.components().values():  # some classes load float64 as float32
        if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
            torch.nn.Module.to(module, dtype=dtype)
    if device.type == "cpu":  # faster forwards, bounded activations (settings, wrapper)
        settings.reuse_freed_memory()
        model.max_batch = max(
            1, CPU_BATCH_PIXELS // (model.sample_shape[-1] * model.sample_shape[-2])
        )
    return model.to(device)


def save(model: DiffusionModel, folder: str | Path, overwrite: bool = False) -> Path:
    """Save ``model`` as a diffusers pipeline folder (``unet/`` or ``transformer/``,
    ``scheduler/``; ``vae/`` for a latent model; text encoders and tokenizers, in the
    folders its family's pipeline names them; ``model_index.json``) plus its preset,
    atomically; an existing non-empty ``folder`` is replaced only with ``overwrite``."""
    import diffusers

    from workbench.options import check_model
    from workbench.store import atomic_dir, write_json

    check_model(model)
    if not isinstance(folder, str | os.PathLike) or not str(folder):
        raise WorkbenchError(f"folder must be a path, got {folder!r}")
    if Path(folder).exists() and not Path(folder).is_dir():
        raise WorkbenchError(f"{folder} is a file, not a folder")
    if Path(folder).is_dir() and any(Path(folder).iterdir()) and not overwrite:
        raise WorkbenchError(
            f"{folder} is not empty: give overwrite=True to replace it (its content goes)"
        )

    folders = model.arch.folders
    index: dict[str, Any] = {"_diffusers_version": diffusers.__version__}
    if model.arch.pipeline:
        index["_class_name"] = model.arch.pipeline
    with atomic_dir(folder) as tmp:
        parts = {**model.components(), **model.tokenizers(), "scheduler": model.scheduler}
        for part, obj in parts.items():
            name = folders.get(part, part)
            obj.save_pretrained(tmp / name)
            index[name] = [_library(type(obj)), type(obj).__name__]
        write_json(tmp / "model_index.json", index)
        model.preset.save_pretrained(tmp)
    return Path(folder)


def _library(cls: type) -> str:
    """The ``model_index.json`` library of a class: its package when it exports the class
    (``diffusers``, ``transformers``), else the pipeline module that defines it."""
    import importlib

    parts = cls.__module__.split(".")
    if getattr(importlib.import_module(parts[0]), cls.__name__, None) is cls:
        return parts[0]
    return parts[-2] if len(parts) > 2 else parts[0]
