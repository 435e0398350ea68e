"""Lit Shapes: the generator, its analytic read-out, and the scene registry."""

import dataclasses

import pytest
import torch

from workbench.data import lit
from workbench.data.readout import hue_distance
from workbench.data.scenes import SCENES, get_scene
from workbench.errors import WorkbenchError


def _factors(n=64, seed=3):
    return lit.sample_lit_factors(n, size=64, seed=seed)


def test_readout_recovers_every_generating_factor():
    images, truth = lit.generate_lit(256, size=64, seed=11)
    read = lit.read_lit_factors(images)
    got = read.factors
    assert bool(read.valid.all())
    assert bool((got.shape == truth.shape).all())
    assert float((got.x - truth.x).abs().max()) < 0.1  # pixels
    assert float((got.y - truth.y).abs().max()) < 0.1
    assert float(((got.scale - truth.scale) / truth.scale).abs().max()) < 0.02
    assert float(hue_distance(got.hue, truth.hue).max()) < 1e-3
    assert float((got.background - truth.background).abs().max()) < 2e-3
    assert float(hue_distance(got.light, truth.light).max()) < 2e-3  # turns
    assert float((read.ramp - lit.RAMP).abs().max()) < 0.01


def test_the_object_covers_each_pixel_by_its_chroma():
    factors = _factors(16)
    images = (lit.render_lit(factors, 64) + 1) / 2
    chroma = images.amax(1) - images.amin(1)
    cov = lit.coverage(factors.shape, factors.scale, factors.x, factors.y, 64)
    assert torch.allclose(chroma, cov, atol=1e-5)


def test_the_light_turns_the_ramp_and_the_shadow_with_it():
    factors = _factors(32)
    turned = dataclasses.replace(factors, light=(factors.light + 0.25) % 1.0)
    a = lit.read_lit_factors(lit.render_lit(factors, 64))
    b = lit.read_lit_factors(lit.render_lit(turned, 64))
    assert float(hue_distance(b.factors.light, (a.factors.light + 0.25) % 1.0).max()) < 2e-3
    # the shadow points away from the light in both
    for read in (a, b):
        away = hue_distance(read.shadow_angle, (read.factors.light + 0.5) % 1.0)
        assert float(away.max()) < 0.1


def test_validity_rejects_what_the_scene_cannot_produce(monkeypatch):
    factors = _factors(24)
    good = lit.render_lit(factors, 64)
    assert bool(lit.read_lit_factors(good).valid.all())
    # no shadow
    monkeypatch.setattr(lit, "SHADOW_DEPTH", 0.0)
    assert not bool(lit.read_lit_factors(lit.render_lit(factors, 64)).valid.any())
    monkeypatch.undo()
    # shadow cast towards the light: light from the other side, then the ramp flipped back
    turned = dataclasses.replace(factors, light=(factors.light + 0.5) % 1.0)
    centre = torch.arange(64) + 0.5 - 32
    u = lit.light_vector(turned.light)
    ramp = u[:, 0, None, None] * centre[None, None] + u[:, 1, None, None] * centre[None, :, None]
    ramp = ramp * lit.RAMP / 64  # [0, 1] units, as rendered
    consistent = lit.render_lit(turned, 64)
    assert bool(lit.read_lit_factors(consistent).valid.all())
    towards = consistent - 2 * 2 * ramp[:, None]  # ramp reversed, shadow left where it was
    assert not bool(lit.read_lit_factors(towards).valid.any())
    # a second object
    two = good.clone()
    two[:, :, 2:8, 2:8] = torch.tensor([1.0, -1.0, -1.0])[:, None, None]
    assert not bool(lit.read_lit_factors(two).valid.any())
    # a background that is not a plane
    noisy = good + 0.2 * torch.randn(good.shape, generator=torch.Generator().manual_seed(0))
    assert not bool(lit.read_lit_factors(noisy.clamp(-1, 1)).valid.any())


def test_scenes_are_registered_with_consistent_factors():
    assert set(SCENES) >= {"shapes", "lit-shapes"}
    for scene in SCENES.values():
        images, factors = scene.generate(4, size=32, seed=0)
        assert images.shape == (4, 3, 32, 32)
        assert tuple(factors.as_dict()) == scene.factor_names
        assert set(scene.spreads(32)) == set(scene.factor_names)
        assert tuple(scene.read(images).factors.as_dict()) == scene.factor_names
    assert get_scene(None).name == "shapes"
    with pytest.raises(WorkbenchError, match="unknown scene"):
        get_scene("faces")


def test_a_shape_prior_tilts_the_classes_and_nothing_else():
    """``shape_probs`` (the class-balanced fine-tune of shapes64) draws the classes with
    the given weights; without it the draw is the uniform one it always was."""
    n = 30_000
    plain = lit.sample_lit_factors(n, seed=5)
    gen = torch.Generator().manual_seed(5)
    assert torch.equal(plain.shape, torch.randint(0, 3, (n,), generator=gen))  # unchanged
    tilted = lit.sample_lit_factors(n, seed=5, shape_probs=(2.0, 5.0, 3.0))  # normalised
    shares = torch.bincount(tilted.shape, minlength=3) / n
    assert torch.allclose(shares, torch.tensor([0.2, 0.5, 0.3]), atol=0.015)
    for name in ("hue", "scale", "x", "y", "background", "light"):  # same ranges
        a, b = getattr(plain, name), getattr(tilted, name)
        assert abs(float(a.mean() - b.mean())) < 0.02 * float(a.std())
    for scene in SCENES.values():  # every scene's generator takes it
        _, factors = scene.generate(64, seed=1, shape_probs=(0, 1, 0))
        assert bool((factors.shape == 1).all())
    for bad, match in [
        ((1.0, 2.0), "expected 3 finite weights"),
        ((1.0, float("nan"), 1.0), "expected 3 finite weights"),
        ((1.0, -1.0, 1.0), ">= 0"),
        ((0.0, 0.0, 0.0), "not all 0"),
    ]:
        with pytest.raises(WorkbenchError, match=match):
            lit.sample_lit_factors(4, shape_probs=bad)
