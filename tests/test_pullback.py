import math

import pytest
import torch

import workbench as wb
from workbench.engines.pullback import _pull_back_gram, _pull_back_range, local_basis
from workbench.stats import principal_angles

T = 600


@pytest.fixture(scope="module")
def setup():
    """tiny-test in float64, two samples, the materialised Jacobian of sample 0, and the
    batched basis (k=2: this spectrum has a 7% gap after the second singular value)."""
    model = wb.load("tiny-test", dtype=torch.float64, device="cpu")
    x = model.noise([0, 1]).double()
    with model.jacobian_safe():
        jac = torch.func.jacrev(lambda z: model.h(z[None], T)[0].reshape(-1))(x[0])
    jac = jac.reshape(512, 768)
    _, s, vh = torch.linalg.svd(jac, full_matrices=False)
    basis = local_basis(model, x, T, k=2, oversample=6, tol_deg=0.05, dtype=torch.float64)
    return model, x, jac, s, vh, basis


def test_principal_angles():
    q, _ = torch.linalg.qr(torch.randn(10, 4, generator=torch.Generator().manual_seed(0)))
    assert float(principal_angles(q, q).max()) < 1e-3
    assert abs(float(principal_angles(q[:, :2], q[:, 2:]).min()) - math.pi / 2) < 1e-6
    # a tiny rotation is resolved (arccos of the cosine alone would return 0)
    q64, _ = torch.linalg.qr(torch.randn(10, 2, dtype=torch.float64))
    tilted = math.cos(1e-9) * q64[:, :1] + math.sin(1e-9) * q64[:, 1:]
    assert abs(float(principal_angles(q64[:, :1], tilted)[0]) - 1e-9) < 1e-12
    # unequal dimensions: a plane inside a 3-D span meets it at angles 0, 0
    angles = principal_angles(q[:, :2], q[:, :3])
    assert angles.shape == (2,) and float(angles.max()) < 1e-6
    # known angle: a tilt of 0.5 rad of one axis out of the plane
    rotated = torch.stack([q[:, 0], math.cos(0.5) * q[:, 1] + math.sin(0.5) * q[:, 3]], 1)
    assert torch.allclose(
        principal_angles(q[:, :2], rotated), torch.tensor([0.0, 0.5]).double(), atol=1e-6
    )


def test_local_basis_matches_the_materialised_jacobian(setup):
    model, x, jac, s, vh, basis = setup
    assert (
        basis.converged and basis.V.shape == (2, 2, 3, 16, 16) and basis.U.shape == (2, 2, 32, 4, 4)
    )
    assert float(((basis.s[0] - s[:2]) / s[:2]).abs().max()) < 0.01
    v = basis.V[0].reshape(2, -1).T
    assert float(principal_angles(vh[:2].T, v).max()) * 180 / math.pi < 1.0
    torch.testing.assert_close(v.T @ v, torch.eye(2, dtype=v.dtype), rtol=0, atol=1e-8)
    jv = (jac @ v).T  # U = J V / |J V|, up to the Ritz accuracy (tol_deg = 0.05)
    cos = (basis.U[0].reshape(2, -1) * jv / jv.norm(dim=1, keepdim=True)).sum(1)
    assert float(cos.clamp(max=1).arccos().max()) * 180 / math.pi < 0.05


def test_a_batch_gives_what_each_sample_gives_alone(setup):
    model, x, _, _, _, basis = setup
    alone = local_basis(model, x[1:], T, k=2, oversample=6, tol_deg=0.05, dtype=torch.float64)
    torch.testing.assert_close(alone.s[0], basis.s[1], rtol=1e-4, atol=0)
    angle = principal_angles(alone.V[0].reshape(2, -1).T, basis.V[1].reshape(2, -1).T)
    assert float(angle.max()) * 180 / math.pi < 0.5


def test_warm_start_converges_at_once(setup):
    model, x, _, _, _, basis = setup
    warm = local_basis(
        model, x, T, k=2, oversample=6, tol_deg=0.05, dtype=torch.float64, warm_start=basis.V
    )
    assert warm.converged and warm.iterations <= 3 < basis.iterations


def test_errors(tiny):
    x = tiny.noise([0])
    with pytest.raises(wb.WorkbenchError, match="k \\+ oversample"):
        local_basis(tiny, x, 500, k=800)
    with pytest.raises(wb.WorkbenchError, match="dtype"):
        local_basis(tiny, x, 500, dtype=torch.float64)
    with pytest.raises(wb.WorkbenchError, match="out of range"):
        local_basis(tiny, x, 1000)
    with pytest.raises(wb.WorkbenchError, match="warm_start"):
        local_basis(tiny, x, 500, warm_start=torch.zeros(2, 3, 8, 8))


def test_transport_within_one_basis_is_the_identity(setup):
    from workbench.engines.pullback import transport

    _, _, _, _, _, basis = setup
    for i in range(2):
        moved = transport(basis.U[0, i], basis, index=0)
        torch.testing.assert_close(moved, basis.V[0, i], rtol=0, atol=1e-8)
    into_other = transport(basis.U[0, 0], basis, index=1)
    assert abs(float(into_other.norm()) - 1.0) < 1e-9


def test_pullback_engine_caches_and_edits(tiny, tmp_path):
    from workbench.store import Cache

    cache = Cache(tmp_path)
    ds = wb.discover("pullback", tiny, k=2, timestep=999, num_steps=4, max_iter=3, cache=cache)
    assert ds.space == "x" and ds.shape == tiny.sample_shape and ds.timestep == 999
    assert len(list(tmp_path.iterdir())) == 1
    again = wb.discover("pullback", tiny, k=2, timestep=999, num_steps=4, max_iter=3, cache=cache)
    assert torch.equal(again.vectors, ds.vectors) and again.params == ds.params
    options = dict(k=2, timestep=999, num_steps=4, max_iter=3, cache=cache)
    sub = wb.discover("pullback", tiny, method="subspace", **options)
    assert ds.params["method"] == "krylov" and sub.params["method"] == "subspace"
    assert len(list(tmp_path.iterdir())) == 2  # the method is part of the cache key
    chunked = wb.discover("pullback", tiny, chunk=1, **(options | {"cache": Cache(tmp_path / "c")}))
    torch.testing.assert_close(chunked.vectors, ds.vectors, rtol=1e-4, atol=1e-5)
    assert chunked.params == ds.params  # memory only: not a parameter of the result
    result = wb.edit(
        tiny, ds, 0, [-1.0, 0.0, 1.0], seeds=[0], num_steps=4, mode="guidance", repeats=2
    )
    plain = wb.edit(tiny, ds, 0, [0.0], seeds=[0], num_steps=4)
    torch.testing.assert_close(result.images[1], plain.images[0], rtol=1e-5, atol=1e-5)
    assert (result.images[0] - result.images[1]).abs().max() > 1e-5
    h_dirs = wb.discover("random", tiny, k=1, space="h")
    with pytest.raises(wb.WorkbenchError, match="x-space"):
        wb.edit(tiny, h_dirs, 0, [1.0], seeds=[0], mode="guidance")


def test_global_directions(setup):
    from workbench.engines.pullback import LocalBasis, global_directions

    _, _, _, _, _, basis = setup
    one = LocalBasis(V=basis.V[:1], U=basis.U[:1], s=basis.s[:1], t=T, iterations=1)
    vectors, weights = global_directions(one)
    cos = (vectors.reshape(2, -1) * basis.V[0].reshape(2, -1)).sum(1).abs()
    assert (cos > 1 - 1e-8).all()
    torch.testing.assert_close(weights, basis.s[0])
    twice = LocalBasis(V=basis.V[[0, 0]], U=basis.U[[0, 0]], s=basis.s[[0, 0]], t=T, iterations=1)
    torch.testing.assert_close(global_directions(twice)[1], basis.s[0])
    both, _ = global_directions(basis, k=2)
    flat = both.reshape(2, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(2, dtype=flat.dtype), rtol=0, atol=1e-8)
    with pytest.raises(wb.WorkbenchError, match="k must be"):
        global_directions(basis, k=3)


def test_pullback_engine_over_several_samples(tiny, tmp_path):
    from workbench.store import Cache

    ds = wb.discover(
        "pullback",
        tiny,
        k=2,
        timestep=700,
        num_steps=4,
        max_iter=3,
        samples=3,
        cache=Cache(tmp_path),
    )
    flat = ds.vectors.flatten(1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(2), rtol=0, atol=1e-5)
    assert ds.params["samples"] == 3 and (ds.scores[:-1] >= ds.scores[1:]).all()
    with pytest.raises(wb.WorkbenchError, match="samples"):
        wb.discover("pullback", tiny, samples=0)


def test_local_directions_are_each_samples_own_basis(tiny, tmp_path):
    from workbench.engines.pullback import local_directions
    from workbench.eval import score_directions
    from workbench.store import Cache

    cache = Cache(tmp_path)
    kw = dict(k=2, timestep=T, num_steps=4, oversample=6, tol_deg=0.05)  # converged: gap at k=2
    sets = local_directions(tiny, [0, 1], cache=cache, **kw)
    assert [ds.params["seed"] for ds in sets] == [0, 1] and sets[1].params["converged"]
    alone = wb.discover("pullback", tiny, seed=1, cache=cache, **kw)
    # the same subspace as seed 1 alone (the batched run starts from other random columns)
    angles = principal_angles(
        sets[1].vectors.flatten(1).T.double(), alone.vectors.flatten(1).T.double()
    )
    assert float(angles.max()) < math.radians(1)
    with pytest.raises(wb.WorkbenchError, match="one per seed"):
        score_directions(tiny, sets, strengths=[1], seeds=[0, 1, 2], num_steps=4)


def test_scoring_one_set_per_seed_pools_the_seeds(shapes32):
    from workbench.eval import score_directions

    a, b = (wb.discover("random", shapes32, k=1, space="x", seed=s) for s in (0, 1))
    kw = dict(strengths=[2], seeds=[0, 1, 2], num_steps=10)
    shared = score_directions(shapes32, a, **kw)
    assert float(shared.effect.abs().sum()) > 0  # the trained model: edits are read out
    torch.testing.assert_close(score_directions(shapes32, [a, a, a], **kw).effect, shared.effect)
    mixed = score_directions(shapes32, [a, b, b], **kw)
    assert not torch.allclose(mixed.effect, shared.effect)


def test_krylov_matches_the_jacobian_in_fewer_iterations(setup):
    """Block Krylov: same top-k as the materialised Jacobian (here k=8, where the spectrum
    decays slowly), and fewer iterations than subspace iteration to the same tolerance."""
    model, x, jac, s, vh, _ = setup
    options = dict(k=8, oversample=4, tol_deg=0.05, max_iter=60, dtype=torch.float64)
    krylov = local_basis(model, x, T, method="krylov", **options)
    subspace = local_basis(model, x, T, method="subspace", **options)
    assert krylov.converged and subspace.converged
    assert krylov.iterations < subspace.iterations
    assert float(((krylov.s[0] - s[:8]) / s[:8]).abs().max()) < 0.01
    v = krylov.V[0].reshape(8, -1).T
    assert float(principal_angles(vh[:8].T, v).max()) * 180 / math.pi < 1.0
    torch.testing.assert_close(v.T @ v, torch.eye(8, dtype=v.dtype), rtol=0, atol=1e-8)
    alone = local_basis(model, x[1:], T, method="krylov", **options)
    torch.testing.assert_close(alone.s[0], krylov.s[1], rtol=1e-4, atol=0)
    with pytest.raises(wb.WorkbenchError, match="method"):
        local_basis(model, x, T, method="lanczos")


def test_krylov_restarts_after_max_blocks(setup):
    """A Krylov space of one block is subspace iteration (restarted every iteration); with
    two blocks it restarts from its Ritz vectors and still finds the Jacobian's top k."""
    model, x, jac, s, vh, _ = setup
    options = dict(k=8, oversample=4, tol_deg=0.05, max_iter=60, dtype=torch.float64)
    one = local_basis(model, x, T, method="krylov", max_blocks=1, **options)
    subspace = local_basis(model, x, T, method="subspace", **options)
    assert one.iterations == subspace.iterations
    torch.testing.assert_close(one.s, subspace.s, rtol=1e-9, atol=0)
    two = local_basis(model, x, T, method="krylov", max_blocks=2, **options)
    full = local_basis(model, x, T, method="krylov", **options)
    assert two.converged and full.iterations <= two.iterations < subspace.iterations
    v = two.V[0].reshape(8, -1).T
    assert float(principal_angles(vh[:8].T, v).max()) * 180 / math.pi < 1.0
    with pytest.raises(wb.WorkbenchError, match="max_blocks"):
        local_basis(model, x, T, max_blocks=0)


def test_left_ritz_step_reuses_the_reverse_passes(setup):
    """The Krylov Ritz step takes J^T P from the stored J^T J Q (no extra pass): it equals
    the materialised J^T P, P spans J K, and a direction of J K with a negligible singular
    value (here a column that J maps to zero) is left out rather than amplified."""
    _, _, jac, _, _, _ = setup
    gen = torch.Generator().manual_seed(3)
    k_space = torch.linalg.qr(torch.randn(768, 7, generator=gen, dtype=torch.float64))[0]
    y = jac @ k_space
    y[:, -1] = 0  # as if the last column of K lay in the null space of J (768 > 512)
    p_h, z = _pull_back_range(y[None], (jac.T @ y)[None])
    assert p_h.shape == (1, 512, 6) and z.shape == (1, 768, 6)
    torch.testing.assert_close(p_h[0].T @ p_h[0], torch.eye(6, dtype=y.dtype), rtol=0, atol=1e-10)
    torch.testing.assert_close(z[0], jac.T @ p_h[0], rtol=0, atol=1e-10)
    projector = p_h[0] @ p_h[0].T  # P spans J K
    torch.testing.assert_close(projector @ y, y, rtol=0, atol=1e-10)


def test_an_x_space_ritz_step_needs_no_image_in_h(setup):
    """From x-space alone (K and J^T J K, through the Gram matrix K^T J^T J K), the Ritz
    step gets the J^T P of the h-space step (the same J^T P P^T J) and leaves out a
    direction of J K with a negligible singular value; a basis with it gives the h-space
    step's basis, and U = J V / |J V| from one forward pass."""
    model, x, jac, _, _, _ = setup
    null = torch.linalg.svd(jac)[2][-1]  # J is 512 x 768: a direction it maps to zero
    gen = torch.Generator().manual_seed(3)
    columns = torch.randn(768, 6, generator=gen, dtype=torch.float64)
    k_space = torch.linalg.qr(torch.cat([columns, null[:, None]], 1))[0]  # J K has rank 6
    y = jac @ k_space
    _, z_h = _pull_back_range(y[None], (jac.T @ y)[None])
    z_x = _pull_back_gram(k_space[None], (jac.T @ y)[None])
    assert z_x.shape == (1, 768, 6)
    torch.testing.assert_close(z_x[0] @ z_x[0].T, z_h[0] @ z_h[0].T, rtol=0, atol=1e-9)
    options = dict(k=8, oversample=4, tol_deg=0.05, max_iter=60, dtype=torch.float64)
    h_space = local_basis(model, x, T, ritz="h", **options)
    x_space = local_basis(model, x, T, ritz="x", **options)
    assert (h_space.ritz, x_space.ritz) == ("h", "x")
    assert x_space.iterations == h_space.iterations
    torch.testing.assert_close(x_space.s, h_space.s, rtol=1e-9, atol=0)
    for i in range(2):
        angle = principal_angles(x_space.V[i].reshape(8, -1).T, h_space.V[i].reshape(8, -1).T)
        assert float(angle.max()) * 180 / math.pi < 1e-6
    jv = (jac @ x_space.V[0].reshape(8, -1).T).T
    torch.testing.assert_close(x_space.U[0].reshape(8, -1), jv / jv.norm(dim=1, keepdim=True))
    cos = (x_space.U * h_space.U).flatten(2).sum(-1)  # h: P W, the same up to the Ritz accuracy
    assert float(cos.min()) > 1 - 1e-6


def test_an_x_space_ritz_step_keeps_float32_accuracy():
    """In float32 the Gram matrix squares the condition number, yet on tiny-test's slowly
    decaying spectrum (k = 16) the x-space basis is the h-space one to 0.01 degrees."""
    model = wb.load("tiny-test", device="cpu")
    x = model.noise([0, 1])
    options = dict(k=16, oversample=4, tol_deg=0.05, max_iter=40)
    h_space = local_basis(model, x, T, ritz="h", **options)
    x_space = local_basis(model, x, T, ritz="x", **options)
    torch.testing.assert_close(x_space.s, h_space.s, rtol=1e-4, atol=0)
    for i in range(2):
        angle = principal_angles(x_space.V[i].reshape(16, -1).T, h_space.V[i].reshape(16, -1).T)
        assert float(angle.max()) * 180 / math.pi < 0.01


@pytest.mark.parametrize("dtype, bound_deg", [(torch.float16, 1.0), (torch.bfloat16, 5.0)])
def test_a_half_precision_model_gives_a_float32_basis_close_to_the_full_one(dtype, bound_deg):
    """Products in half precision, algebra in float32: the angle to the float32 basis is
    what the precision costs (bounds well above docs/measurements/bench_sd_tiny_cpu.json)."""
    full = wb.load("tiny-test", device="cpu")
    x = full.noise([0])
    ref = local_basis(full, x, 600, k=2, oversample=6, tol_deg=0.01, max_iter=60)
    half = wb.load("tiny-test", device="cpu", dtype=dtype)
    basis = local_basis(half, x, 600, k=2, oversample=6, tol_deg=0.5, dtype=dtype)
    assert basis.V.dtype == torch.float32 and half.hook_count() == 0
    angle = principal_angles(ref.V[0].reshape(2, -1).T, basis.V[0].reshape(2, -1).T).max()
    assert float(angle) * 180 / math.pi < bound_deg
    assert torch.allclose(basis.s, ref.s, rtol=2e-2)


class _FloatTangent(torch.autograd.Function):
    """Identity whose forward-mode tangent comes out in float32 beside a half value: what
    some layer did under vmapped ``torch.func.jvp`` of a bfloat16 network on CUDA."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def jvp(ctx, tangent):
        return tangent.float()

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_a_half_model_whose_norms_return_float32_tangents_still_gives_a_basis():
    """The failure seen on an H100 (SD-1.5 and DiT-XL in bfloat16: "expected mat1 and mat2
    to have the same dtype"), reproduced on the CPU by a norm whose tangent is float32;
    jacobian_safe's cast hooks make the basis run, and leave no hook behind."""
    half = wb.load("tiny-test", device="cpu", dtype=torch.bfloat16)
    norms = [m for m in half.network.modules() if isinstance(m, torch.nn.GroupNorm)]
    planted = [m.register_forward_hook(lambda m, i, o: _FloatTangent.apply(o)) for m in norms]
    try:
        x = half.noise([0])
        with pytest.raises(RuntimeError, match="same dtype|scalar type"):  # without the casts
            with torch.enable_grad():
                torch.func.jvp(lambda z: half.h(z, 600), (x.bfloat16(),), (x.bfloat16(),))
        basis = local_basis(half, x, 600, k=2, oversample=2, max_iter=3, dtype=torch.bfloat16)
        assert basis.V.dtype == torch.float32 and bool(torch.isfinite(basis.s).all())
        assert half.hook_count() == len(planted)  # only the planted hooks are left
    finally:
        for handle in planted:
            handle.remove()


def test_principal_angles_refuses_rows_for_columns():
    q, _ = torch.linalg.qr(torch.randn(10, 3))
    with pytest.raises(wb.WorkbenchError, match="orthonormal columns .* transpose"):
        principal_angles(q.T, q.T)  # rows [3, 10]: k = 10 > d = 3


@pytest.mark.parametrize("method, oversample", [("krylov", 0), ("subspace", 4)])
def test_the_iteration_study_reads_the_engines_own_stop_off_one_run(shapes32, method, oversample):
    """analysis/pullback_iterations.py runs every iteration once and reads where the
    engine's rule (0.1 degrees, at least 2 iterations) would stop each sample off the
    successive angles; the engine run with its own rule stops each sample there."""
    from analysis_scripts import load_script

    study = load_script("pullback_iterations")
    x = shapes32.noise([0, 5])
    reference = torch.eye(shapes32.d, 4, dtype=torch.float64)[None].expand(2, -1, -1)
    _, moved, _ = study.trace(shapes32, x, 800, 4, oversample, method, [0, 5], reference, 12)
    stops = study.default_stop(moved)
    for j, seed in enumerate([0, 5]):
        own = local_basis(
            shapes32, x[j : j + 1], 800, k=4, oversample=oversample, max_iter=12,
            method=method, sample_seeds=[seed],
        )  # fmt: skip
        assert own.iterations == stops[j], (method, seed, own.iterations, stops)
