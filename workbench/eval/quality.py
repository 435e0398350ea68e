"""Sample quality of a Shapes model, measured with the analytic read-out.

Validity rate; per continuous factor the two-sample Kolmogorov-Smirnov statistic between
the read-out of samples and the generating distribution (a large fresh draw of it); shape
class frequencies; background range.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch

from workbench.models.wrapper import DiffusionModel
from workbench.options import PROGRESS, SEED, Option, Spec, validated
from workbench.sampling import sample
from workbench.stats import ks_statistic
from workbench.trajectories import model_scene


@dataclass
class SampleQuality:
    """Quality of model samples against the ground truth of the model's scene."""

    n: int
    num_steps: int
    valid_rate: float
    ks: dict[str, float]
    shape_freq: list[float]
    background_range: tuple[float, float]
    background_std: float

    def passes(self, valid: float = 0.95, ks: float = 0.1, shape_points: float = 0.05) -> bool:
        """Whether the sample bar is met (valid rate, KS, shape shares)."""
        return (
            self.valid_rate >= valid
            and max(self.ks.values()) < ks
            and max(abs(f - 1 / 3) for f in self.shape_freq) <= shape_points
        )

    def to_dict(self) -> dict:
        """The result as plain JSON-ready data."""
        return asdict(self)


def circular_hue_ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """KS statistic for circular values in turns (hue, light direction), minimised over the
    cut point of the circle (Kuiper-like)."""
    best = 1.0
    for cut in torch.linspace(0, 1, 13)[:-1]:
        best = min(best, ks_statistic((a - cut) % 1.0, (b - cut) % 1.0))
    return best


#: The options of :func:`sample_quality` (checked before anything runs).
SAMPLE_QUALITY = Spec(
    "function",
    "sample_quality",
    "samples against the ground truth of the model's scene",
    (
        Option("n", int, 512, "samples", low=1, high=1_000_000),
        Option("num_steps", int, 50, "sampling steps", low=1, high=10000),
        SEED,
        PROGRESS,
    ),
)


@functools.partial(validated, SAMPLE_QUALITY)
def sample_quality(
    model: DiffusionModel,
    n: int = 512,
    num_steps: int = 50,
    seed: int = 0,
    progress: bool | None = None,
) -> SampleQuality:
    """Sample ``n`` images (seeds ``seed..seed+n-1``) and compare them with the generator
    of the model's scene (``preset.scene``)."""
    scene = model_scene(model)
    images = sample(model, seeds=range(seed, seed + n), num_steps=num_steps, progress=progress)
    read = scene.read(images)
    ok = read.valid
    size = model.sample_shape[1]
    ref = scene.sample_factors(20000, size=size, seed=12345)
    ks = {}
    for name in scene.continuous:
        got = getattr(read.factors, name)[ok]
        want = getattr(ref, name)
        if got.numel() < 2:
            ks[name] = 1.0
        elif name in scene.circular:
            ks[name] = circular_hue_ks(got, want)
        else:
            ks[name] = ks_statistic(got, want)
    shapes = read.factors.shape[ok]
    freq = [float((shapes == k).float().mean()) if shapes.numel() else 0.0 for k in range(3)]
    bgs = read.factors.background[ok]
    return SampleQuality(
        n=n,
        num_steps=num_steps,
        valid_rate=float(ok.float().mean()),
        ks=ks,
        shape_freq=freq,
        background_range=(float(bgs.min()), float(bgs.max())) if bgs.numel() else (0.0, 0.0),
        background_std=float(bgs.std()) if bgs.numel() > 1 else 0.0,
    )
