"""Figures and images: grids of images, PNG export, the HTML report."""

from workbench.viz.images import edit_grid, image_grid, save_png

__all__ = ["edit_grid", "image_grid", "save_png"]
