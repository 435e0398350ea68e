"""Calibrating a model's preset (``wb.calibrate``, ``workbench calibrate``) and what loading
says about a model without one."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.eval import calibration
from workbench.eval.sensitivity import HReach, h_reach, reach_window
from workbench.models import loading


def test_calibration_writes_a_preset_that_loads_back(tiny, tmp_path):
    result = wb.calibrate(tiny, n=4, num_steps=10, mixing_n=0, reach_n=0)
    p = result.preset
    grid = wb.make_timesteps(tiny, 10, include=[tiny.preset.x_timestep])
    x_t = wb.run_chain(tiny, tiny.noise(range(4)), grid[: grid.index(tiny.preset.x_timestep) + 1])
    assert p["x_step"] == pytest.approx(0.1 * float(x_t.flatten(1).norm(dim=1).mean()), abs=0.01)
    assert p["h_step"] > 0 and p["num_inference_steps"] == 10
    assert p["mixing_step"] == tiny.preset.mixing_step  # not searched: kept
    assert any("mixing step not searched" in note for note in result.notes)
    assert any("kept at the preset's fractions (reach_n = 0)" in note for note in result.notes)
    assert result.reach is None and p["h_window"] == tiny.preset.h_window
    assert tiny.preset.x_step == 2.0  # the model's own preset is untouched
    wb.save(tiny, tmp_path / "model")
    (tmp_path / "model" / "workbench_preset.json").unlink()
    folder = str(tmp_path / "model")
    assert wb.Preset.from_dict(p).save_pretrained(folder).name == "workbench_preset.json"
    again = wb.load(folder, device="cpu")
    assert again.preset.x_step == p["x_step"] and again.preset.h_step == p["h_step"]
    fig = result.figure()
    assert len(fig.data) == 2 and "x_step" in fig.layout.title.text


def test_the_cli_writes_the_preset_and_its_evidence(tiny, tmp_path, capsys):
    from workbench.cli import main

    wb.save(tiny, tmp_path / "model")
    (tmp_path / "model" / "workbench_preset.json").unlink()
    args = ["calibrate", "--model", str(tmp_path / "model"), "--device", "cpu"]
    small = ["--n", "3", "--num-steps", "8", "--mixing-n", "0", "--reach-n", "2"]
    assert main([*args, *small, "--reach-steps", "4"]) == 0
    saved = json.loads((tmp_path / "model" / "workbench_preset.json").read_text())
    evidence = json.loads((tmp_path / "model" / "workbench_calibration.json").read_text())
    assert (
        saved == evidence["preset"] and (tmp_path / "model" / "workbench_calibration.html").exists()
    )
    assert len(evidence["reach"]["effect"]) == 4  # the h reach curve is part of the evidence
    assert "wrote" in capsys.readouterr().out
    assert main(["calibrate", "--model", "tiny-test", "--device", "cpu", "--n", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a local folder: give --out DIR" in err and "\n" not in err


def test_loading_says_once_what_it_assumes(tmp_path):
    """No preset: a one-line warning naming the calibration; a DDPM scheduler: the DDIM
    sampling it is read as, with its x0 clipping. Each once per process."""
    from diffusers import DDPMScheduler

    model = wb.load("tiny-test", device="cpu")
    model.network.save_pretrained(tmp_path / "m" / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "m" / "scheduler")
    loading._NOTICED.clear()
    with pytest.warns(UserWarning) as seen:
        wb.load(tmp_path / "m", device="cpu")
    texts = [str(w.message) for w in seen]
    assert any("no workbench_preset.json" in t and "workbench calibrate" in t for t in texts)
    assert any(
        "sampling with DDIM (50 steps by default) from the model's DDPMScheduler config, "
        "clipping x0" in t
        for t in texts
    )
    assert all("\n" not in t for t in texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second load says nothing more
        wb.load(tmp_path / "m", device="cpu")
        wb.load("shapes32", device="cpu")  # a bundled model has its preset and DDIM


def test_reach_window_reads_the_mid_chain_peak():
    """The window runs from the top to the mid-chain peak (the rise at the data end
    ignored); the pullback timesteps are the peak and the last step before the curve first
    falls under half the peak (a second rise after the fall does not count)."""
    ts = [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    curve = [0.001, 0.01, 0.02, 0.012, 0.011, 0.004, 0.011, 0.003, 0.05, 0.09]
    read = reach_window(ts, curve, top=999)
    assert (read.peak, read.largest, read.half, read.mute) == (799, 0.02, 599, False)
    assert read.window == (999, 799) and read.pullback == (799, 599)
    assert reach_window(ts, curve, top=999, floor=0.0).window == (999, 99)  # the end's rise
    flat = [0.02] * len(ts)  # never falls: the first step is the peak, half the lowest mid
    assert reach_window(ts, flat, top=999).pullback == (999, 299)
    sharp = [0.001, 0.002, 0.02, 0.001, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert reach_window(ts, sharp, top=999).pullback == (799,)
    mute = [0.0004] * 8 + [0.05, 0.09]
    read = reach_window(ts, mute, top=999)
    assert read.mute and read.window is None and read.pullback is None
    assert reach_window(ts, [float("nan")] * len(ts), top=999).mute
    with pytest.raises(WorkbenchError, match="no step of the reach curve"):
        reach_window([99], [0.1], top=999)


def test_h_reach_measures_only_the_shift(tiny):
    """No shift: the resampled trajectories end where the unedited ones did (0 at every
    step); a shift moves the final sample, more for a larger one."""
    none = h_reach(tiny, n=2, num_steps=4, relative=0.0, direction="random")
    assert none.timesteps == wb.make_timesteps(tiny, 4)[:-1] and none.effect == [0.0] * 4
    small = h_reach(tiny, n=2, num_steps=4, relative=0.25)
    large = h_reach(tiny, n=2, num_steps=4, relative=1.0)
    assert all(0 < a < b for a, b in zip(small.effect, large.effect, strict=True))
    with pytest.raises(WorkbenchError, match="direction"):
        h_reach(tiny, n=2, num_steps=4, direction="sideways")


def test_calibration_reads_the_h_window_where_h_reaches(tiny, monkeypatch):
    """A reach curve with a mid-chain peak sets the h window (from T to the peak), the
    pullback timesteps (the peak, the last step of at least half the peak) and h_step
    (0.25 E||h|| over that window); a mute one keeps the preset's and says so."""
    grid = wb.make_timesteps(tiny, 10)[:-1]  # 999, 899, ..., 99

    def curve(effect):
        def fake(model, n, num_steps, seed, progress):
            return HReach(timesteps=grid, effect=effect, n=n, relative=0.25, direction="pullback")

        return fake

    peaked = [0.001, 0.01, 0.03, 0.02, 0.018, 0.016, 0.006, 0.004, 0.01, 0.03]
    monkeypatch.setattr(calibration, "h_reach", curve(peaked))
    result = wb.calibrate(tiny, n=4, num_steps=10, mixing_n=0)
    p = result.preset
    assert p["h_window"] == (999, 799) and p["pullback_timesteps"] == (799, 499)
    h_in = [h for t, h in zip(result.timesteps, result.h_norms, strict=True) if t >= 799]
    assert len(h_in) == 3 and p["h_step"] == pytest.approx(0.25 * sum(h_in) / 3, abs=0.01)
    assert any("h window 999..799 and pullback at 799, 499 measured" in n for n in result.notes)
    assert result.reach["peak"] == 799 and len(result.figure().data) == 3
    assert "h window 999..799," in result.summary() and "(kept)" in result.summary()
    monkeypatch.setattr(calibration, "h_reach", curve([0.001] * 8 + [0.01, 0.03]))
    mute = wb.calibrate(tiny, n=4, num_steps=10, mixing_n=0)
    assert mute.preset["h_window"] == tiny.preset.h_window
    assert mute.preset["pullback_timesteps"] == tiny.preset.pullback_timesteps
    assert any("h is mute on this model" in note and "\n" not in note for note in mute.notes)
    assert f"h window {tiny.preset.h_window[0]}..{tiny.preset.h_window[1]} (kept)" in mute.summary()


@pytest.mark.parametrize("family", ["dit", "sd3"])
def test_the_h_window_is_measured_on_transformers_and_flows(family, tmp_path):
    """On a diffusion transformer (h: a block's image tokens) and a flow model (its own
    grid), the reach curve is taken on the model's grid and the window and pullback
    timesteps read from it form a preset that loads back."""
    import tiny_dit

    build = tiny_dit.build_dit if family == "dit" else tiny_dit.build_sd3
    build(tmp_path / family)
    model = wb.load(tmp_path / family, device="cpu")
    given = {"class_label": 1} if family == "dit" else {"prompt": "a red square"}
    result = wb.calibrate(model, n=2, num_steps=6, mixing_n=0, reach_n=2, reach_steps=5, **given)
    curve = result.reach
    assert curve["timesteps"] == wb.make_timesteps(model, 5)[:-1]
    assert all(e >= 0 for e in curve["effect"]) and max(curve["effect"]) > 0
    p = result.preset
    if curve["largest"] >= calibration.REACH_MUTE:  # whole timesteps, the peak inside
        hi, lo = p["h_window"]
        assert hi == model.schedule.top and lo <= curve["peak"] < lo + 1
        assert p["pullback_timesteps"][0] == round(curve["peak"])
    again = wb.Preset.from_dict(json.loads(json.dumps(p)))
    assert again.h_window == p["h_window"] and again.pullback_timesteps == p["pullback_timesteps"]


@pytest.mark.slow
def test_calibration_on_shapes32_reproduces_its_preset():
    """x_step and h_step within 10%, the mixing step within one grid step (50 steps); h
    is mute (its mid block barely reaches the output), so the h window and the pullback
    timesteps stay the preset's."""
    model = wb.load("shapes32", device="cpu")
    result = wb.calibrate(model, n=32, mixing_n=128)
    p, preset = result.preset, model.preset
    assert result.reach["largest"] < 0.005 and any("h is mute" in n for n in result.notes)
    assert p["h_window"] == preset.h_window
    assert p["pullback_timesteps"] == preset.pullback_timesteps
    assert abs(p["x_step"] / preset.x_step - 1) < 0.1
    assert abs(p["h_step"] / preset.h_step - 1) < 0.1
    grid = wb.make_timesteps(model, 50)
    step = grid[0] - grid[1]
    assert p["mixing_step"] is not None and abs(p["mixing_step"] - preset.mixing_step) <= step
    assert torch.isfinite(torch.tensor(result.x_norms)).all() and result.mixing is not None
    assert len(result.figure().data) == 5  # norms of x and h, h reach, KS of norms, sliced KS


@pytest.mark.slow
def test_calibration_on_shapes64_ends_the_h_window_where_h_reaches_most():
    """On the model whose h carries the image, the h reach curve peaks mid-chain (t = 719
    on the 25-step grid; the 50-step curve peaks at 699-719) at 4x the mute level and
    more, and calibrate ends the window there; h_step stays within 10% of the preset's."""
    model = wb.load("shapes64", device="cpu")
    result = wb.calibrate(model, n=8, mixing_n=0)
    assert result.reach["largest"] > 4 * calibration.REACH_MUTE
    (hi, lo), pullback = result.preset["h_window"], result.preset["pullback_timesteps"]
    assert hi == 999 and 679 <= lo <= 759 and pullback[0] == lo and pullback[1] < lo
    assert abs(result.preset["h_step"] / model.preset.h_step - 1) < 0.1
    assert any("measured" in note for note in result.notes)
