"""A self-contained HTML report: sections of text, plotly figures and PNG images.

plotly.js is embedded once, images as base64, so the file opens offline.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.store import write_text
from workbench.viz.images import png_bytes


@dataclass
class Report:
    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def figure(self, fig) -> None:
        self.parts.append(
            f'<div class="figure">{fig.to_html(include_plotlyjs=False, full_html=False)}</div>'
        )

    def image(self, array: np.ndarray, caption: str = "") -> None:
        data = base64.b64encode(png_bytes(array)).decode()
        self.parts.append(
            f'<figure><img src="data:image/png;base64,{data}" style="image-rendering: pixelated">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
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
        return write_text(path, self.render())
