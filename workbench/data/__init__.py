"""Data: the procedural scenes with ground-truth factors (Shapes, Lit Shapes) and their
read-outs, the registry of scenes by name, and labelled real images from disk (class
folders or a CSV)."""

from workbench.data.labelled import LabelledImages, load_labelled
from workbench.data.lit import LIT_FACTOR_NAMES, LitFactors, generate_lit, read_lit_factors
from workbench.data.scenes import SCENES, Scene, get_scene
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
    "LIT_FACTOR_NAMES",
    "SCENES",
    "LitFactors",
    "Scene",
    "generate_lit",
    "get_scene",
    "read_lit_factors",
    "SHAPE_NAMES",
    "Factors",
    "LabelledImages",
    "factor_spreads",
    "generate",
    "load_labelled",
    "render",
]
