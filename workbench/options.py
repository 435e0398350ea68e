"""One description per engine, probe and edit mode: its options, with types, defaults,
ranges and help, from which everything else is derived.

A :class:`Spec` lists the :class:`Option` s of one callable. From it come

- the API checks (:meth:`Spec.validate`, run by the registries' wrappers before the
  function body: an unknown option, a wrong type, a non-finite or out-of-range value is a
  one-line :class:`~workbench.errors.WorkbenchError`, never a ``TypeError`` from deep
  inside);
- the CLI arguments (:meth:`Spec.add_arguments`; an option with ``cli=False``, e.g. a
  tensor, is API only);
- the explorer's controls (the options marked ``control=True``, ``workbench.viz.explorer``).

This module sits at the bottom of the package: it imports nothing from it but the errors.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from workbench.errors import WorkbenchError

#: Largest seed a torch generator takes.
MAX_SEED = 2**63 - 1
#: Most values a sequence option takes (seeds, strengths, timesteps).
MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class Option:
    """One option of an engine, probe or edit mode.

    ``type`` is ``int``, ``float``, ``str``, ``bool``, ``"path"`` (a string or path),
    ``"ints"``/``"floats"`` (a non-empty sequence, ``999,600,200`` on the CLI) or
    ``"seeds"`` (integers like ``"ints"``, written ``0-7``, ``0,3,5`` or ``0-3,9`` on the
    CLI, ranges inclusive); any other type (e.g.
    ``object``) is passed through unchecked, for the function to check. ``low`` and
    ``high`` bound numbers (inclusive); ``choices`` bound strings; ``nullable`` lets
    ``None`` stand for "the model's default" (the preset's), which ``default=None``
    implies. ``cli=False`` keeps an option off the command line (tensors, direction sets);
    ``control=True`` gives it a control in the explorer.
    """

    name: str
    type: Any
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    cli: bool = True
    control: bool = False
    length: int | None = None  # "ints" only: the exact number of values
    aliases: tuple[str, ...] = ()  # older CLI spellings still accepted
    required: bool = False  # None is never accepted
    off: Any = None  # a number that turns the thing off, accepted outside [low, high]
    repeat: bool = False  # CLI: the flag may be given several times, its values a list

    @property
    def flag(self) -> str:
        """The CLI flag (``--name-with-dashes``)."""
        return "--" + self.name.replace("_", "-")

    @property
    def accepts_none(self) -> bool:
        """Whether None is a valid value."""
        return not self.required and (self.nullable or self.default is None)

    def describe(self) -> str:
        """The help text with the range and default, as the CLI shows it."""
        parts = [self.help] if self.help else []
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        elif self.low is not None and self.high is not None:
            bounds = f"{_fmt(self.low)} to {_fmt(self.high)}"
            parts.append(bounds if self.off is None else f"{_fmt(self.off)} or {bounds}")
        elif self.low is not None:
            parts.append(f"at least {_fmt(self.low)}")
        if self.default is not None:
            many = self.type in ("ints", "floats", "seeds")
            shown = ",".join(map(str, self.default)) if many else self.default
            if self.type == "seeds":
                shown = _spans(self.default)
            parts.append(f"default {shown}")
        return "; ".join(parts)

    # ------------------------------------------------------------------ checks
    def check(self, value: Any, owner: str = "") -> Any:
        """``value`` checked and normalised (numpy/torch scalars to Python), or a one-line
        :class:`WorkbenchError` naming ``owner`` and the option."""
        where = f"{owner}: " if owner else ""
        if value is None:
            if self.accepts_none:
                return None
            raise WorkbenchError(f"{where}{self.name} must not be None")
        if self.type in ("ints", "floats", "seeds"):
            kind = float if self.type == "floats" else int
            plural = "integers" if kind is int else "numbers"
            if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
                value = value.tolist()  # numpy arrays, tensors
            if isinstance(value, range) and len(value) > MAX_COUNT:
                value = value[: MAX_COUNT + 1]  # refused below, without materialising it
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | range):
                try:
                    value = list(value)
                except TypeError:
                    raise WorkbenchError(
                        f"{where}{self.name} must be a sequence of {plural}, got {value!r}"
                    ) from None
            if isinstance(value, numbers.Number) or len(value) == 0:
                raise WorkbenchError(f"{where}{self.name} must be a non-empty sequence of {plural}")
            if self.length is not None and len(value) != self.length:
                raise WorkbenchError(
                    f"{where}{self.name} must be {self.length} {plural}, got {len(value)}"
                )
            if len(value) > MAX_COUNT:
                raise WorkbenchError(
                    f"{where}{self.name}: {len(value)} values, more than the {MAX_COUNT} allowed"
                )
            return tuple(self._number(v, kind, where) for v in value)
        if self.type in (int, float):
            return self._number(value, self.type, where)
        if self.type is bool:
            if not isinstance(value, bool):
                raise WorkbenchError(f"{where}{self.name} must be True or False, got {value!r}")
            return value
        if self.type == "path":
            if not isinstance(value, str | os.PathLike):
                raise WorkbenchError(f"{where}{self.name} must be a path, got {value!r}")
            return value
        if self.type is str:
            if not isinstance(value, str):
                raise WorkbenchError(f"{where}{self.name} must be a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise WorkbenchError(
                    f"{where}{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
                )
            return value
        return value  # free-form (API-only objects): the function checks them

    def _number(self, value: Any, kind: type, where: str) -> int | float:
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()  # numpy / torch scalars
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise WorkbenchError(f"{where}{self.name} must be a number, got {value!r}")
        if kind is int:
            if not isinstance(value, numbers.Integral):
                raise WorkbenchError(f"{where}{self.name} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise WorkbenchError(f"{where}{self.name} must be finite, got {value!r}")
        if self.off is not None and value == self.off:
            return value
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            if self.high is None:
                bounds = f"at least {_fmt(self.low)}"
            elif self.low is None:
                bounds = f"at most {_fmt(self.high)}"
            else:
                bounds = f"in [{_fmt(self.low)}, {_fmt(self.high)}]"
            if self.off is not None:
                bounds = f"{_fmt(self.off)} or {bounds}"
            raise WorkbenchError(f"{where}{self.name} must be {bounds}, got {value!r}")
        return value

    # ------------------------------------------------------------------ text
    def parse(self, text: str, owner: str = "") -> Any:
        """A value from its text (the CLI, the explorer's text fields), checked."""
        where = f"{owner}: " if owner else ""
        text = text.strip()
        if text == "" and self.accepts_none:
            return None
        try:
            if self.type == "seeds":
                value: Any = _seed_list(text)
            elif self.type in ("ints", "floats"):
                kind = int if self.type == "ints" else float
                value = [kind(v) for v in text.split(",") if v.strip()]
            elif self.type is int:
                value = int(text)
            elif self.type is float:
                value = float(text)
            elif self.type is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = text.lower() in ("true", "1", "yes")
            else:
                value = text
        except ValueError:
            kind = {
                int: "an integer",
                float: "a number",
                bool: "true or false",
                "floats": "numbers like -3,0,3",
                "seeds": "a list like 0-7, 1,4,9 or 0-3,9",
            }.get(self.type, "integers like 999,600,200")
            raise WorkbenchError(f"{where}{self.name} must be {kind}, got {text!r}") from None
        return self.check(value, owner)


def _seed_list(text: str) -> list[int] | range:
    """``"0-7"``, ``"1,4,9"``, ``"0-3,9"`` as integers (a single range stays a ``range``, so
    that a huge one is refused by its length without being built); ``ValueError`` if it
    is not such a list."""
    parts = [p.strip() for p in text.split(",")]
    spans = []
    for part in parts:
        low, dash, high = part.partition("-")
        if not low or (dash and not high):
            raise ValueError(part)
        spans.append(range(int(low), int(high) + 1) if dash else range(int(low), int(low) + 1))
        if dash and int(high) < int(low):
            raise ValueError(part)
    if len(spans) == 1:
        return spans[0]
    if sum(len(s) for s in spans) > MAX_COUNT:
        return range(MAX_COUNT + 1)  # refused by the count check, named as too many
    return [v for s in spans for v in s]


def _spans(values: Sequence[Any]) -> str:
    """Seeds as the CLI takes them, runs of three or more as ranges: ``0-7``, ``0-3,9``."""
    parts, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[i - 1] + 1:
            run = values[start:i]
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
            start = i
    return ",".join(parts)


def _fmt(value: float) -> str:
    """A bound as people write it: 9223372036854775807, 0.5, 1e-06."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class Renamed(argparse.Action):
    """Stores an option's value; given under an older spelling (``old``), it also says the
    current one, in one line on stderr (the old spelling still works)."""

    def __init__(self, option_strings: list[str], dest: str, old: Sequence[str] = (), **kw: Any):
        self.old = tuple(old)
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        """Store ``values``; warn when ``option_string`` is an older spelling."""
        if option_string in self.old:
            print(
                f"workbench: warning: {option_string} is now {self.option_strings[0]}",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def add_renamed(parser: argparse.ArgumentParser, flag: str, old: str, **kwargs: Any) -> None:
    """``parser.add_argument(flag, ...)`` that also takes ``old``, an older spelling that
    still works and says the new one on stderr (:class:`Renamed`); for scripts' own
    parsers."""
    parser.add_argument(flag, old, action=Renamed, old=(old,), **kwargs)


def argparse_type(option: Option, owner: str = "") -> Callable[[str], Any]:
    """An argparse ``type=`` that parses and checks with ``option`` (one-line errors)."""

    def parse(text: str) -> Any:
        try:
            return option.parse(text, owner)
        except WorkbenchError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option.name  # argparse names the type in its messages
    return parse


@dataclass(frozen=True)
class Spec:
    """The options of one engine, probe or edit mode (see the module docstring)."""

    kind: str  # "engine", "probe", "edit mode"
    name: str
    summary: str
    options: tuple[Option, ...] = ()
    _index: dict[str, Option] = field(default_factory=dict, compare=False, repr=False)
    _renamed: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.kind} {self.name!r}: an option is described twice")
        self._index.update({o.name: o for o in self.options})
        # older spellings (an option's CLI aliases as keywords: "--steps" -> "steps")
        self._renamed.update(
            {a.lstrip("-").replace("-", "_"): o.name for o in self.options for a in o.aliases}
        )

    @property
    def owner(self) -> str:
        """How errors name the owner, e.g. ``engine 'pullback'``."""
        return f"{self.kind} {self.name!r}"

    def __getitem__(self, name: str) -> Option:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def defaults(self) -> dict[str, Any]:
        """Every option's default, by name."""
        return {o.name: o.default for o in self.options}

    def validate(self, values: dict[str, Any], accepted: Sequence[str] = ()) -> dict[str, Any]:
        """``values`` checked: every name described (or in ``accepted``, the function's
        other parameters), every described value of the right type and range."""
        out = {}
        for name, value in values.items():
            if name not in self._index and name in self._renamed:
                new = self._renamed[name]
                warnings.warn(
                    f"{self.owner}: option {name!r} is now called {new!r}",
                    FutureWarning,
                    stacklevel=3,
                )
                if new in values:
                    raise WorkbenchError(f"{self.owner}: {new!r} given twice (also as {name!r})")
                name = new
            if name in self._index:
                out[name] = self._index[name].check(value, self.owner)
            elif name in accepted:
                out[name] = value
            else:
                known = ", ".join(sorted({*self._index, *accepted})) or "none"
                raise WorkbenchError(f"{self.owner} has no option {name!r}; options: {known}")
        return out

    def command(self, **defaults: Any) -> Spec:
        """This description as a command's own (kind ``command``, its options filled in
        on the command line, :meth:`add_arguments`), with the command's defaults where
        they differ (``seeds=range(8)`` on ``workbench sample``), each checked."""
        unknown = sorted(set(defaults) - set(self._index))
        if unknown:
            raise ValueError(f"{self.owner} has no option {unknown[0]!r}")
        options = tuple(
            replace(o, default=o.check(defaults[o.name], self.owner)) if o.name in defaults else o
            for o in self.options
        )
        return Spec("command", self.name, self.summary, options)

    def without(self, *names: str) -> Spec:
        """This description less the named options (a command spells them its own way)."""
        kept = tuple(o for o in self.options if o.name not in names)
        return Spec(self.kind, self.name, self.summary, kept)

    @property
    def names(self) -> tuple[str, ...]:
        """The options' names, in order."""
        return tuple(o.name for o in self.options)

    def add_arguments(self, parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
        """One CLI argument per option with ``cli=True``. An option not given is ``None`` on
        the command line, so it is not passed and the function's default applies; but in
        a command's own description (kind ``command``, :meth:`command`) the option's
        default is the argument's, a ``required`` option without a default must be given,
        and a switch that is off by default is a plain flag (``--quick``)."""
        fill = self.kind == "command"
        for o in self.options:
            if not o.cli or o.name in skip:
                continue
            kwargs: dict[str, Any] = {"default": None, "help": o.describe(), "dest": o.name}
            if fill:
                kwargs["default"] = o.default
                kwargs["required"] = o.required and o.default is None
            if o.repeat:
                kwargs |= {"action": "append", "type": argparse_type(o, self.owner)}
            elif o.type is bool:
                plain = fill and o.default is False  # a command's own switch: --quick
                kwargs["action"] = "store_true" if plain else argparse.BooleanOptionalAction
                if plain:
                    kwargs["help"] = o.help  # off unless given: no default to state
            else:
                kwargs |= {"action": Renamed, "old": o.aliases}
                kwargs["type"] = argparse_type(o, self.owner)
            if o.type is not bool:
                kwargs["metavar"] = (
                    o.name.upper() if not o.choices else "{" + ",".join(o.choices) + "}"
                )
            parser.add_argument(o.flag, *o.aliases, **kwargs)

    def from_args(self, args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
        """The options given on the command line (those left out keep their defaults);
        ``skip``: as for :meth:`add_arguments`."""
        given = {}
        for o in self.options:
            if o.cli and o.name not in skip:
                value = getattr(args, o.name, None)
                if value is None and o.required:
                    value = o.default  # a required parameter the command line left out
                if value is not None:
                    given[o.name] = value
        return given


def validated(spec: Spec, fn: Callable, first: int = 1) -> Callable:
    """``fn`` wrapped so that its keyword options are checked against ``spec`` before it
    runs. ``first`` positional parameters (the model, ...) are passed through; options
    may be given by keyword or by position after them."""
    params = list(inspect.signature(fn).parameters.values())
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    missing = [o.name for o in spec.options if o.name not in named and not takes_any]
    if missing:
        raise ValueError(f"{spec.owner} describes options its function lacks: {missing}")
    accepted = tuple(named[first:])

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        head, rest = args[:first], args[first:]
        if len(rest) > len(accepted):
            raise WorkbenchError(f"{spec.owner}: too many positional arguments")
        given = dict(zip(accepted, rest, strict=False))
        for name in kwargs:
            if name in given:
                raise WorkbenchError(f"{spec.owner}: {name!r} given twice")
        given.update(kwargs)
        # a function with **options passes the names it does not describe on (checked
        # downstream, e.g. by an edit mode's own description)
        checked = spec.validate(given, accepted=tuple(given) if takes_any else accepted)
        return fn(*head, **checked)

    run.spec = spec  # type: ignore[attr-defined]
    return run


# Options shared by every engine (the CLI's discover command has them too).
K = Option("k", int, 8, "number of directions", low=1, high=4096)
TIMESTEP = Option(
    "timestep",
    int,
    None,
    "timestep of the edit (default: the engine's, from the preset)",
    low=0,
    control=True,
)
SEED = Option("seed", int, 0, "random seed", low=0, high=MAX_SEED)
#: Where a command runs.
DEVICE = Option("device", str, None, "cpu, cuda, cuda:1, ... (default: cuda if available)")
NUM_STEPS = Option(
    "num_steps",
    int,
    None,
    "sampling steps over [0, T] (default: the preset's)",
    low=1,
    high=10000,
    aliases=("--steps",),
)
WINDOW = Option(
    "window",
    "ints",
    None,
    "h-space edit window (t_high, t_low) (default: the preset's h_window)",
    low=0,
    cli=False,
    length=2,
)
TIMESTEPS = Option(
    "timesteps", "ints", None, "timesteps, e.g. 999,600,200 (default: the probe's)", low=0
)
PROGRESS = Option("progress", bool, None, "progress bars (default: the package setting)", cli=False)
IMAGES = Option(
    "images",
    object,
    None,
    "real images: a folder of image files, or (API) a tensor [m, C, H, W] in [-1, 1] "
    "(default: the model's scene)",
)
SEEDS = Option("seeds", "seeds", None, "seeds of x_T, e.g. 0-7 or 1,4,9", low=0, high=MAX_SEED)
#: How real images are inverted (``sampling.invert``'s methods).
INVERSION = Option(
    "inversion",
    str,
    "ddim",
    "how real images are inverted: ddim (one network call per step) or fixed-point (each "
    "step refined until it samples back exactly; latents reach the noise shell)",
    choices=("ddim", "fixed-point"),
)
#: Where expensive results are kept (``workbench.store.as_cache`` reads it).
CACHE = Option(
    "cache",
    object,
    None,
    "a store.Cache or its folder, None for the user's, False for none",
    cli=False,
)
#: The trajectories a run shares (``workbench.trajectories.TrajectoryBank``).
BANK = Option(
    "bank",
    object,
    None,
    "a TrajectoryBank on the same grid whose trajectories are reused instead of sampled anew",
    cli=False,
)
#: The h-space engines' timestep: no control in the explorer (they edit over a window).
SINGLE_STEP = Option(
    "timestep", int, None, "a single-step edit at this timestep instead of the h window", low=0
)
#: Text conditioning of a latent text-to-image model (refused, one line, by unconditional
#: models); every function that samples takes them.
PROMPT = Option("prompt", str, None, "text prompt (text-to-image models)")
NEGATIVE_PROMPT = Option(
    "negative_prompt", str, None, "negative prompt of classifier-free guidance (default: empty)"
)
GUIDANCE_SCALE = Option(
    "guidance_scale",
    float,
    None,
    "classifier-free guidance scale (default with a prompt or class label: the model "
    "family's pipeline's, 7.5 SD, 7 SD3, 4 DiT; else 1: unguided)",
    low=0,
    high=100,
)
#: The class of a class-conditional model (DiT), guided against the null class.
CLASS_LABEL = Option(
    "class_label", int, None, "class label (class-conditional models, e.g. DiT)", low=0
)
CONDITIONING = (PROMPT, NEGATIVE_PROMPT, GUIDANCE_SCALE, CLASS_LABEL)

#: The DDIM eta of an edit and its strengths: the command line's ranges, which the edit a
#: direction file records is held to as well (``DirectionSet.load``).
EDIT_ETA = Option(
    "eta",
    float,
    None,
    "DDIM eta from the edit on (default: the set's recorded, else 0: deterministic)",
    low=0,
    high=1,
)
STRENGTHS = Option("strengths", "floats", None, "in preset steps, e.g. -3,0,3", required=True)

#: The activation point of h, for every engine and every probe that reads h.
H_POINT = Option(
    "h_point",
    str,
    None,
    "block output used as h: a U-Net's mid (its default), down.i or up.i; a transformer's "
    "block.i (default: the middle one), FLUX's also single.i (model.h_points())",
)
#: The options :func:`in_context` handles for a function that does not take them itself.
CONTEXT = (*CONDITIONING, H_POINT)


def check_model(model: Any) -> None:
    """A one-line error unless ``model`` is a loaded model (what ``wb.load`` returns)."""
    if not all(hasattr(model, a) for a in ("conditioned", "h_at", "fingerprint")):
        shown = repr(model) if isinstance(model, str | int | float | type(None)) else ""
        raise WorkbenchError(
            f"model must be a loaded model (model = wb.load(name_or_folder)), got "
            f"{type(model).__name__} {shown}".rstrip()
        )


def in_context(fn: Callable, options: Sequence[Option] = CONTEXT) -> Callable:
    """``fn(model, ...)`` that also takes the :data:`CONTEXT` keywords among ``options``
    (``prompt``, ``negative_prompt``, ``guidance_scale``; ``h_point``) and runs within
    ``model.conditioned(...)`` and ``model.h_at(h_point)``. A result with a ``params`` dict
    (a direction set) or with ``conditioning``/``h_point`` attributes (a probe result)
    records the conditioning it was computed under and the point of h."""
    own = set(inspect.signature(fn).parameters)
    handled = {o.name for o in CONTEXT}
    names = [o.name for o in options if o.name in handled and o.name not in own]
    if not names:
        return fn
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in names]
    tail = [p for p in params if p.kind is p.VAR_KEYWORD]
    head = [p for p in params if p.kind is not p.VAR_KEYWORD]
    conditioning_names = [o.name for o in CONDITIONING if o.name in names]

    @functools.wraps(fn)
    def run(model: Any, *args: Any, **kwargs: Any) -> Any:
        check_model(model)
        given = {n: kwargs.pop(n, None) for n in names}
        prompt = {n: given[n] for n in conditioning_names}
        with model.conditioned(**prompt) as conditioning, model.h_at(given.get("h_point")) as at:
            result = fn(model, *args, **kwargs)
        record: dict[str, Any] = {}
        if conditioning is not None:
            record["conditioning"] = conditioning.describe()
        if "h_point" in names:
            record["h_point"] = at
        if isinstance(getattr(result, "params", None), dict):
            result.params = {**result.params, **record}
        else:
            for key, value in record.items():
                if hasattr(result, key):
                    setattr(result, key, value)
        return result

    run.__signature__ = signature.replace(parameters=[*head, *extra, *tail])  # type: ignore[attr-defined]
    return run
