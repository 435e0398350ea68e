"""Plotly figures for every result type, behind one function: :func:`figure`.

- :class:`~workbench.editing.EditResult` -> :func:`direction_grid` (rows: samples,
  columns: strengths, axes labelled with both);
- :class:`~workbench.directions.DirectionSet` -> :func:`score_bars` (the ranking scores:
  singular values, eigenvalues, accuracies);
- images ``[N, H, W, 3]`` or ``[R, C, H, W, 3]`` uint8 -> :func:`image_figure`;
- results that plot themselves (``.figure()``): effect matrices of
  :class:`~workbench.eval.DirectionScores`, and every probe result (norm bands,
  curvedness, spectra, consistency heat maps, UMAP; ``workbench.probes``).

:func:`export` writes any of them as a static PDF, SVG or PNG file (paper figures).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.viz.images import edit_grid, image_grid

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.directions import DirectionSet
    from workbench.editing import EditResult


def image_figure(images: Any, title: str = "", upscale: int = 3) -> go.Figure:
    """A plotly figure of uint8 images (``[H, W, 3]``, ``[N, H, W, 3]`` or ``[R, C, H, W, 3]``)."""
    import plotly.graph_objects as go

    arr = np.asarray(images)
    grid = arr if arr.ndim == 3 else image_grid(arr, upscale=upscale)
    fig = go.Figure(go.Image(z=grid, hoverinfo="skip"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")
    return fig


def direction_grid(result: EditResult, title: str | None = None, upscale: int = 3) -> go.Figure:
    """An edit as a grid: a row per sample, a column per strength, ticks naming both."""
    grid = edit_grid(result, upscale=upscale)
    fig = image_figure(grid, title or f"{result.directions.name(result.index)} ({result.mode})")
    n_strengths, n_samples = result.images.shape[:2]
    cell_w = (grid.shape[1] / upscale - 1) / n_strengths
    cell_h = (grid.shape[0] / upscale - 1) / n_samples
    fig.update_xaxes(
        visible=True,
        showgrid=False,
        tickvals=[upscale * (1 + cell_w * (i + 0.5)) for i in range(n_strengths)],
        ticktext=[f"{s:g}" for s in result.strengths],
        title="strength",
    )
    rows = result.seeds if result.seeds is not None else list(range(n_samples))
    fig.update_yaxes(
        visible=True,
        showgrid=False,
        tickvals=[upscale * (1 + cell_h * (i + 0.5)) for i in range(n_samples)],
        ticktext=[str(r) for r in rows],
        title="seed" if result.seeds is not None else "sample",
    )
    return fig


def score_bars(directions: DirectionSet, title: str | None = None) -> go.Figure:
    """The scores that rank a direction set, one bar per direction."""
    import plotly.graph_objects as go

    if directions.scores is None:
        values = [float("nan")] * len(directions)
    else:
        values = directions.scores.tolist()
    names = [directions.name(i) for i in range(len(directions))]
    fig = go.Figure(go.Bar(x=names, y=values))
    when = directions.timestep
    fig.update_layout(
        title=title or f"{directions.engine}: {directions.space}-space at t={when}",
        xaxis_title="direction",
        yaxis_title=directions.score_name,
        height=320,
        template="plotly_white",
    )
    return fig


def figure(result: Any, **kwargs: Any) -> go.Figure:
    """The plotly figure of any workbench result (see the module docstring)."""
    from workbench.directions import DirectionSet
    from workbench.editing import EditResult

    if isinstance(result, EditResult):
        return direction_grid(result, **kwargs)
    if isinstance(result, DirectionSet):
        return score_bars(result, **kwargs)
    if isinstance(result, np.ndarray) or hasattr(result, "numpy"):
        return image_figure(result, **kwargs)
    if hasattr(result, "figure"):
        return result.figure(**kwargs)
    raise TypeError(f"no figure for {type(result).__name__}")


#: Static formats :func:`export` writes.
FORMATS = ("pdf", "svg", "png")


#: Executables of a Chrome or Chromium that kaleido can drive, looked for on ``PATH``.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    """The Chrome or Chromium kaleido would drive: ``$BROWSER_PATH``, kaleido's own
    download, or one on ``PATH``; None when there is none."""
    try:
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - another version of the driver: look on PATH
        found = os.environ.get("BROWSER_PATH") or next(
            filter(None, map(shutil.which, BROWSERS)), None
        )
    return found


def check_exporter() -> None:
    """A one-line error unless static figures can be written (kaleido and a browser for
    it); called before any compute by the commands that export."""
    from workbench.errors import WorkbenchError

    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise WorkbenchError(
            "static figures need kaleido: pip install 'workbench[figures]' (and a Chrome or "
            "Chromium, e.g. apt install chromium)"
        ) from None
    if find_browser() is None:
        raise WorkbenchError(
            "static figures need a Chrome or Chromium for kaleido to drive: apt install "
            "chromium, or set BROWSER_PATH to one"
        )


def export(fig: go.Figure, path: str | Path, format: str | None = None, scale: float = 2.0) -> Path:
    """Write ``fig`` as a static PDF, SVG or PNG file (format from ``format`` or the
    suffix), atomically; see :func:`export_many`."""
    return export_many([fig], [path], format, scale)[0]


def export_many(
    figs: Sequence[go.Figure],
    paths: Sequence[str | Path],
    format: str | None = None,
    scale: float = 2.0,
) -> list[Path]:
    """Write each figure as a static PDF, SVG or PNG file (format from ``format`` or each
    suffix) through plotly's exporter (kaleido, which drives an installed Chrome or
    Chromium; Debian's ``chromium`` works), in one browser session. Files appear only when
    all are written (temporary names, then renamed); a one-line error names what is
    missing or what failed."""
    from workbench.errors import WorkbenchError

    paths = [Path(p) for p in paths]
    formats = [(format or p.suffix.lstrip(".")).lower() for p in paths]
    for fmt in formats:
        if fmt not in FORMATS:
            raise WorkbenchError(f"unknown figure format {fmt!r}; known: {', '.join(FORMATS)}")
    check_exporter()
    import plotly.io as pio

    temps = [p.with_name(f".{p.name}.{os.getpid()}.part") for p in paths]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        pio.write_images(
            list(figs),
            [str(t) for t in temps],
            format=formats,
            scale=[scale if f == "png" else 1.0 for f in formats],
        )
        for temp, path in zip(temps, paths, strict=True):
            temp.replace(path)
    except Exception as exc:  # the exporter's errors vary by version and browser
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"could not export {paths[0].name}: {first}") from exc
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return paths
