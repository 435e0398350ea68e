"""``workbench demo``: every available engine and probe on one model, into one report."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

import workbench.settings as settings
from workbench.editing import edit
from workbench.engines import ENGINES
from workbench.eval.judge import ImageScores, judge_edit
from workbench.models.wrapper import DiffusionModel
from workbench.probes import PROBES
from workbench.sampling import sample
from workbench.store import atomic_dir
from workbench.viz.figures import score_bars
from workbench.viz.images import edit_grid, image_grid, save_png
from workbench.viz.report import Report

#: What the demo runs per engine: (label, discovery options, edit options). ``k`` in the
#: discovery options overrides the demo's ``k``; ``strengths`` and ``mode`` in the edit
#: options override :data:`STRENGTHS` and the additive mode. Engines added later extend
#: this table.
DEMO_DISCOVERIES: dict[str, list[tuple[str, dict, dict]]] = {
    "attention": [
        ("attention-qk", {"matrix": "qk"}, {}),
        ("attention-ov", {"matrix": "ov"}, {}),
    ],
    "boundary": [
        (
            "boundary-large",
            # the h boundary at the preset's mixing step, reached through x_t and denoised
            # with eta 1 as published: the edit that meets the bar on shapes32
            # (docs/boundary.md); strengths are signed h distances in h_step units
            {"k": 1, "attribute": "large", "space": "h", "images": 128, "num_steps": 20},
            {
                "mode": "distance",
                "via_x": True,
                "eta": 1.0,
                "strengths": [-0.3, -0.15, 0.0, 0.15, 0.3],
            },
        )
    ],
    "local": [("local-centre", {}, {})],  # LOCO-Edit in the centre of the image
    "pullback": [("pullback", {"max_iter": 20}, {})],
    "pca": [("pca-channel", {"form": "channel", "n": 64}, {})],
    "random": [
        ("random-x", {"space": "x"}, {}),
        ("random-h", {"space": "h", "form": "channel"}, {}),
    ],
}
STRENGTHS = [-3.0, -1.5, 0.0, 1.5, 3.0]
#: Options per probe in the demo (lighter than the probes' defaults, to keep it short);
#: probes not listed run with their defaults.
DEMO_PROBES: dict[str, dict] = {
    "curvedness": {"n": 8, "timesteps": (999, 600, 200)},
    "spectrum": {"n": 2, "timesteps": (999, 600, 200), "max_iter": 10},
    "consistency": {"n": 3, "timesteps": (999, 600, 200), "max_iter": 10},
    "umap": {"n": 32},
}
#: Toy sizes for ``run_demo(..., quick=True)``.
QUICK_PROBES: dict[str, dict] = {
    "curvedness": {"n": 2, "timesteps": (999, 200), "points": 4},
    "spectrum": {"n": 1, "timesteps": (999, 200), "k": 4, "probes": 8, "max_iter": 3},
    "consistency": {"n": 2, "timesteps": (999, 200), "k": 4, "max_iter": 3},
    "umap": {"n": 8, "umap_neighbors": 5, "neighbours_count": 3},
    "norm": {"n": 4},
    "mixing-step": {"n": 8},
}


def run_demo(
    model: DiffusionModel,
    out: str | Path,
    n_seeds: int = 6,
    num_steps: int | None = None,
    k: int = 3,
    quick: bool = False,
) -> Path:
    """Write ``report.html``, PNG grids and direction files into ``out`` (atomically).

    ``quick`` runs the probes and the boundary fit at toy sizes (:data:`QUICK_PROBES`),
    for tests of the report itself."""
    out = Path(out)
    seeds = list(range(n_seeds))
    report = Report(f"workbench demo: {model.name}")
    report.text(repr(model) + f"; fingerprint {model.fingerprint}")
    with atomic_dir(out) as tmp:
        samples = sample(model, seeds=range(16), num_steps=num_steps)
        grid = image_grid(model.to_uint8(samples).reshape(2, 8, *samples.shape[2:], 3), upscale=3)
        save_png(tmp / "samples.png", grid)
        report.heading("Samples")
        report.image(grid, "16 samples, seeds 0-15")

        jobs = [
            (e, label, opts, edit_opts)
            for e, items in DEMO_DISCOVERIES.items()
            if e in ENGINES
            for label, opts, edit_opts in items
        ]
        for engine, label, options, edit_options in tqdm(
            jobs, desc="engines", disable=not settings.progress
        ):
            options = dict(options)
            if quick and "images" in options:
                options["images"] = min(options["images"], 32)
            directions = ENGINES[engine].discover(model, k=options.pop("k", k), **options)
            directions.save(tmp / f"{label}.safetensors")
            edit_options = dict(edit_options)
            strengths = edit_options.pop("strengths", STRENGTHS)
            mode = edit_options.pop("mode", "additive")
            report.heading(f"Engine: {label}")
            report.text(
                f"{len(directions)} {directions.space}-space directions at timestep "
                f"{directions.timestep}; rows: seeds {seeds[0]}-{seeds[-1]}, "
                f"columns: strengths {strengths} ({mode} mode"
                + "".join(f", {k}={v}" for k, v in edit_options.items())
                + ")"
            )
            if directions.scores is not None:
                report.figure(score_bars(directions))
            grids, judged = [], []
            for index in range(len(directions)):
                result = edit(
                    model,
                    directions,
                    index,
                    strengths,
                    seeds=seeds,
                    num_steps=num_steps,
                    mode=mode,
                    # the reference of the scores: the strength-0 row of an additive edit
                    unedited=mode != "additive" or 0.0 not in strengths,
                    **edit_options,
                )
                judged.append(judge_edit(result))
                grid = edit_grid(result, upscale=3)
                save_png(tmp / f"{label}-{index}.png", grid)
                grids.append(grid)
            names = [directions.name(i) for i in range(len(directions))]
            scores = ImageScores.from_rows(names, strengths, judged, len(seeds))
            report.text(
                "Judged without ground truth on these edits: effect = RMS image change per "
                "unit strength (intensities 0-1), locality = share of the change in the 10% "
                "of pixels that change most, consistency = correlation of the change across "
                "seeds."
            )
            report.html(scores.html())
            for index, grid in enumerate(grids):
                report.image(grid, f"{names[index]}: {scores.caption(index)}")

        for name, probe in tqdm(
            sorted(PROBES.items()), desc="probes", disable=not settings.progress
        ):
            options = dict((QUICK_PROBES if quick else DEMO_PROBES).get(name, {}))
            if num_steps:
                options["num_steps"] = num_steps
            result = probe(model, **options)
            result.save(tmp / "probes")
            report.heading(f"Probe: {name}")
            report.figure(result.figure())
        report.save(tmp / "report.html")
    return out / "report.html"
