"""Geometry probes. Each is a function ``probe(model, **options) -> ProbeResult``,
described once by its options (:class:`workbench.options.Option`): the API checks and the
CLI's ``probe NAME`` arguments are derived from that description.

A :class:`ProbeResult` plots itself (:meth:`figure`, plotly) and saves itself
(:meth:`save`: ``NAME.json`` with the numbers and ``NAME.html`` with the figure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench.display import fields, short_repr, summary_html
from workbench.errors import WorkbenchError
from workbench.options import CONDITIONING, Option, Spec, in_context, validated
from workbench.store import write_json, write_text

PROBES: dict[str, Callable[..., ProbeResult]] = {}


def register_probe(name: str, summary: str, options: Sequence[Option] = ()) -> Callable:
    """Register ``fn(model, **options) -> ProbeResult`` as probe ``name``, described by
    ``options``; the function returned (``fn.spec``: the description) checks them."""

    def wrap(fn: Callable) -> Callable:
        spec = Spec("probe", name, summary, (*options, *CONDITIONING))
        checked = validated(spec, in_context(fn, spec.options))
        PROBES[name] = checked
        return checked

    return wrap


def probe(name: str, model: Any, **options: Any) -> ProbeResult:
    """Run the registered probe ``name`` on ``model`` (``wb.probe("norm", model, n=16)``)."""
    return get_probe(name)(model, **options)


def get_probe(name: str) -> Callable[..., ProbeResult]:
    """The probe registered as ``name`` (one-line error naming the known ones)."""
    if name not in PROBES:
        raise WorkbenchError(f"unknown probe {name!r}; known: {', '.join(sorted(PROBES))}")
    return PROBES[name]


class ProbeResult:
    """Base of probe results (dataclasses, declared with ``repr=False`` so that this class's
    short summary is shown): JSON export, plotly figure, save to a folder, a one-line
    ``summary()`` of the finding."""

    name: str = "probe"
    #: Prompt, negative prompt and guidance of a text-to-image model's run (None otherwise).
    conditioning: dict[str, Any] | None = None
    #: The activation point h was read at, for probes that read h (None otherwise).
    h_point: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (tensors as nested lists)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.tolist() if isinstance(value, torch.Tensor) else value
        if self.conditioning is not None:
            out["conditioning"] = self.conditioning
        if self.h_point is not None:
            out["h_point"] = self.h_point
        return out

    def figure(self) -> go.Figure:  # pragma: no cover - each probe overrides
        """The result's plotly figure."""
        raise NotImplementedError

    def summary(self) -> str:
        """One line: what the result shows (the built-in probes state their finding; a
        probe registered elsewhere without one lists its first fields by size)."""
        return f"{self.name}: " + ", ".join(f"{n} {t}" for n, t in fields(self)[:4])

    def headline(self) -> str:
        """The finding in one line (the report's summary); by default the summary's first
        line. The built-in probes state what a reader should take from them."""
        return self.summary().splitlines()[0]

    def __repr__(self) -> str:
        return short_repr(self, self.summary())

    def _repr_html_(self) -> str:
        calls = ".figure() plots it; .save(folder) writes NAME.json and NAME.html"
        return summary_html(self, self.summary(), calls)

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``NAME.json`` and a self-contained ``NAME.html`` into ``folder``."""
        folder = Path(folder)
        html = self.figure().to_html(include_plotlyjs=True, full_html=True)
        return [
            write_json(folder / f"{self.name}.json", {"probe": self.name, **self.to_dict()}),
            write_text(folder / f"{self.name}.html", html),
        ]


# importing the probe modules registers them
from workbench.probes import consistency as _consistency  # noqa: E402,F401
from workbench.probes import curvedness as _curvedness  # noqa: E402,F401
from workbench.probes import embedding as _embedding  # noqa: E402,F401  (registers "umap")
from workbench.probes import mixing as _mixing  # noqa: E402,F401  (registers "mixing-step")
from workbench.probes import norm as _norm  # noqa: E402,F401  (registers "norm")
from workbench.probes import spectrum as _spectrum  # noqa: E402,F401

if TYPE_CHECKING:
    import plotly.graph_objects as go
