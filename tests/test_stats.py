"""Intervals and resamples of workbench.stats, the bootstrap of direction effects, and the
CPU allocator setting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import workbench as wb
from workbench.eval.directions import bootstrap_effects, score_edits
from workbench.eval.judge import edits_with_reference
from workbench.stats import (
    binomial_p,
    percentile_interval,
    proportion_interval,
    resample_indices,
)


def test_resamples_repeat_for_equal_sizes_and_draw_with_replacement():
    a, b = resample_indices(10, 500, seed=1), resample_indices(10, 500, seed=1)
    assert a.shape == (500, 10) and torch.equal(a, b)
    assert not torch.equal(a, resample_indices(10, 500, seed=2))
    assert int(a.min()) == 0 and int(a.max()) == 9
    # with replacement: most resamples of 10 repeat some item
    assert (torch.tensor([row.unique().numel() for row in a]) < 10).float().mean() > 0.9
    with pytest.raises(wb.WorkbenchError, match="nothing to resample"):
        resample_indices(0)


def test_intervals_cover_what_they_should():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(400, generator=gen) + 3.0
    idx = resample_indices(400)
    low, high = percentile_interval(values[idx].mean(1))
    assert low < float(values.mean()) < high and high - low < 0.3  # about 4 / sqrt(400)
    assert percentile_interval(torch.tensor([float("nan")] * 3)) != percentile_interval(values)
    low, high = proportion_interval(45, 50)
    assert low < 0.9 < high and low > 0.75
    assert binomial_p(45, 50, 0.5) < 1e-6 < binomial_p(27, 50, 0.5)


def test_bootstrap_effects_centre_on_the_scores_and_pair_two_sets(shapes32):
    """The bootstrap of an effect brackets the pooled estimate, and two sets edited on the
    same seeds are resampled alike: the pullback direction's dominant effect stays above
    the random directions' mean on that factor in (nearly) every paired resample."""
    strengths, seeds = [-2.0, 0.0, 2.0], list(range(100, 108))
    out = {}
    for name, ds in {
        "pullback": wb.discover("pullback", shapes32, k=1, max_iter=20),
        "random": wb.discover("random", shapes32, k=3, space="x", seed=3),
    }.items():
        edits = edits_with_reference(shapes32, ds, range(len(ds)), strengths, seeds,
                                     num_steps=10, progress=False)  # fmt: skip
        scores = score_edits(shapes32, edits, strengths, [ds.name(i) for i in range(len(ds))])
        boot = bootstrap_effects(shapes32, edits, strengths, n_boot=400)
        assert boot.shape == (400, len(ds), len(scores.factors))
        for i in range(len(ds)):
            j = int(scores.effect[i].argmax())
            low, high = percentile_interval(boot[:, i, j])
            assert low <= float(scores.effect[i, j]) <= high
        out[name] = (scores, boot)
    (p, pboot), (r, rboot) = out["pullback"], out["random"]
    j = int(p.effect[0].argmax())
    assert float(p.effect[0, j]) > 2 * float(r.effect[:, j].mean())
    ratio = pboot[:, 0, j] / rboot[:, :, j].mean(1).clamp_min(1e-12)
    assert float((ratio > 1).float().mean()) > 0.95


def test_reusing_freed_memory_stops_pages_faulting_in_again():
    """With the workbench allocator a large block freed and allocated again reuses its
    pages; with glibc's own (``WORKBENCH_ALLOCATOR=system``) each allocation maps fresh
    pages that fault in again."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    script = textwrap.dedent("""
        import resource, sys
        import torch
        import workbench.settings as settings
        print(settings.reuse_freed_memory())
        x = torch.ones(64 * 2**20 // 4); del x  # 64 MiB, above glibc's mmap threshold
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            x = torch.ones(64 * 2**20 // 4); del x
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    faults = {}
    for name in ("system", "reuse"):
        env = {**os.environ, "WORKBENCH_ALLOCATOR": name}
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
        )
        reusing, count = out.stdout.split()
        assert reusing == str(name == "reuse")
        faults[name] = int(count)
    pages = 5 * 64 * 2**20 // 4096  # every page of every allocation
    assert faults["system"] > 0.8 * pages and faults["reuse"] < 0.3 * pages
