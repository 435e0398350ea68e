"""analysis/claims.py: the table of the seed papers' claims (docs/claims.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from analysis_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "analysis" / "claims.py"


def _claims():
    return load_script("claims")


def test_the_docs_table_is_the_one_the_committed_runs_give():
    """docs/claims.md shows the committed runs' numbers and verdicts, unedited: its table is
    what ``--docs`` writes from docs/measurements/claims_*.json."""
    claims = _claims()
    records = [
        json.loads((ROOT / "docs" / "measurements" / f"claims_{m}.json").read_text())
        for m in ("shapes32", "shapes64")
    ]
    text = (ROOT / "docs" / "claims.md").read_text()
    shown = text.split(claims.BEGIN, 1)[1].split(claims.END, 1)[0]
    assert shown.strip() == claims.table(records).strip()
    for record in records:
        assert "--quick" not in record["command"]
        assert {r["verdict"] for r in record["rows"]} <= set(claims.VERDICTS)
        assert len(record["rows"]) == 10


def test_write_docs_replaces_only_the_table(tmp_path):
    claims = _claims()
    record = {
        "model": "m", "command": "python analysis/claims.py --model m", "seconds": 60.0,
        "rows": [{"key": "a", "claim": "A | claim", "test": "t", "rule": "r",
                  "verdict": "holds", "evidence": "e"}],
    }  # fmt: skip
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{claims.BEGIN}\nSTALE\n{claims.END}\noutro\n")
    claims.write_docs(str(page), [record])
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "STALE" not in text
    assert "A / claim" in text and "**holds**: e" in text  # a | in a cell would split it
    page.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        claims.write_docs(str(page), [record])


@pytest.mark.slow
def test_quick_run_on_shapes32_gives_every_row_a_verdict(tmp_path):
    """``--quick`` on shapes32 (about a minute): every row, a verdict each; the rows that
    hold on shapes32 at any size hold here too (the boundary edit moves size, straight x_t
    segments bend in h, the attention directions are found and applied faster than the
    pullback ones), and the attention directions of shapes32's mute h are not called an
    effect."""
    out = tmp_path / "claims.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "shapes32", "--quick", "--out", str(out)],
        check=True, cwd=ROOT, env={**os.environ, "WORKBENCH_PROGRESS": "0"},
    )  # fmt: skip
    record = json.loads(out.read_text())
    rows = {r["key"]: r for r in record["rows"]}
    assert len(rows) == 10
    assert all(r["verdict"] in _claims().VERDICTS for r in rows.values())
    assert rows["one-step-edit"]["verdict"] == "holds"
    assert rows["curved"]["verdict"] == "holds"
    assert rows["attention-time"]["numbers"]["ratio"] < 1
    assert rows["attention-robust"]["verdict"] == "does not hold"
