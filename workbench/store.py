"""Results on disk: safetensors + JSON metadata, atomic writes, a fingerprint-keyed cache.

Every writer goes through :func:`atomic_path`: the data is written to a temporary file in
the target folder and renamed over the target only when complete, so an interrupted or
failing write never leaves a half-written result behind.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workbench._version import __version__
from workbench.errors import WorkbenchError

META_KEY = "workbench"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _plain_mode(path: Path, folder: bool = False) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries: give the result the mode a
    plain ``open``/``mkdir`` would have under the current umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


#: Temporary files and folders of a write older than this are orphans of a killed writer.
STALE_SECONDS = 3600.0


def clean_orphans(path: str | Path, older_than: float = STALE_SECONDS) -> int:
    """Remove what killed writers of ``path`` left beside it (``.NAME.*.tmp`` files or
    folders and ``.NAME.*.old`` folders) once older than ``older_than`` seconds, so that
    a write in progress elsewhere is left alone; how many went."""
    path = Path(path)
    removed = 0
    now = time.time()
    with contextlib.suppress(OSError):
        for pattern in (f".{glob.escape(path.name)}.*.tmp", f".{glob.escape(path.name)}.*.old"):
            for orphan in path.parent.glob(pattern):
                with contextlib.suppress(OSError):
                    if now - orphan.lstat().st_mtime <= older_than:
                        continue
                    if orphan.is_dir() and not orphan.is_symlink():
                        shutil.rmtree(orphan)
                    else:
                        orphan.unlink()
                    removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds
    (orphans of earlier killed writes to ``path`` are removed first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _plain_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` if the block succeeds
    (orphans of earlier killed writes to ``path`` are removed first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _plain_mode(tmp, folder=True)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def write_lock(path: str | Path, what: str = "") -> Iterator[None]:
    """Hold the write lock of ``path`` for the block: a second writer of the same path (in
    any process of this user on this machine) is refused in one line while the first holds
    it. The lock is an ``flock`` on a file named by the path's hash in a private folder of
    the temporary directory (nothing is written beside ``path``); a killed holder's lock
    is released by the system. ``what`` names the path in the error (e.g. ``--out``)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        yield
        return
    target = os.path.realpath(path)
    folder = Path(tempfile.gettempdir()) / f"workbench-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    lock = folder / f"{hashlib.sha256(target.encode()).hexdigest()[:32]}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            named = f"{what} {str(path)!r}" if what else repr(str(path))
            raise WorkbenchError(
                f"{named} is being written by another workbench run (pid {holder}): wait "
                "for it to finish or choose another path"
            ) from None
        try:  # the file its previous holder removed meanwhile is no lock: take the new one
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> Path:
    """Write tensors to a ``.safetensors`` file with ``metadata`` as JSON, atomically."""
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {META_KEY: json.dumps(metadata, default=_json_default)}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=meta)
    return Path(path)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`: (tensors, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise WorkbenchError(
            f"{path}: not a readable safetensors file ({type(exc).__name__})"
        ) from exc
    if META_KEY not in raw:
        raise WorkbenchError(f"{path}: not a workbench file (no '{META_KEY}' metadata)")
    try:
        return tensors, json.loads(raw[META_KEY])
    except ValueError:
        raise WorkbenchError(f"{path}: its '{META_KEY}' metadata is not valid JSON") from None


def save_npz(path: str | Path, **arrays: Any) -> Path:
    """Write a ``.npz`` atomically (the name is kept as given)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return Path(path)


def cache_key(**parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (fingerprint, engine, parameters,
    and whatever else changes the result) and of the package version."""
    text = json.dumps(parts | {"_version": __version__}, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


#: The metadata field of a cache entry's checksum.
CHECKSUM = "cache_checksum"


def checksum(key: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a cache key and its tensors: names, dtypes, shapes and bytes, in name
    order (what :class:`Cache` checks an entry against on every read)."""
    digest = hashlib.sha256(key.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def as_cache(value: Any) -> Cache | None:
    """The cache a ``cache=`` argument names: None or True the user's, False none, a
    :class:`Cache` itself, a folder path a cache in that folder; anything else refused."""
    if value is None or value is True:
        return Cache()
    if value is False:
        return None
    if isinstance(value, Cache):
        return value
    if isinstance(value, str | os.PathLike) and str(value):
        return Cache(value)
    raise WorkbenchError(
        "cache must be a workbench.store.Cache, a folder, None (the user's cache) or False "
        f"(none), got {type(value).__name__} {value!r}"[:200]
    )


class Cache:
    """Expensive results on disk, keyed by :func:`cache_key`.

    The folder defaults to ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``. The cache never
    fails a run and never serves what it did not store: each entry carries a checksum of
    its key and tensors (names, dtypes, shapes, bytes), checked on every read; an entry
    that is unreadable (corrupt, truncated), changed on disk (bytes flipped, NaNs written,
    a tensor swapped), copied under another key, or from a version without checksums is
    reported in one warning, removed and recomputed; an unwritable or full folder is
    reported and the result returned uncached; temporary files that a killed writer left
    behind are removed once they are older than :attr:`STALE_SECONDS`.
    """

    STALE_SECONDS = STALE_SECONDS

    def __init__(self, root: str | Path | None = None) -> None:
        default = os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")
        self.root = Path(root or default)

    def path(self, key: str) -> Path:
        """The file of cache entry ``key``."""
        return self.root / f"{key}.safetensors"

    def get(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Tensors and metadata of entry ``key``; None if missing (corrupt ones removed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensors, metadata = load_tensors(path)
        except (WorkbenchError, OSError, ValueError) as exc:
            return self._drop(path, f"is unreadable ({exc})")
        stored = metadata.pop(CHECKSUM, None) if isinstance(metadata, dict) else None
        if stored is None or stored != checksum(key, tensors):
            return self._drop(path, "does not match its checksum (changed on disk, or not ours)")
        return tensors, metadata

    @staticmethod
    def _drop(path: Path, why: str) -> None:
        """Warn once, remove the entry, and report it missing (it is then recomputed)."""
        warnings.warn(f"cache entry {path} {why}: recomputing", stacklevel=3)
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def put(
        self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> Path | None:
        """Store an entry; None (with a warning) if the cache cannot be written."""
        self.clean()
        try:
            stamped = {**metadata, CHECKSUM: checksum(key, tensors)}
            return save_tensors(self.path(key), tensors, stamped)
        except OSError as exc:
            warnings.warn(f"could not cache the result in {self.root} ({exc})", stacklevel=2)
            return None

    def clean(self) -> int:
        """Remove temporary files older than :attr:`STALE_SECONDS`; how many went."""
        removed = 0
        with contextlib.suppress(OSError):
            now = time.time()
            for tmp in self.root.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    if now - tmp.stat().st_mtime > self.STALE_SECONDS:
                        tmp.unlink()
                        removed += 1
        return removed
