"""Every attention variant, the h-space PCA baseline and random h-directions, scored on Shapes.

    python analysis/attention_science.py [--model shapes32] [--device cpu] [--seeds 16]
        [--strengths -16,-8,8,16] [--out docs/attention_science.json]

Direction sets (8 each, unit norm, so equal strengths are equal norms of the h edit):

- ``attn-q`` ... ``attn-ov``: the six candidate matrices of the mid-block self-attention,
  all heads (``workbench.engines.attention``), channel directions ``[C]``;
- ``pca-channel`` / ``pca-full``: PCA of h over ``--pca-n`` sampled trajectories in the
  preset's h window (``workbench.engines.pca``);
- ``random-channel`` / ``random-full``: Gaussian directions (the control of equal norm).

Each set is edited with the ``additive`` mode over the preset's h window (asymmetric
reverse step), strengths in units of the preset's ``h_step``, and scored by
``workbench.eval.score_directions``. One row per set: best purity over its directions,
how many distinct factors its directions control (dominant effect at least twice the
random control's mean), the mean dominant effect and its ratio to the random set of the
same form, validity, trend and per-seed monotonicity of the top direction, the wall time
to discover the set and to edit one image (one strength, ``--steps`` DDIM steps).

Also measured, because it decides what any h-space engine can do on a model: the
**h sensitivity**, the relative change of the predicted x0 when h is shifted by a vector
as long as h itself (top direction of each set; Shapes images noised to timesteps in the
h window). Every number goes to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import time

import torch

import workbench as wb
from workbench.bench import timed
from workbench.data.shapes import generate
from workbench.directions import DirectionSet
from workbench.engines.attention import MATRICES, attention_directions
from workbench.eval import score_directions
from workbench.models.wrapper import DiffusionModel
from workbench.store import write_json


def h_sensitivity(
    model: DiffusionModel, directions: DirectionSet, index: int = 0, n: int = 16
) -> float:
    """Mean ||x0(h + |h| v) - x0(h)|| / ||x0(h)|| over ``n`` noised Shapes images at five
    timesteps of the preset's h window (``v``: direction ``index``, unit norm)."""
    images, _ = generate(n, size=model.sample_shape[1], seed=123)
    images = images.to(model.device, model.dtype)
    high, low = model.preset.h_window
    v = directions.vector(index, model).to(model.device, model.dtype)
    gen = torch.Generator().manual_seed(5)
    ratios = []
    with torch.no_grad():
        for t in torch.linspace(high, low, 5).round().int().tolist():
            a = model.alpha_bar(t)
            noise = torch.randn(images.shape, generator=gen).to(images)
            x_t = a**0.5 * images + (1 - a) ** 0.5 * noise
            h_norm = model.h(x_t, t).flatten(1).norm(dim=1)[:, None, None, None]
            before = model.predict(x_t, t).x0
            after = model.predict(x_t, t, h_norm * v).x0
            change = (after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1)
            ratios.append(change)
    return float(torch.cat(ratios).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--strengths", default="-16,-8,8,16", help="in units of h_step")
    parser.add_argument("--pca-n", type=int, default=128, help="trajectories for PCA")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (preset's)")
    parser.add_argument("--out", default="docs/attention_science.json")
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    seeds = list(range(3000, 3000 + args.seeds))
    strengths = [float(s) for s in args.strengths.split(",")]
    makers = {
        f"attn-{m}": (lambda m=m: attention_directions(model, k=args.k, matrix=m)) for m in MATRICES
    }
    for form in ("channel", "full"):
        makers[f"pca-{form}"] = lambda form=form: wb.discover(
            "pca",
            model,
            k=args.k,
            n=args.pca_n,
            form=form,
            seed=1000,
            steps=args.steps,
            progress=False,
        )
        makers[f"random-{form}"] = lambda form=form: wb.discover(
            "random", model, k=args.k, space="h", form=form, seed=7
        )
    report: dict = {
        "model": args.model,
        "fingerprint": model.fingerprint,
        "device": str(model.device),
        "seeds": [seeds[0], seeds[-1]],
        "strengths": strengths,
        "h_step": model.preset.h_step,
        "h_window": list(model.preset.h_window),
        "num_steps": args.steps or model.preset.num_inference_steps,
        "sets": {},
    }
    scored = {}
    for name, make in makers.items():
        began = time.perf_counter()
        ds = make()
        discover_s = time.perf_counter() - began
        edit_s = timed(
            lambda ds=ds: wb.edit(
                model, ds, 0, [1.0], seeds=[0], num_steps=args.steps, progress=False
            ),
            3,
        )
        scores = score_directions(
            model, ds, strengths=strengths, seeds=seeds, num_steps=args.steps, progress=False
        )
        scored[name] = scores
        report["sets"][name] = scores.to_dict() | {
            "discover_seconds": discover_s,
            "edit_seconds_per_image": sorted(edit_s)[len(edit_s) // 2],
            "h_sensitivity_top": h_sensitivity(model, ds),
            "params": {k: v for k, v in ds.params.items() if k != "timesteps"},
        }
        print(f"\n== {name} (discover {discover_s:.2f} s) ==\n{scores.table()}", flush=True)
        write_json(args.out, report)

    rows = []
    for name, scores in scored.items():
        form = "full" if name.endswith("-full") else "channel"
        control = scored[f"random-{form}"].effect.max(dim=1).values.mean()
        noise_floor = 2 * control
        dominant = scores.effect.max(dim=1).values
        controlled = {f for f, e in zip(scores.dominant, dominant, strict=True) if e >= noise_floor}
        entry = report["sets"][name]
        entry["summary"] = {
            "best_purity": float(scores.purity.max()),
            "distinct_dominant": len(set(scores.dominant)),
            "factors_controlled": sorted(controlled),
            "mean_effect": float(dominant.mean()),
            "top_effect": float(dominant[0]),
            "effect_ratio_vs_random": float(dominant.mean() / control),
            "validity": float(scores.validity.mean()),
            "top_trend": float(scores.trend[0]),
            "top_monotonicity": float(scores.monotonicity[0]),
        }
        rows.append((name, entry))
    head = (
        f"{'set':<16}{'purity':>7}{'factors':>8}{'effect':>9}{'x rand':>8}{'valid':>7}"
        f"{'trend':>7}{'mono':>6}{'h-sens':>8}{'discover s':>11}{'edit s':>8}"
    )
    lines = [head]
    for name, entry in rows:
        s = entry["summary"]
        lines.append(
            f"{name:<16}{s['best_purity']:>7.2f}{len(s['factors_controlled']):>8d}"
            f"{s['mean_effect']:>9.4f}{s['effect_ratio_vs_random']:>8.2f}{s['validity']:>7.2f}"
            f"{s['top_trend']:>7.2f}{s['top_monotonicity']:>6.2f}"
            f"{entry['h_sensitivity_top']:>8.3f}{entry['discover_seconds']:>11.3f}"
            f"{entry['edit_seconds_per_image']:>8.3f}"
        )
    report["table"] = "\n".join(lines)
    write_json(args.out, report)
    print("\n" + report["table"])
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
