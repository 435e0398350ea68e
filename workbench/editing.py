"""`edit`: one entry point for editing along a direction, with pluggable modes.

A strength of 1 is a perturbation of norm ``preset.x_step`` (x-space) or ``preset.h_step``
(h-space, norm over all of ``[C, H, W]``). Built-in modes:

- ``"additive"`` (default): x-space directions are added to x_t at their timestep;
  h-space directions are added to h at every step of their window (or at their single
  timestep), with the asymmetric reverse step when ``asymmetric`` (the preset's default).

Engines register further modes with :func:`register_mode`. The denoising before the first
edited step is shared by all strengths and computed once; :func:`edit_set` edits every
direction of a set at every strength in one batched pass, with that trunk computed once per
edit timestep (or taken from a :class:`~workbench.trajectories.TrajectoryBank`) and the
strength-0 row, where the mode leaves it unedited, computed once for all directions.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.data.labelled import read_images
from workbench.directions import DirectionSet, check_directions
from workbench.display import short_repr, summary_html
from workbench.errors import WorkbenchError, check_finite
from workbench.models.wrapper import DiffusionModel
from workbench.options import (
    BANK,
    CONDITIONING,
    EDIT_ETA,
    INVERSION,
    NUM_STEPS,
    PROGRESS,
    SEEDS,
    STRENGTHS,
    Option,
    Spec,
    in_context,
    validated,
)
from workbench.sampling import Step, StepHook, make_timesteps, refinements, run_chain
from workbench.store import atomic_path, save_npz
from workbench.trajectories import TrajectoryBank


@dataclass
class EditPlan:
    """What a mode needs from the loop: timesteps to put on the grid, first edited step,
    and a factory of the edit hook for a batch of per-sample strengths ``[B]``;
    ``zero_is_identity``: whether strength 0 leaves a sample unedited (then the strength-0
    row is the unedited sample, computed once for all directions edited together)."""

    include: list[int]
    first_edit: int
    make_hook: Callable[[torch.Tensor], StepHook]
    zero_is_identity: bool = False


ModeFn = Callable[..., EditPlan]
MODES: dict[str, ModeFn] = {}


def register_mode(
    name: str, summary: str = "", options: Sequence[Option] = ()
) -> Callable[[ModeFn], ModeFn]:
    """Register ``fn(model, directions, index, **options) -> EditPlan`` as edit mode
    ``name``, described by ``options`` (the function returned checks them; ``fn.spec``)."""

    def wrap(fn: ModeFn) -> ModeFn:
        checked = validated(Spec("edit mode", name, summary or name, tuple(options)), fn, first=3)
        MODES[name] = checked
        return checked

    return wrap


def _per_sample(strengths: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return strengths.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def _together(parts: list[tuple[StepHook, slice]], h_shape: tuple[int, ...]) -> StepHook:
    """One hook for a batch whose rows ``slice`` belong to the hook beside it (rows of no
    part, e.g. the unedited reference, run unedited): each hook sees only its own rows, as
    if it ran alone; their x changes and h shifts are put back together."""

    def run(step: Step) -> None:
        x, xs, deltas, asymmetric, end = step.x, [], [], set(), 0
        for hook, rows in parts:
            sub = Step(index=step.index, t=step.t, t_next=step.t_next, x=x[rows], eta=step.eta)
            hook(sub)
            xs.append(sub.x)
            if sub.delta_h is not None:
                deltas.append((rows, sub.delta_h))
                asymmetric.add(sub.asymmetric)
            step.eta = sub.eta
            end = rows.stop
        step.x = torch.cat([*xs, x[end:]]) if end < x.shape[0] else torch.cat(xs)
        if deltas:
            if len(asymmetric) > 1:
                raise WorkbenchError("edits batched together disagree on the asymmetric step")
            full = x.new_zeros(x.shape[0], *h_shape)
            for rows, delta in deltas:
                full[rows] = torch.broadcast_to(delta, (rows.stop - rows.start, *h_shape))
            step.delta_h = full
            step.asymmetric = asymmetric.pop()

    return run


@register_mode(
    "additive",
    "x_t += s * x_step * v at the direction's timestep; h += s * h_step * v over its window",
    (
        Option(
            "asymmetric",
            bool,
            None,
            "h only: Asyrp's asymmetric step, the shifted h in the x0 prediction only "
            "(default: the preset's)",
        ),
    ),
)
def additive(
    model: DiffusionModel, directions: DirectionSet, index: int, asymmetric: bool | None = None
) -> EditPlan:
    """x-space: ``x_t += s * x_step * v`` at the direction's timestep.
    h-space: ``h += s * h_step * n`` at every step of the window (or the single timestep)."""
    v = directions.vector(index, model).to(model.device, model.dtype)
    if directions.space == "x":
        t_edit = int(directions.timestep)  # type: ignore[arg-type]
        unit = model.preset.x_step * v

        def make_hook(strengths: torch.Tensor) -> StepHook:
            def hook(step: Step) -> None:
                if step.t == t_edit:
                    step.x = step.x + _per_sample(strengths, step.x) * unit

            return hook

        return EditPlan(
            include=[t_edit], first_edit=t_edit, make_hook=make_hook, zero_is_identity=True
        )

    if isinstance(directions.timestep, tuple):
        t_high, t_low = directions.timestep
    else:
        t_high = t_low = int(directions.timestep)
    asym = model.preset.asymmetric if asymmetric is None else asymmetric
    unit = model.preset.h_step * v

    def make_hook(strengths: torch.Tensor) -> StepHook:
        def hook(step: Step) -> None:
            if t_low <= step.t <= t_high and not step.inverting:
                step.delta_h = _per_sample(strengths, unit[None]) * unit
                step.asymmetric = asym

        return hook

    include = [t_high] if t_high == t_low else []
    return EditPlan(include=include, first_edit=t_high, make_hook=make_hook, zero_is_identity=True)


def quality_boost(grid: Sequence[int], fraction: float) -> StepHook:
    """Hook that sets eta = 1 on the last ``round(fraction * steps)`` steps of ``grid``."""
    if not 0.0 <= fraction <= 1.0:
        raise WorkbenchError(f"boost must be in [0, 1], got {fraction}")
    steps = len(grid) - 1
    boosted = set(grid[steps - round(fraction * steps) : steps])

    def hook(step: Step) -> None:
        if step.t in boosted:
            step.eta = 1.0

    return hook


@dataclass(repr=False)
class EditResult:
    """Edited images ``[S, N, C, H, W]`` in [-1, 1]: strengths along dim 0, samples along 1
    (VAE-decoded for a latent model); ``conditioning``: prompt, negative prompt and
    guidance of a text-to-image model's edit."""

    images: torch.Tensor
    strengths: list[float]
    seeds: list[int] | None
    index: int
    mode: str
    directions: DirectionSet
    timesteps: list[int] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    conditioning: dict[str, Any] | None = None
    #: ``[N, C, H, W]``: the samples left unedited on the same grid and noise (when asked)
    unedited: torch.Tensor | None = None
    #: The image files edited (``images=`` a file or folder), one per sample.
    sources: list[Path] | None = None
    #: Mean squared error (images in [-1, 1]) of the given images inverted and sampled back
    #: unedited on the edit's grid (``images=``; None otherwise).
    reconstruction_mse: float | None = None

    def summary(self) -> str:
        """One line: which direction, how it was edited, on how many images."""
        n = self.images.shape[1]
        strengths = ", ".join(f"{v:g}" for v in self.strengths)
        images = f"seeds {self.seeds}" if self.seeds is not None else f"{n} given images"
        shape = ", ".join(map(str, self.images.shape))
        text = (
            f"{self.directions.name(self.index)} edited ({self.mode}) at strengths "
            f"{strengths} on {images}: images [{shape}]"
        )
        if self.reconstruction_mse is not None:
            text += f"; reconstruction MSE {self.reconstruction_mse:.2g}"
        return text

    def __repr__(self) -> str:
        return short_repr(self, self.summary())

    def _repr_html_(self) -> str:
        calls = (
            "workbench.viz.figure(result) shows the grid (strengths x seeds); .uint8() the pixels; "
            "workbench.eval.judge.judge_edit(result) scores it"
        )
        return summary_html(self, self.summary(), calls)

    def reference(self) -> torch.Tensor:
        """The unedited samples ``[N, C, H, W]`` the edit is compared with: ``unedited``
        when it was asked for; an additive edit that includes strength 0 uses that row
        (adding 0 changes nothing); else a one-line error."""
        if self.unedited is not None:
            return self.unedited
        if self.mode == "additive" and 0.0 in self.strengths:
            return self.images[self.strengths.index(0.0)]
        raise WorkbenchError(
            f"a {self.mode} edit needs its unedited samples to be judged: edit with unedited=True"
        )

    def uint8(self) -> torch.Tensor:
        """``[S, N, H, W, C]`` uint8."""
        return DiffusionModel.to_uint8(self.images)

    def save_beside_sources(self, overwrite: bool = False) -> list[Path]:
        """Write each edited image as PNG into an ``edited/`` folder beside its source file
        (``images=`` a file or folder): ``STEM_DIRECTION_STRENGTH.png``, atomically; an
        existing file is replaced only with ``overwrite`` (checked for all before any is
        written)."""
        from PIL import Image

        if self.sources is None:
            raise WorkbenchError("these edits were not made from image files")
        paths = edited_paths(self.sources, self.directions.name(self.index), self.strengths)
        check_edited_paths(paths, overwrite)
        pixels = self.uint8().numpy()
        rows = itertools.product(range(pixels.shape[0]), range(pixels.shape[1]))
        for (j, i), path in zip(rows, paths, strict=True):
            path.parent.mkdir(exist_ok=True)
            with atomic_path(path) as tmp:
                Image.fromarray(pixels[j, i]).save(tmp, format="PNG")
        return paths

    def save_npz(self, path: str | Path) -> Path:
        """``images`` uint8 ``[S, N, H, W, 3]``, ``strengths``, ``seeds`` (-1 if given latents)."""
        seeds = self.seeds if self.seeds is not None else [-1] * self.images.shape[1]
        return save_npz(
            path,
            images=self.uint8().numpy(),
            strengths=torch.tensor(self.strengths).numpy(),
            seeds=torch.tensor(seeds).numpy(),
            index=self.index,
            mode=self.mode,
            engine=self.directions.engine,
            space=self.directions.space,
        )


def edited_paths(sources: Sequence[Path], label: str, strengths: Sequence[float]) -> list[Path]:
    """Where :meth:`EditResult.save_beside_sources` writes the edit of each source image at
    each strength (strength-major): ``edited/STEM_LABEL_STRENGTH.png`` beside it."""
    label = re.sub(r"[^\w.+-]+", "-", label).strip("-")
    return [
        source.parent / "edited" / f"{source.stem}_{label}_{strength:+g}.png"
        for strength in strengths
        for source in sources
    ]


def check_edited_paths(paths: Sequence[Path], overwrite: bool = False) -> None:
    """A one-line error unless every edited PNG of ``paths`` can be written: no two images
    write one file (``a.png`` and ``a.jpg``), ``edited/`` is a writable folder (or can be
    made), and no file is there already unless ``overwrite``."""
    seen: dict[Path, int] = {}
    for path in paths:
        seen[path] = seen.get(path, 0) + 1
    clash = next((p for p, count in seen.items() if count > 1), None)
    if clash is not None:
        raise WorkbenchError(
            f"two images would write {clash} (same name, other suffix): rename one of them"
        )
    for folder in dict.fromkeys(p.parent for p in paths):
        if folder.exists() and not folder.is_dir():
            raise WorkbenchError(f"{folder} is a file: the edited images go into a folder there")
        where = folder if folder.is_dir() else folder.parent
        if not os.access(where, os.W_OK | os.X_OK):
            raise WorkbenchError(f"{where} is not writable: the edited images go there")
    there = [p for p in paths if p.exists()]
    if there and not overwrite:
        raise WorkbenchError(
            f"{len(there)} edited image(s) exist already, e.g. {there[0]}: give --overwrite "
            "(overwrite=True) to replace them"
        )


#: The options of :func:`edit` itself (the mode's own come from the mode's description).
EDIT = Spec(
    "function",
    "edit",
    "edit seeds or latents along one direction at several strengths",
    (
        Option("index", int, 0, "which direction of the set", low=0, required=True),
        STRENGTHS,
        SEEDS,
        Option("x", object, None, "latents [N, C, H, W] at t_start instead of seeds", cli=False),
        Option(
            "images",
            object,
            None,
            "your images instead of seeds: an image file, a folder of them, or a tensor "
            "[N, *image_shape] in [-1, 1]; inverted to t_start on the edit's grid, then edited",
            cli=False,
        ),
        INVERSION,
        Option("t_start", int, None, "timestep of x (default: T-1)", low=0, cli=False),
        Option(
            "mode",
            str,
            None,
            "edit mode (default: the one the direction set records, e.g. a boundary's "
            "distance, else additive)",
        ),
        NUM_STEPS,
        EDIT_ETA,
        Option("boost", float, 0.0, "last fraction of the steps run with eta 1", low=0, high=1),
        Option(
            "unedited",
            bool,
            False,
            "also return the samples left unedited on the same grid and noise",
            cli=False,
        ),
        PROGRESS,
        Option("batch_size", int, 256, "samples per network call", low=1, high=65536),
        BANK,
        *CONDITIONING,
    ),
)


def _edit_checked(fn: Callable) -> Callable:
    return validated(EDIT, in_context(fn, EDIT.options), first=2)


@_edit_checked
def edit(
    model: DiffusionModel,
    directions: DirectionSet,
    index: int,
    strengths: Sequence[float],
    seeds: Sequence[int] | None = None,
    x: torch.Tensor | None = None,
    t_start: int | None = None,
    mode: str | None = None,
    num_steps: int | None = None,
    eta: float | None = None,
    boost: float = 0.0,
    progress: bool | None = None,
    batch_size: int = 256,
    unedited: bool = False,
    images: torch.Tensor | str | Path | None = None,
    inversion: str = "ddim",
    bank: TrajectoryBank | None = None,
    **options: Any,
) -> EditResult:
    """Edit along direction ``index`` at each strength, for seeds or given latents.

    Args:
        directions: checked against ``model`` (fingerprint, shape, timestep range).
        strengths: in units of the preset's step for the directions' space.
        seeds: x_T from these seeds; or ``x``: latents ``[N, C, H, W]`` at ``t_start``
            (default T-1; e.g. DDIM-inverted images at the mixing step); or ``images``:
            your images (a file, a folder of image files, or ``[N, *image_shape]`` in
            [-1, 1]), centre-cropped and resized to the model (said once per call),
            VAE-encoded for a latent model and inverted to ``t_start`` on the edit's own
            grid, so that strength 0 retraces them (``EditResult.reconstruction_mse``).
        mode: a registered mode (``"additive"`` or an engine's own). Default: the working
            edit the set records in ``params["edit"]`` (mode and options, e.g. a boundary's
            ``distance``; options given here win), else ``additive``. What a strength
            means is the mode's: a displacement in preset steps (``additive``), a target
            signed distance in preset steps (``distance``: 0 lands on the boundary), the
            sign and scale of the trial step (``guidance``).
        num_steps: sampling steps over ``[0, t_start]`` (default: the preset's).
        eta: DDIM eta from the edit's first step on (default: the set's recorded, else 0:
            deterministic). With seeds, the
            step noise of a seed is drawn from its own generator and is the same at every
            strength; with given latents it comes from the global generator.
        boost: "quality boosting": the last ``boost`` fraction of the steps (0 to 1) run
            with eta = 1 (the published pullback default is 0.2).
        unedited: also run each sample unedited on the same grid with the same step noise
            (``EditResult.unedited``): the reference every mode is compared with (a
            ``distance`` edit at strength 0 moves onto the boundary; it is not unedited).
        bank: a :class:`~workbench.trajectories.TrajectoryBank`: where its grid and seeds
            are the edit's, the unedited trunk (and, without step noise, the unedited
            samples) are read from it instead of computed.
        options: passed to the mode; also a text-to-image or class-conditional model's
            conditioning, ``prompt``, ``negative_prompt``, ``guidance_scale`` and
            ``class_label`` (see :meth:`DiffusionModel.conditioned`).
    Returns:
        :class:`EditResult` with images ``[S, N, C, H, W]``.
    """
    return _edit_many(
        model, directions, [index], strengths, seeds, x, images, t_start, mode, num_steps,
        eta, boost, progress, batch_size, unedited, inversion, bank, options,
    )[0]  # fmt: skip


def _edit_many(
    model: DiffusionModel,
    directions: DirectionSet,
    indices: Sequence[int] | None,
    strengths: Sequence[float],
    seeds: Sequence[int] | None,
    x: torch.Tensor | None,
    images: torch.Tensor | str | Path | None,
    t_start: int | None,
    mode: str | None,
    num_steps: int | None,
    eta: float | None,
    boost: float,
    progress: bool | None,
    batch_size: int,
    unedited: bool,
    inversion: str,
    bank: TrajectoryBank | None,
    options: dict[str, Any],
) -> list[EditResult]:
    """The one edit path of :func:`edit` and :func:`edit_set`: directions ``indices``
    (default: all) of ``directions`` at ``strengths``, from seeds, latents or the user's
    images, in one batched run; one :class:`EditResult` per index."""
    check_directions(directions)
    # h-space directions are read and applied at the activation point they were found at
    point = directions.params.get("h_point") if directions.space == "h" else None
    with model.h_at(point):
        directions.check_model(model)
        mode, eta, options = _recorded_edit(directions, mode, eta, options)
        strengths = _check_strengths(strengths)
        if sum(v is not None for v in (seeds, x, images)) != 1:
            raise WorkbenchError("give exactly one of seeds, x or images")
        indices = list(range(len(directions))) if indices is None else [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < len(directions):
                raise WorkbenchError(
                    f"direction index {i} out of range for {len(directions)} directions"
                )
        own = own_images(model, images) if images is not None else None
        if own is None:
            x = _start(model, seeds, x)
        plans = [MODES[mode](model, directions, i, **options) for i in indices]
        grid = _edit_grid(model, num_steps, t_start, sorted({t for p in plans for t in p.include}))
        # the images sampled back unedited give the reconstruction error: deterministically
        # they are the unedited row of the edit itself (its trunk shared), else a pass of
        # their own
        in_batch = own is not None and not eta and not boost
        error = None
        if own is not None:  # invert on the edit's own grid: strength 0 retraces it
            clean = model.encode(own.images.to(model.device))
            refine = refinements(inversion)
            x = run_chain(model, clean, grid[::-1], progress=progress, refine=refine)
            if not in_batch:
                again = model.decode(run_chain(model, x, grid, progress=progress))
                error = float(((again - own.images.to(again)) ** 2).mean())
        run = _EditRun(model, grid, strengths, seeds, eta, boost, progress, batch_size, bank)
        edited, reference = run(plans, x, unedited or in_batch)
        if in_batch:
            error = float(((reference - own.images.to(reference)) ** 2).mean())
        return [
            EditResult(
                images=images_i,
                unedited=reference if unedited else None,
                strengths=strengths,
                seeds=None if seeds is None else [int(s) for s in seeds],
                index=i,
                mode=mode,
                directions=directions,
                timesteps=grid,
                options=dict(options) | {"eta": eta, "boost": boost},
                sources=own.paths if own is not None else None,
                reconstruction_mse=error,
            )
            for i, images_i in zip(indices, edited, strict=True)
        ]


#: The options of :func:`edit_set`: :func:`edit`'s, for several directions.
EDIT_SET = Spec(
    "function",
    "edit_set",
    "edit seeds or latents along several directions of a set at several strengths, batched",
    (
        Option("indices", "ints", None, "which directions of the set (default: all)", low=0),
        *(o for o in EDIT.options if o.name != "index"),
    ),
)


def _edit_set_checked(fn: Callable) -> Callable:
    return validated(EDIT_SET, in_context(fn, EDIT_SET.options), first=2)


@_edit_set_checked
def edit_set(
    model: DiffusionModel,
    directions: DirectionSet,
    strengths: Sequence[float],
    indices: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    x: torch.Tensor | None = None,
    t_start: int | None = None,
    mode: str | None = None,
    num_steps: int | None = None,
    eta: float | None = None,
    boost: float = 0.0,
    progress: bool | None = None,
    batch_size: int = 256,
    unedited: bool = False,
    images: torch.Tensor | str | Path | None = None,
    inversion: str = "ddim",
    bank: TrajectoryBank | None = None,
    **options: Any,
) -> list[EditResult]:
    """:func:`edit` for every direction ``indices`` (default: all) of ``directions`` (from
    seeds, latents or the user's images, as :func:`edit` takes them), as one
    batched pass: the unedited trunk down to the edit timestep is computed once (or read
    from ``bank`` when its grid and seeds are the edit's), and where the mode leaves
    strength 0 unedited (additive, guidance) that row is computed once for all directions
    (with ``bank`` and eta 0: read from it). Gives what :func:`edit` gives per direction
    (up to float rounding of the other batch size); one :class:`EditResult` per index."""
    return _edit_many(
        model, directions, indices, strengths, seeds, x, images, t_start, mode, num_steps,
        eta, boost, progress, batch_size, unedited, inversion, bank, options,
    )  # fmt: skip


#: The strengths of ``workbench edit`` for a set that records none (preset steps).
EDIT_STRENGTHS = (-3.0, 0.0, 3.0)


def working_strengths(
    directions: DirectionSet, default: Sequence[float] = EDIT_STRENGTHS
) -> list[float]:
    """The strengths a set is edited at by default (``workbench edit`` without
    ``--strengths``): the ones its working edit records (a boundary's signed distances),
    else ``default``."""
    recorded = (directions.params.get("edit") or {}).get("strengths")
    return [float(s) for s in (recorded or default)]


def _recorded_edit(
    directions: DirectionSet, mode: str | None, eta: float | None, options: dict[str, Any]
) -> tuple[str, float, dict[str, Any]]:
    """Mode, eta and mode options of an edit: by default the working edit the set records
    (options given win), else additive with eta 0."""
    if mode is None:  # the edit the set records as its working one (a boundary's)
        recorded = dict(directions.params.get("edit") or {})
        recorded.pop("strengths", None)  # the CLI's default strengths, not an option
        mode = recorded.pop("mode", "additive")
        recorded_eta = recorded.pop("eta", 0.0)
        eta = recorded_eta if eta is None else eta
        options = recorded | options
    if mode not in MODES:
        raise WorkbenchError(f"unknown edit mode {mode!r}; known: {', '.join(sorted(MODES))}")
    return mode, 0.0 if eta is None else eta, options


def _check_strengths(strengths: Sequence[float]) -> list[float]:
    strengths = [float(s) for s in strengths]
    if not strengths:
        raise WorkbenchError("give at least one strength")
    return strengths


def _start(
    model: DiffusionModel, seeds: Sequence[int] | None, x: torch.Tensor | None
) -> torch.Tensor:
    if x is not None:
        model.check_x(x, "x")
    x = model.noise(seeds) if x is None else x.to(model.device, model.dtype)
    check_finite("x", x)
    return x


def _edit_grid(
    model: DiffusionModel, num_steps: int | None, t_start: int | None, include: Sequence[int]
) -> list[int]:
    """The grid of an edit: the model's sampling grid (as ``wb.sample``'s, spaced as its
    scheduler config says) from the top, or a chain from ``t_start``; each edit timestep
    in ``include`` replaces its nearest grid point."""
    top = model.schedule.top if t_start is None else model.check_timestep(t_start)
    for t in include:
        if t > top:
            raise WorkbenchError(f"edit timestep {t} lies above the start timestep {top}")
    return make_timesteps(model, num_steps, t_start=t_start, include=include)


@dataclass
class _EditRun:
    """Edits of several plans at several strengths on one grid, batched (see :func:`edit_set`)."""

    model: DiffusionModel
    grid: list[int]
    strengths: list[float]
    seeds: Sequence[int] | None
    eta: float
    boost: float
    progress: bool | None
    batch_size: int
    bank: TrajectoryBank | None

    def __call__(
        self, plans: list[EditPlan], x: torch.Tensor, reference: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Images ``[S, N, C, H, W]`` per plan (decoded, on the CPU) and the unedited ones
        ``[N, C, H, W]`` (None unless ``reference`` or needed for a shared strength 0)."""
        model, grid = self.model, self.grid
        stochastic = bool(self.eta or self.boost)
        splits = [
            next((i for i, t in enumerate(grid) if t <= p.first_edit), len(grid) - 1) for p in plans
        ]
        # strength 0 of a mode that leaves it unedited is the reference row, shared; with step
        # noise only where every plan's noise starts at the same step
        share = not stochastic or len(set(splits)) == 1
        levels = [
            [s for s in self.strengths if not (share and p.zero_is_identity and s == 0.0)]
            for p in plans
        ]
        need_reference = reference or any(len(lv) < len(self.strengths) for lv in levels)
        seeds = None if self.seeds is None else [int(s) for s in self.seeds]
        banked = (
            self.bank is not None and seeds is not None and self.bank.covers(model, grid, seeds)
        )
        # the unedited samples without step noise are the bank's own samples
        reference_from_bank = need_reference and banked and not stochastic
        per_seed = sum(map(len, levels)) + (need_reference and not reference_from_bank)
        per_chunk = max(1, self.batch_size // max(per_seed, 1))
        boosting = quality_boost(grid, self.boost)
        outs: list[list[torch.Tensor]] = [[] for _ in plans]
        refs: list[torch.Tensor] = []
        n = x.shape[0]
        for start in range(0, n, per_chunk):
            chunk_seeds = None if seeds is None else seeds[start : start + per_chunk]
            chunk = x[start : start + per_chunk]
            trunk = self._trunks(chunk, chunk_seeds, sorted(set(splits)), banked)
            if reference_from_bank:
                bank_x = self.bank.at(model, grid, chunk_seeds, -1)  # type: ignore[union-attr]
                refs.append(model.decode(bank_x.to(model.device, model.dtype)))
            first = min(splits)
            for split in sorted(set(splits)):
                group = [j for j, s in enumerate(splits) if s == split]
                with_reference = need_reference and not reference_from_bank and split == first
                images, reference_images = self._group(
                    [plans[j] for j in group],
                    [levels[j] for j in group],
                    trunk[split],
                    split,
                    chunk_seeds,
                    with_reference,
                    boosting,
                )
                for j, part in zip(group, images, strict=True):
                    outs[j].append(part)
                if reference_images is not None:
                    refs.append(reference_images)
        unedited = torch.cat(refs).cpu() if refs else None
        results = []
        for plan_levels, parts in zip(levels, outs, strict=True):
            done = torch.cat(parts, dim=1).cpu()
            rows = iter(done)
            results.append(
                torch.stack(
                    [
                        next(rows) if s in plan_levels else unedited  # type: ignore[misc]
                        for s in self.strengths
                    ]
                )
            )
        for result in results:
            check_finite("edited images", result)
        return results, unedited

    def _trunks(
        self, x: torch.Tensor, seeds: list[int] | None, splits: list[int], banked: bool
    ) -> dict[int, torch.Tensor]:
        """x at each grid index of ``splits`` (ascending), denoised once, unedited."""
        model, grid = self.model, self.grid
        if banked:
            return {
                s: self.bank.at(model, grid, seeds, grid[s]).to(model.device, model.dtype)  # type: ignore[union-attr,arg-type]
                for s in splits
            }
        out, at, current = {}, 0, x
        for s in splits:
            if s > at:
                current = run_chain(model, current, grid[at : s + 1], progress=self.progress)
                at = s
            out[s] = current
        return out

    def _group(
        self,
        plans: list[EditPlan],
        levels: list[list[float]],
        x: torch.Tensor,
        split: int,
        seeds: list[int] | None,
        with_reference: bool,
        boosting: StepHook,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """One batched pass from grid index ``split`` for plans that start editing there:
        rows plan-major, then strength-major, then sample; the reference rows last."""
        model = self.model
        m = x.shape[0]
        parts, blocks, row = [], [], 0
        for plan, plan_levels in zip(plans, levels, strict=True):
            if not plan_levels:
                continue
            rows = slice(row, row + len(plan_levels) * m)
            per_sample = torch.tensor(plan_levels).repeat_interleave(m)
            parts.append((plan.make_hook(per_sample), rows))
            blocks.append(x.repeat(len(plan_levels), 1, 1, 1))
            row = rows.stop
        if with_reference:
            blocks.append(x)
        if not blocks:
            return [torch.zeros(0, m, *model.image_shape) for _ in plans], None
        batch = torch.cat(blocks)
        gens = None
        if (self.eta or self.boost) and seeds is not None:  # a seed's noise: same at every row
            gens = [
                torch.Generator().manual_seed(s + 1_000_003)
                for _ in range(batch.shape[0] // m)
                for s in seeds
            ]
        out = run_chain(
            model,
            batch,
            self.grid[split:],
            eta=self.eta,
            generator=gens,
            edit=[_together(parts, model.h_shape), boosting],
            progress=self.progress,
        )
        out = model.decode(out)  # images of a latent model (in pixel space: unchanged)
        images, at = [], 0
        for plan_levels in levels:
            count = len(plan_levels) * m
            images.append(out[at : at + count].reshape(len(plan_levels), m, *out.shape[1:]))
            at += count
        return images, (out[at:] if with_reference else None)


@dataclass
class OwnImages:
    """The user's images for an edit: ``images`` ``[N, *image_shape]`` in [-1, 1] and the
    files they came from (None for a tensor)."""

    images: torch.Tensor
    paths: list[Path] | None


def own_images(model: DiffusionModel, images: torch.Tensor | str | Path) -> OwnImages:
    """``images`` for ``model``: a tensor (checked), an image file or a folder of them (read,
    centre-cropped to a square and resized to the model's image size, said in one
    warning when any needed it)."""
    if isinstance(images, torch.Tensor):
        return OwnImages(model.check_real_images(images), None)
    if not isinstance(images, str | os.PathLike):
        raise WorkbenchError(
            "images must be an image file, a folder of them, or a tensor [N, "
            f"{', '.join(map(str, model.image_shape))}] in [-1, 1], got {type(images).__name__}"
        )
    channels, height, width = model.image_shape
    if channels != 3 or height != width:
        raise WorkbenchError(
            f"model {model.name!r} makes {channels}-channel {height}x{width} images: give "
            "images as a tensor"
        )
    read = read_images(images, height)
    if read.resized:
        warnings.warn(
            f"{read.resized} of {len(read.paths)} images centre-cropped and resized to "
            f"{height}x{width} px for {model.name}",
            UserWarning,
            stacklevel=6,  # own_images, _edit_many, edit, its two wrappers, the caller
        )
    return OwnImages(read.images, read.paths)


@register_mode(
    "guidance",
    "the published x-space guidance: repeated steps along eps(x + s delta v) - eps(x)",
    (
        Option("gamma", float, 0.1, "step size of each repeat", low=0, high=100),
        Option(
            "delta",
            float,
            1.0,
            "trial step along v whose eps change is followed, in x_step units",
            low=0,
            high=1000,
        ),
        Option("repeats", int, 16, "repeats", low=1, high=10000),
    ),
)
def guidance(
    model: DiffusionModel,
    directions: DirectionSet,
    index: int,
    gamma: float = 0.1,
    delta: float = 1.0,
    repeats: int = 16,
) -> EditPlan:
    """The published x-space guidance (pullback engine, docs/methods.md section 1) at the
    direction's timestep t: ``x <- x + gamma * (eps(x + s * delta * v, t) - eps(x, t))``,
    repeated ``repeats`` times from the previous result; ``s`` is the strength (its sign
    gives +v or -v). ``delta`` is the norm of the trial step, in units of ``x_step``.
    Defaults: the published CelebA values (gamma 0.1, delta 1, 16 repeats)."""
    if directions.space != "x":
        raise WorkbenchError("guidance edits x-space directions only")
    v = directions.vector(index, model).to(model.device, model.dtype)
    t_edit = int(directions.timestep)  # type: ignore[arg-type]
    trial = delta * model.preset.x_step * v

    def make_hook(strengths: torch.Tensor) -> StepHook:
        def hook(step: Step) -> None:
            if step.t != t_edit:
                return
            s = _per_sample(strengths, step.x)
            x = step.x
            for _ in range(repeats):
                x = x + gamma * (model.eps(x + s * trial, t_edit) - model.eps(x, t_edit))
            step.x = x

        return hook

    return EditPlan(include=[t_edit], first_edit=t_edit, make_hook=make_hook, zero_is_identity=True)
