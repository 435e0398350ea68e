"""How fast the predicted clean image settles along sampled trajectories: the distance of
the x0 prediction at each grid timestep to the final sample, relative to the sample's own
spread (the quantity a pixel version of Asyrp's editing-interval rule would threshold).

    python analysis/x0_convergence.py --model shapes32 --n 32 --num-steps 50
"""

from __future__ import annotations

import argparse

import workbench as wb
from workbench.options import add_renamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n", type=int, default=32, help="sampled trajectories")
    add_renamed(parser, "--num-steps", "--steps", type=int, default=50)
    parser.add_argument("--every", type=int, default=3, help="print every k-th grid step")
    args = parser.parse_args()
    model = wb.load(args.model)
    grid = wb.make_timesteps(model, args.num_steps)
    predicted = {}

    def keep(step) -> None:  # noqa: ANN001 - a sampling callback
        predicted[step.t] = step.prediction.x0.detach().cpu()

    final = wb.run_chain(
        model, model.noise(range(args.n)), grid, callback=keep, progress=False
    ).cpu()
    spread = (final - final.mean(dim=(1, 2, 3), keepdim=True)).flatten(1).norm(dim=1)
    print(f"preset h window {model.preset.h_window}, x timestep {model.preset.x_timestep}")
    print(f"{'t':>5}{'relative distance (mean)':>26}{'median':>8}")
    for i, t in enumerate(grid[:-1]):
        if i % args.every:
            continue
        rel = (predicted[t] - final).flatten(1).norm(dim=1) / spread
        print(f"{t:>5}{float(rel.mean()):>26.3f}{float(rel.median()):>8.3f}")


if __name__ == "__main__":
    main()
