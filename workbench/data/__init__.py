"""Data: the synthetic Shapes dataset with ground-truth factors, its read-out, and
labelled real images from disk (class folders or a CSV)."""

from workbench.data.labelled import LabelledImages, load_labelled
from workbench.data.shapes import (
    FACTOR_NAMES,
    SHAPE_NAMES,
    Factors,
    factor_spreads,
    generate,
    render,
)

__all__ = [
    "FACTOR_NAMES",
    "SHAPE_NAMES",
    "Factors",
    "LabelledImages",
    "factor_spreads",
    "generate",
    "load_labelled",
    "render",
]
