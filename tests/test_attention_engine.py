import pytest
import tiny_sd
import torch

import workbench as wb
from workbench.directions import sign_fixed
from workbench.engines.attention import MATRICES, all_variants, decompose

C = 32  # mid-block channels of tiny-test


def _orthogonal(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(C, C, generator=torch.Generator().manual_seed(seed)))
    return q


@pytest.fixture()
def planted():
    """tiny-test with planted mid-block attention weights of known spectra."""
    model = wb.load("tiny-test", device="cpu")
    attn = model.unet.mid_block.attentions[0]
    u, v = _orthogonal(1), _orthogonal(2)
    s = torch.linspace(10, 1, C)
    with torch.no_grad():
        attn.to_q.weight.copy_(u @ torch.diag(s) @ v.T)  # right singular vectors: v
        attn.to_k.weight.copy_(torch.eye(C))
        attn.to_v.weight.copy_(torch.eye(C))
        attn.to_out[0].weight.copy_(v @ torch.diag(s) @ u.T)  # left singular vectors: v
    model._fingerprint = None
    return model, u, v, s


def _same_up_to_sign(found: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest 1 - |cos| between matching rows."""
    cos = (found * expected).sum(1) / (found.norm(dim=1) * expected.norm(dim=1))
    return float((1 - cos.abs()).max())


def test_planted_spectra_are_recovered_in_order(planted):
    model, u, v, s = planted
    q = wb.discover("attention", model, k=8, matrix="q")
    assert _same_up_to_sign(q.vectors, v.T[:8]) < 1e-5
    torch.testing.assert_close(q.scores, s[:8], rtol=1e-5, atol=1e-5)
    o = wb.discover("attention", model, k=8, matrix="o")
    assert _same_up_to_sign(o.vectors, v.T[:8]) < 1e-5
    ov = wb.discover("attention", model, k=8, matrix="ov")  # W_o W_v = W_o
    assert _same_up_to_sign(ov.vectors, v.T[:8]) < 1e-5
    # W_q^T W_k = W_q^T (W_k = I): symmetric part of v diag(s) u^T
    m = (v @ torch.diag(s) @ u.T).double()
    evals, evecs = torch.linalg.eigh((m + m.T) / 2)
    order = evals.abs().argsort(descending=True)
    qk = wb.discover("attention", model, k=6, matrix="qk")
    assert _same_up_to_sign(qk.vectors.double(), evecs[:, order].T[:6]) < 1e-6
    torch.testing.assert_close(qk.scores.double(), evals[order][:6], rtol=1e-5, atol=1e-5)


def test_symmetric_qk_with_known_eigenvectors():
    q = _orthogonal(3).double()
    lam = torch.tensor([5.0, -4.0, 3.0] + [0.1] * (C - 3), dtype=torch.float64)
    w_k = q @ torch.diag(lam) @ q.T
    eye = torch.eye(C, dtype=torch.float64)
    vectors, scores = decompose("qk", eye, w_k, eye, eye, heads=4)
    torch.testing.assert_close(scores[:3], torch.tensor([5.0, -4.0, 3.0]))
    assert _same_up_to_sign(vectors[:3].double(), q.T[:3]) < 1e-6


def test_per_head_slices():
    gen = torch.Generator().manual_seed(0)
    w_q = torch.randn(C, C, generator=gen)
    eye = torch.eye(C)
    vectors, scores = decompose("q", w_q, eye, eye, eye, heads=4, head=2)
    _, s, vh = torch.linalg.svd(w_q[16:24].double(), full_matrices=False)
    assert vectors.shape == (8, C)
    assert _same_up_to_sign(vectors.double(), vh) < 1e-6
    with pytest.raises(wb.WorkbenchError, match="head 4 out of range"):
        decompose("q", w_q, eye, eye, eye, heads=4, head=4)


def test_directions_are_unit_real_deterministic_and_sign_fixed(tiny):
    variants = all_variants(tiny, k=5)
    assert set(variants) == set(MATRICES)
    again = all_variants(tiny, k=5)
    for name, ds in variants.items():
        assert ds.shape == (C,) and ds.space == "h" and ds.vectors.dtype == torch.float32
        torch.testing.assert_close(ds.vectors.norm(dim=1), torch.ones(5))
        assert torch.equal(ds.vectors, again[name].vectors)
        top = ds.vectors.gather(1, ds.vectors.abs().argmax(1, keepdim=True))
        assert (top > 0).all()
        assert ds.timestep == tiny.preset.h_window and ds.params["matrix"] == name
    flipped = sign_fixed(-variants["q"].vectors)
    assert torch.equal(flipped, variants["q"].vectors)


def test_attention_directions_edit_end_to_end(tiny, tmp_path):
    ds = wb.discover("attention", tiny, k=2, matrix="ov")
    result = wb.edit(tiny, ds, 0, [-2.0, 0.0, 2.0], seeds=[0], num_steps=6)
    assert result.images.shape == (3, 1, 3, 16, 16)
    assert (result.images[0] - result.images[1]).abs().max() > 1e-4
    back = wb.DirectionSet.load(ds.save(tmp_path / "a.safetensors"), model=tiny)
    assert back.labels == ["attn-ov[0]", "attn-ov[1]"]


def test_errors(tiny):
    with pytest.raises(wb.WorkbenchError, match="matrix must be one of"):
        wb.discover("attention", tiny, matrix="qq")
    with pytest.raises(wb.WorkbenchError, match="k must be in"):
        wb.discover("attention", tiny, k=33)
    with pytest.raises(wb.WorkbenchError, match="no attention module"):
        wb.discover("attention", tiny, module="nope")


def test_transformer_block_layout_of_a_conditional_unet():
    """UNet2DConditionModel keeps self-attention in transformer blocks (attn1) next to
    cross-attention to the text (attn2): the mid-block attn1 is found and decomposed,
    attn2 is refused."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    from workbench.engines.attention import mid_block_self_attention, module_directions
    from workbench.errors import WorkbenchError

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_sd.UNET)  # Stable Diffusion's layout, tiny
    modules = {n: m for n, m in unet.named_modules() if isinstance(m, Attention)}
    name = mid_block_self_attention(modules)
    assert name == "mid_block.attentions.0.transformer_blocks.0.attn1"
    attn = modules[name]
    assert attn.heads == 8 and attn.to_q.weight.shape == (64, 64)
    for matrix in MATRICES:
        vectors, scores = module_directions(attn, matrix)
        assert vectors.shape[1] == 64 and torch.allclose(
            vectors.norm(dim=1), torch.ones(len(vectors))
        )
    vectors, _ = module_directions(attn, "qk", head=3)  # one head's 8-dim slice
    assert vectors.shape == (64, 64)
    with pytest.raises(WorkbenchError, match="cross-attention"):
        module_directions(modules[name.replace("attn1", "attn2")], "qk")
    with pytest.raises(WorkbenchError, match="no mid-block self-attention"):
        mid_block_self_attention(["down_blocks.0.attentions.0"])
