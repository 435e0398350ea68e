"""Labelled images from disk (class folders, CSV) feed the boundary engine."""

import numpy as np
import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.data.labelled import load_image, load_labelled
from workbench.data.shapes import generate
from workbench.engines.boundary import fit_boundary, shapes_labels


def _write(images: torch.Tensor, paths) -> torch.Tensor:
    """Save images as PNG; returns them as they come back (8-bit quantised)."""
    arrays = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    for array, path in zip(arrays.numpy(), paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    return arrays.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _folder(root, n=24, size=16, seed=0):
    images, factors = generate(n, size=size, seed=seed)
    labels = factors.x > size / 2
    paths = [root / ("right" if lab else "left") / f"{i:03d}.png" for i, lab in enumerate(labels)]
    return _write(images, paths), labels, paths


def test_folder_and_csv_layouts_load_the_same_images_and_labels(tmp_path):
    quantised, labels, paths = _folder(tmp_path / "classes")
    loaded = load_labelled(tmp_path / "classes", size=16, positive="right")
    order = [paths.index(p) for p in loaded.paths]  # class by class, sorted names
    torch.testing.assert_close(loaded.images, quantised[order], atol=1e-6, rtol=0)
    assert torch.equal(loaded.labels, labels[order])
    assert (loaded.positive, loaded.negative) == ("right", "left") and len(loaded) == 24

    rows = ["path,label"] + [
        f"classes/{p.parent.name}/{p.name},{int(bool(lab))}"
        for p, lab in zip(paths, labels, strict=True)
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    from_csv = load_labelled(tmp_path / "labels.csv", size=16)  # 0/1: no positive= needed
    torch.testing.assert_close(from_csv.images, quantised, atol=1e-6, rtol=0)
    assert torch.equal(from_csv.labels, labels) and from_csv.positive == "1"


def test_images_are_cropped_and_resized(tmp_path):
    array = np.zeros((40, 60, 3), dtype=np.uint8)
    array[:, 10:50] = 255  # the centre square is white, the side strips black
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", 16)
    assert image.shape == (3, 16, 16)
    assert float(image.min()) > 0.99  # the crop kept only the white centre


def test_bad_layouts_give_one_line_errors(tmp_path):
    _folder(tmp_path / "two")
    with pytest.raises(wb.WorkbenchError, match="say which class is positive"):
        load_labelled(tmp_path / "two", 16)
    with pytest.raises(wb.WorkbenchError, match="positive class 'up' is not one of left, right"):
        load_labelled(tmp_path / "two", 16, positive="up")
    (tmp_path / "two" / "middle").mkdir()
    _write(torch.zeros(1, 3, 16, 16), [tmp_path / "two" / "middle" / "a.png"])
    with pytest.raises(wb.WorkbenchError, match="exactly two classes, found 3"):
        load_labelled(tmp_path / "two", 16)
    (tmp_path / "bad.csv").write_text("a.png,1\nmissing.png,0\n")
    _write(torch.zeros(1, 3, 16, 16), [tmp_path / "a.png"])
    with pytest.raises(wb.WorkbenchError, match="image not found: .*missing.png"):
        load_labelled(tmp_path / "bad.csv", 16)
    (tmp_path / "short.csv").write_text("a.png\n")
    with pytest.raises(wb.WorkbenchError, match="row 1 is not 'path,label'"):
        load_labelled(tmp_path / "short.csv", 16)
    (tmp_path / "junk.png").write_text("not an image")
    (tmp_path / "junk.csv").write_text("junk.png,1\na.png,0\n")
    with pytest.raises(wb.WorkbenchError, match="cannot read image"):
        load_labelled(tmp_path / "junk.csv", 16)
    with pytest.raises(wb.WorkbenchError, match="labelled images not found"):
        load_labelled(tmp_path / "nowhere", 16)


def test_fit_boundary_from_a_folder_equals_the_fit_from_tensors(tiny, tmp_path):
    quantised, labels, paths = _folder(tmp_path / "classes", n=40)
    from_disk = fit_boundary(tiny, tmp_path / "classes", t=500, num_steps=3, positive="right")
    loaded = load_labelled(tmp_path / "classes", 16, positive="right")
    in_memory = fit_boundary(tiny, loaded.images, loaded.labels, t=500, num_steps=3)
    assert torch.equal(from_disk.x.vectors, in_memory.x.vectors)
    assert from_disk.accuracy == in_memory.accuracy
    with pytest.raises(wb.WorkbenchError, match="leave labels=None"):
        fit_boundary(tiny, tmp_path / "classes", labels=labels, t=500)
    with pytest.raises(wb.WorkbenchError, match="give labels"):
        fit_boundary(tiny, quantised, t=500)


def test_boundary_from_saved_real_images_separates_size_on_shapes32(shapes32, tmp_path):
    """Science: Shapes images saved as PNG in two class folders (size above the median or
    not, by the read-out), inverted to the mixing step: the h boundary separates the
    held-out images (the in-memory fit of 400 images reaches 0.905, docs/boundary.md)."""
    images, _ = generate(260, size=32, seed=5)
    labels, valid = shapes_labels(images, "large")
    images, labels = images[valid][:240], labels[valid][:240]
    paths = [
        tmp_path / ("large" if lab else "small") / f"{i:03d}.png" for i, lab in enumerate(labels)
    ]
    _write(images, paths)
    fit = fit_boundary(
        shapes32, tmp_path, space="h", num_steps=3, positive="large", attribute="large"
    )
    assert fit.t == shapes32.preset.mixing_step == 59
    assert fit.accuracy["h"]["test"] >= 0.8, fit.accuracy


def test_cli_discovers_a_boundary_from_a_labelled_folder(capsys, tmp_path):
    from workbench.cli import main

    _folder(tmp_path / "classes", n=40)
    out = tmp_path / "b.safetensors"
    argv = ["discover", "boundary", "--model", "tiny-test", "--device", "cpu", "--num-steps", "3"]
    argv += ["--timestep", "500", "--labels", str(tmp_path / "classes")]
    assert main([*argv, "--positive", "right", "--out", str(out)]) == 0
    ds = wb.DirectionSet.load(out)
    assert ds.params["attribute"] == "right" and ds.params["n_train"] == 20
    assert main([*argv, "--out", str(tmp_path / "c.safetensors")]) == 2
    assert "say which class is positive" in capsys.readouterr().err
    assert not (tmp_path / "c.safetensors").exists()
