"""Every attention variant, the h-space baselines and random h-directions, scored on a
Shapes model's ground truth (``shapes32``: Shapes; ``shapes64``: Lit Shapes).

    python analysis/attention_science.py [--model shapes32] [--device cpu] [--n-seeds 16]
        [--strengths -16,-8,8,16] [--sets attn-q,...] [--out docs/attention_science.json]

Direction sets (8 each, unit norm, so equal strengths are equal norms of the h edit):

- ``attn-q`` ... ``attn-ov``: the six candidate matrices of the mid-block self-attention,
  all heads (``workbench.engines.attention``), channel directions ``[C]``;
- ``pca-channel`` / ``pca-full``: PCA of h over ``--pca-n`` sampled trajectories in the
  preset's h window (``workbench.engines.pca``);
- ``random-channel`` / ``random-full``: Gaussian directions (the control of equal norm);
- ``pca-full-sym``: ``pca-full`` edited with the plain (symmetric) reverse step, against
  the Asyrp-style asymmetric step every other h set uses;
- ``boundary-h``: unit normals of linear SVM boundaries in h, one per attribute of the
  scene (generator-truth labels of ``--boundary-n`` images DDIM-inverted to
  ``--boundary-t``, the middle of the h window by default; ``workbench.engines.boundary``);
- ``pullback-x`` / ``random-x`` (reference, x-space, ``--x-strengths`` in x_step units at
  the preset's x timestep): the pullback engine's global directions over 4 samples and
  Gaussian x directions.

Each set is edited with the ``additive`` mode over the preset's h window (asymmetric
reverse step), strengths in units of the preset's ``h_step``, and scored by
``workbench.eval.score_directions``. One row per set: best purity over its directions,
how many distinct factors its directions control (dominant effect at least twice the
random control's mean), the mean dominant effect and its ratio to the random set of the
same form, validity, trend and per-seed monotonicity of the top direction, the wall time
to discover the set and to edit one image (one strength, ``--steps`` DDIM steps).

Also measured, because it decides what any h-space engine can do on a model: the
**h sensitivity**, the relative change of the predicted x0 when h is shifted by a vector
as long as h itself (top direction of each h set; scene images noised to timesteps in the
h window; ``workbench.eval.sensitivity``). Every number goes to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

import workbench as wb
from workbench.bench import timed
from workbench.data.scenes import get_scene
from workbench.directions import DirectionSet
from workbench.engines.attention import MATRICES, attention_directions
from workbench.engines.boundary import SCENE_ATTRIBUTES, fit_boundary
from workbench.eval import score_directions
from workbench.eval.sensitivity import h_sensitivity
from workbench.models.wrapper import DiffusionModel
from workbench.options import add_renamed
from workbench.sampling import invert
from workbench.store import write_json


def boundary_normals(
    model: DiffusionModel, n: int, t: int | None, steps: int | None
) -> DirectionSet:
    """One h-space SVM normal per attribute of the model's scene (generator-truth labels)."""
    scene = get_scene(model.preset.scene)
    size = model.sample_shape[1]
    images, truth = scene.generate(n, size=size, seed=31337)
    attributes = SCENE_ATTRIBUTES[scene.name]  # Lit Shapes adds light-left
    high, low = model.preset.h_window
    t = model.check_timestep(round((high + low) / 2) if t is None else t)
    latents = invert(model, images, num_steps=steps, t_stop=t, progress=False)
    vectors, accuracy = [], []
    for name, predicate in attributes.items():
        fit = fit_boundary(
            model,
            images,
            predicate(truth, size).bool(),
            t=t,
            space="h",
            latents=latents,
            attribute=name,
            progress=False,
        )
        vectors.append(fit.h.vectors[0])
        accuracy.append(fit.accuracy["h"]["test"])
        print(f"boundary {name} at t={t}: h test accuracy {accuracy[-1]:.3f}")
    return DirectionSet(  # edited like every other h set: over the h window
        vectors=torch.stack(vectors),
        space="h",
        timestep=model.preset.h_window,
        engine="boundary",
        model_fingerprint=model.fingerprint,
        scores=torch.tensor(accuracy),
        score_name="h test accuracy",
        params={"fit_timestep": t, "n": n, "attributes": list(attributes)},
        labels=list(attributes),
    )


def summary_table(report: dict, scored: dict) -> str:
    """Summaries of the sets scored so far (those whose control is scored), as a table."""
    rows = []
    for name, scores in scored.items():
        if name.endswith("-x"):
            control_name = "random-x"
        elif name.endswith(("-full", "-sym")) or name == "boundary-h":
            control_name = "random-full"
        else:
            control_name = "random-channel"
        if control_name not in scored:
            continue
        control = scored[control_name].effect.max(dim=1).values.mean()
        noise_floor = 2 * control
        dominant = scores.effect.max(dim=1).values
        controlled = {f for f, e in zip(scores.dominant, dominant, strict=True) if e >= noise_floor}
        # the bar of a working direction: 2x the control's effect, valid, monotone per seed
        working = [
            i
            for i in range(len(dominant))
            if dominant[i] >= noise_floor
            and scores.validity[i] >= 0.9
            and scores.monotonicity[i] >= 0.8
        ]
        entry = report["sets"][name]
        entry["summary"] = {
            "best_purity": float(scores.purity.max()),
            "distinct_dominant": len(set(scores.dominant)),
            "factors_controlled": sorted(controlled),
            "mean_effect": float(dominant.mean()),
            "top_effect": float(dominant[0]),
            "effect_ratio_vs_random": float(dominant.mean() / control),
            "validity": float(scores.validity.mean()),
            "top_trend": float(scores.trend[0]),
            "top_monotonicity": float(scores.monotonicity[0]),
            "control": control_name,
            "working_directions": [
                {"index": i, "factor": scores.dominant[i], "effect": float(dominant[i])}
                for i in working
            ],
        }
        rows.append((name, entry))
    head = (
        f"{'set':<16}{'purity':>7}{'factors':>8}{'effect':>9}{'x rand':>8}{'valid':>7}"
        f"{'trend':>7}{'mono':>6}{'h-sens':>8}{'discover s':>11}{'edit s':>8}{'working':>8}"
    )
    lines = [head]
    for name, entry in rows:
        s = entry["summary"]
        lines.append(
            f"{name:<16}{s['best_purity']:>7.2f}{len(s['factors_controlled']):>8d}"
            f"{s['mean_effect']:>9.4f}{s['effect_ratio_vs_random']:>8.2f}{s['validity']:>7.2f}"
            f"{s['top_trend']:>7.2f}{s['top_monotonicity']:>6.2f}"
            f"{sens_text(entry['h_sensitivity_top']):>8}{entry['discover_seconds']:>11.3f}"
            f"{entry['edit_seconds_per_image']:>8.3f}{len(s['working_directions']):>8d}"
        )
    return "\n".join(lines)


def sens_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--device", default="cpu")
    add_renamed(parser, "--n-seeds", "--seeds", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--strengths", default="-16,-8,8,16", help="in units of h_step")
    parser.add_argument("--pca-n", type=int, default=128, help="trajectories for PCA")
    add_renamed(
        parser, "--num-steps", "--steps", type=int, default=None, help="DDIM steps (preset's)"
    )
    parser.add_argument("--x-strengths", default="-2,-1,1,2", help="in units of x_step")
    parser.add_argument("--boundary-n", type=int, default=256, help="images for boundary-h")
    parser.add_argument("--boundary-t", type=int, default=None, help="default: mid h window")
    parser.add_argument("--sets", default=None, help="comma-separated subset of the sets")
    parser.add_argument("--out", default="docs/attention_science.json")
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    seeds = list(range(3000, 3000 + args.n_seeds))
    strengths = [float(s) for s in args.strengths.split(",")]
    makers = {
        f"attn-{m}": (lambda m=m: attention_directions(model, k=args.k, matrix=m)) for m in MATRICES
    }
    for form in ("channel", "full"):  # cached: pca-full-sym edits the pca-full set again
        makers[f"pca-{form}"] = functools.cache(
            lambda form=form: wb.discover(
                "pca",
                model,
                k=args.k,
                n=args.pca_n,
                form=form,
                seed=1000,
                num_steps=args.num_steps,
                progress=False,
            )
        )
        makers[f"random-{form}"] = lambda form=form: wb.discover(
            "random", model, k=args.k, space="h", form=form, seed=7
        )
    makers["pca-full-sym"] = makers["pca-full"]
    makers["boundary-h"] = lambda: boundary_normals(
        model, args.boundary_n, args.boundary_t, args.num_steps
    )
    makers["pullback-x"] = lambda: wb.discover(
        "pullback", model, k=args.k, samples=4, seed=0, num_steps=args.num_steps
    )
    makers["random-x"] = lambda: wb.discover("random", model, k=args.k, space="x", seed=7)
    controls = ("random-channel", "random-full", "random-x")  # first: every ratio needs one
    makers = {n: makers[n] for n in controls} | {
        n: m for n, m in makers.items() if n not in controls
    }
    if args.sets:
        wanted = args.sets.split(",")
        unknown = sorted(set(wanted) - set(makers))
        if unknown:
            parser.error(f"unknown sets {unknown}; known: {', '.join(makers)}")
        for control in ("random-channel", "random-full", "random-x"):  # the ratios need them
            if control not in wanted:
                wanted.append(control)
        makers = {name: make for name, make in makers.items() if name in wanted}
    x_strengths = [float(s) for s in args.x_strengths.split(",")]
    report: dict = {
        "model": args.model,
        "fingerprint": model.fingerprint,
        "device": str(model.device),
        "seeds": [seeds[0], seeds[-1]],
        "strengths": strengths,
        "h_step": model.preset.h_step,
        "h_window": list(model.preset.h_window),
        "num_steps": args.num_steps or model.preset.num_inference_steps,
        "sets": {},
    }
    report["scene"] = model.preset.scene or "shapes"
    report["x_strengths"] = x_strengths
    scored = {}
    for name, make in makers.items():
        began = time.perf_counter()
        ds = make()
        discover_s = time.perf_counter() - began
        options = {"asymmetric": False} if name.endswith("-sym") else {}
        edit_s = timed(
            lambda ds=ds, options=options: wb.edit(
                model, ds, 0, [1.0], seeds=[0], num_steps=args.num_steps, progress=False, **options
            ),
            3,
        )
        scores = score_directions(
            model,
            ds,
            strengths=x_strengths if ds.space == "x" else strengths,
            seeds=seeds,
            num_steps=args.num_steps,
            progress=False,
            **options,
        )
        scored[name] = scores
        sens = None
        if ds.space == "h":  # the top direction, as in the shapes32 table (same images, noise)
            sens = h_sensitivity(model, ds.vector(0, model), n=16, seed=123, noise_seed=5).mean
        report["sets"][name] = scores.to_dict() | {
            "discover_seconds": discover_s,
            "edit_seconds_per_image": sorted(edit_s)[len(edit_s) // 2],
            "h_sensitivity_top": sens,
            "params": {k: v for k, v in ds.params.items() if k != "timesteps"},
        }
        print(f"\n== {name} (discover {discover_s:.2f} s) ==\n{scores.table()}", flush=True)
        report["table"] = summary_table(report, scored)  # so far: a cut run keeps its rows
        write_json(args.out, report)

    report["table"] = summary_table(report, scored)
    write_json(args.out, report)
    print("\n" + report["table"])
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
