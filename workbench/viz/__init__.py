"""Figures and images: grids of images, PNG export, plotly figures, the HTML report and
the ipywidgets direction explorer."""

from workbench.viz.explorer import Explorer
from workbench.viz.figures import direction_grid, figure, image_figure, score_bars
from workbench.viz.images import edit_grid, image_grid, save_png

__all__ = [
    "Explorer",
    "direction_grid",
    "edit_grid",
    "figure",
    "image_figure",
    "image_grid",
    "save_png",
    "score_bars",
]
