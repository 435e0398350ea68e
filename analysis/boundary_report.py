"""Boundary engine on the Shapes model: mixing step, boundaries, one-step edits, timings.

    python analysis/boundary_report.py [--model shapes32] [--n 200] [--edits 64]
        [--space x|h|x,h] [--distance 2,4] [--timesteps ...] [--no-edits] [--skip-search]
        [--h-edit direct|via-x|both] [--hold-others] [--eta 1] [--seed 0]

1. Mixing-step search (``find_mixing_step``, 128 sampled and 128 inverted trajectories,
   50 DDIM steps): the step, the per-timestep statistics, and a diagnostic of the
   inversion (norm at T of inverted model samples and of real images with pixel noise).
2. For each Shapes attribute and each timestep of ``--timesteps`` (on the 50-step grid):
   a linear SVM on x_t of ``--n`` DDIM-inverted labelled images (half held out; one
   inversion, the trajectory gives every timestep), its held-out accuracy, and distance
   edits of ``--edits`` held-out images to the other side (signed distance
   ``--distance`` x_step), denoised from that step on the same grid: flip rate of the
   read-out label, mean change of the other factors (in spreads) against the unedited
   reconstruction, validity, and the success rate (valid, flipped and other factors
   changed by less than a quarter of a spread on average). ``--distance`` takes a
   comma-separated list: each distance is scored. ``--space h`` (or ``x,h``) fits the
   boundary on h at that step as well (held-out accuracy under ``sweep_h``) and edits
   along the h normal (signed distance ``--h-distance`` in ``h_step`` units, applied at
   that one step: added to h, or with ``--h-edit via-x`` reached by moving x_t along the
   gradient of the h distance; rows ``h>x``, keys ``via-x:D``). ``--eta`` sets the DDIM eta
   of the edited chain from the edit on (0: deterministic; 1 as in the published code;
   the step noise is seeded by ``--seed`` before every edit); the reference is always the
   deterministic reconstruction.
3. Seconds for the search, one boundary fit, one edit of ``--edits`` images, and plain
   sampling of as many images, side by side.

Everything goes to ``--out`` (JSON); the evidence plot to ``--figure`` (HTML).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import workbench as wb
from workbench.data.readout import read_factors
from workbench.data.shapes import FACTOR_NAMES, factor_spreads, generate
from workbench.engines.boundary import SHAPES_ATTRIBUTES, fit_boundary, shapes_labels
from workbench.eval.directions import factor_changes
from workbench.probes.mixing import find_mixing_step
from workbench.sampling import make_timesteps, run_chain
from workbench.store import write_json, write_text
from workbench.viz.figures import FORMATS, export

#: where each space's results go in the JSON ("sweep" as before this option existed)
SWEEP_KEY = {"x": "sweep", "h": "sweep_h"}
#: the factor each attribute is read from (the others must stay put)
TARGET = {
    "large": "scale",
    "right": "x",
    "low": "y",
    "square": "shape",
    "dark-background": "background",
}


def inversion_diagnostic(model, steps: int) -> dict:
    """Norm / sqrt(d) at T of inverted model samples and of noisy real images."""
    out = {}
    xs = wb.sample(model, seeds=range(32), num_steps=steps, progress=False)
    x_T = wb.invert(model, xs, num_steps=steps, progress=False)
    out["model_samples_norm_at_T"] = float(x_T.flatten(1).norm(dim=1).mean()) / math.sqrt(model.d)
    out["model_samples_cos_to_their_x_T"] = float(
        torch.nn.functional.cosine_similarity(
            x_T.flatten(1), model.noise(range(32)).flatten(1)
        ).mean()
    )
    real = generate(32, size=model.sample_shape[1], seed=77)[0]
    for sigma in (0.0, 0.02, 0.05):
        noisy = (
            real + sigma * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
        ).clamp(-1, 1)
        z = wb.invert(model, noisy, num_steps=steps, progress=False)
        out[f"real_noise_{sigma}_norm_at_T"] = float(z.flatten(1).norm(dim=1).mean()) / math.sqrt(
            model.d
        )
    return out


def edit_scores(
    model, normal, attribute, latents, labels, t, steps_to_t, distance, **options
) -> dict:
    """Flip, preservation and validity of distance edits of held-out latents at t along a
    boundary ``normal`` (x- or h-space one-direction set; distance in its step units;
    ``options`` for the distance mode, e.g. ``via_x``)."""
    grid = make_timesteps(model, steps_to_t, t_start=t)
    reference = run_chain(model, latents, grid, progress=False)
    result = wb.edit(
        model,
        normal,
        0,
        [-distance, distance],
        x=latents,
        t_start=t,
        num_steps=steps_to_t,
        mode="distance",
        progress=False,
        **options,
    )
    assert result.timesteps == grid
    towards = torch.where(labels, 0, 1)  # True -> the negative side, False -> positive
    edited = result.images[towards, torch.arange(latents.shape[0])]
    size = model.sample_shape[1]
    ref_read, ed_read = read_factors(reference), read_factors(edited)
    ref_label = SHAPES_ATTRIBUTES[attribute](ref_read.factors, size)
    ed_label = SHAPES_ATTRIBUTES[attribute](ed_read.factors, size)
    flipped = ed_label != ref_label
    changes = factor_changes(ed_read.factors, ref_read.factors)
    spreads = factor_spreads(size)
    others = [f for f in FACTOR_NAMES if f != TARGET[attribute]]
    other = torch.stack([changes[f].abs() / spreads[f] for f in others]).mean(0)
    valid = ed_read.valid & ref_read.valid
    success = valid & flipped & (other < 0.25)
    return {
        "flip_rate": float(flipped[valid].float().mean()) if valid.any() else 0.0,
        "other_change_mean": float(other[valid].mean()) if valid.any() else float("nan"),
        "validity": float(ed_read.valid.float().mean()),
        "success_rate": float(success.float().mean()),
        "reference_label_agrees": float((ref_label == labels).float().mean()),
    }


def mixing_search(model, steps: int, report: dict, figure: str) -> float:
    """The mixing-step search with its evidence, into ``report``; returns its seconds."""
    began = time.perf_counter()
    mixing = find_mixing_step(model, n=128, num_steps=steps, progress=False)
    search_seconds = time.perf_counter() - began
    print(mixing.summary() + f" ({search_seconds:.0f} s)")
    report["mixing"] = {
        "step": mixing.mixing_step,
        "tolerance": mixing.tolerance,
        "timesteps": mixing.timesteps,
        "ks": mixing.ks,
        "sliced_ks": mixing.sliced_ks,
        "sampled_norm_median": mixing.sampled.median(dim=1).values.tolist(),
        "inverted_norm_median": mixing.inverted.median(dim=1).values.tolist(),
        "expected": mixing.expected,
    }
    if figure.rsplit(".", 1)[-1] in FORMATS:  # a static file for a paper (PDF, SVG, PNG)
        export(mixing.figure(), figure)
    else:
        write_text(figure, mixing.figure().to_html(include_plotlyjs="cdn"))
    print(f"{'t':>5}{'KS':>8}{'sliced':>8}{'sampled':>9}{'inverted':>9}{'expected':>9}")
    for i, t in enumerate(mixing.timesteps):
        if i % 5 == 0 or t == mixing.mixing_step:
            print(
                f"{t:>5}{mixing.ks[i]:>8.3f}{mixing.sliced_ks[i]:>8.3f}"
                f"{report['mixing']['sampled_norm_median'][i]:>9.3f}"
                f"{report['mixing']['inverted_norm_median'][i]:>9.3f}{mixing.expected[i]:>9.3f}"
            )
    report["inversion_diagnostic"] = inversion_diagnostic(model, steps)
    print(report["inversion_diagnostic"])

    return search_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n", type=int, default=200, help="labelled images per attribute")
    parser.add_argument("--edits", type=int, default=64, help="held-out images edited")
    parser.add_argument("--distance", default="2", help="in x_step (h_step) units; a list: 1,2,4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timesteps", default="39,199,399,599,799,999")
    parser.add_argument("--attributes", default=",".join(SHAPES_ATTRIBUTES))
    parser.add_argument(
        "--space", default="x", help="x, h or x,h: boundaries fitted (and edited) in these"
    )
    parser.add_argument("--no-edits", action="store_true", help="SVM accuracies only")
    parser.add_argument("--h-distance", default="4", help="h-space edit distances, in h_step units")
    parser.add_argument(
        "--h-edit",
        default="direct",
        choices=["direct", "via-x", "both"],
        help="h edits: add to h (direct), move x_t to reach the h distance (via-x), both",
    )
    parser.add_argument("--skip-search", action="store_true", help="no mixing-step search")
    parser.add_argument(
        "--hold-others",
        action="store_true",
        help="via-x edits keep the other attributes' h distances (conditional edit)",
    )
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta after the edit")
    parser.add_argument("--seed", type=int, default=0, help="seeds the step noise (eta > 0)")
    parser.add_argument("--out", default="docs/boundary_report.json")
    parser.add_argument(
        "--figure",
        default="runs/mixing_step.html",
        help="the mixing-step figure: .html (interactive) or .pdf/.svg/.png (static)",
    )
    args = parser.parse_args()
    model = wb.load(args.model, device=args.device)
    distances = [float(d) for d in args.distance.split(",")]
    h_distances = [float(d) for d in args.h_distance.split(",")]
    steps = 50
    report: dict = {
        "model": args.model,
        "fingerprint": model.fingerprint,
        "distances": distances,
        "h_distances": h_distances,
        "h_edit": args.h_edit,
        "eta": args.eta,
        "hold_others": args.hold_others,
        "seed": args.seed,
        "device": str(model.device),
    }

    spaces = args.space.split(",")
    if not set(spaces) <= {"x", "h"}:
        parser.error(f"--space takes x, h or x,h, got {args.space!r}")
    report["spaces"] = spaces
    search_seconds = None
    if not args.skip_search:
        search_seconds = mixing_search(model, steps, report, args.figure)

    images, _ = generate(args.n * 2, size=model.sample_shape[1], seed=31337)
    read = read_factors(images)
    images = images[read.valid][: args.n]
    began = time.perf_counter()
    _, trajectory = wb.invert(
        model, images, num_steps=steps, return_trajectory=True, progress=False
    )
    inversion_seconds = time.perf_counter() - began
    timesteps = [int(t) for t in args.timesteps.split(",")]
    sweep = {space: report.setdefault(SWEEP_KEY[space], {}) for space in spaces}
    fit_seconds = edit_seconds = None
    print(
        f"\n{'attribute':<16}{'space':>6}{'t':>5}{'SVM test':>10}{'dist':>6}{'flip':>7}"
        f"{'other':>7}{'valid':>7}{'success':>9}"
    )
    fits: dict = {}
    wanted = args.attributes.split(",")  # an unknown name fails here, in one line
    labels_of = {
        a: shapes_labels(images, a)[0] for a in dict.fromkeys([*wanted, *SHAPES_ATTRIBUTES])
    }

    def fit_at(attribute: str, t: int):
        """The boundary of ``attribute`` at ``t`` (fitted once)."""
        if (attribute, t) not in fits:
            fits[attribute, t] = fit_boundary(
                model,
                images,
                labels_of[attribute],
                t=t,
                space="both" if len(spaces) == 2 else spaces[0],
                latents=trajectory.at(t),
                attribute=attribute,
            )
        return fits[attribute, t]

    for attribute in wanted:
        labels = labels_of[attribute]
        for space in spaces:
            sweep[space][attribute] = {}
        for t in timesteps:
            latents = trajectory.at(t)
            began = time.perf_counter()
            fit = fit_at(attribute, t)
            fit_seconds = fit_seconds or time.perf_counter() - began
            # the other attributes' h boundaries at t, kept in place by --hold-others
            hold = (
                [fit_at(other, t).h for other in SHAPES_ATTRIBUTES if other != attribute]
                if args.hold_others and "h" in spaces
                else []
            )
            held = fit.test_index[: args.edits]
            for space in spaces:
                normal = fit.x if space == "x" else fit.h
                entry = {
                    "svm_test_accuracy": fit.accuracy[space]["test"],
                    "svm_train_accuracy": fit.accuracy[space]["train"],
                    "edits": {},
                }
                if space == "x":
                    kinds = [("x", "", {})]
                else:
                    kinds = [("h", "", {})] if args.h_edit != "via-x" else []
                    if args.h_edit != "direct":
                        kinds.append(("h>x", "via-x:", {"via_x": True, "hold": hold}))
                for label, prefix, options in [] if args.no_edits else kinds:
                    for distance in distances if space == "x" else h_distances:
                        began = time.perf_counter()
                        torch.manual_seed(args.seed)
                        row = edit_scores(
                            model,
                            normal,
                            attribute,
                            latents[held],
                            labels[held],
                            t,
                            (t + 1) // 20,
                            distance,
                            eta=args.eta,
                            **options,
                        )
                        if t == max(timesteps) and space == "x":
                            edit_seconds = edit_seconds or time.perf_counter() - began
                        entry["edits"][f"{prefix}{distance}"] = row
                        print(
                            f"{attribute:<16}{label:>6}{t:>5}"
                            f"{entry['svm_test_accuracy']:>10.3f}{distance:>6.2f}"
                            f"{row['flip_rate']:>7.2f}{row['other_change_mean']:>7.3f}"
                            f"{row['validity']:>7.2f}{row['success_rate']:>9.2f}",
                            flush=True,
                        )
                if args.no_edits:
                    print(
                        f"{attribute:<16}{space:>6}{t:>5}{entry['svm_test_accuracy']:>10.3f}",
                        flush=True,
                    )
                sweep[space][attribute][str(t)] = entry
            write_json(args.out, report)

    began = time.perf_counter()
    wb.sample(model, seeds=range(args.edits), num_steps=steps, progress=False)
    sample_seconds = time.perf_counter() - began
    report["seconds"] = {
        "mixing_step_search": search_seconds,
        "inversion_of_labelled_images": inversion_seconds,
        "boundary_fit_svm": fit_seconds,
        f"edit_{args.edits}_images_two_distances_from_T": edit_seconds,
        f"sample_{args.edits}_images": sample_seconds,
    }
    print("\nseconds (ratio to plain sampling of the same number of images)")
    for name, sec in report["seconds"].items():
        if sec is not None:
            print(f"{name:<46}{sec:>8.2f}{sec / sample_seconds:>8.2f}x")
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
