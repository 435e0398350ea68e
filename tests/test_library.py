"""Direction combinations and the direction library: round trips, refusals, bit-exact reuse."""

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.library import DirectionLibrary, NamedDirection


def test_combine_is_the_weighted_sum(tiny):
    dirs = wb.discover("random", tiny, k=3, seed=5)
    c = [1.5, -2.0, 0.5]
    unit, strength = dirs.combine(c)
    expected = sum(ci * dirs.vectors[i] for i, ci in enumerate(c))
    assert len(unit) == 1 and unit.engine == dirs.engine and unit.timestep == dirs.timestep
    assert torch.allclose(strength * unit.vectors[0], expected, atol=1e-6)
    assert unit.params["combination"] == c
    # nearly orthogonal random directions in 768 dimensions: strength ~ |c|
    assert abs(strength - float(torch.tensor(c).norm())) < 0.2
    # one non-zero coefficient: that direction itself (bit for bit) and a signed strength
    one, s = dirs.combine([0.0, -2.5, 0.0])
    assert torch.equal(one.vectors[0], dirs.vectors[1]) and s == -2.5
    assert one.name(0) == dirs.name(1)
    with pytest.raises(wb.WorkbenchError, match="combination is zero"):
        dirs.combine([0, 0, 0])
    with pytest.raises(wb.WorkbenchError, match="2 coefficients for 3 directions"):
        dirs.combine([1, 2])
    with pytest.raises(wb.WorkbenchError, match="NaN"):
        dirs.combine([1, float("nan"), 0])


def test_combined_edit_equals_editing_along_each_direction_at_once(tiny):
    """Two directions at strengths a, b: the same x_t perturbation as a v0 + b v1."""
    dirs = wb.discover("random", tiny, k=2, seed=1)
    unit, strength = dirs.combine([2.0, -1.0])
    combined = wb.edit(tiny, unit, 0, [strength], seeds=[3], num_steps=10).images[0]
    x_step = tiny.preset.x_step
    t = dirs.timestep

    def hook(step):
        if step.t == t:
            step.x = step.x + x_step * (2.0 * dirs.vectors[0] - 1.0 * dirs.vectors[1])

    grid = wb.make_timesteps(tiny, 10, include=[t])
    by_hand = wb.run_chain(tiny, tiny.noise([3]), grid, edit=hook)
    assert torch.allclose(combined, by_hand, atol=1e-4)


def test_library_round_trip_list_and_refusals(tiny, other_tiny, tmp_path):
    library = DirectionLibrary(tmp_path / "lib")
    assert library.names() == [] and "no directions" in library.table()
    unit, strength = wb.discover("random", tiny, k=2).combine([1.0, 1.0])
    named = NamedDirection("bigger-left", unit, strength, num_steps=10, note="test")
    library.save(named)
    assert library.names() == ["bigger-left"] and "bigger-left" in library
    back = library.load("bigger-left", tiny)
    assert torch.equal(back.directions.vectors, unit.vectors)
    assert back.strength == strength and back.num_steps == 10 and back.note == "test"
    assert back.directions.params["combination"] == [1.0, 1.0] and back.created
    row = library.entries()[0]
    assert row["engine"] == "random" and row["model_fingerprint"] == tiny.fingerprint
    assert "bigger-left" in library.table()
    with pytest.raises(wb.WorkbenchError, match="already exists"):
        library.save(named)
    library.save(NamedDirection("bigger-left", unit, 2 * strength), overwrite=True)
    assert library.load("bigger-left").strength == pytest.approx(2 * strength)
    with pytest.raises(wb.FingerprintMismatch, match="fingerprint mismatch"):
        library.load("bigger-left", other_tiny)
    with pytest.raises(wb.WorkbenchError, match="no direction 'nope'.*known: bigger-left"):
        library.load("nope")
    for bad in ["", "../up", "a b", ".hidden", "x" * 101]:
        with pytest.raises(wb.WorkbenchError, match="bad direction name"):
            library.path(bad)
    with pytest.raises(wb.WorkbenchError, match="holds one direction"):
        NamedDirection("two", wb.discover("random", tiny, k=2), 1.0)
    with pytest.raises(wb.WorkbenchError, match="unknown edit mode"):
        NamedDirection("m", unit, 1.0, mode="nope")
    with pytest.raises(wb.WorkbenchError, match="finite"):
        NamedDirection("m", unit, float("inf"))
    library.remove("bigger-left")
    assert library.names() == []
    assert [p.name for p in (tmp_path / "lib").iterdir()] == []


def test_failed_save_leaves_nothing(tiny, tmp_path, monkeypatch):
    import workbench.store as store

    def broken(*args, **kwargs):
        raise OSError("disk full")

    unit = wb.discover("random", tiny, k=1)
    monkeypatch.setattr(store, "save_file", broken)
    with pytest.raises(OSError):
        DirectionLibrary(tmp_path).save(NamedDirection("d", unit, 1.0))
    assert list(tmp_path.iterdir()) == []


def test_saved_direction_reproduces_the_edit_bit_for_bit(shapes32, tmp_path, capsys):
    """Save a combination, reload it in a new library object and through the CLI: the
    same images, bit for bit (eta 0)."""
    dirs = wb.discover("random", shapes32, k=2, seed=7)
    unit, strength = dirs.combine([2.0, -1.5])
    seeds = [0, 1, 2]
    shown = wb.edit(shapes32, unit, 0, [strength], seeds=seeds, num_steps=20)
    DirectionLibrary(tmp_path).save(NamedDirection("combo", unit, strength, num_steps=20))

    again = DirectionLibrary(tmp_path).load("combo", shapes32).apply(shapes32, seeds=seeds)
    assert torch.equal(again.images, shown.images)

    out = tmp_path / "apply.npz"
    argv = ["library", "apply", "combo", "--library", str(tmp_path), "--seeds", "0-2"]
    assert main([*argv, "--out", str(out)]) == 0
    saved = np.load(out)["images"]
    assert np.array_equal(saved, shown.uint8().numpy())
    assert main(["library", "list", "--library", str(tmp_path)]) == 0
    assert "combo" in capsys.readouterr().out
    assert main(["library", "apply", "nope", "--library", str(tmp_path), "--out", "x.npz"]) == 2
    assert "no direction 'nope'" in capsys.readouterr().err
