import pytest
import torch

import workbench as wb
from workbench.engines.pca import principal_directions
from workbench.sampling import make_timesteps, run_chain


def test_principal_directions_recover_planted_axes():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    sigma = torch.tensor([8.0, 5.0, 3.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05], dtype=torch.float64)
    z = torch.randn(20000, 10, generator=gen, dtype=torch.float64)
    data = (z * sigma) @ q.T + 3.0  # an offset that centring must remove
    axes, ratios = principal_directions(data, 3)
    cos = (axes.double() * q.T[:3]).sum(1).abs()
    assert (cos > 0.999).all()
    expected = sigma[:3] ** 2 / (sigma**2).sum()
    torch.testing.assert_close(ratios.double(), expected, rtol=0.05, atol=0.0)


def test_recorded_h_is_the_h_of_the_trajectory(tiny):
    grid = make_timesteps(tiny, 5)
    with tiny.record_h() as seen:
        _, traj = run_chain(tiny, tiny.noise([0, 1]), grid, return_trajectory=True)
    assert len(seen) == 5 and tiny.hook_count() == 0
    for i, t in enumerate(grid[:-1]):
        torch.testing.assert_close(seen[i], tiny.h(traj.x[i], t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["full", "channel"])
def test_pca_directions(tiny, form):
    ds = wb.discover("pca", tiny, k=4, n=6, form=form, num_steps=8)
    shape = tiny.h_shape if form == "full" else tiny.h_shape[:1]
    assert ds.shape == shape and ds.timestep == tiny.preset.h_window
    flat = ds.vectors.flatten(1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(4), rtol=0, atol=1e-5)
    assert (ds.scores[:-1] >= ds.scores[1:]).all() and float(ds.scores.sum()) <= 1.0 + 1e-6
    again = wb.discover("pca", tiny, k=4, n=6, form=form, num_steps=8)
    torch.testing.assert_close(again.vectors, ds.vectors)


def test_pca_at_one_timestep_edits_one_step(tiny):
    ds = wb.discover("pca", tiny, k=2, n=4, form="channel", num_steps=8, timestep=600)
    assert ds.timestep == 600 and ds.params["timesteps"] == [600]
    result = wb.edit(tiny, ds, 0, [0.0, 3.0], seeds=[0], num_steps=8)
    assert (result.images[1] - result.images[0]).abs().max() > 1e-5


def test_pca_errors(tiny):
    with pytest.raises(wb.WorkbenchError, match="k must be"):
        wb.discover("pca", tiny, k=100, n=2, form="channel", num_steps=4, timestep=500)
    with pytest.raises(wb.WorkbenchError, match="n must be"):
        wb.discover("pca", tiny, n=1)
