import math

import pytest
import torch

import workbench as wb
from workbench.models.attention import JacobianSafeAttnProcessor
from workbench.models.presets import Preset
from workbench.models.wrapper import DiffusionModel


def test_load_tiny_shapes(tiny):
    assert tiny.sample_shape == (3, 16, 16)
    assert tiny.h_shape == (32, 4, 4)
    assert tiny.d == 768
    assert not tiny.unet.training
    x = tiny.noise([0, 1, 2])
    assert x.shape == (3, 3, 16, 16)
    assert tiny.h(x, 500).shape == (3, 32, 4, 4)
    assert tiny.eps(x, 500).shape == x.shape


def test_h_is_the_mid_block_output_of_the_full_forward(tiny):
    x = tiny.noise([3, 4])
    seen = {}
    handle = tiny.unet.mid_block.register_forward_hook(lambda m, a, out: seen.setdefault("h", out))
    try:
        tiny.raw(x, 321)
    finally:
        handle.remove()
    torch.testing.assert_close(tiny.h(x, 321), seen["h"], rtol=0, atol=0)


def test_noise_is_seeded_and_batch_independent(tiny):
    both = tiny.noise([5, 9])
    assert torch.equal(both[1], tiny.noise([9])[0])
    assert not torch.equal(both[0], both[1])


def test_delta_h_edit(tiny):
    x = tiny.noise([0, 1])
    plain = tiny.eps(x, 700)
    torch.testing.assert_close(tiny.eps(x, 700, delta_h=torch.zeros(tiny.h_shape)), plain)
    moved = tiny.eps(x, 700, delta_h=torch.ones(32, 1, 1))
    assert (moved - plain).abs().max() > 1e-4
    # per-sample delta: only the second sample changes
    delta = torch.zeros(2, *tiny.h_shape)
    delta[1] = 1.0
    out = tiny.eps(x, 700, delta_h=delta)
    torch.testing.assert_close(out[0], plain[0])
    assert (out[1] - plain[1]).abs().max() > 1e-4
    assert tiny.hook_count() == 0


def test_no_hook_left_after_exception_in_hooked_forward(tiny):
    bad = torch.ones(7, 7)  # does not broadcast against h: raises inside the forward
    with pytest.raises(RuntimeError):
        tiny.eps(tiny.noise([0]), 500, delta_h=bad)
    assert tiny.hook_count() == 0
    with pytest.raises(RuntimeError):
        with tiny.jacobian_safe():
            assert all(
                isinstance(m.processor, JacobianSafeAttnProcessor)
                for m in tiny.attention_modules().values()
            )
            raise RuntimeError("boom")
    assert not any(
        isinstance(m.processor, JacobianSafeAttnProcessor)
        for m in tiny.attention_modules().values()
    )


def test_jacobian_safe_processor_matches_stock(tiny):
    x = tiny.noise([0, 1])
    plain = tiny.h(x, 400)
    with tiny.jacobian_safe():
        safe = tiny.h(x, 400)
    torch.testing.assert_close(safe, plain, rtol=1e-5, atol=1e-5)


def test_jvp_matches_finite_difference(tiny):
    x = tiny.noise([0]).double()
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = wb.load("tiny-test", dtype=torch.float64, device="cpu")
    f = lambda z: model.h(z, 600)
    with model.jacobian_safe():
        _, jv = torch.func.jvp(f, (x,), (v,))
        eps = 1e-5
        fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    assert (jv - fd).abs().max() / fd.abs().max() < 1e-6


def test_vjp_and_jvp_are_adjoint_and_vmap_batches(tiny):
    x = tiny.noise([2])
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(x.shape, generator=gen)
    f = lambda z: tiny.h(z, 250)
    with tiny.jacobian_safe():
        out, jv = torch.func.jvp(f, (x,), (v,))
        u = torch.randn(out.shape, generator=gen)
        _, vjp_fn = torch.func.vjp(f, x)
        (jtu,) = vjp_fn(u)
        lhs, rhs = float((u * jv).sum()), float((jtu * v).sum())
        assert abs(lhs - rhs) <= 1e-4 * max(abs(lhs), 1.0)
        tangents = torch.randn(4, *x.shape, generator=gen)
        batched = torch.func.vmap(lambda t: torch.func.jvp(f, (x.clone(),), (t,))[1])(tangents)
        looped = torch.stack([torch.func.jvp(f, (x,), (t,))[1] for t in tangents])
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)


def _qkv_and_mask(mask: str, gen: torch.Generator):
    q, k, v = (torch.randn(2, 3, n, 8, generator=gen, dtype=torch.float64) for n in (50, 40, 40))
    m = {
        "none": None,
        "bool keys": torch.rand(2, 1, 1, 40, generator=gen) > 0.3,
        "bool full": torch.rand(2, 3, 50, 40, generator=gen) > 0.3,
        "additive full": torch.randn(2, 3, 50, 40, generator=gen, dtype=torch.float64),
    }[mask]
    if m is not None and m.dtype == torch.bool:
        m[..., 0] = True  # every query keeps a key
    return (q, k, v), m


MASKS = ["none", "bool keys", "bool full", "additive full"]


@pytest.mark.parametrize("mask", MASKS)
def test_attention_in_blocks_of_queries_is_attention_at_once(mask, monkeypatch):
    """Blocks of queries (a long sequence) give the scores-at-once result, masks
    included, with sdpa as the reference; its JVP equals the one at once (both rules)."""
    from workbench.models import attention

    (q, k, v), m = _qkv_and_mask(mask, torch.Generator().manual_seed(0))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)
    tangents = tuple(torch.randn_like(t) for t in (q, k, v))
    f = lambda *qkv: attention.softmax_attention(*qkv, 8**-0.5, m)
    for recompute in (True, False):
        monkeypatch.setattr(attention, "RECOMPUTE", recompute)
        monkeypatch.setattr(attention, "SCORE_BLOCK", 2**20)
        whole, whole_jvp = torch.func.jvp(f, (q, k, v), tangents)
        monkeypatch.setattr(attention, "SCORE_BLOCK", 7 * 40)  # 7 queries a block, 8 blocks
        blocked, blocked_jvp = torch.func.jvp(f, (q, k, v), tangents)
        torch.testing.assert_close(whole, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(blocked, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(blocked_jvp, whole_jvp, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("block", [2**20, 7 * 40])
def test_recomputed_attention_has_the_derivatives_of_plain_autograd(mask, block, monkeypatch):
    """The recomputing rule's vmapped JVPs and VJPs (a Jacobian product's columns) and
    plain ``backward`` equal PyTorch's AD through the explicit matrix products, in one
    block and in eight; a tangent that is zero for some of q, k, v is taken too."""
    from workbench.models import attention

    monkeypatch.setattr(attention, "SCORE_BLOCK", block)
    gen = torch.Generator().manual_seed(1)
    qkv, m = _qkv_and_mask(mask, gen)
    tangents = [torch.randn(5, *t.shape, generator=gen, dtype=t.dtype) for t in qkv]
    cot = torch.randn(5, 2, 3, 50, 8, generator=gen, dtype=torch.float64)
    results = []
    f = lambda *x: attention.softmax_attention(*x, 8**-0.5, m)
    for recompute in (True, False):
        monkeypatch.setattr(attention, "RECOMPUTE", recompute)
        push = torch.func.vmap(lambda *t: torch.func.jvp(f, qkv, t)[1])(*tangents)
        only_k = torch.func.jvp(lambda k: f(qkv[0], k, qkv[2]), (qkv[1],), (tangents[1][0],))[1]
        pull = torch.func.vmap(torch.func.vjp(f, *qkv)[1])(cot)
        leaves = [t.clone().requires_grad_() for t in qkv]
        (f(*leaves) * cot[0]).sum().backward()
        results.append((push, only_k, *pull, *(leaf.grad for leaf in leaves)))
    assert results[0][1].abs().max() > 0.1  # the keys alone move the output
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch's vmap fallback
def test_recomputed_attention_under_a_vmap_of_samples_with_one_shared_tangent(monkeypatch):
    """A batch of samples vmapped with one tangent (and one cotangent) for all of them:
    the rule's in-place steps meet an operand with a vmapped dimension the block lacks,
    and give plain AD's derivatives all the same."""
    from workbench.models import attention

    gen = torch.Generator().manual_seed(3)
    queries = torch.randn(4, 2, 3, 20, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 3, 16, 8, generator=gen, dtype=torch.float64) for _ in "kv")
    shared = torch.randn(2, 3, 20, 8, generator=gen, dtype=torch.float64)
    f = lambda q: attention.softmax_attention(q, k, v, 0.3)
    results = []
    for recompute in (True, False):
        monkeypatch.setattr(attention, "RECOMPUTE", recompute)
        push = torch.func.vmap(lambda q: torch.func.jvp(f, (q,), (shared,))[1])(queries)
        pull = torch.func.vmap(lambda q: torch.func.vjp(f, q)[1](shared)[0])(queries)
        results.append((push, pull))
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


def test_recomputed_attention_keeps_no_probabilities_for_the_reverse_pass(monkeypatch):
    """A reverse pass through the recomputing rule keeps q, k, v and the output (the
    size of the activations), not the [L_q, L_k] probabilities plain AD keeps; a mask
    that depends on the input is refused rather than given a wrong derivative."""
    from workbench.models import attention

    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 256, 8, generator=gen, requires_grad=True) for _ in "qkv")
    kept = {}
    for recompute in (True, False):
        monkeypatch.setattr(attention, "RECOMPUTE", recompute)
        sizes = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            attention.softmax_attention(q, k, v, 8**-0.5).sum().backward()
        kept[recompute] = sum(sizes)
    activations = 4 * q.numel()  # q, k, v, out
    assert kept[True] <= activations, kept
    assert kept[False] >= 2 * 256 * 256, kept  # a probability matrix per head
    monkeypatch.setattr(attention, "RECOMPUTE", True)
    mask = torch.zeros(1, 2, 256, 256)
    with pytest.raises(ValueError, match="mask depends on the input"):
        torch.func.jvp(
            lambda m: attention.softmax_attention(q.detach(), k.detach(), v.detach(), 0.3, m),
            (mask,),
            (torch.ones_like(mask),),
        )


@pytest.mark.parametrize(
    "case", ["plain", "causal", "grouped heads", "bool mask", "additive mask, causal"]
)
def test_sdpa_in_blocks_is_the_stock_sdpa_and_is_put_back(case, monkeypatch):
    """Inside ``sdpa_in_blocks`` SDPA (what a family's kept processor calls) goes through
    the blocks and gives the stock result; the stock function returns on exit, also
    after an exception."""
    from workbench.models import attention

    F = torch.nn.functional
    stock = F.scaled_dot_product_attention
    gen = torch.Generator().manual_seed(1)
    heads_kv = 2 if case == "grouped heads" else 4
    q = torch.randn(2, 4, 30, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, heads_kv, 30, 8, generator=gen, dtype=torch.float64) for _ in "kv")
    options = {
        "plain": {},
        "causal": {"is_causal": True},
        "grouped heads": {"enable_gqa": True},
        "bool mask": {"attn_mask": torch.rand(2, 1, 30, 30, generator=gen) > 0.2},
        "additive mask, causal": {
            "attn_mask": torch.randn(2, 4, 30, 30, generator=gen, dtype=torch.float64)
        },
    }[case]
    if case == "bool mask":
        options["attn_mask"][..., 0] = True
    if case == "additive mask, causal":  # the stock SDPA takes one or the other
        causal = torch.ones(30, 30, dtype=torch.bool).tril()
        mask = options["attn_mask"]
        expected = stock(q, k, v, attn_mask=mask.masked_fill(~causal, float("-inf")))
        options["is_causal"] = True
    else:
        expected = stock(q, k, v, **options)
    monkeypatch.setattr(attention, "SCORE_BLOCK", 4 * 30)  # 4 queries a block
    with attention.sdpa_in_blocks():
        assert F.scaled_dot_product_attention is not stock
        blocked = F.scaled_dot_product_attention(q, k, v, **options)
    torch.testing.assert_close(blocked, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="inside"), attention.sdpa_in_blocks():
        raise RuntimeError("inside")
    assert F.scaled_dot_product_attention is stock


def test_stock_attention_has_no_forward_ad(tiny):
    """Documents why jacobian_safe exists: if this starts passing, the mode may be dropped."""
    x = tiny.noise([0])
    with pytest.raises((NotImplementedError, RuntimeError)):
        torch.func.jvp(lambda z: tiny.h(z, 500), (x,), (torch.ones_like(x),))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predict_is_consistent_for_every_parameterisation(prediction_type):
    from diffusers import DDIMScheduler

    from workbench.models.loading import _build_tiny

    unet, _ = _build_tiny()
    scheduler = DDIMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    model = DiffusionModel(unet, scheduler, Preset())
    x = model.noise([0, 1])
    for t in (10, 500, 990):
        pred = model.predict(x, t)
        a = model.alpha_bar(t)
        torch.testing.assert_close(
            math.sqrt(a) * pred.x0 + math.sqrt(1 - a) * pred.eps, x, rtol=1e-4, atol=1e-4
        )


def test_zero_snr_with_epsilon_is_refused():
    from diffusers import DDIMScheduler

    from workbench.models.loading import _build_tiny

    unet, _ = _build_tiny()
    scheduler = DDIMScheduler(rescale_betas_zero_snr=True, prediction_type="epsilon")
    with pytest.raises(wb.WorkbenchError, match="zero-terminal-SNR"):
        DiffusionModel(unet, scheduler)


def test_bad_inputs_give_clear_errors(tiny):
    with pytest.raises(wb.WorkbenchError, match="out of range"):
        tiny.h(tiny.noise([0]), 1000)
    with pytest.raises(wb.WorkbenchError, match="out of range"):
        tiny.eps(tiny.noise([0]), -1)
    with pytest.raises(wb.WorkbenchError, match="shape"):
        tiny.h(torch.zeros(1, 3, 8, 8), 10)
    with pytest.raises(wb.WorkbenchError, match="unknown model"):
        wb.load("no-such-model")
    if not (wb.models.loading.BUNDLED_DIR / "shapes32").is_dir():
        with pytest.raises(wb.WorkbenchError, match="no weights"):
            wb.load("shapes32")


def test_fingerprint_is_stable_and_sensitive(tiny, other_tiny):
    again = wb.load("tiny-test", device="cpu")
    assert again.fingerprint == tiny.fingerprint
    assert len(tiny.fingerprint) == 16
    assert other_tiny.fingerprint != tiny.fingerprint


@pytest.mark.parametrize("layout", ["pipeline", "bare"])
def test_from_pretrained_on_a_local_folder(tiny, tmp_path, layout):
    folder = tmp_path / "model"
    if layout == "pipeline":
        wb.save(tiny, folder)
    else:
        tiny.unet.save_pretrained(folder)
        tiny.scheduler.save_config(folder)
    loaded = wb.load(str(folder), device="cpu")
    assert loaded.fingerprint == tiny.fingerprint
    x = tiny.noise([0])
    torch.testing.assert_close(loaded.eps(x, 300), tiny.eps(x, 300))
    if layout == "pipeline":
        assert loaded.preset == tiny.preset
    fp16 = wb.load(str(folder), device="cpu", dtype=torch.float16)
    assert fp16.dtype == torch.float16


def test_folder_without_model_is_refused(tmp_path):
    with pytest.raises(wb.WorkbenchError, match="no diffusers model"):
        wb.load(str(tmp_path))


def test_a_preset_round_trips_beside_any_model(tmp_path, monkeypatch):
    """``save_pretrained``/``from_pretrained`` style: the preset file lives in the model's
    folder; a broken file is one line; an unreachable Hub repo has none."""
    preset = wb.Preset(x_step=3.5, h_window=(900, 500), mixing_step=123, scene="lit-shapes")
    path = preset.save_pretrained(tmp_path / "model")
    assert path.name == "workbench_preset.json"
    assert wb.Preset.from_pretrained(tmp_path / "model") == preset
    assert wb.Preset.from_pretrained(tmp_path) is None  # a folder without one
    path.write_text("{not json")
    with pytest.raises(wb.WorkbenchError, match="not a JSON preset") as err:
        wb.Preset.from_pretrained(tmp_path / "model")
    assert "\n" not in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert wb.Preset.from_pretrained("nobody/no-such-model") is None


def test_refresh_fingerprint_sees_writes_the_version_counters_miss(other_tiny):
    """A write through ``.data`` leaves the version counter alone, so the cached
    fingerprint stays; ``refresh_fingerprint()`` recomputes it from the weights."""
    model = wb.load("tiny-test", device="cpu")
    before = model.fingerprint
    weight = model.unet.conv_out.bias
    saved = weight.detach().clone()
    weight.data.add_(1.0)  # invisible to autograd's version counter
    assert model.fingerprint == before  # the documented blind spot
    after = model.refresh_fingerprint()
    assert after != before and model.fingerprint == after
    weight.data.copy_(saved)
    assert model.refresh_fingerprint() == before
