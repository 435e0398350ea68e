"""``workbench train``: train a ``UNet2DModel`` on a freshly generated scene.

- v-prediction on a zero-terminal-SNR schedule (linear betas rescaled, Lin et al. 2024):
  the model sees pure noise at t = T-1, so it must produce the image's mean colour itself,
  which fixes the collapse of the background brightness to the data mean at its root.
- The architecture preset names the scene (``shapes`` for ``shapes32``, ``lit-shapes`` for
  ``shapes64``) and the up blocks whose skips are cut (``workbench.models.skips``).
- Every batch is generated from ``(seed, step)``, so a resumed run sees exactly the data
  an uninterrupted one would (Lit Shapes is rendered and noised on the training device,
  with a generator of that device: reproducible on the same kind of device).
- EMA of the weights (exported), bf16 autocast on CUDA, gradient clipping, atomic
  checkpoints every ``checkpoint_every`` steps in ``out/checkpoint/`` (safetensors for
  the weights and optimizer moments, JSON for the rest: nothing is unpickled), resume
  from there. A checkpoint without ``optimizer.safetensors`` (weights carried from
  another machine) resumes with fresh optimizer moments and a new warm-up.
- At the end: the EMA weights as an fp16 diffusers folder ``out/model`` with the preset
  and ``training.json`` (command, seed, steps, loss, sample quality from the read-out).
"""

from __future__ import annotations

import copy
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

import workbench.settings as settings
from workbench.data.scenes import get_scene
from workbench.data.shapes import draw_shapes
from workbench.errors import WorkbenchError
from workbench.models.configs import ARCHITECTURES, CUT_SKIPS, SCENE_OF, ZERO_SNR_V_SCHEDULER
from workbench.models.loading import PRESETS
from workbench.models.presets import PRESET_FILE, Preset
from workbench.models.skips import cut_skips, zero_cut_skips
from workbench.options import DEVICE, SEED, Option, Spec
from workbench.store import atomic_dir, write_json

CHECKPOINT = "checkpoint"  # folder under ``out``


@dataclass
class TrainConfig:
    """Options of a training run (saved with its checkpoints)."""

    out: str = "runs/train"
    steps: int = 6000
    batch_size: int = 128
    lr: float = 2e-4
    warmup: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    device: str | None = None
    checkpoint_every: int = 500
    preset: str = "shapes32"
    eval_samples: int = 512
    eval_steps: int = 50
    max_minutes: float | None = None
    #: up blocks whose skips are cut; ``None``: the architecture's (``CUT_SKIPS``)
    cut_skips: tuple[int, ...] | None = None
    #: an exported model folder (e.g. the bundled one) to go on from when ``out`` has no
    #: checkpoint: its fp16 weights start the online and EMA weights, its ``training.json``
    #: the step count and history; optimizer moments start fresh (with a new warm-up)
    init_from: str | None = None
    #: class prior of the training data, one weight per shape (disc, square, triangle);
    #: ``None``: the scene's own (uniform). A tilted prior fine-tunes a model whose samples
    #: under-produce a class (shapes64); the sample bar is still measured against the scene
    shape_prior: tuple[float, ...] | None = None

    @classmethod
    def of(cls, out: str, **options: Any) -> TrainConfig:
        """A config from :data:`TRAIN`'s options (checked; ``cut_skips`` as text: ``0,1`` or
        ``none``)."""
        values = TRAIN.validate(options)
        values["steps"] = values.pop("train_steps", cls.steps)
        values["preset"] = values.pop("architecture", cls.preset)
        text = values.get("cut_skips")
        if isinstance(text, str):
            try:
                values["cut_skips"] = (
                    () if text.strip().lower() == "none" else tuple(int(v) for v in text.split(","))
                )
            except ValueError:
                raise WorkbenchError(
                    f"--cut-skips: expected up-block indices like 0,1 or none, got {text!r}"
                ) from None
        return cls(out=out, **values)

    def skips_cut(self) -> tuple[int, ...]:
        """The up blocks whose skip connections are cut."""
        if self.cut_skips is None:
            return CUT_SKIPS.get(self.preset, ())
        return tuple(int(b) for b in self.cut_skips)


#: The options of a training run as ``workbench train`` takes them (the config's names but
#: ``train_steps`` for ``steps``, ``architecture`` for ``preset``; :meth:`TrainConfig.of`).
TRAIN = Spec(
    "command",
    "train",
    "train a bundled model (shapes32, shapes64) from scratch",
    (
        Option(
            "train_steps",
            int,
            TrainConfig.steps,
            "training steps",
            low=1,
            high=10**8,
            aliases=("--steps",),
        ),
        Option("batch_size", int, TrainConfig.batch_size, "images per step", low=1, high=65536),
        Option("lr", float, TrainConfig.lr, "learning rate", low=1e-12, high=1.0),
        replace(SEED, default=TrainConfig.seed),
        DEVICE,
        Option(
            "checkpoint_every",
            int,
            TrainConfig.checkpoint_every,
            "steps between checkpoints",
            low=1,
            high=10**8,
        ),
        Option(
            "architecture",
            str,
            TrainConfig.preset,
            "the architecture and the scene it is trained on (tiny, tiny-lit: tests)",
            choices=tuple(ARCHITECTURES),
            aliases=("--preset",),  # the older spelling (a preset is a model's edit defaults)
        ),
        Option(
            "cut_skips",
            str,
            None,
            "up blocks whose skips are cut, e.g. 0,1, or none (default: the architecture's)",
        ),
        Option(
            "init_from",
            "path",
            None,
            "exported model folder to go on from when --out has no checkpoint (e.g. "
            "workbench/models/bundled/shapes64)",
        ),
        Option(
            "shape_prior",
            "floats",
            None,
            "class prior of the training data, weights for disc,square,triangle (default: "
            "uniform, the scene's); for a fine-tune that corrects a model's class shares",
            low=0,
            length=3,
        ),
        Option(
            "eval_samples",
            int,
            TrainConfig.eval_samples,
            "samples for the final quality report",
            low=0,
            high=100_000,
        ),
        Option(
            "max_minutes",
            float,
            None,
            "wall-clock budget: stop early (checkpoint, export, report) when it is spent",
            low=1e-6,
            high=10**7,
            nullable=True,
        ),
    ),
)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        targets = list(ema.parameters())
        sources = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(targets, sources, 1 - decay)  # one fused kernel on CUDA


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return str(device)


def _command() -> str | None:
    """The command line that runs this training, if it came from the CLI."""
    if Path(sys.argv[0]).name in ("workbench", "cli.py"):
        return "workbench " + " ".join(sys.argv[1:])
    return None


def _save_checkpoint(
    folder: Path,
    unet: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """Weights and optimizer moments as safetensors, the rest as JSON; one atomic folder."""
    opt_state = opt.state_dict()
    moments = {
        f"{index}.{key}": value.detach().cpu().contiguous()
        for index, entry in opt_state["state"].items()
        for key, value in entry.items()
    }
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    with atomic_dir(folder) as tmp:
        save_file(_plain(unet.state_dict()), str(tmp / "unet.safetensors"))
        save_file(_plain(ema.state_dict()), str(tmp / "ema.safetensors"))
        save_file(moments, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps({**state, "param_groups": groups}, indent=1, default=str)
        )


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _load_checkpoint(
    folder: Path,
    unet: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    config: TrainConfig,
) -> dict[str, Any]:
    try:
        state = json.loads((folder / "state.json").read_text())
        unet.load_state_dict(load_file(str(folder / "unet.safetensors")))
        ema.load_state_dict(load_file(str(folder / "ema.safetensors")))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"{folder}: broken checkpoint ({first})") from exc
    if state["config"]["preset"] != config.preset:
        raise WorkbenchError(f"{folder} is a {state['config']['preset']} run, not {config.preset}")
    saved = state["config"].get("cut_skips")
    saved_cut = CUT_SKIPS.get(config.preset, ()) if saved is None else tuple(saved)
    if saved_cut != config.skips_cut():
        raise WorkbenchError(
            f"{folder} was trained with the skips of up blocks {list(saved_cut)} cut, "
            f"not {list(config.skips_cut())}"
        )
    moments_path = folder / "optimizer.safetensors"
    if moments_path.is_file():
        moments = load_file(str(moments_path))
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in moments.items():
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = value
        groups = state["param_groups"]
        for group in groups:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        opt.load_state_dict({"state": per_param, "param_groups": groups})
        state["warm_from"] = 0
    else:
        warnings.warn(
            f"{folder} has no optimizer moments: resuming with fresh ones and a new warm-up",
            stacklevel=3,
        )
        state["warm_from"] = state["step"]
    return state


def _init_from(folder: Path, unet: UNet2DModel, ema: UNet2DModel, config: TrainConfig):
    """Start from an exported model: weights, step count and history."""
    try:
        record = json.loads((folder / "training.json").read_text())
        weights = UNet2DModel.from_pretrained(folder, subfolder="unet").float().state_dict()
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"--init-from {folder}: not an exported model ({first})") from exc
    if record["config"]["preset"] != config.preset:
        raise WorkbenchError(
            f"--init-from {folder} is a {record['config']['preset']} model, not {config.preset}"
        )
    if tuple(record.get("skips_cut", ())) != config.skips_cut():
        raise WorkbenchError(
            f"--init-from {folder} has the skips of up blocks {record.get('skips_cut', [])} cut, "
            f"not {list(config.skips_cut())}"
        )
    unet.load_state_dict(weights)
    ema.load_state_dict(weights)
    return int(record["steps_done"]), list(record.get("history", []))


def train(config: TrainConfig) -> Path:
    """Train (or resume) and export; returns the exported model folder."""
    if config.preset not in ARCHITECTURES:
        raise WorkbenchError(
            f"unknown architecture preset {config.preset!r}; known: {', '.join(ARCHITECTURES)}"
        )
    if config.steps < 1 or config.batch_size < 1:
        raise WorkbenchError("steps and batch size must be positive")
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise WorkbenchError("max_minutes must be positive")
    if config.shape_prior is not None:
        draw_shapes(1, torch.Generator(), config.shape_prior, "shape_prior")  # one-line check
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    arch = ARCHITECTURES[config.preset]
    size = arch["sample_size"]
    scene = get_scene(SCENE_OF.get(config.preset))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    if (out / "checkpoint.pt").exists() and not ckpt.exists():
        raise WorkbenchError(
            f"{out / 'checkpoint.pt'} is a pickled checkpoint of an older version and is not "
            "loaded (unpickling can run code): delete it or train into another --out"
        )

    torch.manual_seed(config.seed)
    unet = UNet2DModel(**arch).to(device).train()
    cut = config.skips_cut()
    cut_skips(unet, cut)
    ema = copy.deepcopy(unet).float().eval().requires_grad_(False)
    scheduler = DDIMScheduler(**ZERO_SNR_V_SCHEDULER)
    alphas = scheduler.alphas_cumprod.to(device, torch.float32)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    start, losses, history, warm_from = 0, [], [], 0
    if (ckpt / "state.json").is_file():
        state = _load_checkpoint(ckpt, unet, ema, opt, config)
        start, losses = state["step"], state["losses"]
        history, warm_from = state.get("history", []), state["warm_from"]
    elif config.init_from:
        start, history = _init_from(Path(config.init_from), unet, ema, config)
        warm_from = start
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    use_amp = device.type == "cuda"
    n_params = sum(p.numel() for p in unet.parameters())
    bar = tqdm(
        range(start, config.steps),
        initial=start,
        total=config.steps,
        desc=f"train {n_params / 1e6:.1f}M",
        disable=not settings.progress,
    )
    began = time.time()
    pending: list[torch.Tensor] = []  # losses still on the device: one sync per 10 steps
    on_device = scene.name != "shapes"  # shapes32's data stays as it was trained: CPU
    prior = None if config.shape_prior is None else tuple(float(w) for w in config.shape_prior)
    for step in bar:
        data_seed, noise_seed = config.seed * 1_000_003 + step, config.seed * 7_000_001 + step
        if on_device:
            x0, _ = scene.generate(
                config.batch_size, size=size, seed=data_seed, device=device, shape_probs=prior
            )
            gen = torch.Generator(device).manual_seed(noise_seed)
            noise = torch.randn(x0.shape, generator=gen, device=device)
            t = torch.randint(
                0,
                scheduler.config.num_train_timesteps,
                (x0.shape[0],),
                generator=gen,
                device=device,
            )
        else:
            x0, _ = scene.generate(config.batch_size, size=size, seed=data_seed, shape_probs=prior)
            gen = torch.Generator().manual_seed(noise_seed)
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(
                0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen
            )
            x0, noise, t = x0.to(device), noise.to(device), t.to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1 - warm_from) / config.warmup)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = unet(x_t, t).sample
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        if cut:
            zero_cut_skips(unet, cut)
        _ema_update(ema, unet, min(config.ema_decay, (1 + step) / (10 + step)))
        pending.append(loss.detach())
        if step % 10 == 0 or step + 1 == config.steps:
            losses += torch.stack(pending).float().cpu().tolist()
            pending = []
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        out_of_time = (
            config.max_minutes is not None and time.time() - began > 60 * config.max_minutes
        )
        last = step + 1 == config.steps or out_of_time
        if last or (step + 1) % config.checkpoint_every == 0:
            losses += torch.stack(pending).float().cpu().tolist() if pending else []
            pending = []
            segment = {
                "command": _command(),
                "steps": [start, step + 1],
                "seconds": time.time() - began,
                "device": _device_name(device),
                "torch": torch.__version__,
            }
            state = {
                "step": step + 1,
                "losses": losses,
                "config": asdict(config),
                "history": [*history, segment],
            }
            _save_checkpoint(ckpt, unet, ema, opt, state)
        if out_of_time:
            bar.close()
            break
    if start < config.steps:
        history = state["history"]
    return export(ema, scheduler, out / "model", config, losses, history, device)


def export(
    ema: UNet2DModel,
    scheduler: DDIMScheduler,
    folder: Path,
    config: TrainConfig,
    losses: list[float],
    history: list[dict[str, Any]],
    device: torch.device,
) -> Path:
    """Write the EMA weights (fp16), scheduler, preset and training record; then measure."""
    from workbench.eval.quality import sample_quality
    from workbench.models.wrapper import DiffusionModel

    scene = SCENE_OF.get(config.preset, "shapes")
    preset = PRESETS.get(config.preset, Preset()).replace(scene=scene)
    record = {
        "config": asdict(config),
        "skips_cut": list(config.skips_cut()),
        "steps_done": history[-1]["steps"][1] if history else len(losses),
        "final_loss": sum(losses[-200:]) / max(1, len(losses[-200:])),
        "history": history,  # one entry per run (resumes add one): command, steps, seconds
        "seconds": sum(h["seconds"] for h in history),
        "device": str(device),
        "torch": torch.__version__,
    }
    with atomic_dir(folder) as tmp:  # the weights are safe on disk before the measurement
        ema.to(torch.float16).save_pretrained(tmp / "unet")
        ema.float()
        scheduler.save_pretrained(tmp / "scheduler")
        (tmp / PRESET_FILE).write_text(json.dumps(preset.to_dict(), indent=2))
        (tmp / "training.json").write_text(json.dumps(record, indent=2, default=str))
    if config.eval_samples:
        model = DiffusionModel(copy.deepcopy(ema).float(), scheduler, preset, name=config.preset)
        quality = sample_quality(model, n=config.eval_samples, num_steps=config.eval_steps)
        record["sample_quality"] = quality.to_dict()
        record["passes_bar"] = quality.passes()
        write_json(folder / "training.json", record)
    return folder
