"""Editing engines. Each registers itself under a name with :func:`register_engine`.

An engine is a function ``discover(model, k, timestep, seed, **options) -> DirectionSet``
described once by its options (:class:`workbench.options.Option`); the API checks, the
CLI's ``discover ENGINE`` arguments and the explorer's controls are derived from that
description, so a new engine is one file that calls :func:`register_engine`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.options import (
    CONTEXT,
    SEED,
    TIMESTEP,
    K,
    Option,
    Spec,
    in_context,
    validated,
)

#: The options every engine takes; an engine may describe its own ``k``, ``timestep`` or
#: ``seed`` instead (e.g. the boundary engine's ``k`` defaults to 1).
COMMON: tuple[Option, ...] = (K, TIMESTEP, SEED)


@dataclass
class Engine:
    """A registered engine: its discover function and its option description."""

    name: str
    discover: Callable
    spec: Spec

    @property
    def summary(self) -> str:
        """One line on what the engine does."""
        return self.spec.summary

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the engine's options to a CLI parser."""
        self.spec.add_arguments(parser)


ENGINES: dict[str, Engine] = {}


def register_engine(
    name: str, summary: str, options: Sequence[Option] = ()
) -> Callable[[Callable], Callable]:
    """Register ``fn(model, k, timestep, seed, **options)`` as engine ``name``, described
    by ``options`` (plus :data:`COMMON`); the function returned checks its options."""

    def wrap(fn: Callable) -> Callable:
        own = {o.name for o in options}
        common = (o for o in COMMON if o.name not in own)
        spec = Spec("engine", name, summary, (*common, *options, *CONTEXT))
        checked = validated(spec, in_context(fn, spec.options))
        ENGINES[name] = Engine(name, checked, spec)
        return checked

    return wrap


def get_engine(name: str) -> Engine:
    """The engine registered as ``name`` (one-line error naming the known ones)."""
    if name not in ENGINES:
        raise WorkbenchError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}")
    return ENGINES[name]


from workbench.engines import attention as _attention  # noqa: E402,F401  (registers "attention")
from workbench.engines import boundary as _boundary  # noqa: E402,F401  (registers "boundary")
from workbench.engines import local as _local  # noqa: E402,F401  (registers "local")
from workbench.engines import pca as _pca  # noqa: E402,F401  (registers "pca")
from workbench.engines import pullback as _pullback  # noqa: E402,F401  (registers "pullback")
from workbench.engines import random as _random  # noqa: E402,F401  (registers "random")
