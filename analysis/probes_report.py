"""Run every geometry probe on a model with default settings; time them; keep the figures.

    python analysis/probes_report.py [--model shapes32] [--figures runs/probes]
        [--out docs/probes_report.json]

Each probe (``norm``, ``curvedness`` with linear and with slerp interpolation,
``spectrum``, ``consistency``, ``umap``) runs once with its defaults; its seconds (wall
clock, the machine's threads), its summary and its numbers go to ``--out`` (JSON), its
figure and data to ``--figures/NAME/`` (HTML + JSON, through ``ProbeResult.save``).
``docs/findings.md`` reads its numbers from this file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import workbench as wb
from workbench.probes import get_probe
from workbench.store import write_json

RUNS = (
    ("norm", "norm", {}),
    ("curvedness", "curvedness", {}),
    ("curvedness-slerp", "curvedness", {"interpolation": "slerp"}),
    ("spectrum", "spectrum", {}),
    ("consistency", "consistency", {}),
    ("umap", "umap", {}),
)


def numbers(result) -> dict:
    """The per-timestep medians that findings.md quotes."""
    name = result.name
    if name == "norm":
        return {
            "timesteps": result.timesteps,
            "sampled_median": result.sampled.median(dim=1).values.tolist(),
            "inverted_median": result.inverted.median(dim=1).values.tolist(),
            "expected": result.expected,
            "ks": result.ks,
            "mixing_step": result.mixing_step,
            "x_T_norm_over_sqrt_d": [
                float(result.sampled[-1].min()),
                float(result.sampled[-1].max()),
            ],
        }
    if name == "curvedness":
        return {
            "timesteps": result.timesteps,
            "ratio_median": result.ratio.median(dim=1).values.tolist(),
            "ratio_max": result.ratio.max(dim=1).values.tolist(),
            "angle_median": result.angle.median(dim=1).values.tolist(),
        }
    if name == "spectrum":
        med = lambda v: v.median(dim=1).values.tolist()  # noqa: E731
        return {
            "timesteps": result.timesteps,
            "s1_median": med(result.s[..., 0]),
            "s_normalised_median": (result.s / result.s[..., :1]).median(dim=1).values.tolist(),
            "energy_top_k": med(result.energy_top_k),
            "stable_rank": med(result.stable_rank),
            "exponent": med(result.exponent),
            "frobenius_relative_se": med(result.frobenius_se / result.frobenius_sq),
            "converged": result.converged,
        }
    if name == "consistency":
        across = result.off_diagonal_mean(result.across_samples)
        return {
            "timesteps": result.timesteps,
            "across_samples_cos2": across.tolist(),
            "across_time_cos2": result.across_time.mean(0).tolist(),
            "alignment_diagonal": result.alignment.diagonal(dim1=1, dim2=2).mean(-1).tolist(),
            "alignment_offdiagonal": result.off_diagonal_mean(result.alignment).tolist(),
            "random_cos2": result.random_cos2,
        }
    if name == "umap":
        return {
            "points": int(result.embedding.shape[0]),
            "timesteps": sorted(set(result.timestep.tolist()), reverse=True),
            "timestep_agreement": result.timestep_agreement,
            "factor_agreement": {
                f: {str(t): v for t, v in per_t.items()}
                for f, per_t in result.factor_agreement.items()
            },
        }
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figures", default="runs/probes")
    parser.add_argument("--out", default="docs/probes_report.json")
    parser.add_argument("--only", default=None, help="comma-separated run names")
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    report: dict = {"model": args.model, "fingerprint": model.fingerprint, "runs": {}}
    only = set(args.only.split(",")) if args.only else None
    if only and Path(args.out).exists():  # update the other runs' entries in place
        previous = json.loads(Path(args.out).read_text())
        if previous.get("fingerprint") == model.fingerprint:
            report["runs"] = previous.get("runs", {})
    for label, probe, options in RUNS:
        if only and label not in only:
            continue
        began = time.perf_counter()
        result = get_probe(probe)(model, **options)
        seconds = time.perf_counter() - began
        result.save(f"{args.figures}/{label}")
        summary = result.summary() if hasattr(result, "summary") else ""
        report["runs"][label] = {"seconds": seconds, "summary": summary, **numbers(result)}
        print(f"\n== {label}: {seconds:.1f} s ==\n{summary}", flush=True)
        write_json(args.out, report)
    print(f"\nwrote {args.out}; figures under {args.figures}/")


if __name__ == "__main__":
    main()
