"""Geometry probes against known geometry, then end to end on the tiny model."""

import math

import pytest
import torch

import workbench as wb
from workbench.probes import PROBES, get_probe
from workbench.probes.common import grid_with, sampled_states
from workbench.probes.consistency import random_cos2, subspace_similarity
from workbench.probes.curvedness import arc_ratio, path_curvedness, segment_points
from workbench.probes.embedding import label_agreement, neighbours, value_agreement
from workbench.probes.spectrum import decay_exponent, residual_frobenius_sq

GEN = torch.Generator().manual_seed(0)


def test_all_probes_are_registered():
    assert {"norm", "curvedness", "spectrum", "consistency", "umap"} <= set(PROBES)


# ---------------------------------------------------------------- curvedness
def test_a_linear_map_keeps_segments_straight():
    a, b = torch.randn(5, 3, 4, 4, generator=GEN), torch.randn(5, 3, 4, 4, generator=GEN)
    path = segment_points(a, b, 9, "linear")
    assert path.shape == (5, 9, 3, 4, 4)
    torch.testing.assert_close(path[:, 0], a)
    torch.testing.assert_close(path[:, -1], b)
    A = torch.randn(48, 20, generator=GEN, dtype=torch.float64)
    ratio, angle = path_curvedness(path.double().flatten(2) @ A)
    assert float((ratio - 1).abs().max()) < 1e-9
    assert float(angle.max()) < 1e-4  # degrees


@pytest.mark.parametrize("theta", [math.pi / 2, 3.0])
def test_a_circle_map_matches_its_closed_form(theta):
    """s -> (cos theta s, sin theta s) bends the unit segment into an arc of angle theta."""
    points = 11
    s = segment_points(torch.zeros(1, 1), torch.ones(1, 1), points)  # [1, 11, 1]
    arc = torch.cat([torch.cos(theta * s), torch.sin(theta * s)], dim=-1)
    ratio, angle = path_curvedness(arc)
    assert abs(float(ratio[0]) - arc_ratio(theta, points - 1)) < 1e-6
    assert abs(float(angle[0]) - math.degrees(theta / (points - 1))) < 1e-4
    assert arc_ratio(theta, 10_000) == pytest.approx(theta / (2 * math.sin(theta / 2)), rel=1e-6)


def test_slerp_stays_on_the_shell():
    a = torch.zeros(1, 4)
    a[0, 0] = 3.0
    b = torch.zeros(1, 4)
    b[0, 1] = 3.0
    path = segment_points(a, b, 7, "slerp")
    torch.testing.assert_close(path.norm(dim=-1), torch.full((1, 7), 3.0))
    ratio, angle = path_curvedness(path)  # a quarter circle
    assert abs(float(ratio[0]) - arc_ratio(math.pi / 2, 6)) < 1e-5
    assert abs(float(angle[0]) - 90 / 6) < 1e-3


def test_curvedness_errors():
    a = torch.zeros(1, 3)
    with pytest.raises(wb.WorkbenchError, match="interpolation"):
        segment_points(a, a, 5, "spline")
    with pytest.raises(wb.WorkbenchError, match="at least 3"):
        segment_points(a, a, 2)


# ---------------------------------------------------------------- spectrum
def test_decay_fit_recovers_a_planted_exponent():
    i = torch.arange(1, 33, dtype=torch.float64)
    assert float(decay_exponent(5 * i**-0.8)) == pytest.approx(0.8, abs=1e-9)
    noisy = 5 * i**-1.3 * torch.exp(0.05 * torch.randn(32, generator=GEN, dtype=torch.float64))
    assert float(decay_exponent(noisy)) == pytest.approx(1.3, abs=0.05)
    batch = torch.stack([i**-0.5, i**-2.0])
    torch.testing.assert_close(decay_exponent(batch), torch.tensor([0.5, 2.0], dtype=torch.float64))


def test_residual_frobenius_of_a_planted_linear_map():
    """J = A with singular values 1/i: the tail beyond the exact top 4 is estimated well."""
    d, m = 60, 40
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=GEN, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=GEN, dtype=torch.float64))
    s = 1 / torch.arange(1, m + 1, dtype=torch.float64)
    A = u @ torch.diag(s) @ v[:, :m].T  # [m, d]
    f = lambda x: x @ A.T  # noqa: E731
    x = torch.zeros(2, d, dtype=torch.float64)
    V = v[:, :4].T.expand(2, 4, d)
    est, se = residual_frobenius_sq(f, x, V, vectors=400)
    tail = float(s[4:].pow(2).sum())
    assert float((est - tail).abs().max()) < 4 * float(se.max()) and float(se.max()) < 0.1 * tail
    full = v[:, :m].T.expand(2, m, d)  # the whole row space: nothing left
    assert float(residual_frobenius_sq(f, x, full, vectors=8)[0].max()) < 1e-20


def test_spectrum_probe_against_the_materialised_jacobian(tmp_path):
    model = wb.load("tiny-test", dtype=torch.float64, device="cpu")
    result = get_probe("spectrum")(
        model, n=2, timesteps=(600,), k=4, hutchinson=64, num_steps=5, max_iter=8
    )
    assert result.s.shape == (1, 2, 4) and result.timesteps == [600]
    x = sampled_states(model, [0, 1], [600], num_steps=5)[600][0]  # the probe's sample 0
    with model.jacobian_safe():
        jac = torch.func.jacrev(lambda z: model.h(z[None], 600)[0].reshape(-1))(x)
    jac = jac.reshape(-1, x.numel())
    exact = torch.linalg.svdvals(jac)
    frob = float(exact.pow(2).sum())
    assert float(result.frobenius_sq[0, 0]) == pytest.approx(frob, rel=0.1)
    assert float(result.energy_top_k[0, 0]) == pytest.approx(
        float(exact[:4].pow(2).sum()) / frob, rel=0.1
    )
    assert float(result.stable_rank[0, 0]) == pytest.approx(frob / float(exact[0]) ** 2, rel=0.1)
    assert float(result.exponent[0, 0]) == pytest.approx(float(decay_exponent(exact[:4])), abs=0.05)
    paths = result.save(tmp_path)
    assert sorted(p.name for p in paths) == ["spectrum.html", "spectrum.json"]
    assert "t= 600" in result.summary()


# ---------------------------------------------------------------- consistency
def test_consistency_of_a_basis_with_itself_and_with_random_ones():
    d, k = 400, 8
    q = torch.linalg.qr(torch.randn(d, k, generator=GEN))[0].T
    dist, cos2 = subspace_similarity(q, q)
    assert float(dist) < 1e-5 and float(cos2) == pytest.approx(1.0, abs=1e-6)  # float32 basis
    others = torch.linalg.qr(torch.randn(50, d, k, generator=GEN))[0].transpose(1, 2)
    _, cos2 = subspace_similarity(q.expand(50, k, d), others)
    assert float(cos2.mean()) == pytest.approx(random_cos2(k, d), rel=0.15)
    half = torch.cat([q[:4], others[0, :4]])  # shares 4 of 8 directions with q
    half = torch.linalg.qr(half.T)[0].T
    assert 0.45 < float(subspace_similarity(q, half)[1]) < 0.56


def test_consistency_probe_end_to_end(tiny, tmp_path):
    result = get_probe("consistency")(tiny, n=3, timesteps=(999, 600), k=3, num_steps=6, max_iter=4)
    assert result.across_samples.shape == (2, 3, 3) and result.across_time.shape == (3, 2, 2)
    torch.testing.assert_close(
        result.across_samples.diagonal(dim1=1, dim2=2), torch.ones(2, 3), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        result.across_time.diagonal(dim1=1, dim2=2), torch.ones(3, 2), rtol=0, atol=1e-5
    )
    assert result.alignment.shape == (2, 3, 3)
    assert 0 <= float(result.alignment.min()) and float(result.alignment.max()) <= 1 + 1e-6
    assert result.random_cos2 == 3 / tiny.d and "across samples" in result.summary()
    result.save(tmp_path)
    with pytest.raises(wb.WorkbenchError, match=r"n must be in \[2, "):
        get_probe("consistency")(tiny, n=1)


# ---------------------------------------------------------------- curvedness, umap on tiny
def test_curvedness_probe_end_to_end(tiny, tmp_path):
    for interpolation in ("linear", "slerp"):
        result = get_probe("curvedness")(
            tiny, n=3, timesteps=(999, 500), points=5, interpolation=interpolation, num_steps=4
        )
        assert result.ratio.shape == (2, 3) and result.timesteps == [999, 500]
        assert float(result.ratio.min()) >= 1 - 1e-6 and float(result.angle.min()) >= 0
    assert "L/C" in result.summary()
    result.save(tmp_path)
    assert (tmp_path / "curvedness.html").exists()


def test_grid_with_adds_timesteps_to_a_coarse_grid(tiny):
    grid = grid_with(tiny, 4, [999, 800, 600, 400, 200])
    assert {999, 800, 600, 400, 200} <= set(grid) and grid[-1] == -1
    assert grid == sorted(grid, reverse=True)


def test_neighbour_agreement_on_known_clusters():
    a = torch.randn(20, 2, generator=GEN) * 0.1
    points = torch.cat([a, a + 10])
    labels = torch.tensor([0] * 20 + [1] * 20)
    near = neighbours(points, 5)
    assert near.shape == (40, 5) and not (near == torch.arange(40)[:, None]).any()
    assert label_agreement(labels, near) == 1.0
    assert label_agreement(labels[torch.randperm(40, generator=GEN)], near) < 0.8
    assert value_agreement(points[:, 0], near) > 0.5


def test_umap_probe_end_to_end(tiny, tmp_path):
    result = get_probe("umap")(tiny, n=8, num_steps=6, umap_neighbors=5, neighbours_count=4)
    assert result.embedding.shape == (48, 2) and result.timestep.unique().numel() == 6
    assert 0 <= result.timestep_agreement <= 1
    assert set(result.factors) >= {"shape", "scale", "valid"}
    assert len(result.factors["scale"]) == 48
    result.save(tmp_path)
    html = (tmp_path / "umap.html").read_text()
    assert "colour: timestep" in html


def test_transport_alignment_equals_transporting_each_direction():
    from workbench.engines.pullback import LocalBasis, transport
    from workbench.probes.consistency import transport_alignment

    n, k, d, m = 3, 4, 30, 20
    V = torch.linalg.qr(torch.randn(n, d, k, generator=GEN, dtype=torch.float64))[0]
    U = torch.linalg.qr(torch.randn(n, m, k, generator=GEN, dtype=torch.float64))[0]
    basis = LocalBasis(
        V=V.transpose(1, 2), U=U.transpose(1, 2), s=torch.ones(n, k), t=0, iterations=1
    )
    loop = torch.zeros(k, k, dtype=torch.float64)
    for a in range(n):
        for b in range(n):
            if a != b:
                for i in range(k):
                    loop[i] += (basis.V[b] @ transport(basis.U[a, i], basis, b)).abs()
    torch.testing.assert_close(transport_alignment(basis.U), loop / (n * (n - 1)))


def test_states_at_the_first_grid_point_are_x_T(tiny):
    """A probe asked only for the chain's first timestep gets x_T (no step to take)."""

    states = sampled_states(tiny, [0, 1], [999], num_steps=4)
    assert torch.equal(states[999], tiny.noise([0, 1]))
    with pytest.warns(FutureWarning, match="'probes' is now called 'hutchinson'"):
        result = wb.probe("spectrum", tiny, n=1, k=2, timesteps=[999], num_steps=4, probes=4)
    assert result.timesteps == [999]
