"""The demo shares its work: one trajectory bank and batched edits give what each engine,
probe and edit gives alone, for a fraction of the network calls."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.demo import DEMO_DISCOVERIES, run_demo
from workbench.errors import WorkbenchError
from workbench.store import Cache

STEPS = 4


@pytest.fixture(scope="module")
def bank(tiny):
    return wb.trajectory_bank(tiny, n=8, num_steps=STEPS, cache=False)


class Rows:
    """Counts the network's calls and the rows they carry, while installed."""

    def __init__(self, model):
        self.calls = self.rows = 0
        self.handle = model.unet.register_forward_pre_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs):
        x = args[0] if args else kwargs["sample"]
        self.calls += 1
        self.rows += x.shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_engines_and_probes_on_the_bank_equal_them_alone(tiny, bank):
    options = {"k": 3, "n": 8, "num_steps": STEPS, "form": "channel"}
    alone = wb.discover("pca", tiny, **options)
    shared = wb.discover("pca", tiny, bank=bank, **options)
    assert torch.allclose(alone.vectors, shared.vectors, atol=1e-5)
    assert torch.allclose(alone.scores, shared.scores, atol=1e-6)

    # the mixing-step search inverts images of seed + 1 by default, as the bank does
    alone = wb.probe("mixing-step", tiny, n=8, num_steps=STEPS)
    shared = wb.probe("mixing-step", tiny, n=8, num_steps=STEPS, bank=bank)
    assert torch.allclose(alone.sampled, shared.sampled, atol=1e-5)
    assert torch.allclose(alone.inverted, shared.inverted, atol=1e-5)
    assert alone.ks == pytest.approx(shared.ks, abs=1e-6)
    assert alone.mixing_step == shared.mixing_step

    # a subset of the bank's seeds and images, at another batch size
    alone = wb.probe("norm", tiny, n=4, num_steps=STEPS, images=bank.real[:4])
    shared = wb.probe("norm", tiny, n=4, num_steps=STEPS, bank=bank)
    assert torch.allclose(alone.sampled, shared.sampled, atol=1e-4)
    assert torch.allclose(alone.inverted, shared.inverted, atol=1e-4)

    umap = {"n": 8, "num_steps": STEPS, "umap_neighbors": 5, "neighbours_count": 3}
    alone = wb.probe("umap", tiny, **umap)
    shared = wb.probe("umap", tiny, bank=bank, **umap)
    assert torch.allclose(alone.embedding, shared.embedding, atol=1e-3)
    assert alone.factors.keys() == shared.factors.keys()


@pytest.mark.parametrize("space", ["x", "h"])
def test_a_batched_edit_of_a_set_equals_each_direction_alone(tiny, bank, space):
    directions = wb.discover("random", tiny, k=3, space=space, seed=3)
    strengths = [-2.0, 0.0, 2.0]
    common = {"seeds": [0, 1], "num_steps": STEPS, "unedited": True}
    for use_bank in (None, bank):
        together = wb.edit_set(tiny, directions, strengths, bank=use_bank, **common)
        assert [r.index for r in together] == [0, 1, 2]
        for result in together:
            alone = wb.edit(tiny, directions, result.index, strengths, **common)
            assert torch.allclose(result.images, alone.images, atol=1e-4)
            assert torch.allclose(result.unedited, alone.unedited, atol=1e-4)
            # strength 0 of an additive edit is the unedited sample itself
            assert torch.equal(result.images[1], result.unedited)
    # the edits differ between directions: each row got its own direction
    assert not torch.allclose(together[0].images[0], together[1].images[0], atol=1e-3)


def test_a_batched_stochastic_edit_keeps_each_seeds_noise(tiny):
    directions = wb.discover("random", tiny, k=2, space="x", seed=1)
    common = {"seeds": [4, 5], "num_steps": STEPS, "eta": 1.0, "unedited": True}
    together = wb.edit_set(tiny, directions, [-1.0, 0.0, 1.0], **common)
    for result in together:
        alone = wb.edit(tiny, directions, result.index, [-1.0, 0.0, 1.0], **common)
        assert torch.allclose(result.images, alone.images, atol=1e-4)


def test_the_bank_refuses_what_it_does_not_hold(tiny, other_tiny, bank):
    grid = wb.make_timesteps(tiny, STEPS + 1)
    with pytest.raises(WorkbenchError, match="grid"):
        bank.paired(tiny, grid, range(4), 4, "ddim")
    with pytest.raises(WorkbenchError, match=r"seeds \[8, 9\] are not in the trajectory bank"):
        wb.probe("norm", tiny, n=10, num_steps=STEPS, bank=bank)
    with pytest.raises(WorkbenchError, match="fingerprint mismatch"):
        wb.discover("pca", other_tiny, k=2, n=4, num_steps=STEPS, bank=bank)
    with pytest.raises(WorkbenchError, match="not 'fixed-point'"):
        wb.probe("norm", tiny, n=4, num_steps=STEPS, bank=bank, inversion="fixed-point")
    with pytest.raises(WorkbenchError, match="images or a trajectory bank"):
        wb.probe("norm", tiny, n=4, num_steps=STEPS, bank=bank, images=bank.real[:4])
    # the bank's own options are checked before any compute, one line each
    for options, message in (
        ({"n": 1}, r"n must be in \[2, 100000\], got 1"),
        ({"inversion": "exact"}, "inversion must be one of ddim, fixed-point"),
        ({"num_steps": 0}, "num_steps must be in"),
        ({"prompt": "a cat"}, "unconditional"),
    ):
        with Rows(tiny) as rows, pytest.raises(WorkbenchError, match=message):
            wb.trajectory_bank(tiny, cache=False, **options)
        assert rows.rows == 0


def test_the_bank_is_cached_across_runs(tiny, tmp_path):
    cache = Cache(tmp_path)
    with Rows(tiny) as first:
        made = wb.trajectory_bank(tiny, n=4, num_steps=STEPS, cache=cache)
    with Rows(tiny) as second:
        again = wb.trajectory_bank(tiny, n=4, num_steps=STEPS, cache=cache)
    assert first.rows == 2 * 4 * STEPS and second.rows == 0
    assert torch.equal(made.sampled, again.sampled) and torch.equal(made.h, again.h)
    assert torch.equal(made.inverted, again.inverted)
    other = wb.trajectory_bank(tiny, n=4, num_steps=STEPS + 1, cache=cache)
    assert other.sampled.shape[0] == STEPS + 2  # another grid: another entry


def test_the_demo_shares_work_and_gives_the_same_results(tiny, tmp_path, monkeypatch):
    """The default demo's sizes at 10 steps: the bank and the batched edits save network
    rows (``python analysis/demo_sharing.py --model tiny-test --num-steps 10``: 9,172
    alone, 6,557 shared: 1.40x; 5,597 once the bank is cached: 1.64x), and the shared run
    reports what the unshared one does."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    counts, outputs = {}, {}
    for run, share in (("alone", False), ("shared", True), ("cached", True)):
        out = tmp_path / run
        with Rows(tiny) as rows:
            run_demo(tiny, out, num_steps=10, share=share)
        counts[run] = rows.rows
        outputs[run] = json.loads((out / "summary.json").read_text())
    assert counts["alone"] >= 1.3 * counts["shared"], counts
    assert counts["alone"] >= 1.55 * counts["cached"], counts
    alone, shared = outputs["alone"]["sets"], outputs["shared"]["sets"]
    assert [r["set"] for r in alone] == [r["set"] for r in shared]
    for a, b in zip(alone, shared, strict=True):
        assert a["image_change"] == pytest.approx(b["image_change"], rel=1e-2, abs=1e-5), a["set"]
        assert a["dominant"] == b["dominant"], a["set"]
    untimed = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in outputs[run]["sets"]]
        for run in ("shared", "cached")
    ]
    assert untimed[0] == untimed[1]  # the cached bank is the bank
    # probes that read the bank: the same numbers (the unshared norm probe inverts images of
    # its own seed, the bank those of seed + 1, so it is compared on the sampled side)
    for name, keys in (("mixing-step", ("sampled", "inverted", "ks")), ("norm", ("sampled",))):
        a = json.loads((tmp_path / "alone" / "probes" / f"{name}.json").read_text())
        b = json.loads((tmp_path / "shared" / "probes" / f"{name}.json").read_text())
        for key in keys:
            assert torch.allclose(torch.tensor(a[key]), torch.tensor(b[key]), atol=1e-4), name
    report = (tmp_path / "shared" / "report.html").read_text()
    assert report.count("<script type='text/javascript'>") == 1  # one plotly bundle
    assert "<h2>Summary</h2>" in report and "0 (unedited)" in report


def _exporter_missing() -> str | None:
    import importlib.util
    import os
    import shutil

    if os.environ.get("WORKBENCH_REQUIRE_BROWSER"):
        return None
    if importlib.util.find_spec("kaleido") is None:
        return "kaleido is not installed (pip install -e '.[figures]')"
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        return "no Chrome or Chromium on PATH"
    return None


@pytest.mark.slow  # about 70 s: a quick demo and ~110 static files through Chromium
@pytest.mark.skipif(_exporter_missing() is not None, reason=str(_exporter_missing()))
def test_workbench_figures_writes_a_pdf_and_an_svg_of_every_figure(tmp_path, monkeypatch):
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    argv = ["figures", "--model", "tiny-test", "--quick", "--num-steps", "3", "--n-seeds", "2"]
    assert main([*argv, "--format", "pdf,svg", "--out", str(out)]) == 0
    assert not (out / "report.html").exists()
    files = {}
    for path in (out / "figures").iterdir():
        files.setdefault(path.suffix, []).append(path)
    assert sorted(files) == [".pdf", ".svg"]
    for suffix, header in ((".pdf", b"%PDF-"), (".svg", b"<svg")):
        assert all(f.stat().st_size > 1000 for f in files[suffix]), suffix
        assert all(f.read_bytes()[:200].lstrip().startswith(header) for f in files[suffix])
    names = {f.stem for f in files[".pdf"]}
    assert names == {f.stem for f in files[".svg"]}  # every figure in both formats
    # every result type: samples, direction scores, edit grids, factor effects, probes
    assert {"samples", "pullback-scores", "pullback-0", "pullback-factors"} <= names
    assert {"probe-norm", "probe-umap", "probe-spectrum", "attention-qk-image-scores"} <= names
    assert main([*argv, "--format", "gif", "--out", str(tmp_path / "gif")]) == 2


def test_a_static_figure_in_an_unknown_format_is_a_one_line_error(tmp_path):
    import plotly.graph_objects as go

    from workbench.viz.figures import export

    with pytest.raises(WorkbenchError, match="unknown figure format 'gif'"):
        export(go.Figure(), tmp_path / "a.gif")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # a quick demo on the random model: about a minute
def test_the_demo_shows_one_progress_bar(tiny, tmp_path, monkeypatch, capsys):
    """With progress bars on, the demo's only bar is its own overall one ("demo: STAGE"):
    no stage's inner bar (sampling, inversion, iterations) shows under it."""
    import re

    import workbench.settings as settings

    monkeypatch.setattr(settings, "progress", True)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    run_demo(tiny, tmp_path / "out", quick=True)
    shown = re.split(r"[\r\n]+", capsys.readouterr().err)
    bars = {line.split(":")[0].strip() for line in shown if re.search(r"\d+%\|", line)}
    assert bars == {"demo"}, bars


@pytest.mark.report
def test_the_readme_demo_shows_every_seed_method_acting():
    """The README's ``workbench demo`` (CI: after its timed run) runs on shapes64, where h
    carries the image: every engine's set is in the summary, and at least one attention
    direction moves a factor at least twice as much as random h directions of the same
    strength, on images the read-out keeps valid (>= 0.9)."""
    given = os.environ.get("WORKBENCH_REPORT")
    if not given:
        pytest.skip("checks the README demo's report: set WORKBENCH_REPORT (CI does)")
    summary = json.loads((Path(given).parent / "summary.json").read_text())
    assert summary["model"] == "shapes64"
    rows = {row["set"]: row for row in summary["sets"]}
    assert {label for items in DEMO_DISCOVERIES.values() for label, _, _ in items} <= set(rows)
    attention = [rows[s] for s in rows if s.startswith("attention")]
    assert any(
        (r["vs_random"] or 0) >= 2 and r["validity"] >= 0.9 and r["visible"] for r in attention
    ), [(r["set"], r["vs_random"], r["validity"]) for r in attention]
