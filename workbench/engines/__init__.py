"""Editing engines. Each registers itself under a name with :func:`register_engine`.

An engine is a function ``discover(model, k, timestep, seed, **options) -> DirectionSet``
plus an ``add_arguments(parser)`` that declares its own CLI options.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from workbench.errors import WorkbenchError


@dataclass
class Engine:
    name: str
    discover: Callable
    add_arguments: Callable[[argparse.ArgumentParser], None]
    summary: str


ENGINES: dict[str, Engine] = {}


def register_engine(
    name: str, summary: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Callable], Callable]:
    def wrap(fn: Callable) -> Callable:
        ENGINES[name] = Engine(name, fn, add_arguments or (lambda parser: None), summary)
        return fn

    return wrap


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise WorkbenchError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}")
    return ENGINES[name]


from workbench.engines import attention as _attention  # noqa: E402,F401  (registers "attention")
from workbench.engines import boundary as _boundary  # noqa: E402,F401  (registers "boundary")
from workbench.engines import pca as _pca  # noqa: E402,F401  (registers "pca")
from workbench.engines import pullback as _pullback  # noqa: E402,F401  (registers "pullback")
from workbench.engines import random as _random  # noqa: E402,F401  (registers "random")
