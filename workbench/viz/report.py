"""A self-contained HTML report: sections of text, plotly figures and PNG images.

plotly.js is embedded once, images as base64, so the file opens offline.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.store import write_text
from workbench.viz.images import png_bytes

if TYPE_CHECKING:
    import plotly.graph_objects as go


@dataclass
class Report:
    """A self-contained HTML report built part by part."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        """Add a section heading."""
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str) -> None:
        """Add a paragraph."""
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def figure(self, fig: go.Figure) -> None:
        """Add a plotly figure."""
        self.parts.append(
            f'<div class="figure">{fig.to_html(include_plotlyjs=False, full_html=False)}</div>'
        )

    def html(self, fragment: str) -> None:
        """Add an HTML fragment made by the package (e.g. a score table); not escaped."""
        self.parts.append(f'<div class="fragment">{fragment}</div>')

    def image(self, array: np.ndarray, caption: str = "") -> None:
        """Add an image (embedded PNG) with a caption."""
        data = base64.b64encode(png_bytes(array)).decode()
        self.parts.append(
            f'<figure><img src="data:image/png;base64,{data}" style="image-rendering: pixelated">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        """The report as one HTML string (plotly.js inlined)."""
        from plotly.offline import get_plotlyjs

        body = "\n".join(self.parts)
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "figure{display:inline-block;margin:8px}figcaption{font-size:90%}</style>"
            f"</head><body><h1>{html.escape(self.title)}</h1>{body}</body></html>"
        )

    def save(self, path: str | Path) -> Path:
        """Write the report atomically."""
        return write_text(path, self.render())
