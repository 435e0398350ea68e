"""Editing your own images: files and folders read, resized with a word, inverted on the
edit's grid, edited, and written beside the originals; refusals in one line."""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.data.scenes import get_scene
from workbench.sampling import run_chain

#: google/ddpm-cifar10-32's U-Net (35.7M parameters), with random weights here.
DDPM_CIFAR10 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)


def _write_pngs(folder, n, size, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    images = get_scene(None).generate(n, size=size, seed=seed)[0]
    for i, pixels in enumerate(wb.DiffusionModel.to_uint8(images)):
        Image.fromarray(pixels.numpy()).save(folder / f"img{i}.png")
    return folder


def test_your_images_are_inverted_on_the_edits_grid_and_edited(shapes32, tmp_path):
    folder = _write_pngs(tmp_path / "mine", 3, 48)  # not the model's 32 px: resized, said once
    ds = wb.discover("random", shapes32, k=2, space="x")  # h is nearly mute on shapes32
    with pytest.warns(UserWarning, match="3 of 3 images centre-cropped and resized to 32x32 px"):
        result = wb.edit(shapes32, ds, 0, [0.0, 3.0], images=str(folder), num_steps=20)
    assert result.images.shape == (2, 3, 3, 32, 32) and result.seeds is None
    assert [p.name for p in result.sources] == ["img0.png", "img1.png", "img2.png"]
    # strength 0 is the inversion sampled back on the same grid: near the originals
    assert 0 < result.reconstruction_mse < 0.1
    assert float((result.images[1] - result.images[0]).abs().mean()) > 0.01  # it edits
    written = result.save_beside_sources()
    assert len(written) == 6 and all(p.parent == folder / "edited" for p in written)
    assert Image.open(folder / "edited" / "img1_random-0_+3.png").size == (32, 32)
    # a tensor of the model's size goes in as it is, and strength 0 is the inverted chain
    tensor = get_scene(None).generate(2, size=32, seed=5)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = wb.edit(shapes32, ds, 0, [0.0], images=tensor, num_steps=20)
    grid = again.timesteps
    x_T = run_chain(shapes32, tensor, grid[::-1])
    back = run_chain(shapes32, x_T, grid)
    # the same chain, run in a batch with the unedited reference row: equal up to the
    # batch-size rounding of docs/architecture.md, "Determinism"
    assert torch.allclose(again.images[0], back, atol=1e-5)
    assert again.reconstruction_mse == pytest.approx(float(((back - tensor) ** 2).mean()), rel=1e-4)


def test_bad_images_are_refused_in_one_line(tiny, tmp_path):
    ds = wb.discover("random", tiny, k=1, space="h")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    cases = [
        ({"images": str(tmp_path / "missing")}, "no such image file or folder"),
        ({"images": str(tmp_path / "empty")}, "no image files"),
        ({"images": str(tmp_path / "notes.txt")}, "not an image file"),
        ({"images": torch.zeros(2, 3, 8, 8)}, r"images have shape \[2, 3, 8, 8\]"),
        ({"images": torch.zeros(1, 3, 16, 16), "seeds": [0]}, "exactly one of seeds, x or images"),
    ]
    for options, match in cases:
        with pytest.raises(wb.WorkbenchError, match=match) as err:
            wb.edit(tiny, ds, 0, [1.0], num_steps=4, **options)
        assert "\n" not in str(err.value)


def test_the_cli_edits_a_folder_on_a_ddpm_cifar10_architecture(tmp_path, capsys):
    """A DDPM folder of ddpm-cifar10-32's architecture (random weights, its DDPM scheduler
    with x0 clipping): `workbench edit --image DIR` writes the edited images beside them;
    Shapes attributes are refused on it."""
    from diffusers import DDPMScheduler, UNet2DModel

    from workbench.cli import main

    torch.manual_seed(0)
    unet = UNet2DModel(**DDPM_CIFAR10)
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.01)
    unet.save_pretrained(tmp_path / "ddpm" / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "ddpm" / "scheduler")
    folder = _write_pngs(tmp_path / "photos", 2, 32)
    model = ("--model", str(tmp_path / "ddpm"), "--device", "cpu")
    d = str(tmp_path / "d.safetensors")
    with pytest.warns(UserWarning, match="no workbench_preset.json"):
        assert main(["discover", "random", *model, "--space", "h", "--k", "2", "--out", d]) == 0
    args = ["edit", *model, "--directions", d, "--image", str(folder), "--num-steps", "4"]
    assert main([*args, "--strengths", "-2,0,2", "--out", str(tmp_path / "e.npz")]) == 0
    out = capsys.readouterr().out
    assert "wrote 6 edited images to" in out and "MSE" in out
    assert len(list((folder / "edited").glob("*.png"))) == 6
    bad = ["edit", *model, "--directions", d, "--image", str(folder), "--seeds", "0"]
    assert main([*bad, "--out", str(tmp_path / "b.npz")]) == 2
    assert "give --seeds or --image, not both" in capsys.readouterr().err
    loaded = wb.load(tmp_path / "ddpm", device="cpu")
    assert loaded.schedule.clip_sample  # the DDPM config's clipping, kept and said
    with pytest.raises(wb.WorkbenchError, match="no built-in scene with ground truth") as err:
        wb.discover("boundary", loaded, attribute="large", num_steps=4, timestep=300)
    assert "\n" not in str(err.value)
