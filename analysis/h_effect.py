"""How far an h shift at one step reaches the final sample, per timestep: the curve that
``workbench calibrate`` reads the h window from (``workbench.eval.sensitivity.h_reach``;
docs/findings.md, "Where h reaches the image").

    python analysis/h_effect.py --model shapes64 --n 32 --num-steps 50 \
        --out docs/measurements/h_effect_shapes64.json
    python analysis/h_effect.py --model shapes64 --n 16 --num-steps 50 --direction pullback \
        --out docs/measurements/h_effect_shapes64_pullback.json

For each step of the grid, ``n`` trajectories get h shifted at that step only, by
``relative`` ||h|| along a Gaussian direction (one per trajectory and step; 0.25 ||h|| is
one h strength unit), or along the sample's top pullback direction in h at that step
(``--direction pullback``), and are sampled on to the end unedited. Printed per timestep: the
mean relative change of the final sample; then the window calibrate reads (from the top
down to the curve's mid-chain peak; ``workbench.eval.sensitivity.reach_window``) beside
the preset's. Costs ``n`` x steps^2 / 2 network rows. (The JSON files of earlier runs hold
the window of an earlier rule, down to half the largest value; their curves are the same.)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

import workbench as wb
from workbench.eval.sensitivity import h_reach, reach_window
from workbench.options import add_renamed
from workbench.store import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n", type=int, default=32)
    add_renamed(parser, "--num-steps", "--steps", type=int, default=50)
    parser.add_argument("--relative", type=float, default=0.25)
    parser.add_argument("--direction", choices=["random", "pullback"], default="random")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    start = time.perf_counter()
    curve = h_reach(
        model, n=args.n, num_steps=args.num_steps, relative=args.relative, direction=args.direction
    )
    seconds = time.perf_counter() - start
    timesteps, effect = curve.timesteps, curve.effect
    read = reach_window(timesteps, effect, model.schedule.top)
    print(
        f"{args.model}: h shifted by {args.relative} ||h|| along a {args.direction} direction "
        f"at one step, {args.n} samples"
    )
    for t, e in zip(timesteps, effect, strict=True):
        print(f"  t={t:>4}: {e:.4f}")
    print(
        f"mid-chain peak {read.largest:.4f} at t={read.peak}, at least half of it down to "
        f"t={read.half}; read by calibrate: window {read.window or 'none (h is mute)'}, "
        f"pullback timesteps {read.pullback}; the preset's {model.preset.h_window}, "
        f"{model.preset.pullback_timesteps}; {seconds:.1f} s"
    )
    if args.out:
        write_json(
            args.out,
            {
                "command": "python analysis/h_effect.py " + shlex.join(sys.argv[1:]),
                "device": str(model.device),
                "torch": torch.__version__,
                "seconds": seconds,
                "preset_h_window": list(model.preset.h_window),
                "window": list(read.window) if read.window else None,
                "peak": read.peak,
                "largest": read.largest,
                "half": read.half,
                "pullback_timesteps": list(read.pullback) if read.pullback else None,
                "timesteps": timesteps,
                "effect": effect,
                "relative": args.relative,
                "direction": args.direction,
            },
        )


if __name__ == "__main__":
    main()
