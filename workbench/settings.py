"""Package-wide switches.

``progress``: show ``tqdm`` progress bars (default on; ``WORKBENCH_PROGRESS=0`` turns them off).

``allocator``: ``"reuse"`` (default) or ``"system"`` (``WORKBENCH_ALLOCATOR=system``). On
Linux with glibc, :func:`reuse_freed_memory` runs when a model is first loaded onto the CPU:
glibc hands every freed block over 32 MiB back to the system, so each large activation of a
CPU forward pass is a fresh mapping whose pages fault in (zeroed) again, step after step;
keeping freed memory in the process's heap instead made sampling on ``shapes64`` 1.17x
faster on two cores with 1/29 of the page faults and the same peak
(``python analysis/bench_allocator.py``, docs/measurements/bench_allocator_shapes64_cpu.txt).
The setting is process-wide; ``"system"`` leaves glibc's behaviour alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

progress: bool = os.environ.get("WORKBENCH_PROGRESS", "1") not in ("0", "false", "False")
allocator: str = os.environ.get("WORKBENCH_ALLOCATOR", "reuse")

#: glibc's ``mallopt`` parameters (malloc.h) and the heap size above which freed memory at
#: the top of the heap goes back to the system.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
TRIM_BYTES = 1 << 28
_reusing = False


def show_progress(progress: bool | None) -> bool:
    """Whether to show a progress bar: ``progress`` if given, else the package setting."""
    return globals()["progress"] if progress is None else progress


def reuse_freed_memory() -> bool:
    """Keep memory the process frees for its next allocations (glibc: no allocation by
    ``mmap``, the heap trimmed only above :data:`TRIM_BYTES`); returns whether the process
    now does. A no-op where ``allocator`` is ``"system"`` or the C library is not glibc."""
    global _reusing
    if _reusing or allocator != "reuse" or not sys.platform.startswith("linux"):
        return _reusing
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _reusing = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    return _reusing


def release_freed_memory() -> None:
    """Hand the memory the process holds free back to the system (glibc's ``malloc_trim``),
    where :func:`reuse_freed_memory` keeps it: between the stages of a long run, so that one
    stage's free heap does not add to the next one's peak."""
    if _reusing:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
