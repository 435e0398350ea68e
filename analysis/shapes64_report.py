"""Measure ``shapes64`` against its bar: sample quality, and whether h carries the image.

    python analysis/shapes64_report.py [--model shapes64] [--baseline shapes32]
        [--n-quality 512] [--out docs/measurements/shapes64_h_matters.json]

Prints a Markdown summary and writes every number to ``--out`` (JSON):

1. sample quality of ``--n-quality`` samples (50 DDIM steps, eta 0) read out against the
   Lit Shapes generator: validity, KS per continuous factor, shape-class shares
   (``workbench.eval.sample_quality``; bar: valid >= 0.95, KS < 0.1, shares within 5 points);
2. preset calibration (``x_step = 0.1 E||x_t||`` at t = 800, ``h_step = 0.25 E||h||`` over
   the h window), as for shapes32;
3. does h matter, on the model and on ``--baseline`` side by side:
   - h sensitivity (relative change of the predicted x0 when h is shifted by a vector as
     long as h, five timesteps of the h window, 32 noised scene images) for random
     directions and for the top three principal axes of h over those images;
   - the image change (mean absolute difference, grey levels of 255, over 8 seeds) of an
     edit along a random h direction at a strength equal to E||h|| over the h window
     (additive, asymmetric), and along a random x direction at one x_step, four directions
     each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import workbench as wb
from workbench.data.scenes import get_scene
from workbench.eval import sample_quality
from workbench.eval.sensitivity import calibrate, h_sensitivity
from workbench.models.loading import BUNDLED_DIR
from workbench.models.wrapper import DiffusionModel
from workbench.store import write_json


def principal_axes(model: DiffusionModel, n: int = 64, k: int = 3, seed: int = 99) -> torch.Tensor:
    """Top ``k`` principal axes ``[k, C, H, W]`` of h over ``n`` noised scene images at five
    timesteps of the h window."""
    images = get_scene(model.preset.scene).generate(n, size=model.sample_shape[1], seed=seed)[0]
    images = images.to(model.device, model.dtype)
    high, low = model.preset.h_window
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for t in torch.linspace(high, low, 5).round().int().tolist():
            a = model.alpha_bar(t)
            noise = torch.randn(images.shape, generator=gen).to(images)
            rows.append(model.h(a**0.5 * images + (1 - a) ** 0.5 * noise, t).flatten(1))
    h = torch.cat(rows).double()
    _, _, vt = torch.linalg.svd(h - h.mean(0), full_matrices=False)
    return vt[:k].float().reshape(k, *model.h_shape)


def image_change(model: DiffusionModel, space: str, strength: float, seeds: range) -> list[float]:
    """Mean absolute change (grey levels) of edits along four random ``space`` directions."""
    form = {"form": "full"} if space == "h" else {}
    directions = wb.discover("random", model, k=4, space=space, seed=7, **form)
    changes = []
    for i in range(4):
        result = wb.edit(model, directions, i, [0.0, strength], seeds=seeds, progress=False)
        before = DiffusionModel.to_uint8(result.images[0]).float()
        after = DiffusionModel.to_uint8(result.images[1]).float()
        changes.append(float((after - before).abs().mean()))
    return changes


def h_matters(model: DiffusionModel, h_norm: float) -> dict:
    axes = principal_axes(model)
    return {
        "h_sensitivity_random": h_sensitivity(model, n=32).to_dict(),
        "h_sensitivity_pca": [h_sensitivity(model, axis, n=32).mean for axis in axes],
        "mean_norm_h": h_norm,
        "h_strength": h_norm / model.preset.h_step,
        "image_change_random_h": image_change(model, "h", h_norm / model.preset.h_step, range(8)),
        "image_change_random_x": image_change(model, "x", 1.0, range(8)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--baseline", default="shapes32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--n-quality",
        type=int,
        default=512,
        help="samples for the quality report; 0: the one in the model's training.json",
    )
    parser.add_argument("--out", default="docs/measurements/shapes64_h_matters.json")
    args = parser.parse_args()
    began = time.time()
    model = wb.load(args.model, device=args.device)
    report: dict = {"model": args.model, "fingerprint": model.fingerprint, "device": args.device}
    if args.n_quality:
        quality = sample_quality(model, n=args.n_quality, num_steps=50, progress=False)
        report["sample_quality"] = quality.to_dict()
        report["passes_bar"] = quality.passes()
    elif (BUNDLED_DIR / args.model / "training.json").is_file():
        record = json.loads((BUNDLED_DIR / args.model / "training.json").read_text())
        if "sample_quality" in record:  # measured at export, by the same function
            report["sample_quality"] = record["sample_quality"]
            report["sample_quality_source"] = "training.json (measured at export)"
            report["passes_bar"] = record["passes_bar"]
    report["calibration"] = calibrate(model)
    report["h_matters"] = {args.model: h_matters(model, report["calibration"]["mean_norm_h"])}
    if args.baseline:
        base = wb.load(args.baseline, device=args.device)
        report["h_matters"][args.baseline] = h_matters(base, calibrate(base)["mean_norm_h"])
    report["seconds"] = time.time() - began
    write_json(args.out, report)

    if "sample_quality" in report:
        q = report["sample_quality"]
        verdict = "passes" if report["passes_bar"] else "does not pass"
        print(f"## {args.model}: sample quality ({q['n']} samples; {verdict} the bar)")
        print(
            f"valid {q['valid_rate']:.3f}; KS "
            + ", ".join(f"{k} {v:.3f}" for k, v in q["ks"].items())
        )
        print("shape shares " + ", ".join(f"{f:.3f}" for f in q["shape_freq"]))
    c = report["calibration"]
    print(f"\ncalibration: x_step {c['suggested_x_step']}, h_step {c['suggested_h_step']}")
    print("\n| model | h-sens random | h-sens PCA 1-3 | random h at E‖h‖ | random x at x_step |")
    print("| --- | --- | --- | --- | --- |")
    for name, m in report["h_matters"].items():
        pca = ", ".join(f"{v:.3f}" for v in m["h_sensitivity_pca"])
        dh, dx = m["image_change_random_h"], m["image_change_random_x"]
        print(
            f"| {name} | {m['h_sensitivity_random']['mean']:.3f} | {pca} | "
            f"{statistics.mean(dh):.2f} ({min(dh):.2f}-{max(dh):.2f}) | "
            f"{statistics.mean(dx):.2f} ({min(dx):.2f}-{max(dx):.2f}) |"
        )
    print(f"\n{report['seconds']:.0f} s; numbers in {args.out}")


if __name__ == "__main__":
    main()
