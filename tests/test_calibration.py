"""Calibrating a model's preset (``wb.calibrate``, ``workbench calibrate``) and what loading
says about a model without one."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import workbench as wb
from workbench.models import loading


def test_calibration_writes_a_preset_that_loads_back(tiny, tmp_path):
    result = wb.calibrate(tiny, n=4, num_steps=10, mixing_n=0)
    p = result.preset
    grid = wb.make_timesteps(tiny, 10, include=[tiny.preset.x_timestep])
    x_t = wb.ddim(tiny, tiny.noise(range(4)), grid[: grid.index(tiny.preset.x_timestep) + 1])
    assert p["x_step"] == pytest.approx(0.1 * float(x_t.flatten(1).norm(dim=1).mean()), abs=0.01)
    assert p["h_step"] > 0 and p["num_inference_steps"] == 10
    assert p["mixing_step"] == tiny.preset.mixing_step  # not searched: kept
    assert any("mixing step not searched" in note for note in result.notes)
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
    assert main([*args, "--n", "3", "--num-steps", "8", "--mixing-n", "0"]) == 0
    saved = json.loads((tmp_path / "model" / "workbench_preset.json").read_text())
    evidence = json.loads((tmp_path / "model" / "workbench_calibration.json").read_text())
    assert (
        saved == evidence["preset"] and (tmp_path / "model" / "workbench_calibration.html").exists()
    )
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


@pytest.mark.slow
def test_calibration_on_shapes32_reproduces_its_preset():
    """x_step and h_step within 10%, the mixing step within one grid step (50 steps)."""
    model = wb.load("shapes32", device="cpu")
    result = wb.calibrate(model, n=32, mixing_n=128)
    p, preset = result.preset, model.preset
    assert abs(p["x_step"] / preset.x_step - 1) < 0.1
    assert abs(p["h_step"] / preset.h_step - 1) < 0.1
    grid = wb.make_timesteps(model, 50)
    step = grid[0] - grid[1]
    assert p["mixing_step"] is not None and abs(p["mixing_step"] - preset.mixing_step) <= step
    assert torch.isfinite(torch.tensor(result.x_norms)).all() and result.mixing is not None
    assert len(result.figure().data) == 4  # norms of x and h, KS of norms, sliced KS
