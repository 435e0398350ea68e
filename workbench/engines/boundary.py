"""Boundary directions at the mixing step (docs/methods.md, section 2).

1. The mixing step: found by the ``mixing-step`` probe
   (:func:`workbench.probes.mixing.find_mixing_step`), recorded in the preset. The engine
   fits and edits there by default, unless the preset names a ``boundary_step`` (shapes64:
   its mixing step, t = 19, is too near the data end for a one-step edit to act).
2. :func:`fit_boundary`: labelled images are DDIM-inverted to the step; a linear SVM
   (``SVC(kernel="linear", C=1)``) is trained on flattened x_t and on flattened h; the
   unit normals n = w / |w| are the directions; held-out accuracy is reported. Unlike the
   published code the offset is kept: signed distance = n.z + b / |w|. Conditional
   boundaries project out the normals of other attributes (InterFaceGAN).
3. Edit mode ``"distance"`` (``wb.edit(..., mode="distance")``): at the mixing step only,
   move the latent to signed distance ``d = strength * step`` from the boundary,
   z' = z + (d - dist(z)) n, in x_t, or in h (that one step only), or both (pass the h
   boundary as ``h=``), then denoise deterministically (eta 0; eta 1 as published is an
   option of ``wb.edit``). ``via_x=True`` reaches an h distance by moving x_t instead
   (``hold=`` keeps other boundaries' h distances): on ``shapes32`` that edit, at the
   mixing step and with eta 1, is the one that works (``docs/boundary.md``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.data.labelled import load_labelled
from workbench.data.scenes import get_scene
from workbench.directions import DirectionSet, check_directions
from workbench.editing import EditPlan, register_mode
from workbench.engines import register_engine
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import INVERSION, NUM_STEPS, PROGRESS, SEED, Option, Spec, validated
from workbench.sampling import Step, StepHook, invert, make_timesteps, run_to
from workbench.trajectories import model_scene, reference_images

# ---------------------------------------------------------------------- mixing step
#: The edit a boundary set records as its default (``wb.edit`` without ``mode``): move to a
#: signed distance at the boundary's step; an h boundary reached through x_t and denoised
#: with eta 1, as published (the h edit alone barely reaches the decoder: docs/boundary.md).
#: ``strengths``: the signed distances (in preset steps) the measurements use, the default
#: of ``workbench edit`` for the set; an h boundary's are ``-d, -d/2, 0, d/2, d`` with d the
#: preset's ``boundary_distance`` (:func:`working_edit`; shapes32, ``large``: +-0.3 h_step
#: moves scale by 0.96 spreads at purity 0.71, 95% valid; the x_t boundary's +-4 x_step
#: leaves no valid image, its +-2 and +-4 together half: analysis/boundary_defaults.py,
#: docs/boundary.md, "What the command line gives by default").
WORKING_EDIT: dict[str, dict[str, Any]] = {
    "x": {"mode": "distance", "strengths": [-4.0, -2.0, 0.0, 2.0, 4.0]},
    "h": {"mode": "distance", "via_x": True, "eta": 1.0},
}


def working_edit(model: DiffusionModel, space: str) -> dict[str, Any]:
    """The working edit a boundary of ``space`` records on ``model`` (:data:`WORKING_EDIT`;
    an h boundary's distances from the preset's ``boundary_distance``)."""
    edit = dict(WORKING_EDIT[space])
    if space == "h":
        d = float(model.preset.boundary_distance)
        edit["strengths"] = [-d, -d / 2, 0.0, d / 2, d]
    return edit


# ---------------------------------------------------------------------- labels
#: Shapes attributes labelled by the read-out: name -> (factor, predicate on the factor,
#: size). Thresholds are the medians of the generator's distributions.
SHAPES_ATTRIBUTES: dict[str, Callable] = {
    "large": lambda f, size: f.scale > 0.225 * size,
    "right": lambda f, size: f.x > 0.5 * size,
    "low": lambda f, size: f.y > 0.5 * size,  # y grows downwards: the lower half
    "square": lambda f, size: f.shape == 1,
    "dark-background": lambda f, size: f.background < 0.5,
}


#: The attributes of each scene with ground truth: Lit Shapes (``shapes64``) adds the side
#: the light comes from (``light`` in turns, 0 from the right: the left half is (0.25, 0.75)).
SCENE_ATTRIBUTES: dict[str, dict[str, Callable]] = {
    "shapes": SHAPES_ATTRIBUTES,
    "lit-shapes": SHAPES_ATTRIBUTES
    | {"light-left": lambda f, size: (f.light > 0.25) & (f.light < 0.75)},
}
#: Every attribute name of any scene (the engine's choices).
ATTRIBUTES = tuple(dict.fromkeys(a for table in SCENE_ATTRIBUTES.values() for a in table))


def shapes_labels(
    images: torch.Tensor, attribute: str, scene: str = "shapes"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of ``images`` of ``scene`` (``shapes`` or ``lit-shapes``) for ``attribute``
    (a name in :data:`SCENE_ATTRIBUTES` of that scene), measured by the scene's read-out;
    returns ``(labels [N] bool, valid [N] bool)``."""
    table = SCENE_ATTRIBUTES.get(scene)
    if table is None:
        raise WorkbenchError(
            f"scene {scene!r} has no attributes; known: {', '.join(SCENE_ATTRIBUTES)}"
        )
    if attribute not in table:
        raise WorkbenchError(
            f"unknown attribute {attribute!r} of the {scene} scene; known: {', '.join(table)}"
        )
    read = get_scene(scene).read(images)
    labels = table[attribute](read.factors, images.shape[-1])
    return labels.bool(), read.valid


def _check_labels(labels: torch.Tensor, n: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).flatten()
    if labels.numel() != n:
        raise WorkbenchError(f"got {labels.numel()} labels for {n} images")
    if labels.dtype.is_floating_point and torch.isnan(labels).any():
        raise WorkbenchError("labels contain NaN")
    labels = labels.bool()
    if labels.all() or not labels.any():
        raise WorkbenchError("labels hold one class only: a boundary needs both")
    return labels


# ---------------------------------------------------------------------- boundaries
@dataclass
class BoundaryFit:
    """Linear boundaries of one attribute at timestep ``t``.

    Attributes:
        x, h: the unit normals as one-direction :class:`DirectionSet` s (``None`` for a
            space not fitted); ``params["offsets"]`` holds b / |w| (signed distance
            = n.z + offset).
        accuracy: ``{"x": {"train": .., "test": ..}, "h": {...}}``.
        n_train, n_test: images per split.
        test_index: ``[n_test]`` indices of the held-out images.
        seconds: wall time of the inversion and of the fits.
    """

    x: DirectionSet | None
    h: DirectionSet | None
    t: int
    accuracy: dict[str, dict[str, float]]
    n_train: int
    n_test: int
    test_index: torch.Tensor
    seconds: dict[str, float]

    def summary(self) -> str:
        """Accuracy of each attribute's boundary, one line per attribute."""
        parts = [
            f"{s}: test {a['test']:.3f} (train {a['train']:.3f})" for s, a in self.accuracy.items()
        ]
        return f"boundary at t = {self.t}, {self.n_train}/{self.n_test} images; " + "; ".join(parts)


def svm_normal(
    features: torch.Tensor, labels: torch.Tensor, c: float = 1.0
) -> tuple[torch.Tensor, float, object]:
    """Linear SVM on ``features`` ``[N, D]``: (unit normal ``[D]``, offset b/|w|, model)."""
    from sklearn.svm import SVC

    svm = SVC(kernel="linear", C=c)
    svm.fit(features.double().numpy(), labels.numpy())
    w = torch.tensor(svm.coef_[0], dtype=torch.float64)
    norm = float(w.norm())
    if norm == 0.0:
        raise WorkbenchError("the SVM found no boundary (zero normal)")
    return w / norm, float(svm.intercept_[0]) / norm, svm


def _project_out(normal: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
    """``normal`` minus its projection onto the span of ``others`` (each ``[D]``), unit."""
    if not others:
        return normal
    basis = torch.stack([o.double().flatten() for o in others], dim=1)  # [D, m]
    q, _ = torch.linalg.qr(basis)
    out = normal - q @ (q.T @ normal)
    norm = float(out.norm())
    if norm < 1e-8:
        raise WorkbenchError("the boundary lies in the span of the conditioning normals")
    return out / norm


#: The options of :func:`fit_boundary` (checked before anything runs).
FIT_BOUNDARY = Spec(
    "function",
    "fit_boundary",
    "linear SVM boundaries of a binary attribute at one timestep",
    (
        Option(
            "images", object, None, "images [N, C, H, W], a class-folder or a CSV", required=True
        ),
        Option(
            "labels", object, None, "[N] booleans or a callable (images from memory)", cli=False
        ),
        Option(
            "t", int, None, "timestep (default: the preset's boundary step or mixing step)", low=0
        ),
        Option("space", str, "both", "x_t, h or both", choices=("x", "h", "both")),
        Option("test_fraction", float, 0.5, "share held out", low=1e-6, high=1 - 1e-6),
        Option("c", float, 1.0, "SVM regularisation C", low=1e-12, high=1e12),
        NUM_STEPS,
        Option("latents", object, None, "x_t of the images at t, if already inverted", cli=False),
        Option("condition", object, (), "boundaries to project out", cli=False),
        Option("attribute", str, None, "the attribute's name in the results"),
        SEED,
        PROGRESS,
        Option("positive", str, None, "with a folder or CSV: the class that is True"),
        INVERSION,
    ),
)


@functools.partial(validated, FIT_BOUNDARY)
def fit_boundary(
    model: DiffusionModel,
    images: torch.Tensor | str | Path,
    labels: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    t: int | None = None,
    space: str = "both",
    test_fraction: float = 0.5,
    c: float = 1.0,
    num_steps: int | None = None,
    latents: torch.Tensor | None = None,
    condition: Sequence[DirectionSet] = (),
    attribute: str | None = None,
    seed: int = 0,
    progress: bool | None = None,
    positive: str | None = None,
    inversion: str = "ddim",
) -> BoundaryFit:
    """Fit linear boundaries of a binary attribute at timestep ``t`` (default:
    :func:`default_step`, the preset's boundary step or else its mixing step).

    Args:
        images: labelled real images ``[N, C, H, W]`` in [-1, 1]; or a folder of two
            class folders, or a CSV file of ``path,label`` rows
            (:func:`workbench.data.labelled.load_labelled`; then ``labels`` stays ``None``
            and ``positive`` names the class labelled True).
        labels: ``[N]`` booleans, or a callable on the images returning them.
        space: ``"x"``, ``"h"`` or ``"both"``.
        test_fraction: share of the images held out (stratified, seeded split).
        num_steps: DDIM inversion steps over ``[0, t]`` (default: the preset's).
        latents: x_t of the images at ``t`` if already inverted (skips the inversion).
        condition: boundaries of other attributes whose normals are projected out
            (each a :class:`DirectionSet` in the space fitted).
        attribute: the name in the direction labels and params (default: the positive
            class for images from disk, else ``"attribute"``).
        inversion: ``"ddim"`` or ``"fixed-point"`` (each inversion step solved exactly:
            :func:`workbench.sampling.invert`), recorded with the directions. Either way
            ``t`` defaults to the same step (the mixing step measured with plain DDIM
            inversion, or the preset's boundary step): on shapes32 the h boundary is as
            accurate, pure and valid there as at the fixed-point inversion's own, higher
            mixing step (docs/findings.md, "Inversion").
    """
    if isinstance(images, (str, Path)):
        if labels is not None:
            raise WorkbenchError("labels come from the folder or CSV: leave labels=None")
        loaded = load_labelled(images, model.image_shape[-1], positive)
        images, labels = loaded.images, loaded.labels
        attribute = loaded.positive if attribute is None else attribute
    elif labels is None:
        raise WorkbenchError("give labels (booleans or a callable) for these images")
    attribute = "attribute" if attribute is None else attribute
    t = default_step(model) if t is None else t
    t = model.check_timestep(t)
    images = model.check_real_images(images)
    labels = _check_labels(labels(images) if callable(labels) else labels, images.shape[0])
    gen = torch.Generator().manual_seed(seed)
    test = torch.zeros(labels.numel(), dtype=torch.bool)
    for cls in (True, False):  # stratified: each class split in the same proportion
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        test[idx[: round(test_fraction * idx.numel())]] = True
    if (labels[~test].all() or not labels[~test].any()) or test.all() or not test.any():
        raise WorkbenchError("too few images of each class for a train/test split")

    began = time.perf_counter()
    if latents is None:
        latents = invert(
            model, images, num_steps=num_steps, t_stop=t, progress=progress, method=inversion
        )
    model.check_x(latents, "latents")
    x_t = latents.to(model.device, model.dtype)
    seconds = {"inversion": time.perf_counter() - began}
    feats: dict[str, torch.Tensor] = {}
    if space in ("x", "both"):
        feats["x"] = x_t.detach().flatten(1).double().cpu()
    if space in ("h", "both"):
        with torch.no_grad():
            feats["h"] = (
                torch.cat([model.h(x_t[i : i + 256], t) for i in range(0, x_t.shape[0], 256)])
                .flatten(1)
                .double()
                .cpu()
            )
    began = time.perf_counter()
    sets: dict[str, DirectionSet | None] = {"x": None, "h": None}
    accuracy = {}
    for name, f in feats.items():
        normal, offset, svm = svm_normal(f[~test], labels[~test], c)
        others = [ds.vector(0, model).double().cpu() for ds in condition if ds.space == name]
        if others:
            normal = _project_out(normal, others)
        dist = f @ normal + offset
        accuracy[name] = {
            "train": float(((dist[~test] > 0) == labels[~test]).double().mean()),
            "test": float(((dist[test] > 0) == labels[test]).double().mean()),
        }
        shape = model.sample_shape if name == "x" else model.h_shape
        sets[name] = DirectionSet(
            vectors=normal.reshape(1, *shape).to(torch.float32),
            space=name,
            timestep=t,
            engine="boundary",
            model_fingerprint=model.fingerprint,
            scores=torch.tensor([accuracy[name]["test"]]),
            score_name="held-out accuracy",
            params={
                "attribute": attribute,
                "offsets": [offset],
                "c": c,
                "n_train": int((~test).sum()),
                "n_test": int(test.sum()),
                "conditioned_on": [ds.name(0) for ds in condition if ds.space == name],
                **({} if inversion == "ddim" else {"inversion": inversion}),
                # the working edit (docs/boundary.md), what wb.edit uses unless told otherwise
                "edit": working_edit(model, name),
            },
            labels=[f"{attribute}@{name}{t}"],
        )
    seconds["fit"] = time.perf_counter() - began
    return BoundaryFit(
        x=sets["x"],
        h=sets["h"],
        t=t,
        accuracy=accuracy,
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        test_index=torch.nonzero(test).flatten(),
        seconds=seconds,
    )


def default_step(model: DiffusionModel) -> int:
    """The boundary engine's default timestep: the preset's ``boundary_step``, else its
    mixing step."""
    t = model.preset.boundary_step
    t = model.preset.mixing_step if t is None else t
    if t is None:
        raise WorkbenchError("no mixing step for this model: run find_mixing_step(model) or pass t")
    return t


def signed_distance(directions: DirectionSet, z: torch.Tensor, index: int = 0) -> torch.Tensor:
    """Signed distance ``n.z + offset`` of latents ``z`` ``[B, *shape]`` to a boundary."""
    n = directions.vectors[index].to(z.device, torch.float64).flatten()
    offset = float(directions.params.get("offsets", [0.0] * len(directions))[index])
    return z.flatten(1).double() @ n + offset


def pull_to_distance(
    model: DiffusionModel,
    h_set: DirectionSet,
    index: int,
    x: torch.Tensor,
    t: int,
    target: torch.Tensor,
    iterations: int = 4,
    hold: Sequence[DirectionSet] = (),
) -> torch.Tensor:
    """Move ``x`` ``[B, C, H, W]`` so that the signed distance of ``model.h(x, t)`` to
    boundary ``index`` of ``h_set`` becomes ``target`` ``[B]``: Newton steps along the
    gradient of that distance with respect to x (the smallest move to first order).

    ``hold``: further h boundaries (one direction each, same timestep) whose signed
    distances the move keeps where they were (a conditional edit: the step is the
    smallest one that reaches the target and, to first order, leaves those distances
    alone; ``Delta = G^T (G G^T)^-1 r`` with G the gradients of all the distances)."""
    boundaries = [(h_set, index)] + [(b, 0) for b in hold]
    z = x.detach().clone()
    goals = None  # [B, K]: the target, then the held distances where they start
    eye = torch.eye(len(boundaries), dtype=torch.float64, device=z.device)
    for _ in range(iterations):
        z.requires_grad_(True)
        with torch.enable_grad():
            h = model.h(z, t)
            dists = [signed_distance(b, h, i) for b, i in boundaries]
            grads = [
                torch.autograd.grad(d.sum(), z, retain_graph=k + 1 < len(dists))[0]
                for k, d in enumerate(dists)
            ]
        g = torch.stack([gr.flatten(1).double() for gr in grads], 1)  # [B, K, D]
        now = torch.stack([d.detach() for d in dists], 1)  # [B, K]
        if goals is None:
            goals = now.clone()
            goals[:, 0] = target.to(z.device, torch.float64)
        gap = goals - now
        gram = g @ g.transpose(1, 2)  # [B, K, K], tiny ridge against degenerate gradients
        ridge = 1e-12 * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-30)
        coef = torch.linalg.solve(gram + ridge[:, None, None] * eye, gap.unsqueeze(-1))
        move = (g.transpose(1, 2) @ coef).squeeze(-1).reshape(z.shape)
        z = (z.detach().double() + move).to(x.dtype)
    return z.detach()


def distance_move(
    model: DiffusionModel, h_set: DirectionSet, strengths: Sequence[float], seeds: Sequence[int]
) -> torch.Tensor:
    """How far the recorded edit of an h boundary (``via_x``: the signed distance reached
    through x_t) moves x_t at its step: the mean ``|move| / x_step`` over the samples of
    ``seeds``, one per strength ``[S]`` (signed distances in h steps); the size of the
    random x edit it is compared with."""
    t = int(h_set.timestep)  # type: ignore[arg-type]
    grid = make_timesteps(model, None, include=[t])
    x = run_to(model, model.noise(list(seeds)), grid, t)
    out = []
    for strength in strengths:
        target = torch.full((x.shape[0],), float(strength) * model.preset.h_step)
        moved = pull_to_distance(model, h_set, 0, x, t, target.double())
        out.append(float((moved - x).flatten(1).norm(dim=1).mean()) / model.preset.x_step)
    return torch.tensor(out)


# ---------------------------------------------------------------------- edit mode
@register_mode(
    "distance",
    "move the latent to signed distance s * step from a boundary at its timestep",
    (
        Option("h", object, None, "the h-space companion of an x-space boundary", cli=False),
        Option("asymmetric", bool, False, "h: Asyrp's asymmetric step"),
        Option("via_x", bool, False, "reach an h-space distance through x_t"),
        Option("iterations", int, 4, "Newton steps of via_x", low=1, high=1000),
        Option("hold", object, (), "boundaries whose distance is held fixed", cli=False),
    ),
)
def distance(
    model: DiffusionModel,
    directions: DirectionSet,
    index: int,
    h: DirectionSet | None = None,
    asymmetric: bool = False,
    via_x: bool = False,
    iterations: int = 4,
    hold: Sequence[DirectionSet] = (),
) -> EditPlan:
    """Move the latent to signed distance ``strength * step`` from the boundary at the
    boundary's timestep only: x_t (``step`` = ``x_step``) for an x-space set, h for an
    h-space set (``h_step``), or both when an x-space set is given with ``h=`` its h-space
    companion; then denoise. The h edit touches that one step and no other.

    ``via_x`` (h-space sets only): reach the h distance by moving x_t instead of adding
    to h: ``iterations`` Newton steps ``x <- x + (d - s(x)) g / |g|^2`` on the signed h
    distance ``s(x) = n.h(x_t) + offset`` with ``g = ds/dx_t`` (one backward pass each).
    The edit then reaches the decoder through the skip connections too, for models whose
    decoder barely reads h (``docs/boundary.md``). ``hold`` (with ``via_x``): h boundaries
    of other attributes at the same step whose distances the move keeps unchanged
    (:func:`pull_to_distance`)."""
    for given in (directions, h) if h is not None else (directions,):
        check_directions(given, "h" if given is h else "directions")
        if "offsets" not in given.params:  # a direction, not a hyperplane
            raise WorkbenchError(
                f"distance edits need a boundary (a set from the boundary engine, with its "
                f"offsets); got a {given.engine} set: use mode additive"
            )
    for held in hold:
        check_directions(held, "each of hold")
    if not isinstance(directions.timestep, int):
        raise WorkbenchError("distance edits need a boundary at one timestep")
    if via_x and (directions.space != "h" or h is not None):
        raise WorkbenchError("via_x edits take one h-space boundary (and no h=)")
    t_edit = directions.timestep
    hold = list(hold)
    if hold and not via_x:
        raise WorkbenchError("hold= needs via_x=True (other h distances kept through x_t)")
    for other in hold:
        other.check_model(model)
        if other.space != "h" or other.timestep != t_edit or len(other) != 1:
            raise WorkbenchError(
                f"hold= takes one-direction h-space boundaries at t = {t_edit}, "
                f"got {other.space}-space at {other.timestep} with {len(other)} directions"
            )
    x_set = directions if directions.space == "x" else None
    h_set = directions if directions.space == "h" else h
    if h_set is not None:
        h_set.check_model(model)
        if h_set.space != "h" or h_set.timestep != t_edit:
            raise WorkbenchError("h= must be an h-space boundary at the same timestep")

    def make_hook(strengths: torch.Tensor) -> StepHook:
        def hook(step: Step) -> None:
            if step.t != t_edit or step.inverting:
                return
            if x_set is not None:
                n = x_set.vectors[index].to(step.x.device, torch.float64)
                d = (strengths.double() * model.preset.x_step).to(step.x.device)
                move = d - signed_distance(x_set, step.x, index)
                step.x = (step.x.double() + move[:, None, None, None] * n).to(step.x.dtype)
            if h_set is not None and via_x:
                d = (strengths.double() * model.preset.h_step).to(step.x.device)
                step.x = pull_to_distance(model, h_set, index, step.x, t_edit, d, iterations, hold)
            elif h_set is not None:
                i = index if x_set is None else 0
                with torch.no_grad():
                    h_now = model.h(step.x, t_edit)
                n = h_set.vectors[i].to(h_now.device, torch.float64)
                d = (strengths.double() * model.preset.h_step).to(h_now.device)
                move = d - signed_distance(h_set, h_now, i)
                step.delta_h = (move[:, None, None, None] * n).to(h_now.dtype)
                step.asymmetric = asymmetric

        return hook

    return EditPlan(include=[t_edit], first_edit=t_edit, make_hook=make_hook)


# ---------------------------------------------------------------------- engine
OPTIONS = (
    Option("k", int, 1, "one direction per attribute", low=1, high=1),
    Option(
        "timestep",
        int,
        None,
        "timestep of the boundary (default: the preset's boundary step or mixing step)",
        low=0,
        control=True,
    ),
    Option(
        "attribute",
        str,
        "large",
        "the scene's attribute (light-left: Lit Shapes only)",
        choices=ATTRIBUTES,
        control=True,
    ),
    Option(
        "space",
        str,
        "h",
        "h (its working edit reaches the boundary distance through x_t) or x_t",
        choices=("h", "x"),
        control=True,
    ),
    Option("images", int, 200, "labelled images (half held out)", low=4, high=100_000),
    dataclasses.replace(NUM_STEPS, help="DDIM inversion steps over [0, t] (default: the preset's)"),
    Option(
        "labels",
        "path",
        None,
        "your labelled images instead: a folder of two class folders or a path,label CSV",
    ),
    Option("positive", str, None, "with labels: the class that is True"),
    INVERSION,
    PROGRESS,
)


@register_engine(
    "boundary",
    "linear SVM boundary of a Shapes attribute or of labelled images at the mixing step",
    OPTIONS,
)
def boundary_directions(
    model: DiffusionModel,
    k: int = 1,
    timestep: int | None = None,
    seed: int = 0,
    attribute: str = "large",
    space: str = "h",
    images: int = 200,
    num_steps: int | None = None,
    labels: str | Path | None = None,
    positive: str | None = None,
    inversion: str = "ddim",
    progress: bool | None = None,
) -> DirectionSet:
    """The boundary normal of the model's scene's ``attribute`` (labelled by the read-out) at
    ``timestep`` (default: the preset's boundary step or mixing step), from ``images``
    real images of the scene; or, with ``labels`` (a class-folder layout or a CSV,
    :mod:`workbench.data.labelled`), of the user's attribute whose class ``positive`` is
    True, from those images."""
    options = {
        "t": timestep, "space": space, "num_steps": num_steps, "seed": seed,
        "inversion": inversion, "progress": progress,
    }  # fmt: skip
    if labels is not None:  # named after the positive class
        fit = fit_boundary(model, labels, positive=positive, **options)
    else:
        pictures = reference_images(model, images, seed=10_000 + seed)
        classes, valid = shapes_labels(pictures, attribute, model_scene(model).name)
        fit = fit_boundary(model, pictures[valid], classes[valid], attribute=attribute, **options)
    out = fit.x if space == "x" else fit.h
    assert out is not None
    return out
