"""The frequency content of difference images (workbench.eval.frequency) against cases
whose spectra are known."""

import math

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.eval.frequency import high_frequency_share, radial_power


def _grid(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(float(n)), torch.arange(float(n)), indexing="ij")


def test_white_noise_puts_the_area_outside_the_cutoff_above_it():
    noise = torch.randn(128, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for cutoff in (0.25, 0.5):
        share = float(high_frequency_share(noise, cutoff).mean())
        assert share == pytest.approx(1 - math.pi * cutoff**2 / 4, abs=0.01)


def test_a_smooth_change_is_low_and_a_pixel_pattern_high():
    yy, xx = _grid()
    blob = torch.exp(-((yy - 16) ** 2 + (xx - 10) ** 2) / 60)[None, None].repeat(2, 3, 1, 1)
    checker = ((yy + xx) % 2 * 2 - 1)[None, None].expand(1, 3, 32, 32)
    shift = torch.full((1, 3, 32, 32), 0.3)  # a brightness shift: no frequency but DC
    assert float(high_frequency_share(blob).max()) < 0.01
    assert float(high_frequency_share(checker)) == pytest.approx(1.0)
    assert math.isnan(float(high_frequency_share(shift)))  # only the mean changed
    assert math.isnan(float(high_frequency_share(torch.zeros(1, 3, 8, 8))))


def test_radial_power_peaks_at_a_sinusoids_frequency_and_keeps_the_energy():
    yy, xx = _grid()
    for f in (2, 5, 11):
        wave = torch.cos(2 * math.pi * f * xx / 32)[None, None].repeat(1, 3, 1, 1)
        power = radial_power(wave)
        assert int(power[0].argmax()) == f
        # Parseval: the bins hold all of |FFT|^2 = H W sum x^2
        assert float(power.sum()) == pytest.approx(32 * 32 * float(wave.pow(2).sum()))


def test_bad_input_is_one_line():
    with pytest.raises(WorkbenchError, match=r"tensor \[N, C, H, W\]"):
        high_frequency_share(torch.zeros(3, 32, 32))
    with pytest.raises(WorkbenchError, match="at least 4 x 4"):
        radial_power(torch.zeros(1, 3, 2, 2))
    with pytest.raises(WorkbenchError, match="cutoff"):
        high_frequency_share(torch.zeros(1, 3, 8, 8), cutoff=1.5)
    with pytest.raises(WorkbenchError, match="finite"):
        high_frequency_share(torch.full((1, 3, 8, 8), float("nan")))


@pytest.mark.slow
def test_shapes32_edits_move_to_finer_detail_at_late_timesteps(shapes32):
    """The pullback paper's frequency claim on shapes32 (analysis/edit_frequency.py's
    settings, 4 seeds, the first and last of its timesteps): the pullback directions'
    edits at t = 80 put a larger share of their change above a quarter of Nyquist than at
    t = 880, and at both steps a smaller one than random x directions edited alike (so the
    shift comes with the step, the low frequencies with the directions)."""
    import workbench as wb
    from workbench.eval.frequency import edit_frequency

    seeds, share = range(1000, 1004), {}
    for t in (880, 80):
        sets = {
            "pullback": wb.discover("pullback", shapes32, k=4, timestep=t, samples=4, num_steps=20),
            "random": wb.discover("random", shapes32, k=4, space="x", timestep=t, seed=3),
        }
        for name, ds in sets.items():
            values, _ = edit_frequency(shapes32, ds, 2.0, seeds, num_steps=20, progress=False)
            share[name, t] = float(values.mean())
    assert share["pullback", 80] > share["pullback", 880] + 0.1, share
    for t in (880, 80):
        assert share["random", t] > share["pullback", t] + 0.2, share
