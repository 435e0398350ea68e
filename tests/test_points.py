"""Named activation points: any block output can be h, for reading, editing and engines."""

from __future__ import annotations

import math

import pytest
import torch

import workbench as wb
from workbench.engines.pullback import local_basis
from workbench.stats import principal_angles


def test_every_block_output_is_a_named_point(tiny):
    points = tiny.h_points()
    assert points == ["down.0", "down.1", "down.2", "mid", "up.0", "up.1", "up.2"]
    assert tiny.h_point == "mid"
    x, t = tiny.noise([0, 1]), 500
    shapes = set()
    for point in points:
        with tiny.h_at(point) as at:
            assert at == point and tiny.h_point == point
            h = tiny.h(x, t)
            with tiny.record_h() as seen:
                tiny.raw(x, t)
            assert h.shape == (2, *tiny.h_shape)
            assert torch.equal(seen[0], h)  # the block's output in the full forward
            shapes.add(tiny.h_shape)
    assert len(shapes) >= 4  # resolutions and widths differ along the U-Net
    assert tiny.h_point == "mid" and tiny.hook_count() == 0


def test_mid_reads_the_same_h_as_the_encoder_half_alone(tiny):
    """The stopped full forward gives what conv_in, the time embedding, the down blocks
    and the mid block compute by hand."""
    x = tiny.noise([3])
    unet = tiny.unet
    with torch.no_grad():
        emb = unet.time_embedding(unet.time_proj(torch.tensor([700])))
        sample = unet.conv_in(x)
        for block in unet.down_blocks:
            sample, _ = block(hidden_states=sample, temb=emb)
        by_hand = unet.mid_block(sample, emb)
        assert torch.allclose(tiny.h(x, 700), by_hand, atol=1e-6)


def test_an_edit_at_a_down_block_reaches_the_next_block_and_its_skip(tiny):
    """A down block's output feeds the next block and, as a skip, the up path: both see
    ``h + delta``."""
    x, t = tiny.noise([0]), 400
    with tiny.h_at("down.2"):
        h = tiny.h(x, t)
        delta = torch.randn(1, *tiny.h_shape)
        seen = {}
        hooks = [
            tiny.unet.mid_block.register_forward_pre_hook(
                lambda m, args: seen.__setitem__("mid", args[0])
            ),
            tiny.unet.up_blocks[0].register_forward_pre_hook(
                lambda m, args: seen.__setitem__("skip", args[1][-1])
            ),
        ]
        try:
            tiny.raw(x, t, delta_h=delta)
        finally:
            for hook in hooks:
                hook.remove()
    assert torch.allclose(seen["mid"], h + delta, atol=1e-6)
    assert torch.allclose(seen["skip"], h + delta, atol=1e-6)
    assert tiny.hook_count() == 0


def test_an_unknown_point_is_refused_in_one_line(tiny):
    with pytest.raises(wb.WorkbenchError, match=r"unknown activation point 'up\.9'; this model"):
        with tiny.h_at("up.9"):
            pass
    with pytest.raises(wb.WorkbenchError, match="unknown activation point"):
        wb.discover("pca", tiny, k=2, n=4, num_steps=4, h_point="middle")
    assert tiny.h_point == "mid"


def test_engines_take_the_point_record_it_and_edits_use_it(tiny):
    ds = wb.discover("pca", tiny, k=2, n=6, num_steps=6, h_point="up.0", progress=False)
    with tiny.h_at("up.0"):
        assert ds.shape == tiny.h_shape
    assert ds.shape != tiny.h_shape  # (at mid the shape differs: the point matters)
    assert ds.params["h_point"] == "up.0"
    result = wb.edit(tiny, ds, 0, [-2.0, 2.0], seeds=[0], num_steps=6, progress=False)
    assert float((result.images[0] - result.images[1]).abs().max()) > 1e-3
    mid = wb.discover("pca", tiny, k=2, n=6, num_steps=6, progress=False)
    assert mid.params["h_point"] == "mid" and mid.shape == tiny.h_shape
    assert tiny.h_point == "mid"


def test_probes_that_read_h_take_the_point(tiny):
    result = wb.probe(
        "umap",
        tiny,
        n=8,
        timesteps=[900, 300],
        num_steps=6,
        umap_neighbors=4,
        neighbours_count=3,
        h_point="down.1",
        progress=False,
    )
    assert result.h_point == "down.1" and result.to_dict()["h_point"] == "down.1"
    assert "h_point" not in wb.PROBES["norm"].spec  # norm reads x only


def test_the_pullback_basis_at_another_point_matches_its_jacobian(tiny):
    model = wb.load("tiny-test", device="cpu", dtype=torch.float64)
    x, t, k = model.noise([0]), 600, 2
    with model.h_at("up.0"), model.jacobian_safe():
        jac = torch.func.jacrev(lambda z: model.h(z[None], t)[0].reshape(-1))(x[0])
        basis = local_basis(model, x, t, k=k, oversample=6, tol_deg=0.05, dtype=torch.float64)
    _, s, vh = torch.linalg.svd(jac.reshape(jac.shape[0], -1), full_matrices=False)
    assert torch.allclose(basis.s[0], s[:k], rtol=1e-2)
    assert float(principal_angles(vh[:k].T, basis.V[0].reshape(k, -1).T).max()) * 180 / math.pi < 1


def test_the_attention_engine_decomposes_the_self_attention_at_the_point(tiny):
    ds = wb.discover("attention", tiny, k=2, h_point="up.1")
    assert ds.params["module"] == "up_blocks.1.attentions.1" and ds.params["h_point"] == "up.1"
    assert wb.discover("attention", tiny, k=2).params["module"] == "mid_block.attentions.0"
    with pytest.raises(wb.WorkbenchError, match="block up.2 has no self-attention; points with"):
        wb.discover("attention", tiny, k=2, h_point="up.2")


def test_the_pullback_cache_tells_points_apart(tiny, tmp_path):
    from workbench.store import Cache

    cache = Cache(tmp_path)
    options = dict(k=2, timestep=600, num_steps=4, max_iter=3, cache=cache)
    mid = wb.discover("pullback", tiny, **options)
    up = wb.discover("pullback", tiny, h_point="up.0", **options)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # two entries, not one reused
    assert float((mid.vectors - up.vectors).abs().max()) > 1e-3
    assert up.params["h_point"] == "up.0"
