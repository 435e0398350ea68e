import pytest
import torch

import workbench as wb
from workbench.sampling import Step, make_timesteps, run_chain


def test_make_timesteps(tiny):
    grid = make_timesteps(tiny, 10)
    assert grid[0] == 999 and grid[-1] == -1 and len(grid) == 11
    assert all(a > b for a, b in zip(grid, grid[1:], strict=False))
    with_edit = make_timesteps(tiny, 10, include=[777])
    assert 777 in with_edit and len(with_edit) == 11
    assert make_timesteps(tiny, 5, t_start=499)[0] == 499
    with pytest.raises(wb.WorkbenchError, match="out of range"):
        make_timesteps(tiny, 10, include=[1000])
    with pytest.raises(wb.WorkbenchError, match="num_steps"):
        make_timesteps(tiny, 0)


def test_eta0_sampling_is_bit_for_bit_repeatable(tiny):
    a = wb.sample(tiny, seeds=range(4), num_steps=15)
    b = wb.sample(tiny, seeds=range(4), num_steps=15)
    assert torch.equal(a, b)


def test_sampling_does_not_depend_on_the_batch(tiny):
    both = wb.sample(tiny, seeds=[3, 8], num_steps=10)
    alone = wb.sample(tiny, seeds=[8], num_steps=10)
    torch.testing.assert_close(both[1], alone[0], rtol=1e-4, atol=1e-5)


def test_eta_sampling_is_seeded(tiny):
    a = wb.sample(tiny, seeds=[1, 2], num_steps=10, eta=1.0)
    b = wb.sample(tiny, seeds=[1, 2], num_steps=10, eta=1.0)
    c = wb.sample(tiny, seeds=[1, 2], num_steps=10, eta=0.0)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_inversion_then_sampling_reproduces_x0(tiny):
    x0 = wb.sample(tiny, seeds=range(4), num_steps=100)
    x_T = wb.invert(tiny, x0, num_steps=100)
    assert abs(float(x_T.std()) - 1.0) < 0.1
    rec = wb.sample(tiny, x_T=x_T, num_steps=100)
    assert float((rec - x0).abs().max()) < 0.02 * float(x0.abs().max())
    # partial inversion to an intermediate step, then back down the same grid
    x_t = wb.invert(tiny, x0, num_steps=40, t_stop=500)
    back = run_chain(tiny, x_t, make_timesteps(tiny, 40, t_start=500))
    assert float((back - x0).abs().max()) < 0.02 * float(x0.abs().max())


def test_trajectory_and_callbacks(tiny):
    seen = []
    grid = make_timesteps(tiny, 8)
    x, traj = run_chain(
        tiny,
        tiny.noise([0, 1]),
        grid,
        callback=lambda s: seen.append((s.t, s.t_next)),
        return_trajectory=True,
    )
    assert traj.x.shape == (9, 2, 3, 16, 16)
    assert traj.timesteps == grid
    torch.testing.assert_close(traj.x[-1], x)
    assert seen == list(zip(grid[:-1], grid[1:], strict=True))


def test_edit_hook_changes_x_and_zero_delta_asymmetric_is_identity(tiny):
    grid = make_timesteps(tiny, 8)
    x_T = tiny.noise([0])
    plain = run_chain(tiny, x_T, grid)

    def zero_asym(step: Step) -> None:
        step.delta_h = torch.zeros(tiny.h_shape)
        step.asymmetric = True

    torch.testing.assert_close(
        run_chain(tiny, x_T, grid, edit=zero_asym), plain, rtol=1e-5, atol=1e-5
    )

    def push(step: Step) -> None:
        if step.index == 2:
            step.x = step.x + 0.5

    assert (run_chain(tiny, x_T, grid, edit=push) - plain).abs().max() > 1e-3


def test_asymmetric_step_differs_from_symmetric(tiny):
    grid = make_timesteps(tiny, 8)
    x_T = tiny.noise([0])

    def edit(asym):
        def hook(step):
            if step.index < 4:
                step.delta_h = torch.ones(32, 1, 1)
                step.asymmetric = asym

        return hook

    sym = run_chain(tiny, x_T, grid, edit=edit(False))
    asym = run_chain(tiny, x_T, grid, edit=edit(True))
    assert (sym - asym).abs().max() > 1e-4


def test_ddim_refuses_bad_grids(tiny):
    x = tiny.noise([0])
    with pytest.raises(wb.WorkbenchError, match="strictly"):
        run_chain(tiny, x, [999, 500, 700])
    with pytest.raises(wb.WorkbenchError, match="eta"):
        run_chain(tiny, x, [-1, 500, 999], eta=1.0)
    with pytest.raises(wb.WorkbenchError, match="exactly one"):
        wb.sample(tiny)
    with pytest.raises(wb.WorkbenchError, match="NaN"):
        run_chain(tiny, torch.full((1, 3, 16, 16), float("nan")), [999, -1])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_coefficients_reproduce_the_sampling_step(prediction_type):
    from diffusers import DDIMScheduler

    from workbench.models.loading import _build_tiny
    from workbench.models.wrapper import DiffusionModel

    unet, _ = _build_tiny()
    scheduler = DDIMScheduler(
        prediction_type=prediction_type, rescale_betas_zero_snr=prediction_type == "v_prediction"
    )
    model = DiffusionModel(unet, scheduler)
    gen = torch.Generator().manual_seed(0)
    x, raw = torch.randn(2, 3, 16, 16, generator=gen), torch.randn(2, 3, 16, 16, generator=gen)
    pairs = [(0.05, 0.6), (0.5, 0.9), (0.9, 1.0)]
    if prediction_type == "v_prediction":
        pairs.append((0.0, 0.01))  # zero terminal SNR
    for a_noisy, a_clean in pairs:
        pred = model.schedule.convert(raw, x, a_noisy)
        step = a_clean**0.5 * pred.x0 + (1 - a_clean) ** 0.5 * pred.eps
        coef_a, coef_b = model.schedule.ddim_coefficients(a_noisy, a_clean)
        torch.testing.assert_close(coef_a * x + coef_b * raw, step, rtol=1e-4, atol=1e-4)


def test_inversion_holds_the_raw_output_not_eps():
    """With v-prediction at zero terminal SNR, eps(x, T) = x whatever the network says;
    inversion must hold the raw output fixed. On a tiny model whose output matters
    (output layer x10), the round trip stays within 1.5% (holding eps fixed gave 2.7%)."""
    model = wb.load("tiny-test", device="cpu")
    with torch.no_grad():
        model.unet.conv_out.weight.mul_(10)
    x0 = wb.sample(model, seeds=range(4), num_steps=50)
    rec = wb.sample(model, x_T=wb.invert(model, x0, num_steps=50), num_steps=50)
    assert float((rec - x0).abs().max() / x0.abs().max()) < 0.015


def test_ddim_is_the_older_name_of_run_chain(tiny):
    """``ddim`` (it also ran the flow Euler step) still works, warns, and gives the same."""
    grid = make_timesteps(tiny, 4)
    with pytest.warns(FutureWarning, match="ddim is now run_chain"):
        old = wb.ddim(tiny, tiny.noise([0]), grid)
    torch.testing.assert_close(old, run_chain(tiny, tiny.noise([0]), grid), rtol=0, atol=0)


def test_the_default_grid_from_a_low_timestep_takes_one_step_per_timestep(tiny):
    """A chain from a timestep below the preset's step count (shapes64's mixing step 19
    under its 50-step preset) defaults to one step per timestep instead of failing; from
    higher up it keeps the preset's count, so every grid that worked is unchanged."""
    steps = tiny.preset.num_inference_steps
    low = steps // 2
    assert make_timesteps(tiny, t_start=low) == list(range(low, -2, -1))
    assert len(make_timesteps(tiny, t_start=2 * steps)) == steps + 1
    latents = wb.sampling.invert(tiny, tiny.decode(tiny.noise([0])).clamp(-1, 1), t_stop=low)
    assert latents.shape == (1, *tiny.sample_shape)
    with pytest.raises(wb.WorkbenchError, match=rf"num_steps must be in \[1, {low + 1}\]"):
        make_timesteps(tiny, steps, t_start=low)  # asked for explicitly: still refused
