"""How far an h shift at one step reaches the final sample, per timestep: a candidate
curve for ``workbench calibrate`` to read the h window from (not adopted: see
docs/findings.md, "Where h reaches the image").

    python analysis/h_effect.py --model shapes64 --n 32 --steps 50 \
        --out docs/measurements/h_effect_shapes64.json
    python analysis/h_effect.py --model shapes64 --n 16 --steps 50 --direction pullback \
        --out docs/measurements/h_effect_shapes64_pullback.json

For each step of the grid, ``n`` trajectories get h shifted at that step only, by
``relative`` ||h|| along a Gaussian direction (one per trajectory and step; 0.25 ||h|| is
one h strength unit), or along the sample's top pullback direction in h at that step
(``--direction pullback``), and are sampled on to the end unedited. Printed per timestep: the
mean relative change of the final sample; then the window a simple rule would read
(from the top down to the lowest timestep with at least half the largest effect) beside
the preset's. Costs ``n`` x steps^2 / 2 network rows.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

import workbench as wb
from workbench.engines.pullback import local_basis
from workbench.sampling import Step, ddim, make_timesteps
from workbench.store import write_json


def h_effect(
    model: wb.DiffusionModel,
    n: int,
    grid: list[int],
    relative: float = 0.25,
    direction: str = "random",
) -> list[float]:
    """The mean relative change of the final sample per step of ``grid`` (module doc);
    ``direction="pullback"`` shifts h along each sample's top left singular vector of
    dh/dx_t at that step (the h direction that x_t moves most) instead of a random one."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        with model.record_h() as seen:
            final, traj = ddim(
                model, model.noise(range(n)), grid, return_trajectory=True, progress=False
            )
        final = final.float().cpu()
        effect = []
        for i in range(len(grid) - 1):
            h = seen[i]
            if direction == "pullback":
                x_t = traj.x[i].to(model.device, model.dtype)
                with torch.enable_grad():
                    v = local_basis(model, x_t, grid[i], k=1, tol_deg=1.0, max_iter=10).U[:, 0]
                v = v.float().cpu()
            else:
                v = torch.randn(h.shape, generator=gen)
            v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            shift = relative * h.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * v
            shift = shift.to(model.device, model.dtype)

            def at_first(step: Step, shift: torch.Tensor = shift) -> None:
                if step.index == 0:
                    step.delta_h = shift

            x = ddim(model, traj.x[i], grid[i:], edit=at_first, progress=False).float().cpu()
            change = (x - final).flatten(1).norm(dim=1) / final.flatten(1).norm(dim=1)
            effect.append(float(change.mean()))
    return effect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--relative", type=float, default=0.25)
    parser.add_argument("--direction", choices=["random", "pullback"], default="random")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    grid = make_timesteps(model, args.steps)
    start = time.perf_counter()
    effect = h_effect(model, args.n, grid, relative=args.relative, direction=args.direction)
    seconds = time.perf_counter() - start
    timesteps = grid[:-1]
    peak = timesteps[max(range(len(effect)), key=effect.__getitem__)]
    strong = [t for t, e in zip(timesteps, effect, strict=True) if e >= max(effect) / 2]
    window = [timesteps[0], min(strong)]
    print(
        f"{args.model}: h shifted by {args.relative} ||h|| along a {args.direction} direction "
        f"at one step, {args.n} samples"
    )
    for t, e in zip(timesteps, effect, strict=True):
        print(f"  t={t:>4}: {e:.4f}")
    print(
        f"largest {max(effect):.4f} at t={peak}; window (half the largest): {window}; "
        f"the preset's {model.preset.h_window}; {seconds:.1f} s"
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
                "window": window,
                "peak": peak,
                "timesteps": timesteps,
                "effect": effect,
                "relative": args.relative,
                "direction": args.direction,
            },
        )


if __name__ == "__main__":
    main()
