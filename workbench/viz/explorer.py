"""An ipywidgets direction explorer for JupyterLab.

>>> from workbench.viz import Explorer
>>> explorer = Explorer("shapes32", engine="pullback", k=4, seeds=range(4))
>>> explorer          # in a notebook: the widget

Controls: the model, the engine and its options (those its description marks as
controls, ``Option.control``: timestep, matrix variant, attribute, space, ...; derived
from the engine's registration, so a new engine brings its own), "discover"; one slider
per direction, labelled with its rank score; "judge" (each direction edited on the
shown samples and scored without ground truth: effect per unit strength, locality,
consistency across seeds, :mod:`workbench.eval.judge`; shown as a table under the sliders
and in each slider's tooltip); "reset", "new seeds", the number of samples shown side by
side; "save" (the current slider
setting as a named direction in a :class:`~workbench.library.DirectionLibrary`) and
"load" (a saved direction, as one slider at its saved strength). The image shows the
samples (top row) and their edits (bottom row), labelled above it with the seeds and the
strengths, sized to fit the screen (at most 45% of its height); the status line says
"rendering ..." while the kernel computes and how long the last render took. The model
box takes a bundled name or a model folder typed in. torch's thread count is set to the
machine's cores (``threads``) unless told otherwise.

The sliders act together: the edit is along ``sum_i s_i v_i`` (``DirectionSet.combine``),
by :func:`~workbench.edit` in its additive mode with eta 0, so a saved direction applied
again to the same seeds reproduces the shown images bit for bit. Between widget events the
explorer edits ahead: after each render it computes, one at a time on the kernel's event
loop (so never beside a cell of the user's, nor in another thread), the slider positions
next to the current one (``ahead`` steps, :data:`AHEAD` by default, either way of each
slider, the moved slider first; ``ahead=0`` turns this off), and keeps them
(:data:`MAX_FRAME_BYTES`); a slider step to a position computed ahead shows the kept
images at once. The status line says when the positions nearby are ready;
:meth:`prefetch` does the same work in a script. Everything the widgets do
is a method (:meth:`discover`, :meth:`set_strengths`, :meth:`save_direction`,
:meth:`load_direction`, ...), so the explorer can be driven from code and tested without a
browser; :meth:`save_html` writes a static, self-contained snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.directions import DirectionSet
from workbench.editing import EditResult, edit
from workbench.engines import ENGINES, get_engine
from workbench.errors import WorkbenchError
from workbench.eval.judge import ImageScores, judge_directions
from workbench.library import DirectionLibrary, NamedDirection
from workbench.models import DiffusionModel, bundled_names, load
from workbench.options import CONDITIONING, MAX_SEED, NUM_STEPS, Option, Spec, validated
from workbench.sampling import sample
from workbench.viz.images import image_grid, png_bytes

#: Slider range (in the preset's steps) per space.
MAX_STRENGTH = {"x": 4.0, "h": 16.0}
#: Strengths at which "judge" edits each direction (in the preset's steps).
JUDGE_STRENGTHS = (-2.0, 0.0, 2.0)
#: Slider steps computed ahead on each side of each slider's current value.
AHEAD = 3
#: What the status line says once the nearby slider positions are computed.
READY = "the slider positions nearby are ready"
#: Memory for the edits kept for slider positions (the least recently shown go first).
MAX_FRAME_BYTES = 256 * 2**20


def control_options() -> dict[str, Option]:
    """The explorer's option controls: one per option name that some engine marks as a
    control, keyed by name (by ``engine:name`` where engines describe a name differently)."""
    seen: dict[str, list[tuple[str, Option]]] = {}
    for engine in ENGINES.values():
        for option in engine.spec.options:
            if option.control:
                seen.setdefault(option.name, []).append((engine.name, option))
    out: dict[str, Option] = {}
    for name, owners in seen.items():
        kinds = {(o.type, o.choices) for _, o in owners}
        for engine, option in owners:
            out[name if len(kinds) == 1 else f"{engine}:{name}"] = option
    return out


def _control_key(engine: str, name: str, keys: Sequence[str]) -> str:
    return f"{engine}:{name}" if f"{engine}:{name}" in keys else name


class Explorer:
    """Interactive editing along discovered directions (see the module docstring).

    Args:
        model: a loaded model or anything :func:`workbench.load` takes.
        engine: a registered engine name.
        k: directions to discover (the boundary engine finds one).
        seeds: the seeds whose samples are shown; "new seeds" shifts them.
        options: options for the engine's ``discover`` (e.g. ``{"timestep": 880,
            "samples": 4}``); those with a control set it, the others are passed on as
            given.
        library: where named directions go (default: :class:`DirectionLibrary`'s folder).
        num_steps: sampling steps (default: the preset's).
        batch: how many samples are shown side by side.
        upscale: pixel size of the shown images.
        threads: torch's CPU threads (default: the cores this process may use; 0 leaves
            torch's setting).
        ahead: slider steps edited ahead on each side of each slider's value (each
            position is one edit of the shown seeds: fewer where edits are slow; 0: none).
    """

    @functools.partial(
        validated,
        Spec(
            "function",
            "Explorer",
            "the ipywidgets explorer",
            (
                Option("engine", str, "pullback", "engine"),
                Option("k", int, 4, "directions", low=1, high=64),
                Option("seeds", "ints", range(4), "seeds shown", low=0, high=MAX_SEED),
                Option("options", object, None, "engine options", cli=False),
                Option("library", object, None, "a DirectionLibrary or its folder", cli=False),
                NUM_STEPS,
                Option("batch", int, None, "samples shown at once", low=1),
                Option("upscale", int, 4, "pixel size of the shown images", low=1, high=32),
                Option(
                    "threads",
                    int,
                    None,
                    "torch CPU threads (default: the cores this process may use; 0 leaves "
                    "torch's setting)",
                    low=0,
                    high=4096,
                ),
                Option(
                    "ahead",
                    int,
                    AHEAD,
                    "slider steps edited ahead on each side of each slider (0: none)",
                    low=0,
                    high=64,
                ),
                *CONDITIONING,
            ),
        ),
        first=2,
    )
    def __init__(
        self,
        model: DiffusionModel | str = "shapes32",
        engine: str = "pullback",
        k: int = 4,
        seeds: Sequence[int] = range(4),
        options: dict[str, Any] | None = None,
        library: DirectionLibrary | str | Path | None = None,
        num_steps: int | None = None,
        batch: int | None = None,
        upscale: int = 4,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        guidance_scale: float | None = None,
        class_label: int | None = None,
        threads: int | None = None,
        ahead: int = AHEAD,
    ) -> None:
        import ipywidgets as w

        get_engine(engine)
        if threads != 0:  # a loaded or oversubscribed box: one thread per core we may use
            torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        self.model = load(model) if isinstance(model, (str, Path)) else model
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise WorkbenchError("give at least one seed")
        self.library = (
            library if isinstance(library, DirectionLibrary) else DirectionLibrary(library)
        )
        self.num_steps = num_steps
        self.upscale = upscale
        self.ahead = ahead
        self.extra = dict(options or {})
        self.directions: DirectionSet | None = None
        #: the directions' scores without ground truth (after :meth:`judge`)
        self.scores: ImageScores | None = None
        self.result: EditResult | None = None
        self.image: np.ndarray | None = None
        self._originals: dict[tuple[int, ...], torch.Tensor] = {}
        self._rendered = ""  # the last render's status
        #: edits of slider positions shown or computed ahead, by :meth:`_key`
        self._frames: OrderedDict[tuple, EditResult] = OrderedDict()
        self._epoch = 0  # a new direction set: the kept edits are another set's
        self._plan: list[tuple[tuple[int, ...], tuple[float, ...]]] = []  # nearest first
        self._stepping = False  # a step of the plan is scheduled on the event loop
        self._moved = 0  # the slider moved last (planned first)
        self._holding = False
        with self.model.conditioned(prompt, negative_prompt, guidance_scale, class_label):
            pass  # refuses a prompt to an unconditional model, a bad scale (one line)
        self.negative_prompt = negative_prompt
        self.guidance_scale = guidance_scale
        self.class_label = class_label

        names = bundled_names()
        shown = str(model) if isinstance(model, (str, Path)) else self.model.name
        if shown not in names:
            names = [shown, *names]
        style = {"description_width": "initial"}
        # a bundled name from the list, or any model folder (or Hub id) typed in
        self.model_w = w.Combobox(
            options=names,
            value=shown,
            description="model",
            placeholder="name or folder",
            ensure_option=False,
            continuous_update=False,
        )
        self._model_source = shown
        self.engine_w = w.Dropdown(options=sorted(ENGINES), value=engine, description="engine")
        self.k_w = w.BoundedIntText(value=k, min=1, max=64, description="k", style=style)
        self._controls = {key: _widget(option) for key, option in control_options().items()}
        self.discover_b = w.Button(description="discover", button_style="primary")
        self.sliders: list[Any] = []
        self.sliders_box = w.VBox()
        self.judge_b = w.Button(description="judge", tooltip="score each direction's edit")
        self.judge_w = w.HTML()
        self.reset_b = w.Button(description="reset")
        self.seed_b = w.Button(description="new seeds")
        self.batch_w = w.IntSlider(
            value=min(batch or len(self.seeds), len(self.seeds)),
            min=1,
            max=len(self.seeds),
            description="samples",
            continuous_update=False,
        )
        #: a text-to-image model's prompt (shown for such models only)
        self.prompt_w = w.Text(value=prompt or "", description="prompt", continuous_update=False)
        self.prompt_w.layout.display = "" if self.model.conditional else "none"
        self.image_w = w.Image(format="png")
        # never wider than the output area nor taller than 45% of the screen; no stretching
        self.image_w.layout = w.Layout(
            max_width="100%", max_height="45vh", object_fit="contain", width="auto"
        )
        self.image_label_w = w.HTML()
        self.name_w = w.Text(placeholder="name", description="save as")
        self.save_b = w.Button(description="save")
        self.library_w = w.Dropdown(options=self.library.names(), description="library")
        self.load_b = w.Button(description="load")
        self.status_w = w.HTML()
        self.status_w.add_class("workbench-status")
        self.widget = w.VBox(
            [
                w.HBox([self.model_w, self.engine_w, self.k_w]),
                self.prompt_w,
                w.HBox(list(self._controls.values())),
                self.discover_b,
                self.sliders_box,
                self.judge_w,
                w.HBox([self.reset_b, self.seed_b, self.batch_w, self.judge_b]),
                self.image_label_w,
                self.image_w,
                w.HBox([self.name_w, self.save_b]),
                w.HBox([self.library_w, self.load_b]),
                self.status_w,
            ]
        )
        self.widget.add_class("workbench-explorer")
        self.model_w.observe(self._guard(self._on_model), names="value")
        self.engine_w.observe(self._guard(lambda _: self._show_controls()), names="value")
        self.prompt_w.observe(self._guard(lambda _: self._on_prompt()), names="value")
        self.discover_b.on_click(self._guard(lambda _: self.discover()))
        self.reset_b.on_click(self._guard(lambda _: self.reset()))
        self.judge_b.on_click(self._guard(lambda _: self.judge()))
        self.seed_b.on_click(self._guard(lambda _: self.new_seeds()))
        self.batch_w.observe(self._guard(lambda _: self.render()), names="value")
        self.save_b.on_click(self._guard(lambda _: self.save_direction(self.name_w.value)))
        self.load_b.on_click(self._guard(lambda _: self.load_direction(self.library_w.value)))
        for name in list(self.extra):  # options that have a control set it
            key = _control_key(engine, name, list(self._controls))
            if key in self._controls and name in get_engine(engine).spec:
                value = self.extra.pop(name)
                self._controls[key].value = "" if value is None else str(value)
        self._show_controls()
        self.discover()

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def _status(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self.status_w.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Widget callbacks show errors in the status line instead of losing them."""

        def run(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - shown to the user, then re-raised
                self._status(f"{type(exc).__name__}: {exc}", error=True)
                if not isinstance(exc, WorkbenchError):
                    raise

        return run

    def control(self, name: str) -> Any:
        """The widget of option ``name`` of the current engine."""
        return self._controls[_control_key(self.engine_w.value, name, list(self._controls))]

    def _used(self) -> dict[str, Option]:
        """The current engine's controlled options, by control key."""
        engine = self.engine_w.value
        keys = list(self._controls)
        return {
            _control_key(engine, o.name, keys): o
            for o in get_engine(engine).spec.options
            if o.control
        }

    def _show_controls(self) -> None:
        used = self._used()
        for key, widget in self._controls.items():
            widget.layout.display = "" if key in used else "none"

    def _on_model(self, change: dict) -> None:
        source = str(change["new"]).strip()
        if source and source != self._model_source:
            self._status(f"loading {source} ...")
            self.model = load(source)
            self._model_source = source
            self.prompt_w.layout.display = "" if self.model.conditional else "none"
            self._originals.clear()
            self.discover()

    def _on_prompt(self) -> None:
        """A new prompt: new samples, and directions found under it."""
        self._originals.clear()
        self.discover()

    def conditioning(self) -> dict[str, Any]:
        """The prompt options every sample, edit and discovery of the explorer gets (none
        for an unconditional model)."""
        if self.model.class_conditional:
            given = {"class_label": self.class_label, "guidance_scale": self.guidance_scale}
            return {k: v for k, v in given.items() if v is not None}
        if not self.model.conditional:
            return {}
        given = {
            "prompt": self.prompt_w.value,
            "negative_prompt": self.negative_prompt,
            "guidance_scale": self.guidance_scale,
        }
        return {k: v for k, v in given.items() if v is not None}

    # ------------------------------------------------------------------ actions
    def engine_options(self) -> dict[str, Any]:
        """The options the controls give the current engine (plus the constructor's),
        read and checked by the engine's own description."""
        spec = get_engine(self.engine_w.value).spec
        opts = {
            o.name: o.parse(str(self._controls[key].value), spec.owner)
            for key, o in self._used().items()
        }
        return {k: v for k, v in opts.items() if v is not None} | self.extra

    def discover(self) -> DirectionSet:
        """Run the chosen engine and make one slider per direction."""
        engine = self.engine_w.value
        k_option = get_engine(engine).spec["k"]
        k = min(int(self.k_w.value), int(k_option.high or self.k_w.value))
        self._status(f"discovering with {engine} ...")
        options = self.conditioning() | self.engine_options()
        directions = get_engine(engine).discover(self.model, k=k, **options)
        self._set_directions(directions)
        self._status(f"{len(directions)} {engine} directions ({directions.space}-space)")
        return directions

    def _set_directions(self, directions: DirectionSet, values: Sequence[float] = ()) -> None:
        import ipywidgets as w

        directions.check_model(self.model)
        self.directions = directions
        self._epoch += 1
        self._frames.clear()
        self._plan = []
        self._moved = 0
        self.scores = None
        self.judge_w.value = ""
        limit = MAX_STRENGTH[directions.space]
        values = list(values) + [0.0] * (len(directions) - len(values))
        self.sliders = []
        for i in range(len(directions)):
            score = "" if directions.scores is None else f" {float(directions.scores[i]):.3g}"
            slider = w.FloatSlider(
                value=values[i],
                min=-max(limit, abs(values[i])),
                max=max(limit, abs(values[i])),
                step=0.25,
                description=f"{directions.name(i)}{score}",
                description_tooltip=f"{directions.score_name}{score}",
                continuous_update=False,
                style={"description_width": "initial"},
                layout=w.Layout(width="520px"),
            )
            slider.add_class("workbench-direction")
            slider.observe(self._guard(functools.partial(self._on_slider, i)), names="value")
            self.sliders.append(slider)
        self.sliders_box.children = tuple(self.sliders)
        self.render()

    def judge(self) -> ImageScores:
        """Edit the shown samples along each direction (:data:`JUDGE_STRENGTHS`) and score
        the edits without ground truth; the table goes under the sliders."""
        if self.directions is None:
            raise WorkbenchError("nothing to judge yet: discover directions first")
        self._status(f"judging {len(self.directions)} directions ...")
        self.scores = judge_directions(
            self.model,
            self.directions,
            strengths=JUDGE_STRENGTHS,
            seeds=self.shown_seeds(),
            num_steps=self.num_steps,
            progress=False,
            **self.conditioning(),
        )
        self.judge_w.value = self.scores.html()
        for i, slider in enumerate(self.sliders):
            slider.description_tooltip = self.scores.caption(i)
        self._status(f"judged on seeds {self.shown_seeds()}")
        return self.scores

    def strengths(self) -> list[float]:
        """The strengths on the sliders."""
        return [float(s.value) for s in self.sliders]

    def set_strengths(self, values: Sequence[float]) -> None:
        """Set the sliders (re-renders once)."""
        if len(values) != len(self.sliders):
            raise WorkbenchError(f"{len(values)} strengths for {len(self.sliders)} sliders")
        with self._hold():
            for slider, v in zip(self.sliders, values, strict=True):
                slider.max = max(slider.max, abs(float(v)))
                slider.min = min(slider.min, -abs(float(v)))
                slider.value = float(v)
        self.render()

    def reset(self) -> None:
        """All sliders back to 0."""
        self.set_strengths([0.0] * len(self.sliders))

    def new_seeds(self, seed: int | None = None) -> list[int]:
        """Show other samples: the next block of seeds (or ``seed, seed+1, ...``)."""
        start = self.seeds[-1] + 1 if seed is None else int(seed)
        self.seeds = list(range(start, start + len(self.seeds)))
        self.render()
        return self.seeds

    def shown_seeds(self) -> list[int]:
        """The seeds shown in the current batch."""
        return self.seeds[: int(self.batch_w.value)]

    def current(self) -> tuple[DirectionSet, float] | None:
        """The slider setting as one direction and strength (``None`` when all are 0)."""
        if self.directions is None or not any(self.strengths()):
            return None
        return self.directions.combine(self.strengths())

    def render(self) -> np.ndarray:
        """Recompute the shown images: samples (top row), edits (bottom row)."""
        if self._holding or self.directions is None:
            return self.image if self.image is not None else np.zeros((1, 1, 3), np.uint8)
        started = time.perf_counter()
        self._status("rendering ...")  # sent at once: the browser shows it while we compute
        seeds = tuple(self.shown_seeds())
        if seeds not in self._originals:
            self._originals[seeds] = sample(
                self.model,
                seeds=seeds,
                num_steps=self.num_steps,
                progress=False,
                **self.conditioning(),
            )
        originals = self._originals[seeds]
        strengths = tuple(self.strengths())
        if not any(strengths):
            self.result = None
            edited = originals
        else:
            self.result = self._frame(seeds, strengths)
            edited = self.result.images[0]
        both = torch.stack([originals.cpu(), edited])
        self.image = image_grid(self.model.to_uint8(both).numpy(), upscale=self.upscale)
        self.image_w.value = png_bytes(self.image)
        self.image_w.width = str(self.image.shape[1])  # its own size, not the page's width
        self.image_label_w.value = self._label(seeds)
        self._rendered = f"rendered in {time.perf_counter() - started:.2f} s"
        self._status(self._rendered)
        self._plan_ahead(seeds, strengths)
        return self.image

    # ------------------------------------------------------------------ editing ahead
    def _on_slider(self, index: int, change: dict) -> None:
        self._moved = index
        self.render()

    def _key(self, seeds: tuple[int, ...], strengths: tuple[float, ...]) -> tuple:
        """What an edit of the sliders depends on besides the set (:attr:`_epoch`)."""
        conditioning = tuple(sorted(self.conditioning().items()))
        return (self._epoch, seeds, strengths, self.num_steps, conditioning)

    def _frame(
        self, seeds: tuple[int, ...], strengths: tuple[float, ...], progress: bool | None = None
    ) -> EditResult:
        """The edit of the shown seeds at these slider values: kept, or computed (exactly
        :func:`~workbench.edit` along ``DirectionSet.combine``; ``progress``: its bar) and
        kept."""
        assert self.directions is not None
        key = self._key(seeds, strengths)
        if key not in self._frames:
            unit, strength = self.directions.combine(list(strengths))
            self._frames[key] = edit(
                self.model,
                unit,
                0,
                [strength],
                seeds=seeds,
                num_steps=self.num_steps,
                progress=progress,
                **self.conditioning(),
            )
            size = self._frames[key].images.element_size() * self._frames[key].images.numel()
            while len(self._frames) > max(2, MAX_FRAME_BYTES // max(size, 1)):
                self._frames.popitem(last=False)
        self._frames.move_to_end(key)
        return self._frames[key]

    def _nearby(self, strengths: tuple[float, ...]) -> list[tuple[float, ...]]:
        """Slider settings near ``strengths``, nearest first: the slider moved last one
        step either way, two, ... up to :attr:`ahead`; then the others likewise (each
        within its range)."""
        others = [i for i in range(len(self.sliders)) if i != self._moved]
        order = [(self._moved, j) for j in range(1, self.ahead + 1)]
        order += [(i, j) for j in range(1, self.ahead + 1) for i in others]
        out = []
        for i, j in order:
            slider = self.sliders[i]
            for sign in (-1, 1):
                value = round(strengths[i] + sign * j * slider.step, 6)
                moved = (*strengths[:i], value, *strengths[i + 1 :])
                if slider.min <= value <= slider.max and any(moved):
                    out.append(moved)
        return out

    def _plan_ahead(self, seeds: tuple[int, ...], strengths: tuple[float, ...]) -> None:
        """Plan the nearby settings not kept yet and, inside an event loop (a notebook),
        compute them one per loop turn between widget events."""
        self._plan = [
            (seeds, s) for s in self._nearby(strengths) if self._key(seeds, s) not in self._frames
        ]
        if not self._plan:
            self._status(f"{self._rendered}; {READY}")
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a script: prefetch() computes the plan
        if not self._stepping:
            self._stepping = True
            loop.call_later(0.01, self._step, loop)

    def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        """One planned edit, then the next on a later loop turn (widget events first)."""
        try:
            if self._plan:
                seeds, strengths = self._plan.pop(0)
                self._frame(seeds, strengths, progress=False)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the plan is dropped
            self._plan, self._stepping = [], False
            self._status(f"editing ahead: {type(exc).__name__}: {exc}", error=True)
            return
        if self._plan:
            loop.call_later(0.01, self._step, loop)
            return
        self._stepping = False
        self._status(f"{self._rendered}; {READY}")

    def prefetch(self) -> int:
        """Compute the planned slider positions now (what the notebook does between
        events); returns how many were computed."""
        done = 0
        while self._plan:
            seeds, strengths = self._plan.pop(0)
            self._frame(seeds, strengths, progress=False)
            done += 1
        self._status(f"{self._rendered}; {READY}")
        return done

    def _label(self, seeds: Sequence[int]) -> str:
        """What the two rows of the image are: seeds, and the strengths of the edit."""
        assert self.directions is not None
        set_ = [f"{self.directions.name(i)} = {s:+g}" for i, s in enumerate(self.strengths()) if s]
        edit_text = ", ".join(set_) if set_ else "all strengths 0 (same as the top row)"
        return (
            "<div class='workbench-image-label' style='font-size:90%'>"
            f"columns: seeds {', '.join(map(str, seeds))}; top row: samples; bottom row: "
            f"edited, {html.escape(edit_text)}</div>"
        )

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        """No re-rendering while several sliders change."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    # ------------------------------------------------------------------ library
    def save_direction(self, name: str, note: str = "", overwrite: bool = False) -> NamedDirection:
        """Save the current slider setting as a named direction in the library."""
        chosen = self.current()
        if chosen is None:
            raise WorkbenchError("all sliders are at 0: nothing to save")
        unit, strength = chosen
        named = NamedDirection(
            name=name.strip(),
            directions=unit,
            strength=strength,
            num_steps=self.num_steps,
            options=self.conditioning(),  # applied again under the same prompt
            note=note,
        )
        self.library.save(named, overwrite=overwrite)
        self.library_w.options = self.library.names()
        self.library_w.value = named.name
        self._status(f"saved {named.name!r} ({unit.name(0)}, strength {strength:.3g})")
        return named

    def load_direction(self, name: str) -> NamedDirection:
        """Load a named direction as the current set: one slider at its saved strength
        (and the explorer takes its number of DDIM steps)."""
        if not name:
            raise WorkbenchError("choose a direction from the library")
        named = self.library.load(name, self.model)
        if named.mode != "additive":
            raise WorkbenchError(
                f"{name!r} uses the {named.mode!r} mode; the explorer edits additively "
                "(apply it with NamedDirection.apply)"
            )
        if named.num_steps != self.num_steps:  # edit as it was saved
            self.num_steps = named.num_steps
            self._originals.clear()
        self._set_directions(named.directions, [named.strength])
        self._status(f"loaded {name!r}: {named.directions.name(0)} at {named.strength:.3g}")
        return named

    # ------------------------------------------------------------------ static
    def save_html(self, path: str | Path) -> Path:
        """A static, self-contained snapshot (opens offline): settings, the scores and
        the current images."""
        from workbench.viz.figures import score_bars
        from workbench.viz.report import Report

        if self.directions is None or self.image is None:
            raise WorkbenchError("nothing to show yet: discover directions first")
        report = Report(f"workbench explorer: {self.model.name}")
        report.text(
            f"model {self.model.name} ({self.model.fingerprint}); engine "
            f"{self.directions.engine}; {self.directions.space}-space at t="
            f"{self.directions.timestep}; seeds {self.shown_seeds()}"
        )
        report.text(
            "strengths: "
            + ", ".join(
                f"{self.directions.name(i)} = {s:g}" for i, s in enumerate(self.strengths())
            )
        )
        report.figure(score_bars(self.directions))
        if self.scores is not None:
            report.html(self.scores.html())
        report.image(self.image, "top: samples; bottom: edited")
        return report.save(path)


def _widget(option: Option) -> Any:
    """A control for ``option``: a dropdown of its choices, else a text field (empty for
    the model's default)."""
    import ipywidgets as w

    if option.choices:
        return w.Dropdown(
            options=list(option.choices), value=option.default, description=option.name
        )
    value = "" if option.default is None else str(option.default)
    return w.Text(value=value, placeholder="preset default", description=option.name)
