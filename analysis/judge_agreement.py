"""Do the no-ground-truth scores rank directions as the ground truth does? (shapes32)

    python analysis/judge_agreement.py --out docs/measurements/judge_agreement_shapes32.json

Every direction set of the demo (``workbench.demo.DEMO_DISCOVERIES``: attention q-k and o-v,
the boundary of "large", pullback, channel PCA, random x and random h; ``--k`` directions
each, the boundary one) is edited with the demo's edit settings at ``--seeds`` seeds on a
``--steps`` grid, and the same images are scored twice: against the Shapes read-out
(``score_directions``: effect per unit strength of each factor, in factor spreads) and
without it (``workbench.eval.judge``: RMS image change per unit strength, locality,
consistency across seeds, and the change of linear classifiers fitted on rendered Shapes images
for three attributes: large, right, light background).

Reported: Spearman rank correlations over all directions between
- the image effect and the ground-truth effect (dominant factor, and summed over factors),
  also among the directions that move some factor measurably (dominant effect at least
  ``--floor`` factor spreads per unit strength: the harder ranking, without the mute ones);
- each classifier's change (absolute) and the ground-truth effect (absolute) on its factor;
- locality and consistency against the ground-truth effect and purity (descriptive: they
  say how an edit changes an image, not how much);
plus every direction's scores, and per set the field's standard scores beside the
workbench's (``workbench.eval.disentanglement``): DCI disentanglement, completeness and
informativeness and the MIG-style gap of the set's effect matrix, edit success (each
direction's dominant factor moves by >= 0.25 spreads, every other by <= 0.1), and the
SSIM of edited against unedited images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import workbench as wb
import workbench.settings as settings
from workbench.data.scenes import get_scene
from workbench.demo import DEMO_DISCOVERIES, STRENGTHS
from workbench.engines import ENGINES
from workbench.eval.directions import read_changes, score_edits
from workbench.eval.disentanglement import disentanglement, edit_success, masked_ssim
from workbench.eval.judge import LinearClassifier, image_scores
from workbench.eval.judge import edited_with_reference as edited
from workbench.options import add_renamed
from workbench.stats import spearman

#: (classifier name, factor, positive when the factor is above its median)
CLASSIFIERS = (("large", "scale"), ("right", "x"), ("light-background", "background"))


def fit_classifiers(n: int, seed: int) -> tuple[dict[str, LinearClassifier], dict[str, float]]:
    """One linear classifier per attribute of :data:`CLASSIFIERS`, on ``n`` rendered Shapes images,
    and the cross-validated accuracy each would have on the pooled pixels alone (without
    the contrast map)."""
    images, factors = get_scene(None).generate(n, size=32, seed=seed)
    out, pixels_only = {}, {}
    for name, factor in CLASSIFIERS:
        value = getattr(factors, factor)
        labels = value > value.median()
        out[name] = LinearClassifier.fit(images, labels, name, f"not {name}")
        plain = LinearClassifier.fit(images, labels, name, f"not {name}", contrast=False)
        pixels_only[name] = plain.accuracy
    return out, pixels_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=3)
    add_renamed(parser, "--n-seeds", "--seeds", type=int, default=16)
    add_renamed(parser, "--num-steps", "--steps", type=int, default=20)
    parser.add_argument("--classifier-images", type=int, default=2000)
    parser.add_argument("--floor", type=float, default=0.05)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    settings.progress = False
    torch.manual_seed(0)
    model = wb.load("shapes32", device="cpu")
    classifiers, pixels_only = fit_classifiers(args.classifier_images, seed=11)
    seeds = list(range(args.n_seeds))
    rows, sets = [], {}
    scene = get_scene(None)
    began = time.perf_counter()
    for engine, items in DEMO_DISCOVERIES.items():
        if engine not in ENGINES:
            continue
        for label, options, edit_options in items:
            options, edit_options = dict(options), dict(edit_options)
            directions = ENGINES[engine].discover(model, k=options.pop("k", args.k), **options)
            strengths = edit_options.pop("strengths", STRENGTHS)
            edit_options.setdefault("mode", "additive")
            for index in range(len(directions)):
                images, reference = edited(
                    model,
                    directions,
                    index,
                    strengths,
                    seeds,
                    num_steps=args.num_steps,
                    **edit_options,
                )
                truth = score_edits(
                    model, [(images, reference)], strengths, [directions.name(index)]
                )
                effect = float(truth.image.effect[0])
                locality = float(truth.image.locality[0])
                consistency = float(truth.image.consistency[0])
                classifier = {
                    name: image_scores(images, reference, strengths, classifier=p)[3]
                    for name, p in classifiers.items()
                }
                moved = [i for i, s in enumerate(strengths) if s != 0]
                ssim, _ = masked_ssim(
                    images[moved].flatten(0, 1), reference.repeat(len(moved), 1, 1, 1)
                )
                changes, valid = read_changes(scene, images, reference)
                success = edit_success(changes, valid, strengths, truth.dominant[0], scene, 32)
                sets.setdefault(label, []).append(
                    (truth.effect[0], float(truth.purity[0]), success, ssim)
                )
                signed = dict(zip(truth.factors, truth.signed_effect[0].tolist(), strict=True))
                rows.append(
                    {
                        "set": label,
                        "direction": directions.name(index),
                        "dominant": truth.dominant[0],
                        "truth_dominant_effect": float(truth.effect[0].max()),
                        "truth_total_effect": float(truth.effect[0].sum()),
                        "truth_purity": float(truth.purity[0]),
                        "truth_signed_effect": signed,
                        "validity": float(truth.validity[0]),
                        "edit_success": success,
                        "ssim": ssim,
                        "image_effect": effect,
                        "locality": locality,
                        "consistency": consistency,
                        "classifier": classifier,
                    }
                )
                print(
                    f"{label:<16}{directions.name(index):<22} truth {truth.dominant[0]:<11}"
                    f"{rows[-1]['truth_dominant_effect']:7.3f}  image effect {effect:.4f} "
                    f"locality {locality:.2f} consistency {consistency:.2f}  classifiers "
                    + " ".join(f"{v:+.2f}" for v in classifier.values()),
                    flush=True,
                )
    seconds = time.perf_counter() - began

    def agree(a: str, b: str, among: list[dict] | None = None) -> float:
        """Spearman of two columns over the directions (``among``, default all) where both
        are defined (locality and consistency are NaN for a direction that changes no image
        visibly)."""
        among = rows if among is None else among
        x = torch.tensor([r[a] for r in among], dtype=torch.float64)
        y = torch.tensor([r[b] for r in among], dtype=torch.float64)
        ok = x.isfinite() & y.isfinite()
        return spearman(x[ok], y[ok]) if int(ok.sum()) >= 3 else float("nan")

    visible = sum(1 for r in rows if r["locality"] == r["locality"])
    moving = [r for r in rows if r["truth_dominant_effect"] >= args.floor]
    agreement = {
        "image_effect~truth_dominant_effect": agree("image_effect", "truth_dominant_effect"),
        f"image_effect~truth_dominant_effect, {len(moving)} with truth >= {args.floor}": agree(
            "image_effect", "truth_dominant_effect", moving
        ),
        "image_effect~truth_total_effect": agree("image_effect", "truth_total_effect"),
        "locality~truth_dominant_effect": agree("locality", "truth_dominant_effect"),
        "locality~truth_purity": agree("locality", "truth_purity"),
        "consistency~truth_dominant_effect": agree("consistency", "truth_dominant_effect"),
        "consistency~truth_purity": agree("consistency", "truth_purity"),
    }
    for name, factor in CLASSIFIERS:
        if not classifiers[name].reads:
            continue  # its scores are withheld
        change = torch.tensor([abs(r["classifier"][name]) for r in rows])
        truth = torch.tensor([abs(r["truth_signed_effect"][factor]) for r in rows])
        agreement[f"|classifier {name}|~|truth {factor} effect|"] = spearman(change, truth)
        # signed: does the classifier move the way the factor does?
        change = torch.tensor([r["classifier"][name] for r in moving])
        truth = torch.tensor([r["truth_signed_effect"][factor] for r in moving])
        agreement[f"classifier {name}~truth {factor} effect (signed, {len(moving)} moving)"] = (
            spearman(change, truth)
        )
    print(
        f"\n{len(rows)} directions ({visible} change images visibly), {args.n_seeds} seeds, "
        f"{args.num_steps} steps, {seconds:.0f} s"
    )
    for key, value in agreement.items():
        print(f"Spearman {key:<60}{value:+.2f}")
    for name, p in classifiers.items():
        print(f"{p.describe()}; on pixels alone {pixels_only[name]:.2f}")
    per_set = {}
    print(f"\n{'set':<16}{'purity':>8}{'D':>6}{'C':>6}{'I':>6}{'gap':>6}{'success':>9}{'SSIM':>7}")
    for label, entries in sets.items():
        scores = disentanglement(torch.stack([e[0] for e in entries]))
        per_set[label] = {
            "directions": len(entries),
            "best_purity": max(e[1] for e in entries),
            "disentanglement": scores.disentanglement,
            "completeness": scores.completeness,
            "informativeness": scores.informativeness,
            "gap": scores.gap,
            "edit_success": sum(e[2] for e in entries) / len(entries),
            "ssim": sum(e[3] for e in entries) / len(entries),
        }
        row = per_set[label]
        print(
            f"{label:<16}{row['best_purity']:>8.2f}{row['disentanglement']:>6.2f}"
            f"{row['completeness']:>6.2f}{row['informativeness']:>6.2f}{row['gap']:>6.2f}"
            f"{row['edit_success']:>9.2f}{row['ssim']:>7.3f}"
        )
    result = {
        "command": "python " + " ".join(sys.argv),
        "model": "shapes32",
        "seeds": args.n_seeds,
        "num_steps": args.num_steps,
        "classifier_images": args.classifier_images,
        "classifier_accuracy": {name: p.accuracy for name, p in classifiers.items()},
        "classifier_accuracy_pixels_only": pixels_only,
        "seconds": seconds,
        "directions_with_visible_change": visible,
        "spearman": agreement,
        "sets": per_set,
        "directions": rows,
    }
    if args.out:
        from workbench.store import write_text

        write_text(args.out, json.dumps(_finite(result), indent=1) + "\n")


def _finite(value):
    """``value`` with NaN as null (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and value != value else value


if __name__ == "__main__":
    main()
