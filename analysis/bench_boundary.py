"""Time the boundary engine against plain sampling: ``python analysis/bench_boundary.py``.

Cases, side by side in one run on the same model (``docs/boundary.md`` has the table):

- plain DDIM sampling of ``--n`` images from T with ``--steps`` steps (the baseline);
- the mixing-step search (``find_mixing_step``: ``--search-n`` sampled and as many
  inverted trajectories over the whole chain);
- the boundary fit at ``--t``: DDIM inversion of ``--images`` labelled images to ``t``,
  then the linear SVM on h (and, separately, the SVM alone on already inverted latents);
- one edit of ``--n`` latents at ``t`` to two signed distances, denoised to 0: in x_t, in
  h (one step), and the h distance reached through x_t (``via_x``).

The last column is the baseline's time over the case's, so 0.25x means four times the
time of sampling ``--n`` images. Single runs for the slow cases (``--repeats`` for the rest).
"""

from __future__ import annotations

import argparse

import torch

import workbench as wb
from workbench.bench import BenchReport, timed
from workbench.data.readout import read_factors
from workbench.data.shapes import generate
from workbench.engines.boundary import fit_boundary, shapes_labels
from workbench.options import add_renamed
from workbench.probes.mixing import find_mixing_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n", type=int, default=64, help="images sampled / edited")
    add_renamed(
        parser,
        "--num-steps",
        "--steps",
        type=int,
        default=50,
        help="DDIM steps over the whole chain",
    )
    parser.add_argument("--search-n", type=int, default=128)
    parser.add_argument("--images", type=int, default=200, help="labelled images for the fit")
    parser.add_argument("--t", type=int, default=59, help="boundary timestep")
    parser.add_argument("--attribute", default="large")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = wb.load(args.model)
    report = BenchReport(
        f"boundary engine vs sampling, {model!r}",
        info={
            "device": str(model.device),
            "threads": str(torch.get_num_threads()),
            "steps": str(args.num_steps),
            "t": str(args.t),
        },
    )
    images, _ = generate(2 * args.images, size=model.sample_shape[1], seed=31337)
    images = images[read_factors(images).valid][: args.images]
    labels, _ = shapes_labels(images, args.attribute)
    grid_steps = max(1, (args.t + 1) * args.num_steps // model.num_train_timesteps)

    baseline = f"sample {args.n} images ({args.num_steps} steps)"
    report.add(
        baseline,
        timed(
            lambda: wb.sample(model, seeds=range(args.n), num_steps=args.num_steps, progress=False),
            args.repeats,
        ),
    )
    report.add(
        f"mixing-step search (n = {args.search_n})",
        timed(
            lambda: find_mixing_step(
                model, n=args.search_n, num_steps=args.num_steps, progress=False
            ),
            1,
            warmup=0,
        ),
    )
    fit = None

    def fit_with_inversion():
        nonlocal fit
        fit = fit_boundary(
            model,
            images,
            labels,
            t=args.t,
            space="both",
            num_steps=grid_steps,
            attribute=args.attribute,
            progress=False,
        )

    report.add(
        f"fit at t={args.t}: invert {args.images} + SVMs x, h",
        timed(fit_with_inversion, 1, warmup=0),
    )
    assert fit is not None and fit.x is not None and fit.h is not None
    latents = wb.invert(model, images, num_steps=grid_steps, t_stop=args.t, progress=False)
    report.add(
        f"SVM on h only ({args.images} latents)",
        timed(
            lambda: fit_boundary(
                model, images, labels, t=args.t, space="h", latents=latents, seed=1
            ),
            args.repeats,
        ),
    )
    held = latents[fit.test_index[: args.n]]
    for name, directions, options in [
        ("x_t", fit.x, {}),
        ("h (one step)", fit.h, {}),
        ("h via x_t", fit.h, {"via_x": True}),
    ]:
        report.add(
            f"edit {held.shape[0]} x 2 distances: {name}",
            timed(
                lambda d=directions, o=options: wb.edit(
                    model,
                    d,
                    0,
                    [-0.3, 0.3],
                    x=held,
                    t_start=args.t,
                    num_steps=grid_steps,
                    mode="distance",
                    progress=False,
                    **o,
                ),
                args.repeats,
            ),
        )
    print(report.table(baseline=baseline))


if __name__ == "__main__":
    main()
