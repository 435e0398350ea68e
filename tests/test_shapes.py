import torch

from workbench.data.readout import hue_distance, read_factors, rgb_to_hue
from workbench.data.shapes import (
    SHAPE_NAMES,
    factor_spreads,
    generate,
    hue_to_rgb,
    render,
    sample_factors,
)


def test_generator_is_seeded_and_in_range():
    a, fa = generate(256, seed=3)
    b, fb = generate(256, seed=3)
    c, _ = generate(256, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (256, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert set(fa.shape.tolist()) == {0, 1, 2}
    assert fa.scale.min() >= 0.14 * 32 and fa.scale.max() <= 0.31 * 32
    assert set(factor_spreads()) == {"shape", "hue", "scale", "x", "y", "background"}
    assert len(SHAPE_NAMES) == 3


def test_hue_round_trip():
    hue = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert hue_distance(rgb_to_hue(hue_to_rgb(hue)), hue).max() < 1e-5


def test_readout_meets_its_accuracy_bar():
    images, truth = generate(2048, seed=11)
    read = read_factors(images)
    got = read.factors
    assert read.valid.all()
    assert (got.x - truth.x).abs().max() < 1.0 and (got.y - truth.y).abs().max() < 1.0
    assert ((got.scale - truth.scale) / truth.scale).abs().max() < 0.10
    assert hue_distance(got.hue, truth.hue).max() < 0.03
    assert (got.background - truth.background).abs().max() < 0.02
    assert (got.shape == truth.shape).float().mean() >= 0.98


def test_readout_works_at_other_resolutions():
    images, truth = generate(256, size=16, seed=2)
    read = read_factors(images)
    assert read.valid.float().mean() > 0.95
    assert (read.factors.x - truth.x).abs().median() < 0.5


def test_readout_rejects_what_is_not_one_uniform_object():
    factors = sample_factors(64, seed=5)
    one = render(factors)
    moved = factors[torch.arange(64)]
    moved.x = 32 - moved.x
    moved.y = 32 - moved.y
    two = torch.minimum(one, render(moved))  # two objects (darkest of the two renders)
    far = (factors.x - moved.x).abs() + (factors.y - moved.y).abs() > 2 * factors.scale
    assert not read_factors(two[far]).valid.any()
    noisy = one + 0.3 * torch.randn(one.shape, generator=torch.Generator().manual_seed(0))
    assert read_factors(noisy.clamp(-1, 1)).valid.float().mean() < 0.1
    blank = torch.zeros(4, 3, 32, 32)
    assert not read_factors(blank).valid.any()
