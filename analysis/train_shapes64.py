"""Train ``shapes64`` in budgeted, resumable sessions; its design chosen by measurement.

    python analysis/train_shapes64.py --runs runs [--minutes 5] [--candidate-minutes 1.7]
        [--preset shapes64] [--batch-size 256] [--lr 4e-4] [--pack OUT]

1. Candidates (first session only, skipped once ``RUNS/candidates.json`` exists): the same
   architecture trained side by side (one process each, sharing the device) for
   ``--candidate-minutes`` with the skips of no up block cut (``stock``), of the 4x4 level
   (``cut4``: up block 0) and of the 4x4 and 8x8 levels (``cut4-8``: up blocks 0 and 1).
   Each is measured on its exported EMA weights: h sensitivity (relative change of the
   predicted x0 when h is shifted by a random vector as long as h, over the h window;
   ``workbench.eval.sensitivity``) and its last loss. Chosen: the smallest cut whose h
   sensitivity is at least 0.10; if none reaches it, the largest h sensitivity.
2. The chosen candidate's run continues in ``RUNS/shapes64`` (from its checkpoint, or from
   the last session's) for ``--minutes``, then exports with the sample-quality report.
   ``--init-from FOLDER`` (e.g. ``workbench/models/bundled/shapes64``) skips the candidates
   where ``RUNS`` holds no run yet: the run goes on from that exported model's weights
   and record, with its cut (``skips_cut`` of its ``training.json``).
   ``--balance-from FOLDER`` fine-tunes with a tilted class prior: each shape drawn with a
   weight proportional to 1 / (its share among FOLDER's samples, from its training.json), so a
   model that under-produces a class sees more of it (the first-order correction: if the
   model's bias is a constant factor per class, the tilted prior cancels it). The sample bar
   is still measured against the scene's uniform shares. ``--ema-from FOLDER`` starts the
   checkpoint's EMA from an exported model's fp16 weights (upcast) when the carried
   checkpoint holds only the online weights.
3. ``--pack OUT``: what a later session needs to go on, in files of at most 15 MiB:
   ``OUT/shapes64.tar`` (the exported fp16 model folder, ``candidates.json``, the run's
   ``state.json`` and logs) and the fp32 online and EMA weights split in parts
   (``unet.safetensors.partNN``, ``ema.safetensors.partNN``; join them with ``cat`` into
   ``RUNS/shapes64/checkpoint/`` to resume; the optimizer moments stay behind, so the
   resumed run re-warms them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

CANDIDATES = {"stock": "none", "cut4": "0", "cut4-8": "0,1"}
ORDER = ("stock", "cut4", "cut4-8")  # smallest cut first
BAR = 0.10
PART = 15 * 2**20


def _train_command(args: argparse.Namespace, out: Path, cut: str, minutes: float, evals: int):
    return [
        sys.executable,
        "-m",
        "workbench.cli",
        "train",
        "--preset",
        args.preset,
        "--out",
        str(out),
        "--cut-skips",
        cut,
        "--train-steps",
        str(args.max_steps),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--checkpoint-every",
        str(args.checkpoint_every),
        "--max-minutes",
        str(minutes),
        "--eval-samples",
        str(evals),
        *(["--shape-prior", args.shape_prior] if args.shape_prior else []),
    ]


def balanced_prior(folder: Path) -> str:
    """Weights ``disc,square,triangle`` proportional to 1 / the class shares of the
    samples in ``folder/training.json`` (normalised, 3 decimals)."""
    shares = json.loads((folder / "training.json").read_text())["sample_quality"]["shape_freq"]
    weights = [1 / max(s, 1e-3) for s in shares]
    return ",".join(f"{w / sum(weights):.3f}" for w in weights)


def ema_from(folder: Path, checkpoint: Path) -> None:
    """``checkpoint/ema.safetensors``: the exported fp16 weights of ``folder``, upcast."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    save_file({k: v.float() for k, v in weights.items()}, str(checkpoint / "ema.safetensors"))


def candidates(args: argparse.Namespace, runs: Path) -> dict:
    import torch

    import workbench as wb
    from workbench.eval.sensitivity import h_sensitivity

    procs = {}
    for name, cut in CANDIDATES.items():
        log = open(runs / f"candidate-{name}.log", "w")  # noqa: SIM115 (closed below)
        cmd = _train_command(args, runs / "candidates" / name, cut, args.candidate_minutes, 0)
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    failed = {}
    for name, (proc, log) in procs.items():
        if proc.wait():
            lines = (runs / f"candidate-{name}.log").read_text().strip().splitlines()
            failed[name] = lines[-1] if lines else f"exit {proc.returncode}"
        log.close()
    report: dict = {"bar": BAR, "minutes": args.candidate_minutes, "candidates": {}}
    report["failed"] = failed
    for name in CANDIDATES:
        if name in failed:
            continue
        folder = runs / "candidates" / name
        record = json.loads((folder / "model" / "training.json").read_text())
        model = wb.load(
            str(folder / "model"), device="cuda" if torch.cuda.is_available() else "cpu"
        )
        sens = h_sensitivity(model, n=32)
        report["candidates"][name] = {
            "cut_skips": CANDIDATES[name],
            "steps": record["steps_done"],
            "final_loss": record["final_loss"],
            "h_sensitivity": sens.to_dict(),
        }
    done = [n for n in ORDER if n in report["candidates"]]
    if not done:
        raise SystemExit(f"every candidate failed: {failed}")
    passing = [n for n in done if report["candidates"][n]["h_sensitivity"]["mean"] >= BAR]
    if passing:
        report["chosen"] = passing[0]
        report["rule"] = f"smallest cut with h sensitivity >= {BAR}"
    else:
        report["chosen"] = max(done, key=lambda n: report["candidates"][n]["h_sensitivity"]["mean"])
        report["rule"] = f"none reached {BAR}: largest h sensitivity"
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--preset", default="shapes64")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--candidate-minutes", type=float, default=1.7)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--max-steps", type=int, default=100000)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=512)
    parser.add_argument("--pack", default=None, help="folder for what a later session needs")
    parser.add_argument("--init-from", default=None, help="exported model to go on from")
    parser.add_argument("--shape-prior", default=None, help="disc,square,triangle weights")
    parser.add_argument(
        "--balance-from", default=None, help="exported model whose class shares set the prior"
    )
    parser.add_argument(
        "--ema-from", default=None, help="exported model whose weights start the EMA"
    )
    args = parser.parse_args()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    began = time.time()
    if args.balance_from:
        args.shape_prior = balanced_prior(Path(args.balance_from))
        print(f"shape prior {args.shape_prior} (1 / the class shares of {args.balance_from})")
    checkpoint = runs / "shapes64" / "checkpoint"
    if args.ema_from and not (checkpoint / "ema.safetensors").is_file():
        ema_from(Path(args.ema_from), checkpoint)

    report_path = runs / "candidates.json"
    run = runs / "shapes64"
    if args.init_from and not (run / "checkpoint" / "state.json").is_file():
        record = json.loads((Path(args.init_from) / "training.json").read_text())
        cut = ",".join(str(b) for b in record["skips_cut"]) or "none"
        cmd = _train_command(args, run, cut, args.minutes, args.eval_samples)
        cmd += ["--init-from", args.init_from]
        finish(args, runs, run, cmd, began)
        return
    if report_path.is_file():
        report = json.loads(report_path.read_text())
    else:
        report = candidates(args, runs)
        report_path.write_text(json.dumps(report, indent=2))
    chosen = report["chosen"]
    print(f"candidates ({time.time() - began:.0f} s): chosen {chosen} ({report['rule']})")
    for name, entry in report["candidates"].items():
        print(
            f"  {name:7s} steps {entry['steps']:5d} loss {entry['final_loss']:.4f} "
            f"h-sens {entry['h_sensitivity']['mean']:.3f}"
        )

    start = run / "checkpoint"
    if not (start / "state.json").is_file():
        shutil.copytree(runs / "candidates" / chosen / "checkpoint", start)
    cmd = _train_command(args, run, CANDIDATES[chosen], args.minutes, args.eval_samples)
    finish(args, runs, run, cmd, began)


def finish(args: argparse.Namespace, runs: Path, run: Path, cmd: list[str], began: float):
    """Run the training command, report its record, pack."""
    run.mkdir(parents=True, exist_ok=True)
    log = run / f"train-{int(began)}.log"
    with open(log, "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    print(log.read_text()[-2000:])
    if code:
        sys.exit(code)
    record = json.loads((run / "model" / "training.json").read_text())
    print(
        json.dumps(
            {
                k: record.get(k)
                for k in ("steps_done", "final_loss", "sample_quality", "passes_bar")
            },
            indent=1,
        )
    )
    if args.pack:
        pack(runs, Path(args.pack))
    print(f"total {time.time() - began:.0f} s")


def pack(runs: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run = runs / "shapes64"
    with tarfile.open(out / "shapes64.tar", "w") as tar:
        tar.add(run / "model", arcname="model")
        if (runs / "candidates.json").is_file():
            tar.add(runs / "candidates.json", arcname="candidates.json")
        tar.add(run / "checkpoint" / "state.json", arcname="checkpoint/state.json")
        for log in sorted(run.glob("*.log")) + sorted(runs.glob("candidate-*.log")):
            tar.add(log, arcname=f"logs/{log.name}")
    for name in ("unet.safetensors", "ema.safetensors"):
        data = (run / "checkpoint" / name).read_bytes()
        for i in range(0, len(data), PART):
            (out / f"{name}.part{i // PART:02d}").write_bytes(data[i : i + PART])
    for path in sorted(out.iterdir()):
        print(f"packed {path.name} {os.path.getsize(path) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
