"""Which frequencies an edit changes, by the timestep it is made at: the pullback paper's
claim that edits at early (noisy) timesteps change coarse attributes and at late ones
high-frequency detail, measured on the edit difference images.

    python analysis/edit_frequency.py --model shapes32 \
        --out docs/measurements/edit_frequency_shapes32.json

Per edit timestep: the pullback engine's top ``k`` directions there (shared by 4 samples)
and ``k`` random x directions (the control) are each edited at +-``strength`` x steps on
``n_seeds`` seeds (20-step grid); per seed, the mean high-frequency share of the difference
images (``workbench.eval.frequency``: power above a quarter of Nyquist, the mean change
excluded) with a bootstrap 95% interval over seeds, and the RMS change. The trend is the
Spearman correlation of the share with the timestep over all seeds, and the latest minus
the earliest timestep's share, paired by seed, with its bootstrap interval.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import stats

import workbench as wb
from workbench.eval.frequency import CUTOFF, frequency_by_timestep
from workbench.store import write_text


def _interval(values: np.ndarray) -> list[float]:
    """Bootstrap 95% interval of the mean of ``values``."""
    ci = stats.bootstrap((values,), np.mean, n_resamples=4000, random_state=0).confidence_interval
    return [float(ci.low), float(ci.high)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--timesteps", default="880,680,480,280,80")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--strength", type=float, default=2.0, help="in x steps")
    parser.add_argument("--n-seeds", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model, device="cpu")
    timesteps = [int(t) for t in args.timesteps.split(",")]
    seeds = list(range(1000, 1000 + args.n_seeds))  # not the seeds the directions came from
    measured = frequency_by_timestep(
        model, timesteps, seeds, k=args.k, strength=args.strength, num_steps=args.num_steps
    )
    rows, per_t = [], {}
    for t in timesteps:
        for name in ("pullback", "random"):
            shares, rms = measured[name][t]
            shares = shares.numpy()
            per_t[(name, t)] = shares
            rows.append({
                "set": name, "t": t, "hf_share": float(shares.mean()),
                "interval": _interval(shares), "rms_change": rms,
            })  # fmt: skip
            print(
                f"t={t:>4} {name:<9} high-frequency share {shares.mean():.3f} "
                f"[{rows[-1]['interval'][0]:.3f}, {rows[-1]['interval'][1]:.3f}], "
                f"RMS change {rms:.4f}",
                flush=True,
            )
    trend = {}
    for name in ("pullback", "random"):
        ts = np.concatenate([[t] * args.n_seeds for t in timesteps])
        shares = np.concatenate([per_t[(name, t)] for t in timesteps])
        rho, p = stats.spearmanr(ts, shares)
        late_minus_early = per_t[(name, min(timesteps))] - per_t[(name, max(timesteps))]
        trend[name] = {
            "spearman_t_share": float(rho),
            "p_value": float(p),
            "late_minus_early": float(late_minus_early.mean()),
            "interval": _interval(late_minus_early),
        }
        print(
            f"{name}: Spearman(t, share) {rho:+.2f} (p = {p:.2g}); share at t={min(timesteps)} "
            f"minus t={max(timesteps)}: {late_minus_early.mean():+.3f} "
            f"[{trend[name]['interval'][0]:+.3f}, {trend[name]['interval'][1]:+.3f}]"
        )
    if args.out:
        record = {
            "command": "python analysis/edit_frequency.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None
            ),
            "cutoff": CUTOFF, "seeds": seeds, "rows": rows, "trend": trend,
        }  # fmt: skip
        write_text(args.out, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
