"""The bundled Shapes model: shipped as promised, and it draws Shapes."""

import json

import torch
from safetensors import safe_open

import workbench as wb
from workbench.data.readout import read_factors
from workbench.models.loading import BUNDLED_DIR, PRESETS
from workbench.models.presets import PRESET_FILE, Preset


def test_bundled_files_weights_and_record():
    folder = BUNDLED_DIR / "shapes32"
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 16 * 2**20
    with safe_open(str(weights), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    record = json.loads((folder / "training.json").read_text())
    assert record["passes_bar"] and record["sample_quality"]["valid_rate"] >= 0.95
    assert record["config"]["seed"] == 0 and record["steps_done"] == 12000
    assert all(h["command"].startswith("workbench train") for h in record["history"])
    on_disk = Preset.from_dict(json.loads((folder / PRESET_FILE).read_text()))
    assert on_disk == PRESETS["shapes32"]


def test_shapes32_samples_are_valid_shapes(shapes32):
    assert shapes32.prediction_type == "v_prediction" and shapes32.h_shape == (128, 4, 4)
    images = wb.sample(shapes32, seeds=range(24), num_steps=20)
    read = read_factors(images)
    assert float(read.valid.float().mean()) >= 0.9
    # the background is not collapsed to the data mean (the known trap)
    assert float(read.factors.background[read.valid].std()) > 0.1
