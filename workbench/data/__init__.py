"""Data: the synthetic Shapes dataset with ground-truth factors, and its read-out."""

from workbench.data.shapes import (
    FACTOR_NAMES,
    SHAPE_NAMES,
    Factors,
    factor_spreads,
    generate,
    render,
)

__all__ = ["FACTOR_NAMES", "SHAPE_NAMES", "Factors", "factor_spreads", "generate", "render"]
