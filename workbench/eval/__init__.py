"""Quantitative evaluation: against the Shapes ground truth, and without it."""

from workbench.eval.directions import DirectionScores, score_directions, score_edits, spearman
from workbench.eval.disentanglement import Disentanglement, disentanglement, masked_ssim
from workbench.eval.judge import ImageScores, LinearClassifier, judge_directions
from workbench.eval.quality import SampleQuality, sample_quality

__all__ = [
    "DirectionScores",
    "Disentanglement",
    "ImageScores",
    "LinearClassifier",
    "SampleQuality",
    "disentanglement",
    "judge_directions",
    "masked_ssim",
    "sample_quality",
    "score_directions",
    "score_edits",
    "spearman",
]
