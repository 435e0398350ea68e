"""Judge directions on any model: scores of an edit that need no ground truth.

Each direction edits ``seeds`` at ``strengths`` (0 is always included) and every edited
image is compared with the unedited sample of the same seed (same grid, same step noise,
no edit). From the difference images ``d = (edited - unedited) / 2`` (intensities in
[0, 1]), per direction:

- **effect**: least-squares slope through the origin of the RMS change of an image
  (``sqrt(mean(d^2))`` over channels and pixels) against |strength|: how much an image
  changes per unit strength (in the preset's steps), in [0, 1] intensity units. A mute
  direction scores near 0.
- **locality**: the share of a difference image's energy (``sum_c d^2`` per pixel) that
  falls in the ``region`` fraction of its pixels that change most, averaged over the edited
  images that visibly change (some pixel by at least half a grey level of an 8-bit image,
  :data:`VISIBLE`; NaN when none does). 1 means the whole change sits in that fraction of the image;
  an even change over all pixels scores ``region`` (the planted cases are in
  ``tests/test_judge.py``).
- **consistency**: mean Pearson correlation of the difference images of two different
  seeds at the same strength, over all pairs of seeds and all strengths (visibly changed
  images only, as for locality; NaN with fewer than two): 1 when the edit does the same
  thing to every sample, pixel for pixel; near 0 when what changes depends on the sample
  (e.g. an object moved at different places).
- **classifier** (when labelled images are given): a logistic-regression classifier is fitted on
  the labelled images, and the score is the signed slope of its decision-function change
  against the strength, divided by the gap between the classes' mean decisions: 1 means
  that a unit of strength carries an image from the negative class's typical decision to
  the positive one's. Its features are the image pooled to at most 32 x 32 pixels and,
  beside it, the image's contrast map (per pixel, ``sum_c |x_c - median_c|``: how far the
  pixel is from the image's median colour), standardised: on raw pixels alone a linear
  classifier cannot read where or how large something is when its colour varies (on Shapes,
  "large" and "right" stay at chance; ``analysis/judge_agreement.py`` measures both). The
  classifier's cross-validated accuracy is reported beside it, and below
  :data:`MIN_CLASSIFIER_ACCURACY` its scores are withheld (NaN): a classifier at chance reads
  nothing.

On the bundled Shapes models these scores are checked against the ground-truth effect
of :func:`workbench.eval.directions.score_directions` (``analysis/judge_agreement.py``,
``docs/findings.md``), which is why they can be trusted on a model without a read-out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from workbench.directions import DirectionSet, check_directions
from workbench.editing import EditResult, edit_set
from workbench.errors import WorkbenchError, check_finite
from workbench.models.wrapper import DiffusionModel
from workbench.options import MAX_SEED, PROGRESS, Option, Spec, validated

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.data.labelled import LabelledImages

#: Pixels per side the classifier's features are pooled to (at most).
CLASSIFIER_SIDE = 32
#: Cross-validated accuracy below which a classifier's scores are withheld (NaN).
MIN_CLASSIFIER_ACCURACY = 0.6
#: Default locality region: the fraction of pixels that change most.
REGION = 0.1
#: Smallest change of a pixel (intensities in [0, 1]) that counts as visible: half a grey
#: level of an 8-bit image (smaller changes vanish when the image is saved).
VISIBLE = 0.5 / 255


@dataclass
class LinearClassifier:
    """A linear read-out of one attribute, fitted on labelled images.

    ``decision(images)`` is the classifier's signed score (positive: the ``positive``
    class); ``gap`` the difference of the classes' mean scores on the training images;
    ``accuracy`` the 5-fold (fewer for small sets) cross-validated accuracy."""

    classifier: Any
    positive: str
    negative: str
    accuracy: float
    gap: float
    n: int
    contrast: bool = True  # features: the image and its contrast map (else the image alone)

    @classmethod
    def fit(
        cls,
        images: torch.Tensor,
        labels: torch.Tensor,
        positive: str = "positive",
        negative: str = "negative",
        seed: int = 0,
        contrast: bool = True,
    ) -> LinearClassifier:
        """Fit on ``images`` ``[N, C, H, W]`` in [-1, 1] with boolean ``labels`` ``[N]``
        (``contrast=False``: on the pooled image alone, without its contrast map)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        labels = torch.as_tensor(labels).bool().reshape(-1)
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise WorkbenchError(
                f"classifier: need images [N, C, H, W] and N labels, got {list(images.shape)} "
                f"and {labels.shape[0]}"
            )
        check_finite("classifier images", images)
        smaller = int(min(labels.sum(), (~labels).sum()))
        if smaller < 2:
            raise WorkbenchError(
                f"classifier: need at least 2 images of each class, got {int(labels.sum())} "
                f"{positive} and {int((~labels).sum())} {negative}"
            )
        x, y = _features(images, contrast), labels.numpy()
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        folds = StratifiedKFold(min(5, smaller), shuffle=True, random_state=seed)
        accuracy = float(cross_val_score(classifier, x, y, cv=folds).mean())
        classifier.fit(x, y)
        scores = torch.from_numpy(classifier.decision_function(x))
        gap = float(scores[labels].mean() - scores[~labels].mean())
        n = int(labels.shape[0])
        return cls(classifier, positive, negative, accuracy, gap, n, contrast)

    @classmethod
    def from_labelled(cls, labelled: LabelledImages) -> LinearClassifier:
        """Fit on images read by :func:`workbench.data.labelled.load_labelled`."""
        return cls.fit(labelled.images, labelled.labels, labelled.positive, labelled.negative)

    def decision(self, images: torch.Tensor) -> torch.Tensor:
        """Signed scores ``[N]`` of ``images`` ``[N, C, H, W]`` in [-1, 1]."""
        scores = self.classifier.decision_function(_features(images, self.contrast))
        return torch.from_numpy(scores).double()

    @property
    def reads(self) -> bool:
        """Whether it reads its attribute (accuracy >= :data:`MIN_CLASSIFIER_ACCURACY`)."""
        return self.accuracy >= MIN_CLASSIFIER_ACCURACY

    def describe(self) -> str:
        """One line: what the classifier reads and how well."""
        text = (
            f"linear classifier {self.positive!r} vs {self.negative!r} ({self.n} images, "
            f"cross-validated accuracy {self.accuracy:.2f})"
        )
        if not self.reads:
            text += f": below {MIN_CLASSIFIER_ACCURACY}, it reads nothing; its scores are withheld"
        return text


#: The older name of :class:`LinearClassifier`.
LinearProbe = LinearClassifier


def _features(images: torch.Tensor, contrast: bool = True):
    """The classifier's features (numpy ``[N, F]``): the image and (``contrast``) its contrast
    map (per pixel ``sum_c |x_c - median_c(x)|``), each pooled to at most
    :data:`CLASSIFIER_SIDE` pixels per side, flattened side by side."""
    images = images.detach().to("cpu", torch.float32)
    parts = [images]
    if contrast:
        median = images.flatten(2).median(-1).values[:, :, None, None]
        parts.append((images - median).abs().sum(1, keepdim=True))
    side = min(CLASSIFIER_SIDE, images.shape[-1])
    for i, part in enumerate(parts):
        if part.shape[-2:] != (side, side):
            part = F.adaptive_avg_pool2d(part, (side, side))
        parts[i] = part.flatten(1)
    return torch.cat(parts, 1).numpy()


@dataclass
class ImageScores:
    """No-ground-truth scores of ``k`` directions (module docstring); tensors ``[k]``."""

    names: list[str]
    strengths: list[float]
    effect: torch.Tensor
    locality: torch.Tensor
    consistency: torch.Tensor
    n_seeds: int
    region: float
    classifier: torch.Tensor | None = None
    classifier_about: str | None = None

    @classmethod
    def from_rows(
        cls,
        names: list[str],
        strengths: list[float],
        rows: Sequence[tuple[float, float, float, float | None]],
        n_seeds: int,
        region: float = REGION,
        classifier: LinearClassifier | None = None,
    ) -> ImageScores:
        """Gather :func:`image_scores` ``rows``, one per direction."""
        return cls(
            names=names,
            strengths=strengths,
            effect=torch.tensor([r[0] for r in rows]),
            locality=torch.tensor([r[1] for r in rows]),
            consistency=torch.tensor([r[2] for r in rows]),
            n_seeds=n_seeds,
            region=region,
            classifier=None if classifier is None else torch.tensor([r[3] for r in rows]),
            classifier_about=None if classifier is None else classifier.describe(),
        )

    def table(self) -> str:
        """The scores as a text table, one row per direction."""
        head = f"{'direction':<24}{'effect':>9}{'locality':>10}{'consistency':>13}"
        head += f"{'classifier':>12}" if self.classifier is not None else ""
        lines = [head]
        for i, name in enumerate(self.names):
            row = f"{name:<24}{float(self.effect[i]):>9.4f}{float(self.locality[i]):>10.2f}"
            row += f"{float(self.consistency[i]):>13.2f}"
            if self.classifier is not None:
                row += f"{float(self.classifier[i]):>12.2f}"
            lines.append(row)
        if self.classifier_about:
            lines.append(f"classifier: {self.classifier_about}")
        return "\n".join(lines)

    def caption(self, i: int) -> str:
        """Direction ``i``'s scores in one short line (edit grids, the explorer)."""
        text = (
            f"effect {float(self.effect[i]):.3f}/step, locality {float(self.locality[i]):.2f}, "
            f"consistency {float(self.consistency[i]):.2f}"
        )
        if self.classifier is not None:
            text += f", classifier {float(self.classifier[i]):+.2f}"
        return text

    def to_dict(self) -> dict:
        """Every score as plain lists (for JSON), with the printed table."""
        return {
            "table": self.table(),
            "names": self.names,
            "strengths": self.strengths,
            "effect": self.effect.tolist(),
            "locality": self.locality.tolist(),
            "consistency": self.consistency.tolist(),
            "classifier": None if self.classifier is None else self.classifier.tolist(),
            "classifier_about": self.classifier_about,
            "n_seeds": self.n_seeds,
            "region": self.region,
        }

    def _repr_html_(self) -> str:
        return self.html()

    def html(self) -> str:
        """The scores as an HTML table (notebooks, the report, the explorer)."""
        import html

        cols = ["effect / step", f"locality ({self.region:g})", "consistency"]
        cols += ["classifier / step"] if self.classifier is not None else []
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["direction", *cols])
        rows = []
        for i, name in enumerate(self.names):
            cells = [
                f"{float(self.effect[i]):.4f}",
                f"{float(self.locality[i]):.2f}",
                f"{float(self.consistency[i]):.2f}",
            ]
            if self.classifier is not None:
                cells.append(f"{float(self.classifier[i]):+.2f}")
            rows.append(
                f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells)
            )
        note = f"<p>{html.escape(self.classifier_about)}</p>" if self.classifier_about else ""
        return (
            f"<table class='workbench-judge'><tr>{head}</tr>{''.join(rows)}</table>"
            f"<p>{self.n_seeds} seeds, strengths {self.strengths}</p>{note}"
        )

    def figure(self) -> go.Figure:
        """Bars of the three (four) scores per direction, one panel each."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        panels = [
            ("effect", "RMS change per step"),
            ("locality", f"share in top {self.region:.0%} pixels"),
            ("consistency", "correlation across seeds"),
        ]
        if self.classifier is not None:
            panels.append(("classifier", "class gap per step"))
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
        for col, (attr, label) in enumerate(panels, 1):
            fig.add_trace(
                go.Bar(x=self.names, y=getattr(self, attr).tolist(), name=attr, showlegend=False),
                row=1,
                col=col,
            )
            fig.update_yaxes(title_text=label, row=1, col=col)
            fig.update_xaxes(title_text="direction", row=1, col=col)
        fig.update_layout(
            title=f"Directions judged without ground truth ({self.n_seeds} seeds)",
            template="plotly_white",
        )
        return fig


def image_scores(
    images: torch.Tensor,
    reference: torch.Tensor,
    strengths: Sequence[float],
    region: float = REGION,
    classifier: LinearClassifier | None = None,
) -> tuple[float, float, float, float | None]:
    """(effect, locality, consistency, classifier) of one direction from edited ``images``
    ``[S, N, C, H, W]`` at ``strengths`` ``[S]`` and the unedited ``reference``
    ``[N, C, H, W]``, all in [-1, 1] (module docstring); strength-0 rows are ignored."""
    s = torch.as_tensor(list(strengths), dtype=torch.float64)
    if images.ndim != 5 or images.shape[0] != s.shape[0] or images.shape[1:] != reference.shape:
        raise WorkbenchError(
            f"need images [S, N, C, H, W] for {s.shape[0]} strengths and a reference "
            f"[N, C, H, W], got {list(images.shape)} and {list(reference.shape)}"
        )
    if not 0 < region < 1:
        raise WorkbenchError(f"region must lie in (0, 1), got {region}")
    moved = s != 0
    if not bool(moved.any()):
        raise WorkbenchError("give at least one non-zero strength")
    s = s[moved]
    d = ((images[moved].double() - reference[None].double()) / 2).flatten(3)  # [S, N, C, P]
    n_s, n = d.shape[:2]
    rms = d.pow(2).mean(dim=(2, 3)).sqrt()  # [S, N]
    x = s.abs()[:, None].expand_as(rms)
    effect = float((x * rms).sum() / (x * x).sum())

    energy = d.pow(2).sum(dim=2)  # [S, N, P]
    top = max(1, math.ceil(region * energy.shape[-1]))
    total = energy.sum(-1)
    changed = d.abs().amax(dim=(2, 3)) >= VISIBLE  # [S, N]
    share = energy.topk(top, dim=-1).values.sum(-1) / total.clamp_min(1e-300)
    locality = float(share[changed].mean()) if bool(changed.any()) else float("nan")

    pairs = []
    if n >= 2:
        flat = d.flatten(2)  # [S, N, C*P]
        flat = flat - flat.mean(-1, keepdim=True)
        norms = flat.norm(dim=-1, keepdim=True)
        unit = flat / norms.clamp_min(1e-300)
        for i in range(n_s):
            ok = changed[i]
            if int(ok.sum()) >= 2:
                c = unit[i, ok] @ unit[i, ok].T
                m = c.shape[0]
                pairs.append(float((c.sum() - c.diagonal().sum()) / (m * (m - 1))))
    consistency = sum(pairs) / len(pairs) if pairs else float("nan")

    change = None
    if classifier is not None and not classifier.reads:
        change = float("nan")
    elif classifier is not None:
        if classifier.gap == 0:
            raise WorkbenchError("the classifier does not separate its classes (gap 0)")
        before = classifier.decision(reference)  # [N]
        after = classifier.decision(images[moved].flatten(0, 1)).reshape(n_s, n)
        delta = (after - before[None]) / classifier.gap
        sv = s[:, None].expand_as(delta)
        change = float((sv * delta).sum() / (sv * sv).sum())
    return effect, locality, consistency, change


def judge_edit(
    result: EditResult, region: float = REGION, classifier: LinearClassifier | None = None
) -> tuple[float, float, float, float | None]:
    """:func:`image_scores` of one :func:`~workbench.edit` result. The reference is
    ``result.unedited`` when it was asked for; an additive edit that includes strength 0
    uses that row instead (:meth:`~workbench.editing.EditResult.reference`)."""
    return image_scores(result.images, result.reference(), result.strengths, region, classifier)


def edited_with_reference(
    model: DiffusionModel,
    directions: DirectionSet | Sequence[DirectionSet],
    index: int,
    strengths: Sequence[float],
    seeds: Sequence[int],
    progress: bool | None = None,
    **edit_options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Direction ``index`` edited at ``strengths`` for every seed, and the unedited samples:
    ``([S, N, C, H, W], [N, C, H, W])``; :func:`edits_with_reference` of one index."""
    return edits_with_reference(
        model, directions, [index], strengths, seeds, progress, **edit_options
    )[0]


def edits_with_reference(
    model: DiffusionModel,
    directions: DirectionSet | Sequence[DirectionSet],
    indices: Sequence[int],
    strengths: Sequence[float],
    seeds: Sequence[int],
    progress: bool | None = None,
    **edit_options: Any,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each direction of ``indices`` edited at ``strengths`` for every seed, and the
    unedited samples: ``([S, N, C, H, W], [N, C, H, W])`` per index, from one batched
    :func:`~workbench.edit_set` run (the unedited trunk and row shared by all directions).
    ``directions`` is one set applied to every seed, or one set per seed (direction ``i``
    of set ``j`` edits seed ``j``: one run per seed)."""
    indices = list(indices)
    if isinstance(directions, DirectionSet):
        runs = [
            edit_set(model, directions, strengths, indices=indices, seeds=seeds,
                     progress=progress, unedited=True, **edit_options)
        ]  # fmt: skip
    else:
        runs = [
            edit_set(model, ds, strengths, indices=indices, seeds=[seed], progress=False,
                     unedited=True, **edit_options)
            for ds, seed in zip(directions, seeds, strict=True)
        ]  # fmt: skip
    reference = torch.cat([run[0].unedited for run in runs])
    return [
        (torch.cat([run[k].images for run in runs], dim=1), reference) for k in range(len(indices))
    ]


def what_to_edit(
    directions: DirectionSet | Sequence[DirectionSet],
    indices: Sequence[int] | None,
    strengths: Sequence[float],
    seeds: Sequence[int],
) -> tuple[DirectionSet, list[int], list[float], list[int]]:
    """What a scoring run edits, checked: the first set (names, count), the direction
    indices (default all), the strengths sorted with 0 added, the seeds. ``directions`` is
    one set or one set per seed."""
    seeds = list(seeds)
    if isinstance(directions, DirectionSet):
        first = directions
    else:
        if isinstance(directions, str | Path) or not isinstance(directions, Iterable):
            check_directions(directions)  # a one-line error: not a set, not a list of sets
        directions = list(directions)
        if not directions or not all(isinstance(d, DirectionSet) for d in directions):
            raise WorkbenchError("directions must be a DirectionSet or one DirectionSet per seed")
        if len(directions) != len(seeds):
            raise WorkbenchError(
                f"got {len(directions)} direction sets for {len(seeds)} seeds: give one per seed"
            )
        first = directions[0]
    indices = list(range(len(first))) if indices is None else list(indices)
    strengths = sorted(set(float(v) for v in strengths) | {0.0})
    if len(strengths) < 2:
        raise WorkbenchError("give at least one non-zero strength")
    return first, indices, strengths, seeds


#: The options that say what is edited, shared with ``score_directions``.
INDICES = Option("indices", "ints", None, "which directions (default: all)", low=0)
STRENGTHS = Option("strengths", "floats", (-2.0, -1.0, 0.0, 1.0, 2.0), "in preset steps")
SEEDS = Option("seeds", "seeds", tuple(range(8)), "seeds of x_T, e.g. 0-7", low=0, high=MAX_SEED)
#: The options of :func:`judge_directions` (the edit's own go on to ``wb.edit``).
JUDGE = Spec(
    "function",
    "judge_directions",
    "edit and score directions without ground truth (effect, locality, consistency, classifier)",
    (
        INDICES,
        STRENGTHS,
        SEEDS,
        Option(
            "labelled",
            "path",
            None,
            "labelled images for the classifier score: a folder of two class folders or a CSV",
        ),
        Option("positive", str, None, "the positive class of the labelled images"),
        Option(
            "classifier",
            object,
            None,
            "a fitted LinearClassifier instead of labelled",
            cli=False,
            aliases=("--probe",),  # the older name
        ),
        Option(
            "region",
            float,
            REGION,
            "locality: fraction of pixels that change most",
            low=0.001,
            high=0.999,
        ),
        PROGRESS,
    ),
)


def _judge_checked(fn: Callable) -> Callable:
    return validated(JUDGE, fn, first=2)


@_judge_checked
def judge_directions(
    model: DiffusionModel,
    directions: DirectionSet | Sequence[DirectionSet],
    indices: Sequence[int] | None = None,
    strengths: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0),
    seeds: Sequence[int] = tuple(range(8)),
    labelled: str | Path | None = None,
    positive: str | None = None,
    classifier: LinearClassifier | None = None,
    region: float = REGION,
    progress: bool | None = None,
    **edit_options: Any,
) -> ImageScores:
    """Edit each direction and score it without ground truth (module docstring).

    ``labelled`` (a folder of two class folders or a CSV of ``path,label``, with
    ``positive`` naming the positive class unless the pair is obvious) or a fitted ``classifier``
    adds the classifier score. Edit options (``mode``, ``num_steps``,
    ``eta``, prompts, ...) go on to :func:`~workbench.edit`.
    """
    first, indices, strengths, seeds = what_to_edit(directions, indices, strengths, seeds)
    classifier = _classifier(model, labelled, positive, classifier)
    edits = edits_with_reference(model, directions, indices, strengths, seeds, progress,
                                 **edit_options)  # fmt: skip
    rows = [
        image_scores(edited, reference, strengths, region, classifier)
        for edited, reference in edits
    ]
    names = [first.name(i) for i in indices]
    return ImageScores.from_rows(names, strengths, rows, len(seeds), region, classifier)


def _classifier(
    model: DiffusionModel,
    labelled: str | Path | None,
    positive: str | None,
    classifier: LinearClassifier | None,
) -> LinearClassifier | None:
    """The classifier given, or fitted on ``labelled`` (read at the model's image size), or None."""
    if classifier is not None:
        if labelled is not None:
            raise WorkbenchError("give labelled= or classifier=, not both")
        if not isinstance(classifier, LinearClassifier):
            raise WorkbenchError(
                f"classifier must be a LinearClassifier, got {type(classifier).__name__}"
            )
        return classifier
    if labelled is None:
        if positive is not None:
            raise WorkbenchError("positive= names a class of labelled images: give labelled=")
        return None
    from workbench.data.labelled import load_labelled

    channels, height, width = model.image_shape
    if channels != 3 or height != width:
        raise WorkbenchError(
            f"model {model.name!r} makes {channels}-channel {height}x{width} images: labelled "
            "image files cannot be compared with them; fit a LinearClassifier on tensors instead"
        )
    return LinearClassifier.from_labelled(load_labelled(labelled, height, positive))
