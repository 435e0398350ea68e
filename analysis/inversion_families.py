"""Inversion then sampling on the transformer families: how well the latent comes back.

    python analysis/inversion_families.py --out docs/measurements/inversion_dit_sd3_tiny.json

On the tests' tiny DiT (DDIM, learned sigma, class label) and tiny SD3 (MMDiT, flow
matching, the Euler step run backwards; a prompt): latents sampled from ``--seeds`` with
``--sample-steps`` steps (guidance 1, so the inversion and the sampling see the same
network), inverted to the top of the chain and sampled back on the same grid of N steps,
for N in ``--steps``, with plain inversion (one network call per step) and fixed-point
inversion (each step solved until sampling it back lands on its input). Reported: the
relative error ||x0' - x0|| / ||x0|| of the latent (mean and max over the seeds) and the
seconds. Random tiny weights: the numbers show how the error scales with the grid and
the method, not what a trained model gives.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import workbench as wb
from workbench.options import add_renamed
from workbench.sampling import make_timesteps, refinements, run_chain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_dit  # noqa: E402  (the tiny configs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="4,5,6,7")
    parser.add_argument("--sample-steps", type=int, default=10)
    add_renamed(parser, "--num-steps", "--steps", default="10,20,40,80")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    grids = [int(n) for n in args.num_steps.split(",")]
    result: dict = {"command": "python " + " ".join(sys.argv), "seeds": seeds, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        families = {
            "dit": (tiny_dit.build_dit, {"class_label": 3}),
            "sd3": (tiny_dit.build_sd3, {"prompt": "a red square"}),
        }
        for name, (build, condition) in families.items():
            build(Path(tmp) / name)
            model = wb.load(str(Path(tmp) / name), device="cpu")
            rows = []
            with model.conditioned(guidance_scale=1.0, **condition):
                x0 = wb.sample(model, seeds=seeds, num_steps=args.sample_steps, decode=False)
                for n in grids:
                    grid = make_timesteps(model, n)
                    for method in ("ddim", "fixed-point"):
                        began = time.perf_counter()
                        x_T = run_chain(model, x0, grid[::-1], refine=refinements(method))
                        seconds = time.perf_counter() - began
                        again = run_chain(model, x_T, grid)
                        err = (again - x0).flatten(1).norm(dim=1) / x0.flatten(1).norm(dim=1)
                        rows.append(
                            {
                                "steps": n,
                                "method": method,
                                "rel_error_mean": float(err.mean()),
                                "rel_error_max": float(err.max()),
                                "invert_seconds": seconds,
                            }
                        )
                        print(
                            f"{name} {n:3d} steps {method:11s} error {err.mean():.2e} "
                            f"(max {err.max():.2e}) {seconds:.2f} s"
                        )
            result["models"][name] = {"family": model.family, "rows": rows}
    if args.out:
        from workbench.store import write_json

        write_json(args.out, result)


if __name__ == "__main__":
    main()
