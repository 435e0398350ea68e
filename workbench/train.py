"""``workbench train``: train a ``UNet2DModel`` on freshly generated Shapes.

- v-prediction on a zero-terminal-SNR schedule (linear betas rescaled, Lin et al. 2024):
  the model sees pure noise at t = T-1, so it must produce the image's mean colour itself,
  which fixes the collapse of the background brightness to the data mean at its root.
- Every batch is generated from ``(seed, step)``, so a resumed run sees exactly the data
  an uninterrupted one would.
- EMA of the weights (exported), bf16 autocast on CUDA, gradient clipping, atomic
  checkpoints every ``checkpoint_every`` steps, resume from ``out/checkpoint.pt``.
- At the end: the EMA weights as an fp16 diffusers folder ``out/model`` with the preset
  and ``training.json`` (command, seed, steps, loss, sample quality from the read-out).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel
from tqdm.auto import tqdm

from workbench import settings
from workbench.data.shapes import generate
from workbench.errors import WorkbenchError
from workbench.models.configs import ARCHITECTURES, ZERO_SNR_V_SCHEDULER
from workbench.models.loading import PRESETS
from workbench.models.presets import PRESET_FILE, Preset
from workbench.store import atomic_dir, atomic_path, write_json


@dataclass
class TrainConfig:
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


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        targets = list(ema.parameters())
        sources = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(targets, sources, 1 - decay)  # one fused kernel on CUDA


def _command() -> str | None:
    """The command line that runs this training, if it came from the CLI."""
    if Path(sys.argv[0]).name in ("workbench", "cli.py"):
        return "workbench " + " ".join(sys.argv[1:])
    return None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    arch = ARCHITECTURES[config.preset]
    size = arch["sample_size"]
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    torch.manual_seed(config.seed)
    unet = UNet2DModel(**arch).to(device).train()
    ema = copy.deepcopy(unet).float().eval().requires_grad_(False)
    scheduler = DDIMScheduler(**ZERO_SNR_V_SCHEDULER)
    alphas = scheduler.alphas_cumprod.to(device, torch.float32)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    start, losses, history = 0, [], []
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state["config"]["preset"] != config.preset:
            raise WorkbenchError(
                f"{ckpt_path} is a {state['config']['preset']} run, not {config.preset}"
            )
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start, losses = state["step"], state["losses"]
        history = state.get("history", [])

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
    for step in bar:
        x0, _ = generate(config.batch_size, size=size, seed=config.seed * 1_000_003 + step)
        gen = torch.Generator().manual_seed(config.seed * 7_000_001 + step)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen)
        x0, noise, t = x0.to(device), noise.to(device), t.to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = unet(x_t, t).sample
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
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
                "device": str(device),
                "torch": torch.__version__,
            }
            state = {
                "unet": unet.state_dict(),
                "ema": ema.state_dict(),
                "opt": opt.state_dict(),
                "step": step + 1,
                "losses": losses,
                "config": asdict(config),
                "history": [*history, segment],
            }
            _save_checkpoint(ckpt_path, state)
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

    preset = PRESETS.get(config.preset, Preset())
    record = {
        "config": asdict(config),
        "steps_done": len(losses),
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
