"""``workbench demo``: every available engine and probe on one model, into one report.

The demo shares its work instead of repeating it:

- one :class:`~workbench.trajectories.TrajectoryBank` (sampled trajectories with h recorded,
  and real images inverted, on one grid) serves the samples shown, the PCA engine and the
  norm, mixing-step and UMAP probes, and the unedited trunks and samples of every edit; it is
  cached on disk by model fingerprint, grid and seeds, so a second run samples none of it;
- every direction of a set is edited at every strength in one batched pass
  (:func:`~workbench.editing.edit_set`), the strength-0 column being the bank's unedited
  sample.

The report opens with a summary: per direction set, the dominant ground-truth factor of its
directions, their effect against the random directions of the same space, validity and the
time taken (on a model with a scene to read out), then each probe's finding in one line.
"""

from __future__ import annotations

import functools
import html
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import workbench.settings as settings
from workbench.directions import DirectionSet
from workbench.editing import EditResult, edit, edit_set
from workbench.engines import ENGINES
from workbench.errors import WorkbenchError
from workbench.eval.directions import DirectionScores, score_edits
from workbench.eval.judge import ImageScores, judge_edit
from workbench.models.wrapper import DiffusionModel
from workbench.options import NUM_STEPS, Option, Spec, validated
from workbench.probes import PROBES
from workbench.sampling import sample
from workbench.store import atomic_dir, write_json
from workbench.trajectories import TrajectoryBank, model_scene, trajectory_bank
from workbench.viz.figures import check_exporter, score_bars
from workbench.viz.images import edit_grid, image_grid, save_png
from workbench.viz.report import Report

#: What the demo runs per engine: (label, discovery options, edit options). ``k`` in the
#: discovery options overrides the demo's ``k``; ``strengths`` and ``mode`` in the edit
#: options override the settings' strengths and the additive mode; empty edit options take
#: the edit the set records, if any (a boundary's). Engines added later extend this table.
DEMO_DISCOVERIES: dict[str, list[tuple[str, dict, dict]]] = {
    "attention": [
        ("attention-qk", {"matrix": "qk"}, {}),
        ("attention-ov", {"matrix": "ov"}, {}),
    ],
    "boundary": [
        (
            "boundary-large",
            # the h boundary at the preset's boundary step (else its mixing step),
            # edited as the set records: reached through x_t, denoised with eta 1, to the
            # preset's signed h distances (docs/boundary.md)
            {"k": 1, "attribute": "large", "space": "h", "num_steps": 10},
            {},
        )
    ],
    "local": [("local-centre", {}, {})],  # LOCO-Edit in the centre of the image
    "pullback": [("pullback", {"max_iter": 20}, {})],
    "pca": [("pca-channel", {"form": "channel"}, {})],
    "random": [
        ("random-x", {"space": "x"}, {}),
        ("random-h", {"space": "h", "form": "channel"}, {}),
    ],
}
STRENGTHS = [-3.0, -1.5, 0.0, 1.5, 3.0]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run: ``num_steps`` DDIM steps (None: the preset's) for the bank
    and every edit, ``seeds`` rows per edit grid; ``bank`` trajectories (sampled and
    inverted) serve the PCA engine (``pca``), the norm (``norm``), mixing-step
    (``mixing``) and UMAP (``umap``) probes; ``boundary_images`` labelled images fit the
    boundary; ``probes``: options of the probes that compute their own Jacobians (and of
    the others)."""

    num_steps: int | None
    seeds: int
    bank: int
    pca: int
    norm: int
    mixing: int
    umap: int
    boundary_images: int
    probes: dict[str, dict] = field(default_factory=dict)


#: The default demo: every engine and probe, sized to run in under three minutes on two
#: CPU cores with shapes64 (the default model): 15 DDIM steps (the fewest at which the
#: first seeds' samples are all valid on shapes64), 3 seeds per grid, a bank of 48
#: trajectories (analysis/demo_sizes.py, docs/measurements/demo_sizes_shapes64.txt).
DEFAULT = DemoSettings(
    num_steps=15,
    seeds=3,
    bank=48,
    pca=48,
    norm=32,
    mixing=48,
    umap=32,
    boundary_images=64,
    probes={
        "curvedness": {"n": 8, "timesteps": (999, 600, 200)},
        "spectrum": {"n": 2, "timesteps": (999, 600, 200), "max_iter": 10},
        "consistency": {"n": 3, "timesteps": (999, 600, 200), "max_iter": 10},
    },
)
#: ``--full``: the thorough sizes: the preset's steps (50 on both bundled models), 6 seeds
#: per grid, the mixing step from 128 trajectories, 128 boundary images.
FULL = DemoSettings(
    num_steps=None,
    seeds=6,
    bank=128,
    pca=64,
    norm=32,
    mixing=128,
    umap=32,
    boundary_images=128,
    probes=DEFAULT.probes,
)
#: Toy sizes for ``run_demo(..., quick=True)``: tests of the report itself.
QUICK = DemoSettings(
    num_steps=None,
    seeds=2,
    bank=8,
    pca=8,
    norm=4,
    mixing=8,
    umap=8,
    boundary_images=32,
    probes={
        "curvedness": {"n": 2, "timesteps": (999, 200), "points": 4},
        "spectrum": {"n": 1, "timesteps": (999, 200), "k": 4, "hutchinson": 8, "max_iter": 3},
        "consistency": {"n": 2, "timesteps": (999, 200), "k": 4, "max_iter": 3},
        "umap": {"umap_neighbors": 5, "neighbours_count": 3},
    },
)

#: What each probe's figure shows and what to look for (the report's captions).
CAPTIONS = {
    "consistency": "Squared cosines between the local pullback bases of different samples "
    "(left) and of one sample at different timesteps (middle), and the alignment of "
    "transported directions (right). Look for values well above the random floor k/d: the "
    "directions are shared across samples where they are high.",
    "curvedness": "Length of interpolation paths in h divided by their chord (left; 1 = "
    "straight) and their mean turning angle (right), per timestep. Look for the timestep "
    "where paths bend most: a straight line in x_t is far from straight in h there.",
    "mixing-step": "Kolmogorov-Smirnov statistics (right axis) between sampled and inverted "
    "latents along the chain, on their norms and on random projections, against the "
    "tolerance. The mixing step (dashed line) is the largest timestep below which the two "
    "populations cannot be told apart; the boundary engine fits there.",
    "norm": "||x_t|| / sqrt(d) of sampled (blue) and DDIM-inverted (red) trajectories, "
    "median and 5-95% band, with the expected curve (dashed). Sampled latents sit on the "
    "sqrt(d) shell at T; look for whether inverted ones reach it.",
    "spectrum": "Singular values of the Jacobian of h with respect to x_t, by rank, one "
    "line per timestep. A fast decay means a few directions of x_t move h: those are the "
    "pullback engine's directions.",
    "umap": "UMAP of h over samples and timesteps; the buttons colour the points by "
    "timestep or by a factor read out of the final image. Look for clusters by timestep "
    "and, within a timestep, for gradients along a factor.",
}


@dataclass
class _SetRun:
    """One direction set of the demo: found, edited and judged."""

    label: str
    directions: DirectionSet
    results: list[EditResult]
    seconds: float
    scores: DirectionScores | None
    image: ImageScores


class _Stages:
    """One overall progress bar: the stage's name and an estimate of the time left;
    per-stage seconds kept for the summary."""

    def __init__(self, weights: dict[str, float], enabled: bool) -> None:
        self.weights = weights
        self.seconds: dict[str, float] = {}
        self.bar = tqdm(
            total=round(sum(weights.values())),
            desc="demo",
            disable=not enabled,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        )

    @contextmanager
    def stage(self, name: str):
        self.bar.set_description(f"demo: {name}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - start
            self.bar.update(round(self.weights.get(name, 0.0)))
            settings.release_freed_memory()  # each stage's peak, not their sum

    def close(self) -> None:
        self.bar.close()


def _weights(
    plan: DemoSettings, jobs: list, n_seeds: int, steps: int, k: int, share: bool
) -> dict[str, float]:
    """Rough cost of each stage in network rows, for the overall bar's estimate."""
    weights = {"trajectories": 2.0 * plan.bank * steps} if share else {}
    weights["boundary-large"] = 30.0 * steps
    for _, label, _, edit_options in jobs:
        levels = len(edit_options.get("strengths", STRENGTHS))
        weights[label] = weights.get(label, 0.0) + k * levels * n_seeds * steps
    for name in PROBES:
        weights[f"probe {name}"] = 40.0 * steps
    return weights


def _accepts(fn: Any, name: str) -> bool:
    return any(o.name == name for o in fn.spec.options)


def _engine(
    model: DiffusionModel,
    job: tuple,
    plan: DemoSettings,
    seeds: list[int],
    num_steps: int | None,
    k: int,
    bank: TrajectoryBank | None,
    progress: bool,
    scene: bool,
) -> _SetRun:
    """Find one direction set, edit every direction at every strength, judge the edits."""
    engine, label, options, edit_options = job
    start = time.perf_counter()
    options = dict(options)
    if engine == "boundary":
        options["images"] = plan.boundary_images
    if engine == "pca":
        options["n"] = plan.pca
        options["num_steps"] = num_steps  # on the bank's grid
        if bank is not None:
            options["bank"] = bank
    discover = ENGINES[engine].discover
    if _accepts(discover, "progress"):
        options["progress"] = progress
    directions = discover(model, k=options.pop("k", k), **options)
    # the set's recorded working edit (a boundary's), where the job names none
    edit_options = dict(edit_options or directions.params.get("edit") or {})
    strengths = edit_options.pop("strengths", STRENGTHS)
    mode = edit_options.pop("mode", "additive")
    common = dict(seeds=seeds, num_steps=num_steps, mode=mode, progress=progress)
    if bank is not None:
        results = edit_set(
            model, directions, strengths, unedited=True, bank=bank, **common, **edit_options
        )
    else:  # each direction on its own, as ``workbench edit`` does it
        results = [
            edit(
                model,
                directions,
                i,
                strengths,
                unedited=mode != "additive" or 0.0 not in strengths,
                **common,
                **edit_options,
            )
            for i in range(len(directions))
        ]
    seconds = time.perf_counter() - start
    names = [directions.name(i) for i in range(len(directions))]
    pairs = [(r.images, r.reference()) for r in results]
    if scene:
        scores = score_edits(model, pairs, results[0].strengths, names)
        image = scores.image
    else:
        scores = None
        image = ImageScores.from_rows(
            names, results[0].strengths, [judge_edit(r) for r in results], len(seeds)
        )
    return _SetRun(label, directions, results, seconds, scores, image)  # type: ignore[arg-type]


def _probe(
    model: DiffusionModel,
    name: str,
    plan: DemoSettings,
    num_steps: int | None,
    bank: TrajectoryBank | None,
    progress: bool,
) -> Any:
    """Run one probe at the demo's size (on the bank's trajectories where it reads them)."""
    probe = PROBES[name]
    options = dict(plan.probes.get(name, {}))
    sizes = {"norm": plan.norm, "mixing-step": plan.mixing, "umap": plan.umap}
    if name in sizes:
        options["n"] = sizes[name]
        if bank is not None and _accepts(probe, "bank"):
            options["bank"] = bank
    if num_steps:
        options["num_steps"] = num_steps
    if _accepts(probe, "progress"):
        options["progress"] = progress
    return probe(model, **options)


#: The options of :func:`run_demo` (``workbench demo`` and ``workbench figures``).
DEMO = Spec(
    "function",
    "demo",
    "discover, edit and probe on a model; write report.html",
    (
        Option(
            "n_seeds",
            int,
            None,
            f"seeds per grid (default {DEFAULT.seeds}; --full {FULL.seeds})",
            low=1,
            high=1000,
            aliases=("--seeds",),
        ),
        replace(
            NUM_STEPS, help=f"sampling steps (default {DEFAULT.num_steps}; --full: the preset's)"
        ),
        Option("k", int, 3, "directions per engine", low=1, high=64, cli=False),
        Option("quick", bool, False, "toy sizes (a smoke test)"),
        Option(
            "full",
            bool,
            False,
            f"thorough sizes (the preset's steps, {FULL.seeds} seeds, the mixing step from "
            f"{FULL.mixing} trajectories, {FULL.boundary_images} boundary images)",
        ),
        Option("verbose", bool, False, "every stage's own progress bars, not one bar"),
        Option("share", bool, True, "one trajectory bank and batched edits", cli=False),
        Option("figures", str, None, "pdf, svg or png, or several: pdf,svg", cli=False),
        Option("report", bool, True, "write report.html", cli=False),
    ),
)


@functools.partial(validated, DEMO, first=2)
def run_demo(
    model: DiffusionModel,
    out: str | Path,
    n_seeds: int | None = None,
    num_steps: int | None = None,
    k: int = 3,
    quick: bool = False,
    full: bool = False,
    verbose: bool = False,
    share: bool = True,
    figures: str | None = None,
    report: bool = True,
) -> Path:
    """Write ``report.html``, PNG grids, direction files, probe results and
    ``summary.json`` into ``out`` (atomically).

    ``n_seeds`` (rows per edit grid) and ``num_steps`` default to the settings': the
    default run's (:data:`DEFAULT`), ``full``: the thorough sizes (:data:`FULL`), ``quick``:
    toy sizes (:data:`QUICK`), for tests of the report itself. ``verbose``: the per-step
    progress bars of every stage (default: one overall bar). ``share=False`` runs every
    engine, probe and edit on its own, as each would alone (no trajectory bank, one edit
    pass per direction): the reference the shared run is checked against. ``figures``
    (``pdf``, ``svg``, ``png`` or several, ``"pdf,svg"``): also write every figure as a
    static file in each format into ``out/figures`` (``workbench figures``);
    ``report=False``: only those files. Returns the report's path (the figures folder
    without a report)."""
    if quick and full:
        raise WorkbenchError("give --quick or --full, not both")
    if figures:
        check_exporter()  # before the run, not after it
    plan = QUICK if quick else FULL if full else DEFAULT
    n_seeds = plan.seeds if n_seeds is None else n_seeds
    num_steps = plan.num_steps if num_steps is None else num_steps
    out = Path(out)
    seeds = list(range(n_seeds))
    progress = verbose and settings.progress
    steps = num_steps or model.preset.num_inference_steps
    jobs = [
        (e, label, opts, edit_opts)
        for e, items in DEMO_DISCOVERIES.items()
        if e in ENGINES
        for label, opts, edit_opts in items
    ]
    weights = _weights(plan, jobs, n_seeds, steps, k, share)
    stages = _Stages(weights, settings.progress and not verbose)
    try:
        scene = True
        try:
            model_scene(model)
        except WorkbenchError:
            scene = False
        with atomic_dir(out) as tmp:
            bank = None
            if share:
                with stages.stage("trajectories"):
                    bank = trajectory_bank(
                        model, n=max(plan.bank, n_seeds, 16), num_steps=num_steps, progress=progress
                    )
            sets = []
            for job in jobs:
                with stages.stage(job[1]):
                    sets.append(
                        _engine(model, job, plan, seeds, num_steps, k, bank, progress, scene)
                    )
            probes = []
            for name in sorted(PROBES):
                with stages.stage(f"probe {name}"):
                    probes.append(_probe(model, name, plan, num_steps, bank, progress))
            with stages.stage("report"):
                samples = (
                    model.decode(bank.at(model, bank.timesteps, range(16), -1).to(model.device))
                    if bank is not None
                    else sample(model, seeds=range(16), num_steps=num_steps, progress=progress)
                )
                if report:
                    _write(model, tmp, samples, sets, probes, stages.seconds, seeds)
                if figures:
                    _export(model, tmp / "figures", figures, samples, sets, probes)
    finally:
        stages.close()
    return out / "report.html" if report else out / "figures"


def _random_control(sets: list[_SetRun], space: str) -> torch.Tensor | None:
    """Mean effect per factor of the random directions of ``space`` (``[F]``), if run."""
    for run in sets:
        if run.directions.engine == "random" and run.directions.space == space and run.scores:
            return run.scores.effect.mean(0)
    return None


#: RMS image change (intensities 0-1) at the largest strength under which a set's edits
#: are called invisible in the report: 2.5 grey levels.
VISIBLE = 0.01


def _summary_rows(sets: list[_SetRun]) -> list[dict[str, Any]]:
    """One row per direction set: what the report's summary table shows."""
    rows = []
    for run in sets:
        strengths = run.results[0].strengths
        largest = max(abs(s) for s in strengths)
        image_change = float(run.image.effect.max()) * largest
        row: dict[str, Any] = {
            "set": run.label,
            "space": run.directions.space,
            "timestep": run.directions.timestep,
            "mode": run.results[0].mode,
            "seconds": round(run.seconds, 1),
            "image_change": image_change,
            "visible": image_change >= VISIBLE,
        }
        if run.scores is not None:
            s = run.scores
            best = int(max(range(len(s.names)), key=lambda i: float(s.effect[i].max())))
            factor = s.factors.index(s.dominant[best])
            control = _random_control(sets, run.directions.space)
            comparable = run.results[0].mode == "additive" and run.directions.engine != "random"
            ratio = None
            if control is not None and comparable and float(control[factor]) > 0:
                ratio = float(s.effect[best, factor]) / float(control[factor])
            row |= {
                "dominant": s.dominant,
                "best": s.names[best],
                "best_factor": s.dominant[best],
                "effect": float(s.effect[best, factor]),
                "vs_random": ratio,
                "validity": float(s.validity[best]),
                "purity": float(s.purity[best]),
            }
        rows.append(row)
    return rows


def _summary_html(rows: list[dict[str, Any]], probes: list[Any], scene: bool) -> str:
    """The report's opening: the table of direction sets and the probes' findings."""
    if scene:
        head = [
            "direction set",
            "space, timestep",
            "dominant factor of each direction",
            "strongest direction",
            "its effect (factor spreads / step)",
            "x random of the same space",
            "validity",
            "largest image change",
            "seconds",
        ]
    else:
        head = ["direction set", "space, timestep", "largest image change", "seconds"]
    body = []
    for r in rows:
        change = f"{r['image_change']:.3f}" + ("" if r["visible"] else " (nothing visible)")
        where = f"{r['space']}, t={r['timestep']}"
        if scene:
            ratio = "n/a (other mode)" if r["vs_random"] is None else f"{r['vs_random']:.1f}x"
            if r["set"].startswith("random"):
                ratio = "(the control)"
            cells = [
                r["set"],
                where,
                ", ".join(r["dominant"]),
                r["best"],
                f"{r['effect']:.3f} on {r['best_factor']}",
                ratio,
                f"{r['validity']:.2f}",
                change,
                f"{r['seconds']:.0f}",
            ]
        else:
            cells = [r["set"], where, change, f"{r['seconds']:.0f}"]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    table = (
        "<table class='summary'><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr>"
        + "".join(body)
        + "</table>"
    )
    notes = (
        "<p>Effect: the dominant factor's change per unit strength (one preset step), in "
        "units of the factor's spread in the data, for the direction of the set that moves "
        "a factor most; x random: that effect over the mean effect of the random directions "
        "of the same space on the same factor (additive edits only); validity: share of its "
        "edited images the read-out calls valid. Largest image change: RMS change "
        f"(intensities 0-1) at the largest strength; under {VISIBLE} it is called nothing "
        "visible.</p>"
        if scene
        else "<p>Largest image change: RMS change (intensities 0-1) at the largest strength "
        f"(no ground truth to read out on this model); under {VISIBLE}: nothing visible.</p>"
    )
    findings = "".join(
        f"<li><b>{html.escape(p.name)}</b>: {html.escape(p.headline())}</li>" for p in probes
    )
    return f"{table}{notes}<h3>Probes</h3><ul>{findings}</ul>"


def _column(strength: float, mode: str) -> str:
    if strength != 0:
        return f"{strength:+g}"
    return "0 (unedited)" if mode in ("additive", "guidance") else "0"


def _write(
    model: DiffusionModel,
    tmp: Path,
    samples: torch.Tensor,
    sets: list[_SetRun],
    probes: list[Any],
    seconds: dict[str, float],
    seeds: list[int],
) -> None:
    """Write the report, PNG grids, direction files, probe results and summary.json."""
    scene = any(run.scores is not None for run in sets)
    rows = _summary_rows(sets)
    report = Report(f"workbench demo: {model.name}")
    report.text(repr(model) + f"; fingerprint {model.fingerprint}")
    report.heading("Summary")
    report.html(_summary_html(rows, probes, scene))

    pixels = model.to_uint8(samples.cpu())
    grid = image_grid(pixels.reshape(2, 8, *pixels.shape[1:]), upscale=3)
    save_png(tmp / "samples.png", grid)
    report.heading("Samples")
    report.image(grid, "16 samples, seeds 0-15 (two rows of 8)")

    for run, row in zip(sets, rows, strict=True):
        directions, first = run.directions, run.results[0]
        directions.save(tmp / f"{run.label}.safetensors")
        report.heading(f"Engine: {run.label}")
        options = "".join(
            f", {k}={v}" for k, v in first.options.items() if k not in ("eta", "boost") or v
        )
        report.text(
            f"{len(directions)} {directions.space}-space directions at timestep "
            f"{directions.timestep}, found and edited in {run.seconds:.1f} s; rows: seeds "
            f"{seeds[0]}-{seeds[-1]}, columns: strengths {first.strengths} "
            f"({first.mode} mode{options})."
        )
        if not row["visible"]:
            report.text(
                f"None of these edits changes the image visibly: the largest RMS change is "
                f"{row['image_change']:.4f} (intensities 0-1) at strength "
                f"{max(abs(s) for s in first.strengths):g}."
            )
        if directions.scores is not None:
            report.figure(
                score_bars(directions),
                f"The score that ranks the {run.label} directions ({directions.score_name}); "
                "the edits below are in this order.",
            )
        if run.scores is not None:
            report.text(
                "Each direction's effect on the ground-truth factors (factor spreads per unit "
                "strength) is in the caption under its grid; the image scores need no ground "
                "truth (effect = RMS image change per unit strength, locality = share of the "
                "change in the 10% of pixels that change most, consistency = correlation of "
                "the change across seeds)."
            )
        report.html(run.image.html())
        marked = first.strengths.index(0.0) if 0.0 in first.strengths else None
        for index, result in enumerate(run.results):
            images = result.uint8().permute(1, 0, 2, 3, 4).numpy()  # [seeds, strengths, ...]
            save_png(tmp / f"{run.label}-{index}.png", edit_grid(result, upscale=3))
            caption = f"{run.image.names[index]}: {run.image.caption(index)}"
            if run.scores is not None:
                s = run.scores
                caption += (
                    f"; dominant factor {s.dominant[index]} "
                    f"({float(s.effect[index].max()):.3f} spreads/step, purity "
                    f"{float(s.purity[index]):.2f}), validity {float(s.validity[index]):.2f}"
                )
            report.grid(
                images,
                [_column(v, result.mode) for v in result.strengths],
                [f"seed {v}" for v in seeds],
                caption,
                marked,
            )

    for result in probes:
        write_json(
            tmp / "probes" / f"{result.name}.json", {"probe": result.name, **result.to_dict()}
        )
        report.heading(f"Probe: {result.name}")
        report.text(result.headline())
        report.figure(result.figure(), CAPTIONS.get(result.name, ""))
    report.save(tmp / "report.html")
    write_json(
        tmp / "summary.json",
        {
            "model": model.name,
            "fingerprint": model.fingerprint,
            "sets": rows,
            "probes": {p.name: p.headline() for p in probes},
            "seconds": seconds,
        },
    )


def _export(
    model: DiffusionModel,
    folder: Path,
    formats: str,
    samples: torch.Tensor,
    sets: list[_SetRun],
    probes: list[Any],
) -> list[Path]:
    """Every figure of the run as a static file in each of ``formats`` (``"pdf,svg"``) in
    ``folder``: the samples, per direction set its scores, each direction's edit grid and
    its effects, every probe."""
    from workbench.viz.figures import direction_grid, export_many, image_figure

    pixels = model.to_uint8(samples.cpu()).numpy()
    figures = [("samples", image_figure(pixels.reshape(2, 8, *pixels.shape[1:]), "16 samples"))]
    for run in sets:
        if run.directions.scores is not None:
            figures.append((f"{run.label}-scores", score_bars(run.directions)))
        for index, result in enumerate(run.results):
            figures.append((f"{run.label}-{index}", direction_grid(result)))
        if run.scores is not None:
            figures.append((f"{run.label}-factors", run.scores.figure()))
        figures.append((f"{run.label}-image-scores", run.image.figure()))
    figures += [(f"probe-{p.name}", p.figure()) for p in probes]
    pairs = [(fig, folder / f"{n}.{fmt}") for fmt in formats.split(",") for n, fig in figures]
    return export_many([fig for fig, _ in pairs], [path for _, path in pairs])
