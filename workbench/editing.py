"""`edit`: one entry point for editing along a direction, with pluggable modes.

A strength of 1 is a perturbation of norm ``preset.x_step`` (x-space) or ``preset.h_step``
(h-space, norm over all of ``[C, H, W]``). Built-in modes:

- ``"additive"`` (default): x-space directions are added to x_t at their timestep;
  h-space directions are added to h at every step of their window (or at their single
  timestep), with the asymmetric reverse step when ``asymmetric`` (the preset's default).

Engines register further modes with :func:`register_mode`. The denoising before the first
edited step is shared by all strengths and computed once.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.data.labelled import read_images
from workbench.directions import DirectionSet
from workbench.display import short_repr, summary_html
from workbench.errors import WorkbenchError, check_finite
from workbench.models.wrapper import DiffusionModel
from workbench.options import (
    CONDITIONING,
    INVERSION,
    NUM_STEPS,
    PROGRESS,
    SEEDS,
    Option,
    Spec,
    in_context,
    validated,
)
from workbench.sampling import Step, StepHook, ddim, make_timesteps, refinements
from workbench.store import atomic_path, save_npz


@dataclass
class EditPlan:
    """What a mode needs from the loop: timesteps to put on the grid, first edited step,
    and a factory of the edit hook for a batch of per-sample strengths ``[B]``."""

    include: list[int]
    first_edit: int
    make_hook: Callable[[torch.Tensor], StepHook]


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


def _except(hook: StepHook, keep: torch.Tensor, h_shape: tuple[int, ...]) -> StepHook:
    """``hook`` with its edit undone on the rows where ``keep`` is True: those samples run
    on the same grid, with the same step noise, unedited (whatever the mode does)."""

    def run(step: Step) -> None:
        x, delta = step.x.clone(), step.delta_h
        hook(step)
        rows = keep.to(step.x.device).reshape(-1, *([1] * (step.x.ndim - 1)))
        step.x = torch.where(rows, x, step.x)
        if step.delta_h is not None and step.delta_h is not delta:
            d = step.delta_h.expand(step.x.shape[0], *h_shape).clone()
            d[keep.to(d.device)] = 0
            step.delta_h = d

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

        return EditPlan(include=[t_edit], first_edit=t_edit, make_hook=make_hook)

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
    return EditPlan(include=include, first_edit=t_high, make_hook=make_hook)


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

    def uint8(self) -> torch.Tensor:
        """``[S, N, H, W, C]`` uint8."""
        return DiffusionModel.to_uint8(self.images)

    def save_beside_sources(self) -> list[Path]:
        """Write each edited image as PNG into an ``edited/`` folder beside its source file
        (``images=`` a file or folder): ``STEM_DIRECTION_STRENGTH.png``, atomically."""
        from PIL import Image

        if self.sources is None:
            raise WorkbenchError("these edits were not made from image files")
        label = re.sub(r"[^\w.+-]+", "-", self.directions.name(self.index)).strip("-")
        pixels = self.uint8().numpy()
        written = []
        for j, strength in enumerate(self.strengths):
            for i, source in enumerate(self.sources):
                path = source.parent / "edited" / f"{source.stem}_{label}_{strength:+g}.png"
                path.parent.mkdir(exist_ok=True)
                with atomic_path(path) as tmp:
                    Image.fromarray(pixels[j, i]).save(tmp, format="PNG")
                written.append(path)
        return written

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


#: The options of :func:`edit` itself (the mode's own come from the mode's description).
EDIT = Spec(
    "function",
    "edit",
    "edit seeds or latents along one direction at several strengths",
    (
        Option("index", int, 0, "which direction of the set", low=0, required=True),
        Option("strengths", "floats", None, "in preset steps, e.g. -3,0,3", required=True),
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
        Option(
            "eta",
            float,
            None,
            "DDIM eta from the edit on (default: the set's recorded, else 0: deterministic)",
            low=0,
            high=1,
        ),
        Option("boost", float, 0.0, "last fraction of the steps run with eta 1", low=0, high=1),
        Option(
            "unedited",
            bool,
            False,
            "also return the samples left unedited on the same grid and noise",
            cli=False,
        ),
        PROGRESS,
        Option("batch_size", int, 256, "samples per U-Net call", low=1, high=65536),
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
            sign and scale of the probe step (``guidance``).
        num_steps: DDIM steps over ``[0, t_start]`` (default: the preset's).
        eta: DDIM eta from the edit's first step on (default: the set's recorded, else 0:
            deterministic). With seeds, the
            step noise of a seed is drawn from its own generator and is the same at every
            strength; with given latents it comes from the global generator.
        boost: "quality boosting": the last ``boost`` fraction of the steps (0 to 1) run
            with eta = 1 (the published pullback default is 0.2).
        unedited: also run each sample unedited on the same grid with the same step noise
            (``EditResult.unedited``): the reference every mode is compared with (a
            ``distance`` edit at strength 0 moves onto the boundary; it is not unedited).
        prompt, negative_prompt, guidance_scale, class_label: a text-to-image or
            class-conditional model's conditioning (see :meth:`DiffusionModel.conditioned`).
        options: passed to the mode.
    Returns:
        :class:`EditResult` with images ``[S, N, C, H, W]``.
    """
    # h-space directions are read and applied at the activation point they were found at
    point = directions.params.get("h_point") if directions.space == "h" else None
    with model.h_at(point):
        directions.check_model(model)
        if mode is None:  # the edit the set records as its working one (a boundary's)
            recorded = dict(directions.params.get("edit") or {})
            recorded.pop("strengths", None)  # the CLI's default strengths, not an option
            mode = recorded.pop("mode", "additive")
            recorded_eta = recorded.pop("eta", 0.0)
            eta = recorded_eta if eta is None else eta
            options = recorded | options
        eta = 0.0 if eta is None else eta
        if mode not in MODES:
            raise WorkbenchError(f"unknown edit mode {mode!r}; known: {', '.join(sorted(MODES))}")
        strengths = [float(s) for s in strengths]
        if not strengths:
            raise WorkbenchError("give at least one strength")
        if sum(v is not None for v in (seeds, x, images)) != 1:
            raise WorkbenchError("give exactly one of seeds, x or images")
        own = own_images(model, images) if images is not None else None
        if own is None:
            x = model.noise(seeds) if x is None else x.to(model.device, model.dtype)
            model.check_x(x, "x")
            check_finite("x", x)
        plan = MODES[mode](model, directions, index, **options)
        top = model.schedule.top if t_start is None else model.check_timestep(t_start)
        for t in plan.include:
            if t > top:
                raise WorkbenchError(f"edit timestep {t} lies above the start timestep {top}")
        grid = make_timesteps(model, num_steps, t_start=top, include=plan.include)
        # the images sampled back unedited give the reconstruction error: deterministically
        # they are the unedited row of the edit itself (its trunk shared), else a pass of
        # their own
        in_batch = own is not None and not eta and not boost
        if own is not None:  # invert on the edit's own grid: strength 0 retraces it
            clean = model.encode(own.images.to(model.device))
            refine = refinements(inversion)
            x = ddim(model, clean, grid[::-1], progress=progress, refine=refine)
            if not in_batch:
                again = model.decode(ddim(model, x, grid, progress=progress))
                error = float(((again - own.images.to(again)) ** 2).mean())
        reference = unedited or in_batch
        split = next((i for i, t in enumerate(grid) if t <= plan.first_edit), len(grid) - 1)
        boosting = quality_boost(grid, boost)
        n, s_count = x.shape[0], len(strengths)
        levels = strengths + ([0.0] if reference else [])  # the unedited row last
        per_chunk = max(1, batch_size // len(levels))
        outs = []
        for start in range(0, n, per_chunk):
            chunk = x[start : start + per_chunk]
            if split > 0:  # shared, unedited trunk
                chunk = ddim(model, chunk, grid[: split + 1], progress=progress)
            m = chunk.shape[0]
            batch = chunk.repeat(len(levels), 1, 1, 1)  # strength-major: [S*m, ...]
            per_sample = torch.tensor(levels).repeat_interleave(m)
            hook = plan.make_hook(per_sample)
            if reference:
                keep = torch.arange(len(levels) * m) >= s_count * m
                hook = _except(hook, keep, model.h_shape)
            gens = None
            if (eta or boost) and seeds is not None:  # a seed's step noise: same at every strength
                chunk_seeds = list(seeds)[start : start + m]
                gens = [
                    torch.Generator().manual_seed(int(s) + 1_000_003)
                    for _ in levels
                    for s in chunk_seeds
                ]
            out = ddim(
                model,
                batch,
                grid[split:],
                eta=eta,
                generator=gens,
                edit=[hook, boosting],
                progress=progress,
            )
            out = model.decode(out)  # images of a latent model (in pixel space: unchanged)
            outs.append(out.reshape(len(levels), m, *out.shape[1:]))
        images = torch.cat(outs, dim=1)
        check_finite("edited images", images)
        if in_batch:
            back = images[s_count]
            error = float(((back - own.images.to(back)) ** 2).mean())
        return EditResult(
            images=images[:s_count].cpu(),
            unedited=images[s_count].cpu() if unedited else None,
            strengths=strengths,
            seeds=None if seeds is None else [int(s) for s in seeds],
            index=index,
            mode=mode,
            directions=directions,
            timesteps=grid,
            options=dict(options) | {"eta": eta, "boost": boost},
            sources=own.paths if own is not None else None,
            reconstruction_mse=error if own is not None else None,
        )


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
        model.check_images(images)
        check_finite("images", images)
        return OwnImages(images.float(), None)
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
            stacklevel=5,  # own_images, edit, the context and option wrappers, the caller
        )
    return OwnImages(read.images, read.paths)


@register_mode(
    "guidance",
    "the published x-space guidance: repeated steps along eps(x + s delta v) - eps(x)",
    (
        Option("gamma", float, 0.1, "step size of each repeat", low=0, high=100),
        Option("delta", float, 1.0, "probe step, in x_step units", low=0, high=1000),
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
    gives +v or -v). ``delta`` is the norm of the probe step, in units of ``x_step``.
    Defaults: the published CelebA values (gamma 0.1, delta 1, 16 repeats)."""
    if directions.space != "x":
        raise WorkbenchError("guidance edits x-space directions only")
    v = directions.vector(index, model).to(model.device, model.dtype)
    t_edit = int(directions.timestep)  # type: ignore[arg-type]
    probe = delta * model.preset.x_step * v

    def make_hook(strengths: torch.Tensor) -> StepHook:
        def hook(step: Step) -> None:
            if step.t != t_edit:
                return
            s = _per_sample(strengths, step.x)
            x = step.x
            for _ in range(repeats):
                x = x + gamma * (model.eps(x + s * probe, t_edit) - model.eps(x, t_edit))
            step.x = x

        return hook

    return EditPlan(include=[t_edit], first_edit=t_edit, make_hook=make_hook)
