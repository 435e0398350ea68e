import pytest
import torch

import workbench as wb
from workbench.directions import DirectionSet
from workbench.store import save_tensors


def test_random_directions_are_unit_seeded_and_typed(tiny):
    ds = wb.discover("random", tiny, k=5, space="x", seed=3)
    assert ds.shape == tiny.sample_shape and len(ds) == 5
    torch.testing.assert_close(ds.vectors.flatten(1).norm(dim=1), torch.ones(5))
    assert torch.equal(ds.vectors, wb.discover("random", tiny, k=5, space="x", seed=3).vectors)
    assert not torch.equal(ds.vectors, wb.discover("random", tiny, k=5, space="x", seed=4).vectors)
    h = wb.discover("random", tiny, k=2, space="h", form="channel")
    assert h.shape == (32,) and h.timestep == tiny.preset.h_window
    full = h.vector(0, tiny)
    assert full.shape == tiny.h_shape
    assert abs(float(full.norm()) - 1.0) < 1e-5


def test_round_trip_is_exact(tiny, tmp_path):
    ds = wb.discover("random", tiny, k=3, space="h", seed=1)
    ds.labels = ["a", "b", "c"]
    path = ds.save(tmp_path / "d.safetensors")
    back = DirectionSet.load(path, model=tiny)
    assert torch.equal(back.vectors, ds.vectors)
    assert torch.equal(back.scores, ds.scores)
    assert back.timestep == ds.timestep and back.labels == ds.labels and back.params == ds.params
    assert [p.name for p in tmp_path.iterdir()] == ["d.safetensors"]


def test_load_refuses_another_model(tiny, other_tiny, tmp_path):
    path = wb.discover("random", tiny, k=2).save(tmp_path / "d.safetensors")
    with pytest.raises(wb.FingerprintMismatch, match="fingerprint mismatch"):
        DirectionSet.load(path, model=other_tiny)


def test_shape_mismatch_and_bad_vectors_are_refused(tiny, tmp_path):
    wrong = DirectionSet(torch.randn(2, 3, 8, 8), "x", 500, "random", tiny.fingerprint)
    with pytest.raises(wb.WorkbenchError, match="do not fit"):
        wrong.check_model(tiny)
    with pytest.raises(wb.WorkbenchError, match="NaN"):
        DirectionSet(torch.full((1, 3), float("nan")), "h", 500, "x", "f")
    with pytest.raises(wb.WorkbenchError, match="zero norm"):
        DirectionSet(torch.zeros(1, 3), "h", 500, "x", "f")
    with pytest.raises(wb.WorkbenchError, match="window"):
        DirectionSet(torch.ones(1, 3, 16, 16), "x", (900, 500), "x", "f")
    save_tensors(tmp_path / "other.safetensors", {"a": torch.ones(2)}, {"format": "else"})
    with pytest.raises(wb.WorkbenchError, match="not a DirectionSet"):
        DirectionSet.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(wb.WorkbenchError, match="not a readable"):
        DirectionSet.load(tmp_path / "junk.safetensors")


def test_failed_save_leaves_nothing(tiny, tmp_path, monkeypatch):
    import workbench.store as store

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "save_file", broken)
    with pytest.raises(OSError):
        wb.discover("random", tiny, k=2).save(tmp_path / "d.safetensors")
    assert list(tmp_path.iterdir()) == []
