"""Quantitative evaluation against the Shapes ground truth."""

from workbench.eval.directions import DirectionScores, score_directions, spearman
from workbench.eval.quality import SampleQuality, sample_quality

__all__ = ["DirectionScores", "SampleQuality", "sample_quality", "score_directions", "spearman"]
