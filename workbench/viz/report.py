"""A self-contained HTML report: sections of text, plotly figures and PNG images.

plotly.js is embedded once (not once per figure), images as base64, so the file opens
offline. Figures carry a caption saying what they show and what to look for; legends are
put below the plot, where they cover neither axis titles nor colour bars.
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

    def figure(self, fig: go.Figure, caption: str = "") -> None:
        """Add a plotly figure (legend moved below the plot) with a caption."""
        legend_below(fig)
        text = f"<p class='caption'>{html.escape(caption)}</p>" if caption else ""
        self.parts.append(
            f'<div class="figure">{fig.to_html(include_plotlyjs=False, full_html=False)}'
            f"{text}</div>"
        )

    def grid(
        self,
        images: np.ndarray,
        columns: list[str],
        rows: list[str],
        caption: str = "",
        marked: int | None = None,
        scale: int = 3,
    ) -> None:
        """Add a labelled grid of uint8 images ``[R, C, H, W, 3]``: a header per column
        (``marked``: the column shown as the reference), a label per row, a caption."""
        n_rows, n_cols, height, width = images.shape[:4]
        head = "".join(
            f"<th{' class=marked' if j == marked else ''}>{html.escape(c)}</th>"
            for j, c in enumerate(columns)
        )
        body = []
        for i in range(n_rows):
            cells = "".join(
                f"<td{' class=marked' if j == marked else ''}><img alt='' width={width * scale} "
                f"height={height * scale} src='data:image/png;base64,"
                f"{base64.b64encode(png_bytes(images[i, j])).decode()}'></td>"
                for j in range(n_cols)
            )
            body.append(f"<tr><th>{html.escape(rows[i])}</th>{cells}</tr>")
        self.parts.append(
            "<figure><table class='grid'>"
            f"<tr><th></th>{head}</tr>{''.join(body)}</table>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
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
            "figure{display:inline-block;margin:8px;vertical-align:top}"
            "figcaption,.caption{font-size:90%;color:#333;max-width:900px}"
            "table.grid{border-collapse:collapse}table.grid td{padding:1px}"
            "table.grid img{image-rendering:pixelated;display:block}"
            "table.grid th{font-size:80%;font-weight:normal;padding:2px 4px}"
            "table.grid .marked{background:#dde8f5}"
            "table.summary{border-collapse:collapse;font-size:90%}"
            "table.summary td,table.summary th{border-bottom:1px solid #ccc;padding:3px 8px;"
            "text-align:left}</style>"
            f"</head><body><h1>{html.escape(self.title)}</h1>{body}</body></html>"
        )

    def save(self, path: str | Path) -> Path:
        """Write the report atomically."""
        return write_text(path, self.render())


def legend_below(fig: go.Figure) -> go.Figure:
    """Put the legend of ``fig`` in rows at the bottom edge of the figure, under the x-axis
    titles (placed against the figure, not the plot, so it never covers an axis title or a
    colour bar), and leave room for it."""
    entries = sum(1 for trace in fig.data if trace.showlegend is not False and trace.name)
    rows = max(1, -(-entries // 4))  # about four entries per row
    fig.update_layout(
        legend={
            "orientation": "h",
            "yref": "container",
            "y": 0.0,
            "yanchor": "bottom",
            "x": 0.0,
            "xanchor": "left",
        },
        margin={"b": 80 + 22 * rows},
        height=max(fig.layout.height or 450, 420 + 22 * rows),
    )
    return fig
