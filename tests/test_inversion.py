"""Fixed-point inversion: each step inverted exactly (to tolerance), on the same sampler."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.sampling import invert, make_timesteps, run_chain


def test_a_fixed_point_step_samples_back_onto_its_input(tiny):
    """One inversion step from x at t to x' at t': plain DDIM's x' does not sample back
    onto x; the refined x' does (the step is inverted exactly, up to the tolerance)."""
    x = wb.sample(tiny, seeds=[0, 1], num_steps=10)
    grid = make_timesteps(tiny, 10)
    t, t_up = grid[-2], grid[-3]
    errors = {}
    for refine in (0, 20):
        x_up = run_chain(tiny, x, [t, t_up], refine=refine)
        down = run_chain(tiny, x_up, [t_up, t])
        errors[refine] = float((down - x).norm() / x.norm())
    assert errors[20] < 1e-5 < errors[0], errors


def test_fixed_point_inversion_reconstructs_better_on_the_same_grid(tiny):
    images = wb.sample(tiny, seeds=[3, 4, 5], num_steps=8)
    grid = make_timesteps(tiny, 8)
    mse = {}
    for method in ("ddim", "fixed-point"):
        x_T = invert(tiny, images, 8, method=method)
        mse[method] = float(((run_chain(tiny, x_T, grid) - images) ** 2).mean())
    assert mse["fixed-point"] < 0.1 * mse["ddim"], mse
    with pytest.raises(wb.WorkbenchError, match="unknown inversion 'edict'") as err:
        invert(tiny, images, 8, method="edict")
    assert "\n" not in str(err.value)


def test_the_probes_and_edits_take_the_inversion(tiny):
    norm = {
        m: wb.probe("norm", tiny, n=8, num_steps=6, inversion=m) for m in ("ddim", "fixed-point")
    }
    assert norm["ddim"].inverted.shape == norm["fixed-point"].inverted.shape
    assert not torch.equal(norm["ddim"].inverted, norm["fixed-point"].inverted)
    ds = wb.discover("random", tiny, k=1, space="x")
    images = wb.sample(tiny, seeds=[7], num_steps=6).clamp(-1, 1)  # images: in [-1, 1]
    plain = wb.edit(tiny, ds, 0, [0.0], images=images, num_steps=6)
    exact = wb.edit(tiny, ds, 0, [0.0], images=images, num_steps=6, inversion="fixed-point")
    assert exact.reconstruction_mse < plain.reconstruction_mse
    with pytest.raises(wb.WorkbenchError, match="inversion"):
        wb.probe("norm", tiny, n=8, num_steps=6, inversion="nope")


def test_the_boundary_engine_takes_the_inversion(tiny):
    """The boundary is fitted on latents inverted as asked (fixed-point: each step solved
    exactly), and records the method; the latents it fits on are the sampler's own."""
    from workbench.engines.boundary import fit_boundary
    from workbench.sampling import invert

    images = wb.sample(tiny, seeds=range(12), num_steps=6).clamp(-1, 1)  # images: in [-1, 1]
    labels = torch.arange(12) % 2 == 0
    fits = {
        m: fit_boundary(tiny, images, labels, t=500, space="x", num_steps=6, inversion=m)
        for m in ("ddim", "fixed-point")
    }
    assert fits["fixed-point"].x.params["inversion"] == "fixed-point"
    assert "inversion" not in fits["ddim"].x.params
    latents = invert(tiny, images, num_steps=6, t_stop=500, method="fixed-point", progress=False)
    given = fit_boundary(tiny, images, labels, t=500, space="x", num_steps=6, latents=latents)
    assert torch.allclose(given.x.vectors, fits["fixed-point"].x.vectors, atol=1e-5)
    ds = wb.discover("boundary", tiny, attribute="large", images=16, timestep=500, num_steps=6,
                     inversion="fixed-point")  # fmt: skip
    assert ds.params["inversion"] == "fixed-point"
