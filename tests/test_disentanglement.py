"""DCI, the MIG-style gap, masked SSIM and edit success (workbench.eval.disentanglement)."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from workbench.data.scenes import get_scene
from workbench.errors import WorkbenchError
from workbench.eval.directions import read_changes
from workbench.eval.disentanglement import disentanglement, edit_success, masked_ssim


def test_planted_effect_matrices():
    one = disentanglement(torch.eye(4))
    assert (one.disentanglement, one.completeness, one.gap) == pytest.approx((1.0, 1.0, 1.0))
    assert one.informativeness == pytest.approx(1.0)  # every factor moved by 1 >= 0.25
    flat = disentanglement(torch.ones(4, 4))
    flat_scores = (flat.disentanglement, flat.completeness, flat.gap)
    assert flat_scores == pytest.approx((0, 0, 0), abs=1e-12)
    # a permutation of the identity is as disentangled; scaling changes nothing either
    perm = disentanglement(3.0 * torch.eye(4)[[2, 0, 3, 1]])
    assert (perm.disentanglement, perm.completeness, perm.gap) == pytest.approx((1.0, 1.0, 1.0))
    # two directions on one factor each, two factors nobody moves
    half = disentanglement(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    assert half.disentanglement == pytest.approx(1.0)
    assert half.completeness == pytest.approx(0.5) and half.gap == pytest.approx(0.5)
    assert half.informativeness == pytest.approx(0.5)
    # one direction moving two factors equally: its disentanglement is 1 - log 2 / log F
    mixed = disentanglement(torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
    assert mixed.per_direction[0] == pytest.approx(1 - math.log(2) / math.log(4))
    weak = disentanglement(0.1 * torch.eye(3), move=0.2)
    assert weak.informativeness == pytest.approx(0.5)
    assert disentanglement(torch.zeros(2, 3)).disentanglement == 0.0


def test_bad_effect_matrices_are_refused():
    with pytest.raises(WorkbenchError, match="non-negative"):
        disentanglement(-torch.eye(2))
    with pytest.raises(WorkbenchError, match=r"\[k, F\]"):
        disentanglement(torch.ones(3))
    with pytest.raises(WorkbenchError, match="NaN"):
        disentanglement(torch.tensor([[math.nan, 1.0]]))


def test_masked_ssim_reads_the_library_map():
    gen = torch.Generator().manual_seed(0)
    reference = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    edited = reference.clone()
    edited[:, :, 2:8, 2:8] += 0.5 * torch.randn(2, 3, 6, 6, generator=gen)
    whole, none = masked_ssim(edited, reference)
    want = np.mean(
        [
            structural_similarity(e.numpy(), r.numpy(), data_range=2.0, channel_axis=0)
            for e, r in zip(edited.double(), reference.double(), strict=True)
        ]
    )
    assert none is None and whole == pytest.approx(want, rel=1e-9)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:11, :11] = True
    inside, outside = masked_ssim(edited, reference, mask)
    assert inside < 0.9 and outside > 0.99  # the change sits inside (windows reach 3 px out)
    # the library averages the pixels 3 or more from the border: inside and outside split it
    n_in = int(mask[3:-3, 3:-3].sum())
    assert (inside * n_in + outside * (100 - n_in)) / 100 == pytest.approx(whole, rel=1e-9)
    with pytest.raises(WorkbenchError, match="inside and outside"):
        masked_ssim(edited, reference, torch.ones(16, 16, dtype=torch.bool))
    with pytest.raises(WorkbenchError, match="one shape"):
        masked_ssim(edited, reference[:1])


def test_edit_success_on_rendered_edits():
    """Planted edits of rendered Shapes: a pure scale change succeeds for "scale" and
    fails for "x"; a scale change that also moves the background fails."""
    from workbench.data.shapes import render

    scene = get_scene(None)
    _, factors = scene.generate(6, size=32, seed=2)
    factors.scale = factors.scale.clamp(6, 8)
    reference = render(factors, 32)
    bigger = type(factors)(**factors.as_dict())
    bigger.scale = factors.scale + 3.0  # ~0.5 spread
    also_bg = type(factors)(**bigger.as_dict())
    also_bg.background = (factors.background + 0.3).clamp(max=0.85)
    edited = torch.stack([render(bigger, 32), render(also_bg, 32)])
    changes, valid = read_changes(scene, edited, reference)
    pure = {k: v[:1] for k, v in changes.items()}
    mixed = {k: v[1:] for k, v in changes.items()}
    assert edit_success(pure, valid[:1], [1.0], "scale", scene, 32) >= 0.8
    assert edit_success(pure, valid[:1], [1.0], "x", scene, 32) == 0.0
    assert edit_success(mixed, valid[1:], [1.0], "scale", scene, 32) == 0.0
    assert math.isnan(edit_success(pure, valid[:1], [0.0], "scale", scene, 32))
    with pytest.raises(WorkbenchError, match="unknown factor"):
        edit_success(pure, valid[:1], [1.0], "size", scene, 32)
