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


def _entry(tmp_path):
    import torch

    from workbench.store import Cache, cache_key

    cache = Cache(tmp_path)
    key = cache_key(kind="test", t=3)
    tensors = {"V": torch.randn(2, 3, 4), "s": torch.rand(2), "n": torch.arange(4)}
    cache.put(key, tensors, {"t": 3})
    return cache, key, tensors


def _corruptions():
    """Ways an entry can change on disk, each a function (cache, key, tensors) -> None."""

    from workbench.store import load_tensors, save_tensors

    def flip(cache, key, tensors):
        data = bytearray(cache.path(key).read_bytes())
        data[-5] ^= 0xFF  # a byte of the last tensor's data
        cache.path(key).write_bytes(bytes(data))

    def nans(cache, key, tensors):  # same metadata (its checksum too), NaNs written
        saved, meta = load_tensors(cache.path(key))
        saved["V"][0, 0, 0] = float("nan")
        save_tensors(cache.path(key), saved, meta)

    def swapped(cache, key, tensors):
        saved, meta = load_tensors(cache.path(key))
        saved["V"], saved["s"] = saved["s"], saved["V"]
        save_tensors(cache.path(key), saved, meta)

    def reshaped(cache, key, tensors):
        saved, meta = load_tensors(cache.path(key))
        saved["V"] = saved["V"].reshape(3, 2, 4).contiguous()
        save_tensors(cache.path(key), saved, meta)

    def foreign(cache, key, tensors):  # another key's entry copied under this name
        other = "0" * 24
        cache.put(other, {k: v + 1 for k, v in tensors.items()}, {"t": 3})
        cache.path(key).write_bytes(cache.path(other).read_bytes())

    def unstamped(cache, key, tensors):  # written without a checksum (an older version)
        save_tensors(cache.path(key), {k: v.clone() for k, v in tensors.items()}, {"t": 3})

    def truncated(cache, key, tensors):
        data = cache.path(key).read_bytes()
        cache.path(key).write_bytes(data[: len(data) // 2])

    return {f.__name__: f for f in (flip, nans, swapped, reshaped, foreign, unstamped, truncated)}


@pytest.mark.parametrize("how", sorted(_corruptions()))
def test_the_cache_never_serves_a_changed_entry(how, tmp_path):
    """Flipped bytes, NaNs, swapped or reshaped tensors, another key's entry, an entry
    without a checksum, a truncated file: one warning, the entry removed, None (so the
    caller recomputes); an intact entry is served as stored."""
    import torch

    cache, key, tensors = _entry(tmp_path)
    got, meta = cache.get(key)
    assert meta == {"t": 3} and all(torch.equal(got[k], v) for k, v in tensors.items())
    _corruptions()[how](cache, key, tensors)
    with pytest.warns(UserWarning, match="recomputing") as caught:
        assert cache.get(key) is None
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert not cache.path(key).exists()


def test_a_corrupted_basis_or_bank_is_recomputed_not_served(tmp_path):
    """The engines' and the demo's entries: a pullback basis and a trajectory bank with
    flipped bytes give, on the next run, the fresh result (and one warning each)."""
    import torch

    import workbench as wb
    from workbench.store import Cache

    model = wb.load("tiny-test", device="cpu")
    cache = Cache(tmp_path)
    options = dict(k=2, num_steps=5, max_iter=3, cache=cache)
    fresh = wb.discover("pullback", model, **options)
    bank = wb.trajectory_bank(model, n=2, num_steps=5, cache=cache)
    for path in cache.root.glob("*.safetensors"):
        data = bytearray(path.read_bytes())
        data[-9] ^= 0x55
        path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        again = wb.discover("pullback", model, **options)
    assert torch.equal(again.vectors, fresh.vectors)
    with pytest.warns(UserWarning, match="does not match its checksum"):
        rebuilt = wb.trajectory_bank(model, n=2, num_steps=5, cache=cache)
    assert torch.equal(rebuilt.sampled, bank.sampled)
