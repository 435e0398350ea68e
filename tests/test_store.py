import pytest

from workbench.store import Cache, atomic_dir, atomic_path, cache_key, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "run"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_cache_key_and_cache(tmp_path):
    import torch

    assert cache_key(a=1, b=[1, 2]) == cache_key(b=[1, 2], a=1)
    assert cache_key(a=1) != cache_key(a=2)
    cache = Cache(tmp_path)
    key = cache_key(model="f", t=3)
    assert cache.get(key) is None
    cache.put(key, {"v": torch.arange(3.0)}, {"t": 3})
    tensors, meta = cache.get(key)
    assert tensors["v"].tolist() == [0.0, 1.0, 2.0] and meta == {"t": 3}
    write_json(tmp_path / "x.json", {"v": torch.ones(2)})
    assert (tmp_path / "x.json").read_text().count("1.0") == 2


def test_atomic_writes_get_the_modes_of_plain_writes(tmp_path):
    import os
    import stat

    from workbench.store import atomic_dir, write_text

    mask = os.umask(0o022)
    try:
        f = write_text(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
