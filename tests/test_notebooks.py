"""Every notebook in notebooks/ runs top to bottom (outputs are not kept in git)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert QUICK <= names and len(names) >= 6, names


#: The quick start runs in the default test run; the others (a few minutes each) are
#: ``slow`` and run in CI's own step (``pytest -m slow``).
QUICK = {"01_quickstart.ipynb"}
#: Plotly figures each notebook shows at least (default 3).
MIN_FIGURES = {"01_quickstart.ipynb": 6, "06_comparison.ipynb": 1}


@pytest.mark.parametrize(
    "path",
    [p if p.name in QUICK else pytest.param(p, marks=pytest.mark.slow) for p in NOTEBOOKS],
    ids=[p.name for p in NOTEBOOKS],
)
def test_notebook_runs_and_is_committed_without_outputs(path):
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    figures = [
        o for c in code for o in c.outputs if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    # the notebooks show plotly figures, rendered as plotly JSON
    assert len(figures) >= MIN_FIGURES.get(path.name, 3)
