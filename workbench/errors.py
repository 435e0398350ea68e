"""Errors raised on bad input.

Every error a user can cause by passing bad input is a :class:`WorkbenchError` with a
one-line message that names the problem; the CLI prints it and exits non-zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class WorkbenchError(ValueError):
    """Bad input: wrong shape, unknown model, timestep out of range, NaN, ..."""


class FingerprintMismatch(WorkbenchError):
    """A saved result was computed on another model than the one it is used with."""


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of ``exc``; of the exception it wraps when it
    carries one as ``cause`` (Ray's task errors do)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return one_line(cause)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise a one-line error if ``tensor`` holds a NaN or an infinity."""
    import torch

    if not bool(torch.isfinite(tensor).all()):
        raise WorkbenchError(f"{name} contains NaN or infinite values")
