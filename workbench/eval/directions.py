"""Score a `DirectionSet` against the Shapes ground truth.

For each direction: edit ``seeds`` at ``strengths`` (0 is always included), read every
factor out of every image, and compare each edited image with the unedited one of the same
seed: the sample run on the same grid with the same step noise but no edit
(``edit(..., unedited=True)``), in every mode (a ``distance`` edit at strength 0 moves onto
the boundary, so it is not the reference). Per direction and factor:

- **effect**: least-squares slope (through the origin) of the factor's change against the
  strength, normalised by the factor's spread in the data (the scene's ``spreads``), absolute
  value. Hue changes are circular differences. For the shape class the "change" is 1
  when the class differs from the reference, regressed on |strength|.
- **dominant** factor: the largest effect; **purity**: its share of the summed effects.
- **monotonicity**: Spearman correlation of the dominant factor's change with the
  strength (with |strength| for the shape class) along each seed's edit path (at least 3
  valid images), averaged over seeds, then taken in absolute value for the signed factors
  (a direction's sign is arbitrary: a steady decrease is as monotone as an increase; for
  the class, whose change is 0 or 1, a negative value means fewer flips further out and
  is kept). A seed whose class never changes counts as 0, so
  for the (categorical) shape class this is low even when the flip rate grows steadily.
- **trend**: Spearman correlation of the strength with the *mean* change of the dominant
  factor over the seeds at that strength (for the shape class: |strength| against the
  share of seeds whose class changed). It asks whether the effect grows with strength on
  average, which a categorical factor can only show across seeds (absolute value for
  the signed factors, as above).
- **validity**: share of edited images (strength != 0) the read-out calls valid.
- **by level**: the effect and the validity at each |strength| on its own
  (``levels``, ``effect_by_level``, ``validity_by_level``). The pooled slope is dominated
  by the largest strengths, where a bounded read-out saturates (the shape class can flip
  at most once: its effect per unit strength is at most 1 / |strength|), so a comparison
  between directions is read at each level too.

Pairs where the edited or the reference image is invalid are left out of the slopes.

The same images also give the scores that need no ground truth (``image``: effect per unit
strength in image space, locality, consistency across seeds; :mod:`workbench.eval.judge`),
so that the two can be compared on the same edits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from workbench.data.scenes import Scene, get_scene
from workbench.data.shapes import Factors
from workbench.directions import DirectionSet
from workbench.engines.random import random_directions
from workbench.eval.judge import (
    INDICES,
    SEEDS,
    STRENGTHS,
    ImageScores,
    edits_with_reference,
    image_scores,
    what_to_edit,
)
from workbench.models.wrapper import DiffusionModel
from workbench.options import PROGRESS, Spec, validated
from workbench.stats import resample_indices, spearman
from workbench.trajectories import model_scene

if TYPE_CHECKING:
    import plotly.graph_objects as go


def factor_changes(
    edited: Factors, reference: Factors, circular: tuple[str, ...] = ("hue", "light")
) -> dict[str, torch.Tensor]:
    """Change of every factor from ``reference`` to ``edited`` (same shape tensors), in the
    factors' order; ``circular`` factors (turns) wrap to [-0.5, 0.5)."""
    out = {}
    for name in edited.as_dict():
        a, b = getattr(edited, name), getattr(reference, name)
        if name in circular:
            out[name] = (a - b + 0.5) % 1.0 - 0.5
        elif name == "shape":
            out[name] = (a != b).float()
        else:
            out[name] = (a - b).float()
    return out


@dataclass
class DirectionScores:
    """Scores of ``k`` directions against the factors of the model's scene."""

    names: list[str]
    factors: list[str]
    strengths: list[float]
    effect: torch.Tensor  # [k, F], >= 0, per unit strength, in factor spreads
    signed_effect: torch.Tensor  # [k, F] (shape: same as effect)
    dominant: list[str]
    purity: torch.Tensor  # [k]
    monotonicity: torch.Tensor  # [k]
    validity: torch.Tensor  # [k]
    n_seeds: int
    trend: torch.Tensor | None = None  # [k]
    levels: list[float] | None = None  # the distinct non-zero |strength|, ascending
    effect_by_level: torch.Tensor | None = None  # [k, L, F]
    validity_by_level: torch.Tensor | None = None  # [k, L]
    image: ImageScores | None = None  # the same edits judged without ground truth

    def table(self) -> str:
        """The scores as a text table, one row per direction."""
        head = f"{'direction':<16}" + "".join(f"{f:>11}" for f in self.factors)
        head += f"{'dominant':>12}{'purity':>8}{'mono':>7}{'trend':>7}{'valid':>7}"
        lines = [head]
        for i, name in enumerate(self.names):
            row = f"{name:<16}" + "".join(f"{float(v):>11.3f}" for v in self.effect[i])
            row += f"{self.dominant[i]:>12}{float(self.purity[i]):>8.2f}"
            row += f"{float(self.monotonicity[i]):>7.2f}"
            row += f"{float(self.trend[i]) if self.trend is not None else float('nan'):>7.2f}"
            row += f"{float(self.validity[i]):>7.2f}"
            lines.append(row)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Every score as plain lists (for JSON), with the printed table."""
        return {
            "table": self.table(),
            "dominant": self.dominant,
            "dominant_effect": self.effect.max(dim=1).values.tolist(),
            "effect": self.effect.tolist(),
            "signed_effect": self.signed_effect.tolist(),
            "purity": self.purity.tolist(),
            "monotonicity": self.monotonicity.tolist(),
            "trend": self.trend.tolist() if self.trend is not None else None,
            "validity": self.validity.tolist(),
            "levels": self.levels,
            "effect_by_level": (
                self.effect_by_level.tolist() if self.effect_by_level is not None else None
            ),
            "validity_by_level": (
                self.validity_by_level.tolist() if self.validity_by_level is not None else None
            ),
            "image": self.image.to_dict() if self.image is not None else None,
        }

    def figure(self) -> go.Figure:
        """Heat map of factor changes per direction."""
        import plotly.graph_objects as go

        fig = go.Figure(
            go.Heatmap(
                z=self.effect.tolist(),
                x=self.factors,
                y=self.names,
                colorscale="Viridis",
                colorbar={"title": "effect / unit strength<br>(factor spreads)"},
            )
        )
        fig.update_layout(
            title="Effect of each direction on each factor",
            xaxis_title="ground-truth factor",
            yaxis={"autorange": "reversed", "title": {"text": "direction"}},
            template="plotly_white",
        )
        return fig


def summarise(
    changes: dict[str, torch.Tensor],
    valid: torch.Tensor,
    strengths: torch.Tensor,
    size: int = 32,
    scene: Scene | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, float, float, float]:
    """Scores of one direction from factor changes ``[S, N]`` (edited minus reference),
    validity ``[S, N]`` of the pairs, and strengths ``[S]``; spreads from ``scene``
    (default Shapes) at image ``size``.

    Returns (effect [F], signed effect [F], dominant index, purity, monotonicity, validity,
    trend).
    """
    s = strengths[:, None].expand_as(valid).double()
    signed_t = _slopes(changes, valid & (s != 0), s, size, scene)
    effect_t = signed_t.abs()
    total = float(effect_t.sum())
    dom = int(effect_t.argmax())
    purity = float(effect_t[dom]) / total if total > 0 else 0.0
    name = (scene or get_scene(None)).factor_names[dom]
    x = s.abs() if name == "shape" else s
    per_seed = [  # rank correlation along each seed's edit path (reference included)
        spearman(x[valid[:, j], j].float(), changes[name][valid[:, j], j].float())
        for j in range(valid.shape[1])
        if int(valid[:, j].sum()) >= 3
    ]
    mono = sum(per_seed) / len(per_seed) if per_seed else 0.0
    levels, means = [], []  # mean change per strength level (|strength| for the class)
    for level in x[:, 0].unique():
        rows = x[:, 0] == level
        pairs = valid[rows]
        if pairs.any():
            levels.append(float(level))
            means.append(float(changes[name][rows].double()[pairs].mean()))
    trend = spearman(torch.tensor(levels), torch.tensor(means)) if len(levels) >= 3 else 0.0
    if name != "shape":
        mono, trend = abs(mono), abs(trend)
    nonzero = strengths != 0
    validity = float(valid[nonzero].float().mean()) if nonzero.any() else 1.0
    return effect_t, signed_t, dom, purity, mono, validity, trend


def _seed_sums(
    changes: dict[str, torch.Tensor],
    keep: torch.Tensor,
    s: torch.Tensor,
    scene: Scene,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator and denominator ``[F, N]`` of each factor's slope (:func:`_slopes`), per
    seed: the sums of x * change and x * x over the pairs ``keep`` of that seed."""
    num, den = [], []
    for name in scene.factor_names:
        x = s.abs() if name == "shape" else s
        num.append(torch.where(keep, x * changes[name].double(), 0.0).sum(0))
        den.append(torch.where(keep, x * x, 0.0).sum(0))
    return torch.stack(num), torch.stack(den)


def _slopes(
    changes: dict[str, torch.Tensor],
    keep: torch.Tensor,
    s: torch.Tensor,
    size: int,
    scene: Scene | None = None,
) -> torch.Tensor:
    """Signed least-squares slope through the origin of each factor's change against the
    strength (|strength| for the shape class) over the pairs ``keep``, in factor spreads."""
    scene = scene or get_scene(None)
    spreads = scene.spreads(size)
    num, den = (v.sum(-1) for v in _seed_sums(changes, keep, s, scene))
    out = [
        float(num[i] / den[i]) / spreads[name] if den[i] > 0 else 0.0
        for i, name in enumerate(scene.factor_names)
    ]
    return torch.tensor(out)


def bootstrap_effects(
    model: DiffusionModel,
    edits: Sequence[tuple[torch.Tensor, torch.Tensor]],
    strengths: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
) -> torch.Tensor:
    """Bootstrap distribution of the **effect** of :func:`score_edits` over the seeds: per
    resample of the ``N`` seeds (with replacement), each direction's effect on each factor,
    ``[n_boot, k, F]``. The resamples depend only on ``N``, ``n_boot`` and ``seed``
    (:func:`workbench.stats.resample_indices`), so two sets edited on the same seeds are
    resampled in pairs and a ratio of their effects gets an interval. The slope of each
    factor is a ratio of sums over pairs, so every resample is two sums over per-seed
    terms; the images are read out once."""
    scene = model_scene(model)
    s = torch.tensor([float(v) for v in strengths], dtype=torch.float64)
    spreads = scene.spreads(model.sample_shape[1])
    scale = torch.tensor([spreads[name] for name in scene.factor_names], dtype=torch.float64)
    nums, dens = [], []
    for edited, unedited in edits:
        changes, valid = read_changes(scene, edited, unedited)
        sv = s[:, None].expand_as(valid)
        num, den = _seed_sums(changes, valid & (sv != 0), sv, scene)
        nums.append(num)
        dens.append(den)
    num, den = torch.stack(nums), torch.stack(dens)  # [k, F, N]
    idx = resample_indices(num.shape[-1], n_boot, seed)  # [B, N]
    num_b = num[:, :, idx].sum(-1)  # [k, F, B]
    den_b = den[:, :, idx].sum(-1)
    effect = torch.where(den_b > 0, num_b / den_b.clamp_min(1e-300), 0.0).abs() / scale[:, None]
    return effect.permute(2, 0, 1).float()


def level_effects(
    changes: dict[str, torch.Tensor],
    valid: torch.Tensor,
    strengths: torch.Tensor,
    size: int = 32,
    scene: Scene | None = None,
) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Effect ``[L, F]`` (absolute slope, as in :func:`summarise`) and validity ``[L]`` at
    each non-zero level |strength| on its own (both signs pooled); returns
    (levels, effect, validity). Arguments as for :func:`summarise`."""
    s = strengths[:, None].expand_as(valid).double()
    levels = sorted({abs(float(v)) for v in strengths if float(v) != 0.0})
    effect, validity = [], []
    for level in levels:
        rows = s.abs() == level
        effect.append(_slopes(changes, valid & rows, s, size, scene).abs())
        validity.append(float(valid[rows].float().mean()))
    return levels, torch.stack(effect), torch.tensor(validity)


#: The options of :func:`score_directions` (the edit's own go on to ``wb.edit``).
SCORE = Spec(
    "function",
    "score_directions",
    "edit, read out and score directions against the scene's factors",
    (
        INDICES,
        STRENGTHS,
        dataclasses.replace(SEEDS, default=tuple(range(32))),
        PROGRESS,
    ),
)


def random_control(
    model: DiffusionModel, directions: DirectionSet, k: int = 3, seed: int = 3
) -> DirectionSet:
    """``k`` random directions where ``directions`` act: the same space, form (full or
    per-channel h) and timestep or h window; edited additively at the same strengths they
    are the floor the set's effects are compared with."""
    options: dict[str, Any] = {"space": directions.space}
    if directions.space == "h":
        channel = tuple(directions.vectors.shape[1:]) == tuple(model.h_shape[:1])
        options["form"] = "channel" if channel else "full"
    if isinstance(directions.timestep, int):
        options["timestep"] = directions.timestep
    else:
        options["window"] = tuple(directions.timestep)
    return random_directions(model, k=k, seed=seed, **options)


def _score_checked(fn: Callable) -> Callable:
    return validated(SCORE, fn, first=2)


@_score_checked
def score_directions(
    model: DiffusionModel,
    directions: DirectionSet | Sequence[DirectionSet],
    indices: Sequence[int] | None = None,
    strengths: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0),
    seeds: Sequence[int] = tuple(range(32)),
    progress: bool | None = None,
    **edit_options: Any,
) -> DirectionScores:
    """Edit, read out and score each direction (see the module docstring).

    ``directions`` is one set applied to every seed, or one set per seed (local directions,
    e.g. :func:`workbench.engines.pullback.local_directions`): direction ``i`` of set ``j``
    edits seed ``j``, and the scores pool all seeds.
    """
    first, indices, strengths, seeds = what_to_edit(directions, indices, strengths, seeds)
    model_scene(model)  # refused before any edit on a model without a scene
    # every strength and the unedited sample on the same grid and noise: the reference in
    # every mode (a distance edit at strength 0 is not unedited)
    edits = edits_with_reference(model, directions, indices, strengths, seeds, progress,
                                 **edit_options)  # fmt: skip
    return score_edits(model, edits, strengths, [first.name(i) for i in indices])


def read_changes(
    scene: Scene, edited: torch.Tensor, unedited: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every factor's change ``[S, N]`` from the unedited images ``[N, C, H, W]`` to the
    edited ones ``[S, N, C, H, W]`` (:func:`factor_changes`), read out by ``scene``, and
    which pairs are valid (both images read as valid) ``[S, N]``."""
    images = torch.cat([edited, unedited[None]])
    n_s, n = images.shape[0] - 1, images.shape[1]
    read = scene.read(images.reshape((n_s + 1) * n, *images.shape[2:]))
    kind = type(read.factors)
    factors = kind(**{k: v.reshape(n_s + 1, n) for k, v in read.factors.as_dict().items()})
    valid = read.valid.reshape(n_s + 1, n)
    reference = factors[n_s:]
    changes = factor_changes(
        factors[:n_s],
        kind(**{k: v.expand(n_s, n) for k, v in reference.as_dict().items()}),
        scene.circular,
    )
    return changes, valid[:n_s] & valid[n_s][None]


def score_edits(
    model: DiffusionModel,
    edits: Sequence[tuple[torch.Tensor, torch.Tensor]],
    strengths: Sequence[float],
    names: Sequence[str],
) -> DirectionScores:
    """The scores of :func:`score_directions` from edits already made: per direction, the
    edited images ``[S, N, C, H, W]`` at ``strengths`` (0 included) and the unedited ones
    ``[N, C, H, W]`` (as :func:`workbench.eval.judge.edited_with_reference` returns them)."""
    strengths = [float(v) for v in strengths]
    s = torch.tensor(strengths)
    size = model.sample_shape[1]
    scene = model_scene(model)
    rows, by_level, judged = [], [], []
    for edited, unedited in edits:
        judged.append(image_scores(edited, unedited, strengths))
        changes, pair_valid = read_changes(scene, edited, unedited)
        rows.append(summarise(changes, pair_valid, s, size, scene))
        by_level.append(level_effects(changes, pair_valid, s, size, scene))
    names = list(names)
    n_seeds = int(edits[0][1].shape[0])
    return DirectionScores(
        names=names,
        factors=list(scene.factor_names),
        strengths=strengths,
        effect=torch.stack([r[0] for r in rows]),
        signed_effect=torch.stack([r[1] for r in rows]),
        dominant=[scene.factor_names[r[2]] for r in rows],
        purity=torch.tensor([r[3] for r in rows]),
        monotonicity=torch.tensor([r[4] for r in rows]),
        validity=torch.tensor([r[5] for r in rows]),
        n_seeds=n_seeds,
        trend=torch.tensor([r[6] for r in rows]),
        levels=by_level[0][0],
        effect_by_level=torch.stack([b[1] for b in by_level]),
        validity_by_level=torch.stack([b[2] for b in by_level]),
        image=ImageScores.from_rows(names, strengths, judged, n_seeds),
    )
