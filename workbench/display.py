"""Short summaries of results for a notebook cell and a terminal: what a result is and
what it shows in a few lines, never a dump of its tensors.

A result class gives :func:`short_repr` and :func:`summary_html` its one-line finding
(``summary()``); the fields are listed by kind and size (``vectors [8, 3, 32, 32]``,
``timesteps: 21 values``), and the HTML names what to call next (``.figure()``, ...).
"""

from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

import torch

#: Longest text of a string field shown.
TEXT = 40
#: Longest one-line summary in a terminal.
LINE = 300


def describe(value: Any) -> str:
    """A field's value in a few characters: shape of a tensor, length of a list, a number."""
    if isinstance(value, torch.Tensor):
        return f"[{', '.join(map(str, value.shape))}]" if value.ndim else f"{float(value):.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) <= 4 and all(isinstance(v, (int, float, str)) for v in value):
            return "(" + ", ".join(describe(v) for v in value) + ")"
        return f"{len(value)} values"
    if isinstance(value, dict):
        return f"{len(value)} entries"
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= TEXT else value[: TEXT - 3] + "...")
    return type(value).__name__


def fields(obj: Any) -> list[tuple[str, str]]:
    """``(name, description)`` of a dataclass's fields (private ones left out)."""
    return [
        (f.name, describe(getattr(obj, f.name)))
        for f in dataclasses.fields(obj)
        if not f.name.startswith("_")
    ]


def short_repr(obj: Any, summary: str) -> str:
    """``<Class: summary>``: one line for a terminal (a summary of several lines gives its
    heading and first row, at most :data:`LINE` characters)."""
    line = "; ".join(part.strip() for part in summary.splitlines()[:2])
    if len(line) > LINE:
        line = line[: LINE - 3] + "..."
    return f"<{type(obj).__name__}: {line}>"


def summary_html(obj: Any, summary: str, calls: str) -> str:
    """A small HTML block: the class and its finding (the rows of a summary of several
    lines below it), its fields by size, what to call."""
    head, *rest = summary.splitlines() or [""]
    more = f"<pre>{html.escape(chr(10).join(rest))}</pre>" if rest else ""
    rows = "".join(
        f"<tr><td style='text-align:left'><code>{html.escape(name)}</code></td>"
        f"<td style='text-align:left'>{html.escape(text)}</td></tr>"
        for name, text in fields(obj)
    )
    return (
        f"<div><b>{html.escape(type(obj).__name__)}</b>: {html.escape(head)}{more}"
        f"<details><summary>fields</summary><table>{rows}</table></details>"
        f"<small>{html.escape(calls)}</small></div>"
    )
