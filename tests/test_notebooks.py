"""Every notebook in notebooks/ runs top to bottom (outputs are not kept in git)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
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
    assert len(figures) >= 3  # the notebooks show plotly figures, rendered as plotly JSON
