"""The schedule object: grids and DDIM maths as diffusers' own DDIMScheduler has them."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

import workbench as wb
from workbench.models.schedule import Schedule
from workbench.sampling import run_chain

SD_LIKE = dict(  # Stable Diffusion's scheduler config (as DDIM)
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


@pytest.mark.parametrize(
    "config",
    [
        SD_LIKE,
        {**SD_LIKE, "timestep_spacing": "trailing", "steps_offset": 0},
        {**SD_LIKE, "timestep_spacing": "linspace", "steps_offset": 0},
        {"timestep_spacing": "leading", "steps_offset": 0},
    ],
    ids=["sd-leading", "trailing", "linspace", "leading-no-offset"],
)
@pytest.mark.parametrize("n", [1, 7, 10, 50, 999])
def test_the_grid_is_diffusers_grid(config, n):
    scheduler = DDIMScheduler(**config)
    schedule = Schedule.from_scheduler(scheduler)
    scheduler.set_timesteps(n)
    assert schedule.timesteps(n) == [*scheduler.timesteps.tolist(), -1]


def test_the_clean_end_follows_set_alpha_to_one():
    sd = Schedule.from_scheduler(DDIMScheduler(**SD_LIKE))
    assert sd.alpha_bar(-1) == pytest.approx(float(sd.alphas_cumprod[0])) and sd.alpha_bar(-1) < 1
    assert Schedule.from_scheduler(DDIMScheduler()).alpha_bar(-1) == 1.0


def test_edits_land_on_any_grid():
    schedule = Schedule.from_scheduler(DDIMScheduler(**SD_LIKE))
    grid = schedule.timesteps(10, include=[555, 999])
    assert 555 in grid and 999 in grid and len(grid) == 11 and grid[-1] == -1
    assert grid == sorted(grid, reverse=True)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(prediction_type="flow"), "unsupported prediction_type"),
        (dict(timestep_spacing="karras"), "unsupported timestep_spacing"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(bad, match):
    with pytest.raises(wb.WorkbenchError, match=match):
        Schedule(alphas_cumprod=torch.linspace(0.99, 0.01, 10).double(), **bad)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_our_loop_equals_diffusers_ddim_step(tiny, prediction_type, eta):
    """For the same network, x_T, grid and noise, the DDIM loop gives diffusers' result."""
    scheduler = DDIMScheduler(**SD_LIKE, prediction_type=prediction_type)
    model = wb.DiffusionModel(tiny.unet, scheduler, tiny.preset)
    n = 8
    x_T = model.noise([0, 1])
    scheduler.set_timesteps(n)
    gen = torch.Generator().manual_seed(3)
    x = x_T.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = model.unet(x, t).sample
            x = scheduler.step(out, t, x, eta=eta, generator=gen).prev_sample
    ours = run_chain(
        model, x_T, wb.make_timesteps(model, n), eta=eta, generator=torch.Generator().manual_seed(3)
    )
    assert (ours - x).abs().max() < 1e-5
