"""How much memory a computation may take, and how much a piece of it takes.

:func:`free_bytes` reads what a device has free (CUDA: the driver's free memory plus what
torch's caching allocator holds unused; Apple MPS: the recommended working set less what
the driver holds; CPU: the kernel's ``MemAvailable``). :class:`TensorBytes` counts the
bytes of the tensors created while it is active, the highest total alive at once and what
is still alive at the end, on any device and under ``torch.func`` transforms (vmap, jvp,
vjp): it sees every operator call below them, so a batched call is counted at its real
size. It counts tensor storage only, not an allocator's rounding or a library's
workspace, so budgets keep a margin (:data:`MARGIN`).

:func:`chunk_for` turns a measured cost (bytes that do not depend on the number of
columns, bytes per column) and a budget into the most columns per pass that fit.
:func:`checkpointed` trades time for memory in a reverse-mode pass: within it a
module's forward keeps only its inputs and runs again when the backward pass reaches it
(activation checkpointing).
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.checkpoint import checkpoint

from workbench.errors import WorkbenchError

#: The share of a memory budget left unused: the allocator's rounding and fragmentation
#: and the kernels' workspaces, which :class:`TensorBytes` does not see. On an H100, SD-1.5
#: bases peaked (``torch.cuda.max_memory_allocated``) at 1.19x (k = 8, one pass) and 1.24x
#: (k = 50, 8 columns per pass) of what the count gives for them on a CPU, weights
#: included: 80% of the free memory by the count is 95-99% of it there.
MARGIN = 0.2
GIB = 2**30


def free_bytes(device: torch.device | str) -> int | None:
    """Bytes the process can still allocate on ``device``, or None where that is not known
    (then nothing is bounded by it)."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return int(free + cached)
    if device.type == "mps":
        mps = torch.mps
        return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
    if device.type == "cpu":
        return _mem_available()
    return None


def _mem_available() -> int | None:
    """Linux's estimate of the memory available to new allocations without swapping."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


class TensorBytes(TorchDispatchMode):
    """Counts the bytes of the tensors created while active (a context manager).

    Attributes:
        peak: the most bytes alive at once, of tensors created inside.
        held: the bytes of those still alive when it was last read.

    A tensor's storage is counted once however many views share it; storages that
    existed before (the model's weights, inputs) are not counted, also where an
    operator returns a view of one (a linear layer's transposed weight) or writes into
    one, nor torch's zero tensors (which hold no memory), nor tensors without a plain
    storage (sparse ones).
    """

    def __init__(self) -> None:
        super().__init__()
        self._alive: dict[int, int] = {}
        self.held = 0
        self.peak = 0

    def _seen(self, tensor: torch.Tensor, given: set[int]) -> None:
        if tensor._is_zerotensor() or tensor.is_meta:
            return
        storage = _storage(tensor)
        if storage is None:
            return
        key = storage._cdata
        if key in self._alive or key in given:  # a view or an in-place result: not new
            return
        size = storage.nbytes()
        self._alive[key] = size
        self.held += size
        self.peak = max(self.peak, self.held)
        weakref.finalize(storage, self._freed, key)

    def _freed(self, key: int) -> None:
        size = self._alive.pop(key, None)
        if size is not None:
            self.held -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        aliased = _aliased(func)
        if aliased == "all":  # views, in-place and out= results: an operand's storage
            return out
        given: set[int] = set()  # the operands' storages, which existed before the call
        if aliased == "some":
            tree_map_only(torch.Tensor, lambda t: _add_storage(t, given), (args, kwargs))
        tree_map_only(torch.Tensor, lambda t: self._seen(t, given), out)
        return out


@functools.cache
def _aliased(func: Any) -> str:
    """Which of the operator's results share an operand's storage, by its schema:
    ``"all"`` (a view, an in-place or out= operator), ``"some"`` or ``"none"``."""
    shared = [r.alias_info is not None for r in func._schema.returns]
    return "all" if shared and all(shared) else "some" if any(shared) else "none"


def _storage(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """The tensor's storage; None for sparse and other layouts without a plain one."""
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _add_storage(tensor: torch.Tensor, keys: set[int]) -> None:
    storage = None if tensor._is_zerotensor() or tensor.is_meta else _storage(tensor)
    if storage is not None:
        keys.add(storage._cdata)


def chunk_for(
    width: int, fixed: int, per_column: int, budget: int, what: str = "the passes"
) -> int:
    """The most of ``width`` columns per pass whose cost ``fixed + n * per_column`` bytes
    fits ``budget``; a one-line error naming ``what`` when not even one does."""
    room = budget - fixed
    if room < per_column:
        raise WorkbenchError(
            f"{what} need about {gib(fixed + per_column)} even one column at a time, and "
            f"{gib(budget)} is available: free memory, give a larger memory budget, use "
            "fewer samples at once, or load the model in bfloat16"
        )
    return max(1, min(width, math.floor(room / max(per_column, 1))))


@contextlib.contextmanager
def checkpointed(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, a forward pass through each of ``modules`` keeps for autograd
    only what the module was given, and its backward pass runs the module's forward
    again first (torch's non-reentrant ``checkpoint``): a reverse-mode pass then holds
    one module's activations at a time instead of all of them, for one more forward pass
    of each module per backward pass. Not for ``torch.func.vjp``, which refuses it (run
    the backward pass with ``torch.autograd.grad``). The modules' own ``forward`` come
    back on exit, also after an exception; graphs built inside keep working after it."""
    patched: list[tuple[nn.Module, Any]] = []
    try:
        for module in modules:
            own = module.__dict__.get("forward")  # an instance's forward set before ours
            module.forward = functools.partial(checkpoint, module.forward, use_reentrant=False)
            patched.append((module, own))
        yield
    finally:
        for module, own in reversed(patched):
            if own is None:
                del module.forward
            else:
                module.forward = own


def gib(n: int) -> str:
    """``n`` bytes in GiB (MiB below one GiB), for messages."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"
