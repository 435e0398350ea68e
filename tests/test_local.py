"""Local edits from the posterior-mean Jacobian (the "local" engine, LOCO-Edit) and the
Jacobian targets of the basis (h, x0, eps, masked)."""

import math

import pytest
import torch
from jacobian_check import assert_basis_matches_jacobian

import workbench as wb
from workbench.engines.local import centre_box, default_timestep, region_mask
from workbench.engines.pullback import target_map
from workbench.errors import WorkbenchError
from workbench.sampling import make_timesteps, run_chain


@pytest.fixture(scope="module")
def tiny64():
    return wb.load("tiny-test", device="cpu", dtype=torch.float64)


def _box_mask(box, size=16):
    mask = torch.zeros(size, size, dtype=torch.float64)
    mask[box[0] : box[2], box[1] : box[3]] = 1
    return mask


@pytest.mark.parametrize("target, masked", [("x0", True), ("x0", False), ("eps", False)])
def test_basis_of_each_target_matches_the_materialised_jacobian(tiny64, target, masked):
    x = tiny64.noise([3]).double()
    mask = _box_mask((4, 3, 11, 9)) if masked else None
    s = assert_basis_matches_jacobian(tiny64, x, 500, target=target, mask=mask)
    assert bool((s > 0).all())


def _x_t(model, seed, t, num_steps):
    """x_t as the engine reaches it."""
    grid = make_timesteps(model, num_steps, include=[t])
    return run_chain(model, model.noise([seed]), grid[: grid.index(t) + 1], progress=False)


def test_projection_keeps_the_outside_unchanged_to_first_order(tiny64):
    """The outside changes along a local direction by at most sigma_{outside+1} of the
    outside's Jacobian (materialised here; this random model's is not low-rank, so that
    bound is all the projection promises); a finite difference of x0_hat agrees with the
    recorded first-order leak."""
    box, outside, t = (4, 4, 12, 12), 12, 500
    ds = wb.discover(
        "local", tiny64, k=2, seed=1, timestep=t, box=box, outside=outside, num_steps=10,
        oversample=6, tol_deg=0.05, max_iter=40,
    )  # fmt: skip
    assert ds.engine == "local" and ds.params["region"]["box"] == list(box)
    x = _x_t(tiny64, 1, t, 10)[0]
    inside = _box_mask(box)[None]
    f, _ = target_map(tiny64, t, "x0")
    with tiny64.jacobian_safe():
        jac = torch.func.jacrev(lambda z: f(z[None])[0])(x)  # [C, H, W, C, H, W]
    jac = jac.reshape(*tiny64.sample_shape, -1)
    j_in = (jac * inside[..., None]).reshape(-1, jac.shape[-1])
    j_out = (jac * (1 - inside)[..., None]).reshape(-1, jac.shape[-1])
    sigma_out = torch.linalg.svdvals(j_out)
    w = ds.vectors.double().reshape(len(ds), -1)
    leak = (j_out @ w.T).norm(dim=0)
    gain = (j_in @ w.T).norm(dim=0)
    assert bool((leak <= sigma_out[outside] * 1.02).all()), (leak, sigma_out[outside])
    assert torch.allclose(gain.float(), ds.scores, rtol=1e-3)
    assert ds.params["leak"] == pytest.approx((leak / gain).tolist(), rel=1e-3)
    # the directional derivative, by a central finite difference of x0_hat outside the box
    eps = 1e-4
    for i in range(len(ds)):
        step = eps * w[i].reshape(tiny64.sample_shape)[None]
        with torch.no_grad():
            change = (f(x[None] + step) - f(x[None] - step))[0] / (2 * eps)
        outside_change = float((change * (1 - inside)).norm())
        assert outside_change == pytest.approx(float(leak[i]), rel=1e-3)
    assert tiny64.hook_count() == 0


def test_region_defaults_bad_input_and_pooling(tiny64, shapes32):
    assert centre_box(tiny64) == (4, 4, 12, 12)
    assert float(region_mask(tiny64).sum()) == 64
    assert default_timestep(shapes32) == 599
    for kwargs, message in [
        ({"box": (4, 4, 20, 12)}, "not top,left,bottom,right"),
        ({"box": (8, 4, 4, 12)}, "not top,left,bottom,right"),
        ({"mask": torch.zeros(16, 16)}, "selects nothing"),
        ({"mask": torch.ones(5, 5)}, "mask has shape"),
        ({"mask": torch.full((16, 16), math.nan)}, "NaN"),
        ({"box": (1, 1, 4, 4), "mask": torch.ones(16, 16)}, "not both"),
    ]:
        with pytest.raises(WorkbenchError, match=message):
            wb.discover("local", tiny64, **kwargs)
    with pytest.raises(WorkbenchError, match="target must be one of"):
        wb.discover("local", tiny64, target="h")
    with pytest.raises(WorkbenchError, match="give target='x0' or 'eps'"):
        target_map(tiny64, 500, "h", torch.ones(16, 16))


def test_local_edits_on_shapes32_change_the_object_not_the_background(shapes32):
    """Around the object of a sample, a local direction changes the inside of the box far
    more than the outside, and much less outside than a pullback direction edited at the
    same timestep and strength."""
    from workbench.data.scenes import get_scene

    seed, steps = 0, 10
    image = wb.sample(shapes32, seeds=[seed], num_steps=steps)
    f = get_scene(None).read(image).factors
    half = float(f.scale[0]) * 0.75 + 2
    cx, cy = float(f.x[0]), float(f.y[0])
    box = (
        max(0, int(cy - half)), max(0, int(cx - half)),
        min(32, int(cy + half) + 1), min(32, int(cx + half) + 1),
    )  # fmt: skip
    local = wb.discover("local", shapes32, k=2, seed=seed, box=box, num_steps=steps, max_iter=8)
    pullback = wb.discover(
        "pullback", shapes32, k=2, seed=seed, timestep=local.timestep, num_steps=steps, max_iter=8
    )
    inside = _box_mask(box, 32).bool()

    def ratio(ds):
        edits = wb.edit(shapes32, ds, 0, [-2.0, 0.0, 2.0], seeds=[seed], num_steps=steps)
        change = (edits.images - edits.images[1:2]).abs().sum(2)[[0, 2], 0]  # [2, H, W]
        return float(change[:, ~inside].mean() / change[:, inside].mean())

    local_ratio, pullback_ratio = ratio(local), ratio(pullback)
    assert local_ratio < 0.25, local_ratio
    assert local_ratio < 0.5 * pullback_ratio, (local_ratio, pullback_ratio)


def test_pullback_engine_and_spectrum_probe_take_the_target(tiny):
    from workbench.probes.spectrum import rank_at_energy

    ds = wb.discover("pullback", tiny, k=2, target="x0", timestep=500, num_steps=5)
    assert ds.params["target"] == "x0" and ds.name(0) == "pullback-x0-t500[0]"
    plain = wb.discover("pullback", tiny, k=2, timestep=500, num_steps=5)
    assert "target" not in plain.params and plain.name(0) == "pullback-t500[0]"
    assert not torch.allclose(ds.vectors, plain.vectors, atol=1e-3)
    spectrum = wb.probe(
        "spectrum", tiny, n=2, timesteps=(800, 300), k=4, hutchinson=4, max_iter=5, num_steps=5,
        target="x0",
    )  # fmt: skip
    assert spectrum.target == "x0" and "dx0_hat/dx_t" in spectrum.summary()
    assert spectrum.rank_90.shape == (2, 2) and "rank at 90%" in spectrum.summary()
    assert spectrum.figure().layout.title.text == "Spectral decay of dx0_hat/dx_t"
    # planted: 16 + 4 of 21 is 90% at rank 2; of 25 (a tail of 4) the top 3 fall short
    s = torch.tensor([[4.0, 2.0, 1.0], [4.0, 2.0, 1.0]])
    ranks = rank_at_energy(s, torch.tensor([21.0, 25.0]), 0.9)
    assert ranks[0] == 2 and math.isnan(float(ranks[1]))  # 20/21 >= 0.9; 21/25 < 0.9


def test_cli_discovers_local_directions_for_a_box(tmp_path, capsys):
    from workbench.cli import main
    from workbench.directions import DirectionSet

    out = tmp_path / "local.safetensors"
    argv = ["discover", "local", "--model", "tiny-test", "--box", "2,3,9,12", "--k", "2"]
    assert main([*argv, "--num-steps", "4", "--max-iter", "3", "--out", str(out)]) == 0
    ds = DirectionSet.load(out)
    assert ds.engine == "local" and ds.params["region"]["box"] == [2, 3, 9, 12]
    assert main([*argv[:-2], "--box", "2,3,9", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "box must be 4 integers" in capsys.readouterr().err


def test_an_image_box_is_pooled_onto_a_latent_grid():
    """A latent model's x_t grid is 8x coarser than its images: a box in image pixels covers
    every latent cell it touches."""
    from types import SimpleNamespace

    latent = SimpleNamespace(image_shape=(3, 64, 64), sample_shape=(4, 8, 8))
    region = region_mask(latent, box=(10, 20, 30, 41))  # rows 10-29, columns 20-40
    assert region.shape == (1, 8, 8)
    cells = region[0].nonzero()
    assert cells[:, 0].unique().tolist() == [1, 2, 3]  # rows 8-31 touched
    assert cells[:, 1].unique().tolist() == [2, 3, 4, 5]  # columns 16-47 touched
    assert float(region_mask(latent).sum()) == 16  # the centre half: 4 x 4 cells
