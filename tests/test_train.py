import dataclasses
import json
import pickle

import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.train import TrainConfig, train


def _config(out, steps, preset="tiny"):
    return TrainConfig(
        out=str(out),
        steps=steps,
        batch_size=4,
        preset=preset,
        checkpoint_every=2,
        eval_samples=4,
        eval_steps=3,
        device="cpu",
    )


def test_training_exports_a_loadable_model_and_resumes_exactly(tmp_path):
    straight = train(_config(tmp_path / "a", 4))
    record = json.loads((straight / "training.json").read_text())
    assert record["steps_done"] == 4 and "sample_quality" in record
    model = wb.load(str(straight), device="cpu")
    assert model.prediction_type == "v_prediction" and model.alpha_bar(999) == 0.0
    assert next(model.unet.parameters()).dtype == torch.float32
    weights = list((straight / "unet").glob("*.safetensors"))
    assert len(weights) == 1

    train(_config(tmp_path / "b", 2))  # interrupted after 2 steps ...
    resumed = train(_config(tmp_path / "b", 4))  # ... and resumed to 4
    other = wb.load(str(resumed), device="cpu")
    assert other.fingerprint == model.fingerprint
    history = json.loads((resumed / "training.json").read_text())["history"]
    assert [h["steps"] for h in history] == [[0, 2], [2, 4]]


def test_a_wall_clock_budget_stops_early_and_still_exports(tmp_path):
    config = _config(tmp_path / "c", 1000)
    config.max_minutes = 1e-9  # spent after the first step
    folder = train(config)
    record = json.loads((folder / "training.json").read_text())
    assert record["steps_done"] == 1 and "sample_quality" in record
    state = json.loads((tmp_path / "c" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 1


class _Planted:
    """Unpickling this writes a marker file: what a crafted checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_checkpoint_is_never_unpickled(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "ran"
    (out / "checkpoint.pt").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(WorkbenchError, match="pickled checkpoint"):
        train(_config(out, 2))
    assert not marker.exists()


def test_checkpoints_hold_no_pickle_and_resume_without_moments_or_from_an_export(tmp_path):
    first = train(_config(tmp_path / "a", 2, preset="tiny-lit"))
    ckpt = tmp_path / "a" / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "ema.safetensors",
        "optimizer.safetensors",
        "state.json",
        "unet.safetensors",
    ]
    assert wb.load(str(first), device="cpu").preset.scene == "lit-shapes"
    # weights carried without the optimizer moments: a warning, then the run goes on
    (ckpt / "optimizer.safetensors").unlink()
    with pytest.warns(UserWarning, match="no optimizer moments"):
        train(_config(tmp_path / "a", 3, preset="tiny-lit"))
    # going on from an exported model (what is bundled) in a fresh folder
    config = _config(tmp_path / "b", 5, preset="tiny-lit")
    config.init_from = str(tmp_path / "a" / "model")
    resumed = train(config)
    record = json.loads((resumed / "training.json").read_text())
    assert record["steps_done"] == 5 and [h["steps"] for h in record["history"]] == [
        [0, 2],
        [2, 3],
        [3, 5],
    ]
    # a checkpoint trained with other skips cut is refused, not silently mixed
    config = _config(tmp_path / "a", 6, preset="tiny-lit")
    config.cut_skips = ()
    with pytest.raises(WorkbenchError, match="skips of up blocks"):
        train(config)


def test_a_shape_prior_reaches_every_batch_and_the_record(tmp_path, monkeypatch):
    import workbench.train as train_module

    seen = []
    real = train_module.get_scene

    def spying(name):
        scene = real(name)

        def generate(*args, **kwargs):
            seen.append(kwargs.get("shape_probs"))
            return scene.generate(*args, **kwargs)

        return dataclasses.replace(scene, generate=generate)

    monkeypatch.setattr(train_module, "get_scene", spying)
    config = _config(tmp_path / "p", 3, preset="tiny-lit")
    config.shape_prior = (0.2, 0.5, 0.3)
    config.eval_samples = 0
    record = json.loads((train(config) / "training.json").read_text())
    assert seen == [(0.2, 0.5, 0.3)] * 3
    assert record["config"]["shape_prior"] == [0.2, 0.5, 0.3]
    config = _config(tmp_path / "q", 3, preset="tiny-lit")
    config.shape_prior = (1.0, -1.0, 1.0)
    with pytest.raises(WorkbenchError, match="shape_prior: weights must be >= 0"):
        train(config)
    assert not (tmp_path / "q" / "checkpoint").exists()  # refused before any step
