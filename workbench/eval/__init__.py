"""Quantitative evaluation against the Shapes ground truth."""

from workbench.eval.quality import SampleQuality, sample_quality

__all__ = ["SampleQuality", "sample_quality"]
