import torch

import workbench as wb
from workbench.data.shapes import factor_spreads, generate, render, sample_factors
from workbench.eval.directions import (
    factor_changes,
    level_effects,
    score_directions,
    spearman,
    summarise,
)


def test_spearman():
    a = torch.arange(10.0)
    assert abs(spearman(a, a**3) - 1.0) < 1e-9
    assert abs(spearman(a, -a) + 1.0) < 1e-9
    assert spearman(a, torch.ones(10)) == 0.0


def _edited_factors(strengths, n, factor, per_unit):
    """Ground-truth 'edits': move one factor by per_unit * strength, render, read out."""
    from workbench.data.readout import read_factors

    base = sample_factors(n, seed=7)
    base.scale = base.scale.clamp(6, 8)  # leave room for the moves
    images = []
    for s in strengths:
        moved = base[torch.arange(n)]
        setattr(moved, factor, getattr(base, factor) + s * per_unit)
        images.append(render(moved))
    read = read_factors(torch.cat(images))
    return read, len(strengths)


def test_summarise_finds_the_moved_factor():
    strengths = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    n = 64
    read, n_s = _edited_factors(strengths.tolist(), n, "x", 1.0)
    f = read.factors
    shaped = {k: v.reshape(n_s, n) for k, v in f.as_dict().items()}
    from workbench.data.shapes import Factors

    factors = Factors(**shaped)
    ref = Factors(**{k: v[2:3].expand(n_s, n) for k, v in shaped.items()})
    changes = factor_changes(factors, ref)
    valid = read.valid.reshape(n_s, n)
    effect, signed, dom, purity, mono, validity, trend = summarise(
        changes, valid & valid[2][None], strengths
    )
    assert dom == 3  # "x"
    assert abs(float(signed[3]) - 1.0 / factor_spreads()["x"]) < 0.05 / factor_spreads()["x"]
    assert purity > 0.9 and mono > 0.99 and trend > 0.99 and validity == 1.0


def test_summarise_handles_hue_wraparound_and_shape():
    s = torch.tensor([-1.0, 0.0, 1.0])[:, None].expand(3, 4)
    zeros = torch.zeros(3, 4)
    changes = {
        "shape": zeros,
        "hue": s * 0.1,
        "scale": zeros,
        "x": zeros,
        "y": zeros,
        "background": zeros,
    }
    effect, signed, dom, purity, mono, validity, trend = summarise(
        changes, torch.ones(3, 4, dtype=torch.bool), s[:, 0]
    )
    assert dom == 1 and purity == 1.0 and mono > 0.99
    assert trend > 0.99
    *_, mono_down, _, trend_down = summarise(
        {k: -v for k, v in changes.items()}, torch.ones(3, 4, dtype=torch.bool), s[:, 0]
    )
    assert mono_down > 0.99 and trend_down > 0.99  # a steady decrease is monotone too


def test_trend_sees_a_growing_flip_rate_that_per_seed_monotonicity_misses():
    """Shape flips in 1 of 4 seeds at |s| = 1 and 3 of 4 at |s| = 2: most seeds' paths are
    constant or step once, so per-seed Spearman is low, but the flip rate grows."""
    s = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    flips = torch.tensor(
        [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.float
    )
    zeros = torch.zeros(5, 4)
    changes = {"shape": flips, "hue": zeros, "scale": zeros, "x": zeros, "y": zeros}
    changes["background"] = zeros
    *_, mono, validity, trend = summarise(changes, torch.ones(5, 4, dtype=torch.bool), s)
    assert mono < 0.9 and trend > 0.99
    changes["shape"] = torch.tensor([[0] * 4, [1] * 4, [0] * 4, [1] * 4, [0] * 4]).float()
    assert summarise(changes, torch.ones(5, 4, dtype=torch.bool), s)[-1] < 0.9  # up, then down


def test_level_effects_show_saturation_that_the_pooled_slope_hides():
    """x moves linearly (same effect at every level); the shape class flips on every seed
    already at |s| = 1, so its effect per unit strength halves at |s| = 2. One invalid pair
    at |s| = 2 lowers that level's validity only."""
    s = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    zeros = torch.zeros(5, 4)
    changes = {k: zeros for k in ("hue", "scale", "y", "background")}
    changes["x"] = s[:, None].expand(5, 4) * 0.5
    changes["shape"] = (s != 0).float()[:, None].expand(5, 4)
    valid = torch.ones(5, 4, dtype=torch.bool)
    valid[4, 0] = False
    levels, effect, validity = level_effects(changes, valid, s)
    spread = factor_spreads()["x"]
    assert levels == [1.0, 2.0] and effect.shape == (2, 6)
    assert torch.allclose(effect[:, 3], torch.full((2,), 0.5 / spread, dtype=effect.dtype))
    assert torch.allclose(effect[:, 0], torch.tensor([1.0, 0.5], dtype=effect.dtype))
    assert validity.tolist() == [1.0, 7 / 8]
    pooled = summarise(changes, valid, s)[0]
    assert 0.5 < float(pooled[0]) < 0.65  # the pooled slope sits near the saturated level


def test_factor_changes_wrap_hue():
    edited = sample_factors(4, seed=1)
    ref = sample_factors(4, seed=1)
    edited.hue = (ref.hue + 0.95) % 1.0  # a step of -0.05 across the wrap
    assert torch.allclose(factor_changes(edited, ref)["hue"], torch.full((4,), -0.05), atol=1e-5)


def test_score_directions_runs_end_to_end(tiny):
    ds = wb.discover("random", tiny, k=2, space="h", form="channel")
    scores = score_directions(tiny, ds, strengths=[-1, 1], seeds=range(3), num_steps=4)
    assert scores.effect.shape == (2, 6) and scores.strengths == [-1.0, 0.0, 1.0]
    assert scores.levels == [1.0] and scores.effect_by_level.shape == (2, 1, 6)
    assert torch.allclose(scores.effect_by_level[:, 0], scores.effect.to(scores.effect_by_level))
    assert len(scores.dominant) == 2 and "direction" in scores.table()
    assert scores.figure().data[0].z is not None
    assert generate(1)[0].shape == (1, 3, 32, 32)
