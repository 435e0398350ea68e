"""Scores that need no ground truth (workbench.eval.judge): each score on planted edits,
the classifier on planted classes, the API and CLI on the tiny model, and agreement with the
ground truth on shapes32."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.cli import main
from workbench.data.scenes import get_scene
from workbench.errors import WorkbenchError
from workbench.eval.directions import score_edits
from workbench.eval.judge import (
    VISIBLE,
    LinearClassifier,
    edited_with_reference,
    image_scores,
    judge_directions,
    judge_edit,
)
from workbench.stats import spearman

STRENGTHS = [-2.0, -1.0, 0.0, 1.0, 2.0]


def _edits(delta: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Edited images ``reference + s * delta`` for every strength: [S, N, C, H, W]."""
    s = torch.tensor(STRENGTHS).reshape(-1, 1, 1, 1, 1)
    return reference[None] + s * delta


def test_effect_is_the_rms_change_per_unit_strength():
    torch.manual_seed(0)
    reference = torch.rand(4, 3, 8, 8) * 0.5
    delta = 0.1 * torch.randn(4, 3, 8, 8)
    effect, *_ = image_scores(_edits(delta, reference), reference, STRENGTHS)
    want = float((delta / 2).pow(2).mean(dim=(1, 2, 3)).sqrt().mean())
    assert effect == pytest.approx(want, rel=1e-6)
    # twice the change per unit strength, twice the effect
    assert image_scores(_edits(2 * delta, reference), reference, STRENGTHS)[0] == pytest.approx(
        2 * want, rel=1e-6
    )


def test_locality_tells_a_local_change_from_a_global_one():
    reference = torch.zeros(3, 3, 8, 8)
    local = torch.zeros(3, 3, 8, 8)
    local[:, :, 2:4, 5:7] = 0.2  # 4 of 64 pixels: inside the top 10% (7 pixels)
    uniform = torch.full((3, 3, 8, 8), 0.2)
    assert image_scores(_edits(local, reference), reference, STRENGTHS)[1] == pytest.approx(1.0)
    # an even change puts the region's share of the pixels in it: 7/64
    even = image_scores(_edits(uniform, reference), reference, STRENGTHS)[1]
    assert even == pytest.approx(7 / 64)
    wider = image_scores(_edits(uniform, reference), reference, STRENGTHS, region=0.5)[1]
    assert wider == pytest.approx(0.5)


def test_consistency_is_one_for_the_same_change_and_near_zero_for_unrelated_ones():
    torch.manual_seed(1)
    reference = torch.rand(6, 3, 16, 16)
    same = (0.1 * torch.randn(1, 3, 16, 16)).expand(6, -1, -1, -1)
    assert image_scores(_edits(same, reference), reference, STRENGTHS)[2] == pytest.approx(1.0)
    unrelated = 0.1 * torch.randn(6, 3, 16, 16)
    assert abs(image_scores(_edits(unrelated, reference), reference, STRENGTHS)[2]) < 0.1
    flipped = same * torch.tensor([1.0, -1.0] * 3).reshape(6, 1, 1, 1)  # half go the other way
    # 6 of 15 pairs agree (+1), 9 disagree (-1)
    assert image_scores(_edits(flipped, reference), reference, STRENGTHS)[2] == pytest.approx(
        (6 - 9) / 15
    )


def test_an_invisible_change_has_no_locality_or_consistency():
    reference = torch.zeros(3, 3, 8, 8)
    tiny_change = torch.full((3, 3, 8, 8), VISIBLE / 10)  # x 2 (strength) / 2 (scale) < VISIBLE
    effect, locality, consistency, classifier = image_scores(
        _edits(tiny_change, reference), reference, STRENGTHS
    )
    assert 0 < effect < VISIBLE and math.isnan(locality) and math.isnan(consistency)
    assert classifier is None


def _planted_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images whose positive class is brighter on the left half."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.randn(n, 3, 16, 16, generator=gen)
    labels = torch.arange(n) % 2 == 0
    images[labels, :, :, :8] += 0.5
    return images.clamp(-1, 1), labels


def test_probe_reads_a_planted_attribute_and_measures_its_change():
    images, labels = _planted_classes(80, 0)
    classifier = LinearClassifier.fit(images, labels, "bright-left", "plain")
    assert classifier.accuracy > 0.9 and classifier.gap > 0
    assert "bright-left" in classifier.describe()
    reference, _ = _planted_classes(6, 1)
    towards = torch.zeros(6, 3, 16, 16)
    towards[:, :, :, :8] = 0.25  # a unit strength brightens the left half by half the planting
    up = image_scores(_edits(towards, reference), reference, STRENGTHS, classifier=classifier)[3]
    down = image_scores(_edits(-towards, reference), reference, STRENGTHS, classifier=classifier)[3]
    elsewhere = torch.zeros(6, 3, 16, 16)
    elsewhere[:, :, :, 8:] = 0.25  # the right half: not what the classifier reads
    off = image_scores(_edits(elsewhere, reference), reference, STRENGTHS, classifier=classifier)[3]
    assert up > 0.2 and down == pytest.approx(-up, rel=1e-6)
    assert abs(off) < up / 3


def test_bad_input_is_one_line():
    reference = torch.zeros(2, 3, 8, 8)
    edits = _edits(torch.ones(2, 3, 8, 8), reference)
    with pytest.raises(WorkbenchError, match="need images"):
        image_scores(edits[0], reference, STRENGTHS)
    with pytest.raises(WorkbenchError, match="non-zero strength"):
        image_scores(edits[2:3], reference, [0.0])
    with pytest.raises(WorkbenchError, match="region"):
        image_scores(edits, reference, STRENGTHS, region=1.5)
    with pytest.raises(WorkbenchError, match="2 images of each class"):
        LinearClassifier.fit(torch.zeros(4, 3, 8, 8), torch.tensor([1, 0, 0, 0]))


def _write_labelled(root, n: int = 24):
    """Shapes images labelled large / small by their scale (median split)."""
    images, factors = get_scene(None).generate(n, size=16, seed=5)
    large = factors.scale > factors.scale.median()
    pixels = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    for i, (img, flag) in enumerate(zip(pixels, large.tolist(), strict=True)):
        folder = root / ("large" if flag else "small")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(img)).save(folder / f"{i:03d}.png")


def test_judge_directions_on_the_tiny_model(tiny, tmp_path):
    ds = wb.discover("random", tiny, k=2, space="x")
    scores = judge_directions(tiny, ds, seeds=range(3), strengths=[-1, 1], num_steps=4)
    assert scores.names == [ds.name(0), ds.name(1)] and scores.strengths == [-1.0, 0.0, 1.0]
    assert bool((scores.effect > 0).all()) and scores.classifier is None
    # the same edits scored by hand
    images, reference = edited_with_reference(tiny, ds, 1, [-1.0, 0.0, 1.0], [0, 1, 2], num_steps=4)
    assert image_scores(images, reference, [-1.0, 0.0, 1.0])[0] == pytest.approx(
        float(scores.effect[1]), rel=1e-5
    )
    assert "consistency" in scores.table() and "<table" in scores._repr_html_()
    assert json.loads(json.dumps(scores.to_dict()))["n_seeds"] == 3
    assert scores.figure().layout.title.text.startswith("Directions judged")

    _write_labelled(tmp_path / "sizes")
    classified = judge_directions(
        tiny,
        ds,
        indices=[0],
        seeds=range(2),
        strengths=[1],
        num_steps=4,
        labelled=tmp_path / "sizes",
        positive="large",
    )
    assert classified.classifier is not None and math.isfinite(float(classified.classifier[0]))
    assert "'large' vs 'small'" in classified.classifier_about
    with pytest.raises(WorkbenchError, match="give labelled="):
        judge_directions(tiny, ds, positive="large")
    classifier = LinearClassifier.fit(*_planted_classes(20, 0))
    with pytest.raises(WorkbenchError, match="not both"):
        judge_directions(tiny, ds, labelled=tmp_path / "sizes", classifier=classifier)
    with pytest.raises(WorkbenchError, match="region must be"):
        judge_directions(tiny, ds, region=0)


def test_judge_edit_uses_the_unedited_row(tiny):
    ds = wb.discover("random", tiny, k=1, space="x")
    plain = wb.edit(tiny, ds, 0, [-1, 0, 1], seeds=[0, 1], num_steps=4)
    asked = wb.edit(tiny, ds, 0, [-1, 0, 1], seeds=[0, 1], num_steps=4, unedited=True)
    assert torch.equal(asked.unedited, plain.images[1])  # additive at 0 is the unedited sample
    # the same scores (the edited rows differ by float rounding: other batch sizes)
    assert judge_edit(plain)[:3] == pytest.approx(judge_edit(asked)[:3], rel=1e-5)
    assert judge_edit(plain)[3] is None
    plain.mode = "distance"
    with pytest.raises(WorkbenchError, match="unedited=True"):
        judge_edit(plain)


def test_cli_judge_writes_the_scores(tiny, tmp_path, capsys):
    ds = wb.discover("random", tiny, k=2, space="x")
    ds.save(tmp_path / "d.safetensors")
    out = tmp_path / "judged.json"
    code = main(
        [
            "judge",
            "--model",
            "tiny-test",
            "--directions",
            str(tmp_path / "d.safetensors"),
            "--seeds",
            "0-2",
            "--strengths",
            "-1,1",
            "--num-steps",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    saved = json.loads(out.read_text())
    assert saved["n_seeds"] == 3 and len(saved["effect"]) == 2
    assert "locality" in capsys.readouterr().out


def test_scores_without_ground_truth_rank_as_the_ground_truth_on_shapes32(shapes32):
    """The image effect ranks directions as the read-out's effect does, and a classifier of a
    light background fitted on rendered images ranks them as the read-out's background
    effect does (the pullback directions move the background, the random ones hardly)."""
    images, factors = get_scene(None).generate(600, size=32, seed=11)
    light = factors.background > factors.background.median()
    classifier = LinearClassifier.fit(images, light, "light", "dark")
    assert classifier.accuracy > 0.9
    sets = [
        wb.discover("pullback", shapes32, k=3, max_iter=20),
        wb.discover("random", shapes32, k=3, space="x"),
    ]
    strengths, seeds = [-3.0, 0.0, 3.0], list(range(6))
    effect, truth, classified, background = [], [], [], []
    for ds in sets:
        for i in range(len(ds)):
            edits = edited_with_reference(shapes32, ds, i, strengths, seeds, num_steps=10)
            scores = score_edits(shapes32, [edits], strengths, [ds.name(i)])
            effect.append(float(scores.image.effect[0]))
            truth.append(float(scores.effect[0].max()))
            classified.append(abs(image_scores(*edits, strengths, classifier=classifier)[3]))
            index = scores.factors.index("background")
            background.append(abs(float(scores.signed_effect[0][index])))
    assert spearman(torch.tensor(effect), torch.tensor(truth)) > 0.6
    assert spearman(torch.tensor(classified), torch.tensor(background)) > 0.6
