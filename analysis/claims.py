"""The seed papers' claims, each tested on a bundled model's ground truth: one table.

    python analysis/claims.py --model shapes64 [--quick] \
        [--out docs/measurements/claims_shapes64.json]
    python analysis/claims.py --docs docs/claims.md \
        docs/measurements/claims_shapes32.json docs/measurements/claims_shapes64.json

prints the table (markdown) and writes every number to ``--out``; ``--docs`` rewrites the
table in docs/claims.md from such files, one column per model. One row per claim of the
three methods the workbench implements (restated in docs/methods.md); each row has the
test (the factors read out, the score, the control it must beat), a verdict (``holds``,
``holds partly``, ``does not hold``, ``cannot be tested here``) by the rule printed in the
row, the numbers with a 95% interval (bootstrap over seeds, paired between a set and its
control, or a Wilson interval of a proportion) and the seconds taken. ``--quick``: toy sizes
for a smoke test (verdicts at those sizes mean little).

Rows (docs/claims.md explains each):

- pullback: disentangled changes; global consistency; coarse early, fine late (frequency
  content of the edits by timestep); x_t curved (h paths of straight x_t segments); works on
  different models (the same procedure, no tuning, on both test beds: the table's columns);
- boundary: the mixing step found from norm concentration (and whether a boundary fitted
  on inverted images there transfers to sampled latents); linear boundaries at that step
  (held-out accuracy per attribute against the majority rate); the one-step edit;
- attention: robust, interpretable, data-free directions (effect against random h of the
  same strength, validity); editing time against the pullback engine in one process.

Rows that need ground truth refuse a model without a scene; curvedness, consistency, the
frequency row and the timing run on any model (``--rows`` picks rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy import stats as sps

import workbench as wb
from workbench.engines.boundary import (
    SCENE_ATTRIBUTES,
    distance_move,
    shapes_labels,
    svm_normal,
)
from workbench.eval.directions import DirectionScores, bootstrap_effects, score_edits
from workbench.eval.frequency import frequency_by_timestep
from workbench.eval.judge import edits_with_reference
from workbench.models.presets import Preset
from workbench.models.wrapper import DiffusionModel
from workbench.stats import (
    binomial_p,
    percentile_interval,
    proportion_interval,
    resample_indices,
)
from workbench.store import write_text
from workbench.trajectories import model_scene, trajectory_bank

VERDICTS = ("holds", "holds partly", "does not hold", "cannot be tested here")


@dataclass(frozen=True)
class Sizes:
    """How much each row measures."""

    seeds: int = 12  # edit rows: seeds 1000.. (never the seeds directions came from)
    num_steps: int = 20
    k: int = 3
    samples: int = 4  # pullback: the seeds whose bases give the global directions
    consistency_n: int = 4
    curvedness_n: int = 16
    bank: int = 128  # sampled and inverted trajectories of the boundary rows
    boundary_images: int = 128
    frequency_timesteps: tuple[int, ...] = (880, 480, 80)
    timing_repeats: int = 3


FULL = Sizes()
QUICK = Sizes(
    seeds=4,
    num_steps=10,
    k=2,
    samples=2,
    consistency_n=3,
    curvedness_n=4,
    bank=32,
    boundary_images=48,
    frequency_timesteps=(880, 80),
    timing_repeats=1,
)
#: The smallest change of a factor (in spreads, at the largest strength) a row calls an
#: effect: below it a ratio to random compares two invisible changes.
VISIBLE = 0.1
X_STRENGTHS = [-2.0, -1.0, 1.0, 2.0]  # x_step units
H_STRENGTHS = [-3.0, -1.5, 1.5, 3.0]  # h_step units (the demo's)


@dataclass
class Row:
    """One claim tested on one model."""

    key: str
    method: str
    claim: str
    test: str
    rule: str
    verdict: str
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _grade(strong: bool, weak: bool) -> str:
    return "holds" if strong else "holds partly" if weak else "does not hold"


def _ci(pair: tuple[float, float]) -> str:
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


class Claims:
    """The rows on one model, sharing what several rows use (the edit scores of a set, the
    trajectory bank)."""

    def __init__(self, model: DiffusionModel, sizes: Sizes) -> None:
        self.model = model
        self.sizes = sizes
        self.seeds = list(range(1000, 1000 + sizes.seeds))
        self.steps = sizes.num_steps
        self.scene = True
        try:
            model_scene(model)
        except wb.WorkbenchError:
            self.scene = False
        self._scored: dict[str, tuple[DirectionScores, torch.Tensor]] = {}
        self._sets: dict[str, Any] = {}
        self._bank = None

    # ------------------------------------------------------------------ shared pieces
    def directions(self, name: str) -> Any:
        """The direction sets the rows edit, found once."""
        if name not in self._sets:
            s, m = self.sizes, self.model
            make: dict[str, Callable[[], Any]] = {
                "pullback": lambda: wb.discover(
                    "pullback", m, k=s.k, samples=s.samples, num_steps=self.steps
                ),
                "random-x": lambda: wb.discover("random", m, k=s.k, space="x", seed=3),
                "attention-qk": lambda: wb.discover("attention", m, k=s.k, matrix="qk"),
                "attention-ov": lambda: wb.discover("attention", m, k=s.k, matrix="ov"),
                "random-h": lambda: wb.discover(
                    "random", m, k=s.k, space="h", form="channel", seed=3
                ),
            }
            self._sets[name] = make[name]()
        return self._sets[name]

    def scored(
        self,
        name: str,
        strengths: list[float] | None = None,
        directions: Any = None,
        **edit: Any,
    ) -> tuple[DirectionScores, torch.Tensor]:
        """The set ``name`` (or ``directions``, stored under that name) edited on the row
        seeds (additive unless ``edit`` says otherwise), scored against the read-out, with
        its bootstrap effects ``[B, k, F]`` over the seeds."""
        if name not in self._scored:
            ds = self.directions(name) if directions is None else directions
            if strengths is None:
                strengths = X_STRENGTHS if ds.space == "x" else H_STRENGTHS
            strengths = sorted(set(strengths) | {0.0})
            edit = {"mode": "additive", **edit}
            edits = edits_with_reference(
                self.model, ds, range(len(ds)), strengths, self.seeds, progress=False,
                num_steps=self.steps, **edit,
            )  # fmt: skip
            names = [ds.name(i) for i in range(len(ds))]
            scores = score_edits(self.model, edits, strengths, names)
            self._scored[name] = (scores, bootstrap_effects(self.model, edits, strengths))
        return self._scored[name]

    def versus(self, name: str, control: str) -> dict[str, Any]:
        """The strongest direction of ``name`` on its dominant factor against the mean
        effect of the ``control`` directions on that factor, equal strengths, paired
        bootstrap interval over the seeds."""
        s, boot = self.scored(name)
        r, rboot = self.scored(control)
        best = int(s.effect.max(1).values.argmax())
        j = int(s.effect[best].argmax())
        ratio = float(s.effect[best, j]) / max(float(r.effect[:, j].mean()), 1e-12)
        samples = boot[:, best, j] / rboot[:, :, j].mean(1).clamp_min(1e-12)
        purity = boot.max(-1).values / boot.sum(-1).clamp_min(1e-12)  # [B, k]
        rpurity = rboot.max(-1).values / rboot.sum(-1).clamp_min(1e-12)
        change = float(s.effect[best, j]) * max(abs(v) for v in s.strengths)
        return {
            "best": s.names[best],
            "factor": s.factors[j],
            "dominant": s.dominant,
            "effect": float(s.effect[best, j]),
            "change": change,
            "visible": change >= VISIBLE,
            "control_effect": float(r.effect[:, j].mean()),
            "ratio": ratio,
            "ratio_interval": percentile_interval(samples),
            "purity": float(s.purity.mean()),
            "purity_interval": percentile_interval(purity.mean(1)),
            "control_purity": float(r.purity.mean()),
            "control_purity_interval": percentile_interval(rpurity.mean(1)),
            "validity": float(s.validity[best]),
            "validity_all": float(s.validity.mean()),
            "control_validity": float(r.validity.mean()),
            "table": s.table(),
            "control_table": r.table(),
        }

    def bank(self) -> Any:
        if self._bank is None:
            # on the preset's grid, as the boundary engine searches and fits
            self._bank = trajectory_bank(self.model, n=self.sizes.bank, h=False, progress=False)
        return self._bank

    # ------------------------------------------------------------------ pullback
    def pullback_disentangled(self) -> Row:
        v = self.versus("pullback", "random-x")
        lo = v["ratio_interval"][0] if v["visible"] else 0.0
        strong = lo > 1 and v["ratio"] >= 2 and v["purity"] >= 0.6 and v["validity"] >= 0.9
        return Row(
            "pullback-disentangled",
            "pullback",
            "The pullback directions mostly give disentangled attribute changes.",
            f"top {self.sizes.k} global directions (bases of {self.sizes.samples} samples) at "
            f"the preset's x timestep, additive +-1, +-2 x steps on {len(self.seeds)} other "
            "seeds; per direction the dominant factor and purity (its share of the summed "
            "factor effects); control: random x directions of equal norm",
            f"holds: strongest direction's change >= {VISIBLE} spreads and >= 2x random on its "
            "factor (interval above 1), mean purity >= 0.6, validity >= 0.9; partly: a "
            "visible change with the interval above 1",
            _grade(strong, lo > 1),
            f"{v['best']} moves {v['factor']} {v['change']:.2f} spreads, {v['ratio']:.1f}x "
            f"random {_ci(v['ratio_interval'])}; dominant factors {', '.join(v['dominant'])}; "
            f"purity {v['purity']:.2f} {_ci(v['purity_interval'])} vs random "
            f"{v['control_purity']:.2f}; valid {v['validity']:.2f}",
            v,
        )

    def pullback_consistent(self) -> Row:
        s = self.sizes
        result = wb.probe(
            "consistency", self.model, n=s.consistency_n, k=8, num_steps=self.steps,
            progress=False,
        )  # fmt: skip
        n = result.across_samples.shape[-1]
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        per_t = {}
        for i, t in enumerate(result.timesteps):
            pairs = result.across_samples[i][upper]
            idx = resample_indices(pairs.numel())
            per_t[t] = {
                "cos2": float(pairs.mean()),
                "interval": percentile_interval(pairs[idx].mean(1)),
            }
        floor = result.random_cos2
        x_t = self.model.preset.x_timestep
        nearest = min(per_t, key=lambda t: abs(t - x_t))
        at = per_t[nearest]
        numbers: dict[str, Any] = {"floor": floor, "by_timestep": per_t, "timestep": nearest}
        transfer = None
        if self.scene:
            v = self.versus("pullback", "random-x")
            transfer = v["ratio_interval"][0] > 1
            numbers["transfer_ratio"] = v["ratio"]
            numbers["transfer_interval"] = v["ratio_interval"]
        shared = at["interval"][0] >= 0.5
        above = at["interval"][0] > 10 * floor
        strong = shared and transfer is not False
        return Row(
            "pullback-consistent",
            "pullback",
            "The pullback directions are globally consistent across samples.",
            f"local bases (k = 8) of {s.consistency_n} samples: mean squared cosine between "
            "the bases of two samples (1 = the same subspace), against the random floor k/d; "
            "and the global directions of the disentanglement row edited on seeds they were "
            "not computed from (effect against random x)",
            "holds: cos^2 interval at the x timestep >= 0.5 and the directions transfer "
            "(ratio interval above 1); partly: cos^2 > 10x the floor or transfer",
            _grade(strong, above or bool(transfer)),
            f"cos^2 at t={nearest}: {at['cos2']:.2f} {_ci(at['interval'])} (floor "
            f"{floor:.4f}); "
            + ", ".join(f"t={t}: {d['cos2']:.2f}" for t, d in per_t.items())
            + (
                f"; transfer {numbers['transfer_ratio']:.1f}x random "
                f"{_ci(numbers['transfer_interval'])}"
                if transfer is not None
                else ""
            ),
            numbers,
        )

    def pullback_coarse_to_fine(self) -> Row:
        s = self.sizes
        measured = frequency_by_timestep(
            self.model, s.frequency_timesteps, self.seeds, k=s.k, samples=s.samples,
            num_steps=self.steps,
        )  # fmt: skip
        shares = {n: {t: v[0] for t, v in by_t.items()} for n, by_t in measured.items()}
        rms = {n: {t: v[1] for t, v in by_t.items()} for n, by_t in measured.items()}
        early, late = max(s.frequency_timesteps), min(s.frequency_timesteps)
        idx = resample_indices(len(self.seeds))
        out: dict[str, Any] = {"timesteps": list(s.frequency_timesteps), "strength": 2.0}
        for name in shares:
            diff = shares[name][late] - shares[name][early]
            ts = [t for t in s.frequency_timesteps for _ in self.seeds]
            values = torch.cat([shares[name][t] for t in s.frequency_timesteps])
            rho, p = sps.spearmanr(ts, values.numpy())
            out[name] = {
                "share": {t: float(v.mean()) for t, v in shares[name].items()},
                "rms_change": rms[name],
                "late_minus_early": float(diff.mean()),
                "interval": percentile_interval(diff[idx].mean(1)),
                "spearman_t_share": float(rho),
                "p_value": float(p),
            }
        pb = out["pullback"]
        coarse = (shares["pullback"][early] - shares["random"][early])[idx].mean(1)
        out["early_vs_random"] = {
            "difference": float((shares["pullback"][early] - shares["random"][early]).mean()),
            "interval": percentile_interval(coarse),
        }
        rises = pb["interval"][0] > 0
        coarse_early = out["early_vs_random"]["interval"][1] < 0
        return Row(
            "pullback-coarse-to-fine",
            "pullback",
            "Edits at early timesteps change coarse attributes, at late timesteps "
            "high-frequency detail.",
            f"pullback directions found at each of t = {', '.join(map(str, s.frequency_timesteps))}"
            f" and edited there (+-2 x steps, {len(self.seeds)} seeds): high-frequency share "
            "of the difference images (power above a quarter of Nyquist, mean change "
            "excluded); control: random x directions at the same t",
            "holds: the share rises from the earliest to the latest t (paired interval above 0)"
            " and the earliest edits are coarser than random ones (interval below 0); partly: "
            "one of the two",
            _grade(rises and coarse_early, rises or coarse_early),
            "share "
            + ", ".join(f"t={t}: {v:.2f}" for t, v in pb["share"].items())
            + f" (random {', '.join(f'{v:.2f}' for v in out['random']['share'].values())}); "
            f"late - early {pb['late_minus_early']:+.2f} {_ci(pb['interval'])}; early vs "
            f"random {out['early_vs_random']['difference']:+.2f} "
            f"{_ci(out['early_vs_random']['interval'])}",
            out,
        )

    def curved(self) -> Row:
        n = self.sizes.curvedness_n
        result = wb.probe("curvedness", self.model, n=n, num_steps=self.steps, progress=False)
        idx = resample_indices(result.ratio.shape[1])
        per_t = {
            t: {
                "ratio": float(result.ratio[i].mean()),
                "interval": percentile_interval(result.ratio[i][idx].mean(1)),
                "angle_deg": float(result.angle[i].mean()),
            }
            for i, t in enumerate(result.timesteps)
        }
        top = max(per_t, key=lambda t: per_t[t]["ratio"])
        lo = per_t[top]["interval"][0]
        return Row(
            "curved",
            "pullback",
            "The latent space x_t is curved: straight segments between samples map to bent paths.",
            f"{n} pairs of samples per timestep; the segment between them in x_t "
            f"({result.points} points) mapped to h: path length over chord (1 for any "
            "linear map, the control) and mean turning angle",
            "holds: ratio interval above 1.1 at some timestep; partly: above 1.01",
            _grade(lo > 1.1, lo > 1.01),
            "length / chord "
            + ", ".join(f"t={t}: {d['ratio']:.2f}" for t, d in per_t.items())
            + f"; largest at t={top} {_ci(per_t[top]['interval'])}, turning "
            f"{per_t[top]['angle_deg']:.1f} deg per point",
            {"by_timestep": per_t, "pairs": n, "points": result.points},
        )

    def different_models(self, disentangled: Row) -> Row:
        return Row(
            "pullback-models",
            "pullback",
            "The method works on different models.",
            "the disentanglement row's procedure, unchanged, on each bundled model (different "
            "resolution, architecture and scene); docs/claims.md compares the columns",
            "this model's column: the disentanglement verdict; across models: holds where "
            "it holds on both",
            disentangled.verdict,
            f"on this model: {disentangled.verdict} ({disentangled.evidence.split(';')[0]})",
            {"disentangled": disentangled.verdict},
        )

    # ------------------------------------------------------------------ boundary
    def _features(self, x: torch.Tensor, t: int, space: str) -> torch.Tensor:
        if space == "x":
            return x.flatten(1).double()
        with torch.no_grad():  # model.h splits the batch by model.max_batch
            return self.model.h(x.to(self.model.device), t).cpu().flatten(1).double()

    def _labels(self, images: torch.Tensor, attribute: str) -> tuple[torch.Tensor, torch.Tensor]:
        return shapes_labels(images, attribute, model_scene(self.model).name)

    def _fit(
        self, feats: torch.Tensor, labels: torch.Tensor, train: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        normal, offset, _ = svm_normal(feats[train], labels[train], 1.0)
        return normal, offset

    def boundaries(self) -> dict[str, Any]:
        """Boundaries fitted on inverted scene images at grid timesteps, tested on held-out
        inverted images and on sampled latents (labels read out of their samples)."""
        if "boundaries" in self._sets:
            return self._sets["boundaries"]
        m, bank = self.model, self.bank()
        grid = bank.timesteps  # decreasing, ends at -1
        mixing = wb.probe("mixing-step", m, n=self.sizes.bank, bank=bank, progress=False)
        t_m = mixing.mixing_step
        preset = m.preset.mixing_step
        # where the boundaries are fitted: the step found, else the preset's (nearest on the grid)
        fit = t_m if t_m is not None else min(grid[:-1], key=lambda t: abs(t - (preset or 0)))
        ascending = grid[::-1]  # inverted rows follow the ascending grid
        candidates = sorted(
            {min(grid[:-1], key=lambda t: abs(t - v)) for v in (0, 100, 250, 500, 1000)} | {fit}
        )
        real = bank.real
        samples = m.decode(bank.sampled[-1].to(m.device)).cpu()
        attributes = list(SCENE_ATTRIBUTES[model_scene(m).name])
        gen = torch.Generator().manual_seed(0)
        out: dict[str, Any] = {"mixing_step": t_m, "preset_mixing_step": preset, "fit_step": fit,
                               "tolerance": mixing.tolerance, "timesteps": candidates,
                               "attributes": {}}  # fmt: skip
        for attribute in attributes:
            y_real, ok_real = self._labels(real, attribute)
            y_sampled, ok_sampled = self._labels(samples, attribute)
            if y_real[ok_real].all() or not y_real[ok_real].any():
                continue
            idx = torch.nonzero(ok_real).flatten()
            idx = idx[torch.randperm(idx.numel(), generator=gen)]
            train = torch.zeros_like(ok_real)
            train[idx[: idx.numel() // 2]] = True
            test = ok_real & ~train
            share = float(y_real[test].float().mean())
            majority = max(share, 1 - share)
            rows = {}
            for t in candidates:
                x_inv = bank.inverted[ascending.index(t)]
                x_smp = bank.sampled[grid.index(t)]
                for space in ("x", "h"):
                    f_inv = self._features(x_inv, t, space)
                    if y_real[train].all() or not y_real[train].any():
                        continue
                    normal, offset = self._fit(f_inv, y_real, train)
                    right = int((((f_inv[test] @ normal + offset) > 0) == y_real[test]).sum())
                    f_smp = self._features(x_smp, t, space)
                    pred = (f_smp[ok_sampled] @ normal + offset) > 0
                    transfer = int((pred == y_sampled[ok_sampled]).sum())
                    n_test, n_smp = int(test.sum()), int(ok_sampled.sum())
                    rows[f"{space}{t}"] = {
                        "space": space, "t": t,
                        "accuracy": right / n_test,
                        "interval": proportion_interval(right, n_test),
                        "p_value": binomial_p(right, n_test, majority),
                        "transfer": transfer / max(n_smp, 1),
                        "transfer_interval": proportion_interval(transfer, n_smp),
                        "n_test": n_test, "n_sampled": n_smp,
                    }  # fmt: skip
            sampled_share = float(y_sampled[ok_sampled].float().mean())
            out["attributes"][attribute] = {
                "majority": majority,
                "sampled_majority": max(sampled_share, 1 - sampled_share),
                "fits": rows,
            }
        self._sets["boundaries"] = out
        return out

    def mixing_step(self) -> Row:
        b = self.boundaries()
        t_m, fit = b["mixing_step"], b["fit_step"]
        large = b["attributes"]["large"]["fits"]
        at = large[f"h{fit}"]
        best_t = max((r for r in large.values() if r["space"] == "h"),
                     key=lambda r: r["transfer"])  # fmt: skip
        as_good = at["transfer_interval"][1] >= best_t["transfer"]
        better_than_chance = (
            at["transfer_interval"][0] > b["attributes"]["large"]["sampled_majority"]
        )
        found = t_m is not None
        return Row(
            "mixing-step", "boundary", MIXING_CLAIM, MIXING_TEST, MIXING_RULE,
            _grade(found and as_good and better_than_chance, found and better_than_chance),
            (f"mixing step t={t_m}" if found else "the search found no step where the two "
             f"populations agree; at the preset's t={fit}")
            + f" (preset {b['preset_mixing_step']}); 'large' h boundary "
            f"fitted on inverted images there classifies sampled latents "
            f"{at['transfer']:.2f} {_ci(at['transfer_interval'])} (held-out inverted "
            f"{at['accuracy']:.2f}; majority rate of the samples "
            f"{b['attributes']['large']['sampled_majority']:.2f}); best transfer at "
            f"t={best_t['t']}: {best_t['transfer']:.2f}; "
            "h transfer by t: "
            + ", ".join(f"{r['t']}: {r['transfer']:.2f}" for r in large.values()
                        if r["space"] == "h"),
            b,
        )  # fmt: skip

    def linear_boundaries(self) -> Row:
        b = self.boundaries()
        t_m = b["fit_step"]
        per: dict[str, Any] = {}
        for attribute, a in b["attributes"].items():
            fits = [a["fits"][f"{s}{t_m}"] for s in ("x", "h") if f"{s}{t_m}" in a["fits"]]
            best = max(fits, key=lambda r: r["accuracy"])
            per[attribute] = {"majority": a["majority"], **{
                r["space"]: {k: r[k] for k in ("accuracy", "interval", "p_value")} for r in fits
            }, "best": best["space"], "above": best["interval"][0] > a["majority"]}  # fmt: skip
        above = [p["above"] for p in per.values()]
        mean_best = sum(p[p["best"]]["accuracy"] for p in per.values()) / len(per)
        return Row(
            "linear-boundaries", "boundary", LINEAR_CLAIM, LINEAR_TEST, LINEAR_RULE,
            _grade(all(above) and mean_best >= 0.8, any(above)),
            f"at t={t_m}: "
            + "; ".join(
                f"{a} h {p['h']['accuracy']:.2f} x {p['x']['accuracy']:.2f} "
                f"(majority {p['majority']:.2f})" for a, p in per.items() if "h" in p and "x" in p
            ),
            {"timestep": t_m, "attributes": per},
        )  # fmt: skip

    def one_step_edit(self) -> Row:
        m = self.model
        # the claim is about the mixing step itself (not a preset's boundary step), edited
        # to the engine's default distances (+-0.3 h steps; a preset may tune its own)
        ds = wb.discover("boundary", m, attribute="large", images=self.sizes.boundary_images,
                         num_steps=self.steps, timestep=m.preset.mixing_step,
                         progress=False)  # fmt: skip
        edit = dict(ds.params["edit"])
        d = Preset().boundary_distance
        recorded = [v for v in edit.pop("strengths") if v != 0]
        strengths = [-d, -d / 2, d / 2, d] if ds.space == "h" else recorded
        s, boot = self.scored("boundary", strengths, ds, **edit)
        if ds.space == "h" and edit.get("via_x"):
            move = float(distance_move(m, ds, [min(strengths), max(strengths)],
                                       self.seeds).mean())  # fmt: skip
        else:
            move = max(abs(v) for v in strengths)
        r, rboot = self.scored("random-x-move", [-move, move], self.directions("random-x"))
        j = s.factors.index("scale")
        top = max(abs(v) for v in strengths)
        change = float(s.effect[0, j]) * top
        control = float(r.effect[:, j].mean()) * move
        samples = boot[:, 0, j] * top / (rboot[:, :, j].mean(1) * move).clamp_min(1e-12)
        interval = percentile_interval(samples)
        valid = float(s.validity[0])
        n_valid = round(valid * len(self.seeds) * len(strengths))
        v_int = proportion_interval(n_valid, len(self.seeds) * len(strengths))
        dominant = s.dominant[0] == "scale"
        strong = dominant and interval[0] > 1 and change >= 2 * control and valid >= 0.9
        return Row(
            "one-step-edit",
            "boundary",
            "A single step toward the boundary at the mixing step edits the attribute, "
            "without training.",
            f"boundary of 'large' (default space {ds.space}, {self.sizes.boundary_images} "
            f"images) at t={ds.timestep}, edited with the set's recorded edit "
            f"({edit.get('mode')}, strengths {strengths}) on {len(self.seeds)} seeds; control: "
            f"random x directions moved as far in x_t ({move:.2f} x steps)",
            "holds: scale dominant, scale change >= 2x random (interval above 1), validity "
            ">= 0.9; partly: scale dominant and interval above 1",
            _grade(strong, dominant and interval[0] > 1),
            f"held-out accuracy {float(ds.scores[0]):.2f}; dominant {s.dominant[0]} (purity "
            f"{float(s.purity[0]):.2f}); scale change {change:.2f} spreads vs random "
            f"{control:.2f} ({change / max(control, 1e-12):.1f}x {_ci(interval)}); valid "
            f"{valid:.2f} {_ci(v_int)}",
            {"accuracy": float(ds.scores[0]), "timestep": ds.timestep, "space": ds.space,
             "edit": ds.params["edit"], "move_x_steps": move, "change": change,
             "control_change": control, "ratio_interval": interval, "validity": valid,
             "validity_interval": v_int, "table": s.table(), "control_table": r.table()},
        )  # fmt: skip

    # ------------------------------------------------------------------ attention
    def attention_robust(self) -> Row:
        found = {name: self.versus(name, "random-h") for name in ("attention-qk", "attention-ov")}
        best = max(found, key=lambda n: found[n]["ratio"] if found[n]["visible"] else 0.0)
        v = found[best]
        lo = v["ratio_interval"][0] if v["visible"] else 0.0
        strong = lo > 1 and v["ratio"] >= 2 and v["validity"] >= 0.9
        return Row(
            "attention-robust",
            "attention",
            "Eigenvectors of self-attention weight matrices give robust, interpretable "
            "editing directions with no data and no fine-tuning.",
            f"top {self.sizes.k} eigen-directions of the mid-block attention's q-k and o-v "
            "matrices, edited additively in h over the preset's window (+-1.5, +-3 h steps) "
            f"on {len(self.seeds)} seeds; control: random h channel directions, same strengths",
            f"holds: the strongest direction's change >= {VISIBLE} spreads and >= 2x random h "
            "on its factor (interval above 1) with validity >= 0.9; partly: a visible change "
            "with the interval above 1",
            _grade(strong, lo > 1),
            "; ".join(
                f"{n}: {f['best']} moves {f['factor']} {f['change']:.2f} spreads, "
                f"{f['ratio']:.1f}x random {_ci(f['ratio_interval'])}, valid {f['validity']:.2f}"
                for n, f in found.items()
            ),
            found,
        )

    def attention_time(self) -> Row:
        m = self.model
        seed = [self.seeds[0]]
        times: dict[str, list[dict[str, float]]] = {"attention": [], "pullback": []}
        for _ in range(self.sizes.timing_repeats):
            for name in times:
                began = time.perf_counter()
                if name == "attention":
                    ds = wb.discover("attention", m, k=self.sizes.k, matrix="qk")
                else:
                    ds = wb.discover("pullback", m, k=self.sizes.k, num_steps=self.steps,
                                     cache=False)  # fmt: skip
                found = time.perf_counter()
                strength = 1.5 if ds.space == "h" else 1.0
                wb.edit(m, ds, 0, [strength], seeds=seed, num_steps=self.steps,
                        mode="additive", progress=False)  # fmt: skip
                times[name].append({"discover": found - began,
                                    "edit": time.perf_counter() - found})  # fmt: skip
        total = {n: sorted(r["discover"] + r["edit"] for r in rows) for n, rows in times.items()}
        median = {n: v[len(v) // 2] for n, v in total.items()}
        ratio = median["attention"] / median["pullback"]
        span = (total["attention"][0] / total["pullback"][-1],
                total["attention"][-1] / total["pullback"][0])  # fmt: skip
        return Row(
            "attention-time",
            "attention",
            "The attention directions take about 60% less editing time than existing methods.",
            f"in one process, {self.sizes.timing_repeats} interleaved repeats: find {self.sizes.k}"
            " directions and edit one image at one strength, attention (q-k) against the "
            "pullback engine (one sample's basis, no cache), each from scratch",
            "holds: attention time <= 0.4x pullback's over every repeat; partly: < 1x",
            _grade(span[1] <= 0.4, span[1] < 1),
            f"attention {median['attention']:.2f} s vs pullback {median['pullback']:.2f} s "
            f"({ratio:.2f}x, {1 - ratio:.0%} less; range {span[0]:.2f}-{span[1]:.2f}x); of "
            f"which discovery {times['attention'][0]['discover']:.3f} s vs "
            f"{times['pullback'][0]['discover']:.2f} s",
            {"seconds": times, "ratio": ratio, "range": span},
        )

    # ------------------------------------------------------------------ the table
    def run(self, keys: list[str] | None = None) -> list[Row]:
        plan: list[tuple[str, Callable[[], Row], bool]] = [
            ("pullback-disentangled", self.pullback_disentangled, True),
            ("pullback-consistent", self.pullback_consistent, False),
            ("pullback-coarse-to-fine", self.pullback_coarse_to_fine, False),
            ("curved", self.curved, False),
            ("pullback-models", lambda: self.different_models(rows[0]), True),
            ("mixing-step", self.mixing_step, True),
            ("linear-boundaries", self.linear_boundaries, True),
            ("one-step-edit", self.one_step_edit, True),
            ("attention-robust", self.attention_robust, True),
            ("attention-time", self.attention_time, False),
        ]
        rows: list[Row] = []
        for key, fn, ground_truth in plan:
            if keys and key not in keys:
                continue
            began = time.perf_counter()
            if ground_truth and not self.scene:
                row = Row(key, "", "", "", "", "cannot be tested here",
                          "the model has no scene to read its factors out of")  # fmt: skip
            elif key == "pullback-models" and not rows:
                continue
            else:
                row = fn()
            row.seconds += time.perf_counter() - began
            rows.append(row)
            print(f"{key:<24} {row.verdict:<14} {row.evidence}  ({row.seconds:.0f} s)", flush=True)
        return rows


MIXING_CLAIM = (
    "The critical (mixing) step is found automatically from norm concentration along the "
    "Markov chain."
)
MIXING_TEST = (
    "the mixing-step search (KS of norms and sliced KS, sampled against DDIM-inverted "
    "trajectories); at that step and at other grid steps, the 'large' boundary fitted on "
    "half the inverted scene images classifies sampled latents (labels read out of their "
    "samples): a step where the populations mix is one where the boundary transfers"
)
MIXING_RULE = (
    "holds: a step is found and the transfer accuracy there is as good as at any step "
    "tested (interval reaches the best) and above the majority rate; partly: above the "
    "majority rate"
)
LINEAR_CLAIM = (
    "At the mixing step the latent space of an unconditional model already has linear "
    "semantic boundaries."
)
LINEAR_TEST = (
    "linear SVM (C = 1) per attribute of the scene on half the inverted scene images at the "
    "mixing step, in x_t and in h; held-out accuracy with its Wilson interval and a one-sided"
    " binomial test against the majority-class rate"
)
LINEAR_RULE = (
    "holds: every attribute above the majority rate (interval) in some space and mean best"
    " accuracy >= 0.8; partly: some attribute above it"
)


#: The markers around the generated table in docs/claims.md.
BEGIN, END = "<!-- claims table: begin -->", "<!-- claims table: end -->"


def table(records: list[dict[str, Any]]) -> str:
    """The markdown table of one or more runs (``OUT.json`` records, one column each)."""
    models = [r["model"] for r in records]
    head = "| claim | " + " | ".join(f"`{m}`" for m in models) + " |"
    lines = [head, "|" + " --- |" * (len(models) + 1)]
    by_key = [{row["key"]: row for row in r["rows"]} for r in records]
    for row in records[0]["rows"]:
        cells = [f"{row['claim']} <br>*Test:* {row['test']}. <br>*Rule:* {row['rule']}."]
        for rows in by_key:
            other = rows.get(row["key"])
            cells.append(f"**{other['verdict']}**: {other['evidence']}" if other else "not run")
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    runs = "; ".join(f"`{r['command']}`: {r['seconds'] / 60:.0f} min" for r in records)
    return "\n".join(lines) + f"\n\nRuns ({runs}; 2 CPU cores).\n"


def write_docs(path: str, records: list[dict[str, Any]]) -> None:
    """Replace the table between :data:`BEGIN` and :data:`END` in ``path``."""
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_text(path, f"{head}{BEGIN}\n{table(records)}{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke test)")
    parser.add_argument("--rows", default=None, help="comma-separated row keys (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write every number to this JSON file")
    parser.add_argument(
        "--docs",
        nargs="+",
        default=None,
        metavar=("MARKDOWN", "JSON"),
        help="run nothing: rewrite the table in MARKDOWN (e.g. docs/claims.md) from the "
        "JSON files of earlier runs, one column each",
    )
    args = parser.parse_args()
    if args.docs:
        records = []
        for name in args.docs[1:]:
            with open(name) as f:
                records.append(json.load(f))
        write_docs(args.docs[0], records)
        return
    model = wb.load(args.model, device=args.device)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    rows = Claims(model, sizes).run(args.rows.split(",") if args.rows else None)
    seconds = time.perf_counter() - began
    command = "python analysis/claims.py --model " + args.model + (" --quick" if args.quick else "")
    record = {
        "command": command, "model": args.model, "sizes": dataclasses.asdict(sizes),
        "seconds": seconds, "torch_threads": torch.get_num_threads(),
        "rows": [dataclasses.asdict(r) for r in rows],
    }  # fmt: skip
    print(f"{len(rows)} rows in {seconds / 60:.1f} min")
    print(table([json.loads(json.dumps(record, default=str))]))
    if args.out:
        write_text(args.out, json.dumps(record, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
