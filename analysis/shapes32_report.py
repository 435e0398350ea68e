"""Measure the bundled Shapes model against its bar and calibrate its preset.

    python analysis/shapes32_report.py [--model shapes32] [--out docs/shapes32_report.json]

Prints a Markdown summary and writes every number to ``--out`` (JSON):

1. sample quality (read-out validity, KS per factor, shape frequencies, background range)
   of ``--n-quality`` samples, 50 DDIM steps, eta 0;
2. DDIM inversion (50 steps) of ``--n-invert`` fresh Shapes images and regeneration: PSNR,
   position error and shape agreement of the read-out;
3. the random control engine scored with ``workbench.eval`` in x and in h;
4. wall time of sampling 64 images with 50 steps;
5. preset calibration: E||x_t|| at the x edit timestep and E||h|| over the h window, and
   the steps they imply (x_step = 0.1 E||x_t||, h_step = 0.25 E||h||).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import workbench as wb
from workbench.data.readout import read_factors
from workbench.data.shapes import generate
from workbench.eval import sample_quality, score_directions
from workbench.eval.sensitivity import calibrate
from workbench.options import add_renamed
from workbench.store import write_json


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1], measured on the [0, 1] scale."""
    mse = (((a - b) / 2) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n-quality", type=int, default=512)
    parser.add_argument("--n-invert", type=int, default=64)
    parser.add_argument("--score-seeds", type=int, default=16)
    add_renamed(parser, "--num-steps", "--steps", type=int, default=50)
    parser.add_argument("--out", default="docs/shapes32_report.json")
    args = parser.parse_args()
    model = wb.load(args.model)
    report: dict = {
        "model": args.model,
        "fingerprint": model.fingerprint,
        "threads": torch.get_num_threads(),
    }

    q = sample_quality(model, n=args.n_quality, num_steps=args.num_steps, progress=False)
    report["sample_quality"] = q.to_dict() | {"passes": q.passes()}

    images, _ = generate(args.n_invert, size=model.sample_shape[1], seed=424242)
    x_T = wb.invert(model, images, num_steps=args.num_steps, progress=False)
    recon = wb.sample(model, x_T=x_T, num_steps=args.num_steps, progress=False)
    a, b = read_factors(images), read_factors(recon)
    pos = ((a.factors.x - b.factors.x) ** 2 + (a.factors.y - b.factors.y) ** 2).sqrt()
    report["inversion"] = {
        "n": args.n_invert,
        "steps": args.num_steps,
        "psnr_mean_db": float(psnr(images, recon).mean()),
        "psnr_min_db": float(psnr(images, recon).min()),
        "position_error_mean_px": float(pos.mean()),
        "position_error_max_px": float(pos.max()),
        "shape_identical": float((a.factors.shape == b.factors.shape).float().mean()),
        "recon_valid": float(b.valid.float().mean()),
    }

    seeds = range(1000, 1000 + args.score_seeds)
    report["random_control"] = {}
    for space, form in (("x", "full"), ("h", "channel")):
        ds = wb.discover("random", model, k=4, space=space, form=form, seed=0)
        scores = score_directions(
            model, ds, strengths=[-2, 2], seeds=seeds, num_steps=args.num_steps
        )
        report["random_control"][space] = {
            "table": scores.table(),
            "purity_mean": float(scores.purity.mean()),
            "max_effect_mean": float(scores.effect.max(dim=1).values.mean()),
            "validity_mean": float(scores.validity.mean()),
            "monotonicity_mean": float(scores.monotonicity.mean()),
        }

    wb.sample(model, seeds=range(4), num_steps=2, progress=False)  # warm-up
    start = time.perf_counter()
    wb.sample(model, seeds=range(64), num_steps=50, progress=False)
    report["sampling_64x50_seconds"] = time.perf_counter() - start

    report["calibration"] = calibrate(model, num_steps=args.num_steps)
    write_json(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "random_control"}, indent=2))
    for space, r in report["random_control"].items():
        print(f"\nrandom {space}-space directions (strengths -2, 2; {args.score_seeds} seeds)")
        print(r["table"])


if __name__ == "__main__":
    main()
