"""The bundled Lit Shapes model: shipped as promised, it draws Lit Shapes, and h matters."""

import json

import torch
from safetensors import safe_open

import workbench as wb
from workbench.data.lit import read_lit_factors
from workbench.eval.sensitivity import h_sensitivity
from workbench.models.loading import BUNDLED_DIR, PRESETS
from workbench.models.presets import PRESET_FILE, Preset


def test_bundled_files_weights_and_record():
    folder = BUNDLED_DIR / "shapes64"
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 25 * 2**20
    with safe_open(str(weights), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    record = json.loads((folder / "training.json").read_text())
    assert record["skips_cut"] == [0, 1] and record["config"]["preset"] == "shapes64"
    assert record["steps_done"] == record["history"][-1]["steps"][1]
    assert all(h["command"].startswith("workbench train") for h in record["history"])
    on_disk = Preset.from_dict(json.loads((folder / PRESET_FILE).read_text()))
    assert on_disk == PRESETS["shapes64"] and on_disk.scene == "lit-shapes"


def test_shapes64_samples_are_valid_lit_shapes(shapes64):
    assert shapes64.h_shape == (128, 4, 4) and shapes64.sample_shape == (3, 64, 64)
    read = read_lit_factors(wb.sample(shapes64, seeds=range(12), num_steps=20))
    assert float(read.valid.float().mean()) >= 0.9
    # the global factors vary: light from many directions, background levels spread
    assert float(read.factors.background.std()) > 0.05
    assert len(set((read.factors.light * 4).floor().int().tolist())) >= 3


def _top_axis(model, n=32):
    """Top principal axis of h over noised scene images at three window timesteps."""
    from workbench.data.scenes import get_scene

    images = get_scene(model.preset.scene).generate(n, size=model.sample_shape[1], seed=5)[0]
    gen = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for t in (999, 800, 600):
            a = model.alpha_bar(t)
            x_t = a**0.5 * images + (1 - a) ** 0.5 * torch.randn(images.shape, generator=gen)
            rows.append(model.h(x_t, t).flatten(1))
    h = torch.cat(rows)
    return torch.linalg.svd(h - h.mean(0), full_matrices=False)[2][0].reshape(model.h_shape)


def test_h_carries_the_image_on_shapes64_and_not_on_shapes32(shapes64, shapes32):
    sens = {}
    for name, model in (("64", shapes64), ("32", shapes32)):
        sens[name] = (
            h_sensitivity(model, _top_axis(model), n=8, n_timesteps=3).mean,
            h_sensitivity(model, None, n=8, n_timesteps=3).mean,
        )
    top64, random64 = sens["64"]
    top32, random32 = sens["32"]
    assert top64 >= 0.10 and top64 >= 5 * top32  # x0 moves by over 10% along h's top axis
    assert random64 >= 3 * random32


def test_a_random_h_edit_changes_shapes64_images_tenfold_more(shapes64, shapes32):
    changes = {}
    for name, model in (("64", shapes64), ("32", shapes32)):
        directions = wb.discover("random", model, k=1, space="h", form="full", seed=7)
        h_norm = 4 * model.preset.h_step  # h_step is a quarter of E||h|| on both models
        result = wb.edit(
            model, directions, 0, [0.0, h_norm / model.preset.h_step], seeds=range(2), num_steps=20
        )
        before, after = (wb.DiffusionModel.to_uint8(x).float() for x in result.images)
        changes[name] = float((after - before).abs().mean())
    assert changes["64"] >= 10 * changes["32"]


def test_directions_are_scored_on_the_lit_shapes_factors(shapes64):
    from workbench.data.lit import LIT_FACTOR_NAMES
    from workbench.eval import score_directions

    directions = wb.discover("random", shapes64, k=1, space="h", form="full", seed=3)
    scores = score_directions(
        shapes64, directions, strengths=(-4.0, 4.0), seeds=range(3), num_steps=10
    )
    assert scores.factors == list(LIT_FACTOR_NAMES) and scores.effect.shape == (1, 7)
    assert scores.dominant[0] in LIT_FACTOR_NAMES and bool(torch.isfinite(scores.effect).all())
    assert float(scores.validity[0]) > 0.5  # the Lit Shapes read-out, not the Shapes one
