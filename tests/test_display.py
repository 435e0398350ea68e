"""Results show a short summary in a notebook cell and a terminal, never their tensors."""

import dataclasses

import pytest

import workbench as wb
from workbench.probes import PROBES, ProbeResult

#: Small options for each built-in probe on tiny-test.
SMALL = {
    "norm": {"n": 8, "num_steps": 4},
    "mixing-step": {"n": 8, "num_steps": 4},
    "curvedness": {"n": 2, "points": 3, "timesteps": [801], "num_steps": 4},
    "spectrum": {"n": 1, "k": 2, "timesteps": [999], "num_steps": 4, "hutchinson": 2},
    "consistency": {"n": 2, "k": 2, "timesteps": [801], "num_steps": 4},
    "umap": {"n": 8, "num_steps": 4, "umap_neighbors": 4, "neighbours_count": 3},
}


def _short(text: str, limit: int = 400) -> None:
    assert "tensor(" not in text and "\n" not in text and len(text) < limit, text


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_probe_result_says_what_it_found_in_one_line(tiny, name):
    result = wb.probe(name, tiny, progress=False, **SMALL[name])
    summary = result.summary()
    assert type(result).summary is not ProbeResult.summary  # its own finding
    _short(repr(result))
    head = summary.splitlines()[0]
    assert repr(result).startswith(f"<{type(result).__name__}: {head}")
    html = result._repr_html_()
    assert head.split(":")[0] in html and "<details>" in html and "tensor(" not in html
    assert len(html) < 4000  # today's dataclass repr of a probe: 2,600-20,000 characters


def test_every_builtin_probe_is_covered_here():
    assert {n for n, p in PROBES.items() if p.__module__.startswith("workbench.")} <= set(SMALL)


def test_direction_sets_and_edits_summarise_themselves(tiny):
    dirs = wb.discover("pca", tiny, k=3, n=6, num_steps=4, progress=False)
    text = repr(dirs)
    _short(text)
    assert "3 pca directions in h" in text and dirs.score_name in text
    assert "wb.edit" in dirs._repr_html_()
    result = wb.edit(tiny, dirs, 1, [-1.0, 0.0, 1.0], seeds=[0, 1], num_steps=4)
    text = repr(result)
    _short(text)
    assert dirs.name(1) in text and "-1, 0, 1" in text and "[3, 2, " in text


def test_a_probe_registered_elsewhere_still_has_a_summary():
    @dataclasses.dataclass(repr=False)
    class Plain(ProbeResult):
        name = "plain"
        values: list

    text = repr(Plain(values=[1.0] * 50))
    _short(text)
    assert "plain: values 50 values" in text
