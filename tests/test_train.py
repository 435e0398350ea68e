import json

import torch

import workbench as wb
from workbench.train import TrainConfig, train


def _config(out, steps):
    return TrainConfig(
        out=str(out),
        steps=steps,
        batch_size=4,
        preset="tiny",
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
    assert torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=False)["step"] == 1
