"""Pullback directions on the Shapes model, scored against the ground-truth factors.

    python analysis/pullback_science.py [--model shapes32] [--timesteps 880,580] [--n-seeds 16]

At each timestep (early/coarse first), three sets of 8 x-space directions are edited with
the ``additive`` mode (x_t + strength * x_step * v, then DDIM to 0) on the same seeds and
scored by ``workbench.eval.score_directions``:

- ``local``: each sample's own pullback basis (``local_directions``: direction i of seed j
  edits seed j), as the published method uses them;
- ``global``: the directions shared by the seeds' bases (``discover pullback --samples``);
- ``random``: Gaussian directions of the same norm (the control).

Printed per timestep: the effect table of each set, then the bar of issue 5: the ratio
of the dominant-factor effect of the top pullback directions to that of the random ones
(mean over the 8 directions, and over the top 1 and top 4), the validity of the edited
images, and the monotonicity (per seed) and trend (of the mean change) of the top
direction. The ratios are given for the slope pooled over all strengths and for each
|strength| on its own (``by_level``): the shape class, which most directions move, can
flip only once, so at large strengths every direction saturates and the pooled ratio
shrinks toward 1. Every number goes to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import workbench as wb
from workbench.engines.pullback import local_directions
from workbench.eval import score_directions
from workbench.options import add_renamed
from workbench.store import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--timesteps", default=None, help="default: the preset's")
    add_renamed(parser, "--n-seeds", "--seeds", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--strengths", default="-2,-1,-0.5,0.5,1,2")
    parser.add_argument("--mode", default="additive")
    parser.add_argument("--out", default="docs/pullback_science.json")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    timesteps = (
        [int(t) for t in args.timesteps.split(",")]
        if args.timesteps
        else list(model.preset.pullback_timesteps)
    )
    seeds = list(range(2000, 2000 + args.n_seeds))
    strengths = [float(s) for s in args.strengths.split(",")]
    report: dict = {
        "model": args.model,
        "fingerprint": model.fingerprint,
        "seeds": [seeds[0], seeds[-1]],
        "strengths": strengths,
        "x_step": model.preset.x_step,
        "mode": args.mode,
        "timesteps": {},
    }
    for t in timesteps:
        began = time.perf_counter()
        local = local_directions(model, seeds, k=args.k, timestep=t, tol_deg=0.5)
        shared = wb.discover(
            "pullback", model, k=args.k, timestep=t, seed=seeds[0], samples=len(seeds), tol_deg=0.5
        )
        control = wb.discover("random", model, k=args.k, space="x", timestep=t, seed=7)
        basis_seconds = time.perf_counter() - began
        kw = dict(strengths=strengths, seeds=seeds, mode=args.mode, progress=False)
        sets = {
            "local": score_directions(model, local, **kw),
            "global": score_directions(model, shared, **kw),
            "random": score_directions(model, control, **kw),
        }
        rand = sets["random"].effect.max(dim=1).values.mean()
        rand_levels = sets["random"].effect_by_level.max(dim=2).values.mean(dim=0)  # [L]
        row = {name: s.to_dict() for name, s in sets.items()}
        row["basis_seconds"] = basis_seconds
        row["seconds"] = time.perf_counter() - began
        row["singular_values_mean"] = torch.stack([ds.scores for ds in local]).mean(0).tolist()
        row["basis_converged"] = all(ds.params["converged"] for ds in local)
        for name in ("local", "global"):
            s = sets[name]
            dominant = s.effect.max(dim=1).values
            row[name]["bar"] = {
                "effect_ratio_vs_random": float(dominant.mean() / rand),
                "effect_ratio_top1": float(dominant[0] / rand),
                "effect_ratio_top4": float(dominant[:4].mean() / rand),
                "validity_mean": float(s.validity.mean()),
                "validity_min": float(s.validity.min()),
                "top_monotonicity": float(s.monotonicity[0]),
                "top_trend": float(s.trend[0]),
                "by_level": [],
            }
            levels = s.effect_by_level.max(dim=2).values  # [k, L]
            for j, level in enumerate(s.levels):
                row[name]["bar"]["by_level"].append(
                    {
                        "strength": level,
                        "effect_ratio_vs_random": float(levels[:, j].mean() / rand_levels[j]),
                        "effect_ratio_top1": float(levels[0, j] / rand_levels[j]),
                        "effect_ratio_top4": float(levels[:4, j].mean() / rand_levels[j]),
                        "validity_mean": float(s.validity_by_level[:, j].mean()),
                        "validity_min": float(s.validity_by_level[:, j].min()),
                    }
                )
        report["timesteps"][str(t)] = row
        print(f"\n== t = {t} ({row['seconds']:.0f} s; bases {basis_seconds:.0f} s) ==")
        for name, s in sets.items():
            print(f"\n{name} directions ({len(seeds)} seeds, strengths {strengths})")
            print(s.table())
        for name in ("local", "global"):
            bar = row[name]["bar"]
            print(f"{name}: " + json.dumps({k: v for k, v in bar.items() if k != "by_level"}))
            print("  |strength|  ratio top8  top4  top1  valid mean (min)")
            for lv in bar["by_level"]:
                print(
                    f"  {lv['strength']:>10.2f}  {lv['effect_ratio_vs_random']:>10.2f}"
                    f"  {lv['effect_ratio_top4']:>4.2f}  {lv['effect_ratio_top1']:>4.2f}"
                    f"  {lv['validity_mean']:.2f} ({lv['validity_min']:.2f})"
                )
        write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
