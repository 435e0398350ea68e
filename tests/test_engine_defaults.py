"""Each engine's defaults hold from the command line: discover with no options, edit as
``workbench edit`` does with no mode, index or strengths, scored with the read-out
(analysis/engine_defaults.py). The boundary engine's are checked in tests/test_boundary.py
(its edit moves x_t to a signed distance; its control is a random move of that length)."""

from __future__ import annotations

import pytest
from analysis_scripts import load_script


def _script():
    return load_script("engine_defaults")


@pytest.mark.parametrize(
    ("name", "engine"),
    # each on the bundled model where its space acts: x on shapes32, h on shapes64; the
    # shapes64 checks take 5-12 min each on 2 cores, so they are `long` (not in CI)
    [
        pytest.param("shapes32", "pullback", marks=pytest.mark.slow),
        pytest.param("shapes64", "attention", marks=pytest.mark.long),
        pytest.param("shapes64", "pca", marks=pytest.mark.long),
    ],
)
def test_the_default_edit_moves_a_factor_and_keeps_the_images_valid(name, engine, request):
    """Direction 0 of the default set at the default strengths moves its dominant factor
    at least twice as much as random directions where it acts (same space, form, timestep
    or window, same strengths), and at least 90% of its edited images stay valid."""
    check = _script().check_defaults(request.getfixturevalue(name), engine)
    assert check.ratio >= 2.0 and check.validity >= 0.9, check.summary()


@pytest.mark.slow
def test_the_default_local_edit_is_local_and_keeps_the_images_valid(shapes32):
    """LOCO-Edit's default set (a box in the centre) changes the image where it changes it
    most, more so than random x directions at the same step and strengths, and keeps at
    least 90% of the images valid. (It moves no single factor past random ones on shapes32:
    docs/findings.md, "Local edits".)"""
    check = _script().check_defaults(shapes32, "local")
    ours, random = check.locality
    assert ours > random and check.validity >= 0.9, check.summary()
