"""A direction library on disk: named directions that can be listed, loaded and applied.

A :class:`NamedDirection` is one unit direction (a :class:`DirectionSet` with ``k = 1``,
which carries the engine, space, timestep and model fingerprint) plus how it was applied:
the strength, the edit mode and its options, the number of sampling steps. Applying it again
with the same seeds runs exactly the same :func:`~workbench.editing.edit` call, so with
eta 0 the images are the same bit for bit (``tests/test_library.py``).

Each entry is one file ``<root>/<name>.safetensors`` (written atomically); the folder
defaults to ``$WORKBENCH_LIBRARY`` or ``~/.local/share/workbench/directions``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench.directions import DirectionSet
from workbench.editing import MODES, EditResult, edit
from workbench.errors import WorkbenchError
from workbench.options import NUM_STEPS
from workbench.store import load_tensors, save_tensors

if TYPE_CHECKING:
    from workbench.models.wrapper import DiffusionModel


FORMAT = "workbench.NamedDirection/1"
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}\Z")  # \Z: no trailing newline


def check_name(name: str) -> str:
    """A library name: letters, digits, ``_ . + -``, at most 100 characters."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".safetensors"):
        raise WorkbenchError(
            f"bad direction name {name!r}: use letters, digits and _ . + - (at most 100)"
        )
    return name


@dataclass
class NamedDirection:
    """A saved edit: one unit direction, its strength and how it is applied.

    Attributes:
        name: the library name.
        directions: a one-direction :class:`DirectionSet` (engine, space, timestep,
            fingerprint travel with it).
        strength: in units of the preset's step for the space (as in :func:`edit`).
        mode: edit mode (``"additive"``, ``"guidance"``, ``"distance"``, ...).
        num_steps: sampling steps used (``None``: the preset's).
        options: the mode's options.
        note: free text.
        created: ISO time of saving.
    """

    name: str
    directions: DirectionSet
    strength: float
    mode: str = "additive"
    num_steps: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    created: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        if len(self.directions) != 1:
            raise WorkbenchError(
                f"a named direction holds one direction, got {len(self.directions)}; "
                "use DirectionSet.select or DirectionSet.combine"
            )
        if self.mode not in MODES:
            raise WorkbenchError(f"unknown edit mode {self.mode!r}; known: {', '.join(MODES)}")
        self.strength = float(self.strength)
        if not math.isfinite(self.strength):
            raise WorkbenchError(f"strength must be finite, got {self.strength}")

    @property
    def engine(self) -> str:
        """The engine that found the direction."""
        return self.directions.engine

    @property
    def timestep(self) -> int | tuple[int, int]:
        """The timestep (or window) the direction was found at."""
        return self.directions.timestep

    @property
    def model_fingerprint(self) -> str:
        """Fingerprint of the model the direction belongs to."""
        return self.directions.model_fingerprint

    def apply(
        self,
        model: DiffusionModel,
        seeds: Sequence[int] | None = None,
        x: torch.Tensor | None = None,
        strengths: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> EditResult:
        """Edit ``seeds`` (or latents ``x``) as when it was saved; ``strengths``
        (default: the saved strength alone) overrides the strength. The model must have
        the saved fingerprint."""
        return edit(
            model,
            self.directions,
            0,
            [self.strength] if strengths is None else strengths,
            seeds=seeds,
            x=x,
            mode=self.mode,
            num_steps=self.num_steps,
            **(self.options | kwargs),
        )

    def summary(self) -> dict[str, Any]:
        """Name, engine, timestep, strength and mode as plain data."""
        return {
            "name": self.name,
            "engine": self.engine,
            "space": self.directions.space,
            "timestep": self.timestep,
            "strength": self.strength,
            "mode": self.mode,
            "model_fingerprint": self.model_fingerprint,
            "label": self.directions.name(0),
            "created": self.created,
        }


class DirectionLibrary:
    """Named directions in a folder: :meth:`save`, :meth:`names`, :meth:`load`, :meth:`remove`."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is not None and not isinstance(root, str | os.PathLike):
            raise WorkbenchError(f"a library root is a folder path, got {type(root).__name__}")
        default = os.environ.get(
            "WORKBENCH_LIBRARY", Path.home() / ".local" / "share" / "workbench" / "directions"
        )
        self.root = Path(root or default)

    def __repr__(self) -> str:
        return f"DirectionLibrary({str(self.root)!r}, {len(self.names())} directions)"

    def path(self, name: str) -> Path:
        """The file of entry ``name`` (the name is checked first)."""
        return self.root / f"{check_name(name)}.safetensors"

    def names(self) -> list[str]:
        """Names of the saved entries, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(".safetensors")] for p in self.root.glob("*.safetensors"))

    def __contains__(self, name: str) -> bool:
        return self.path(name).is_file()

    def save(self, named: NamedDirection, overwrite: bool = False) -> Path:
        """Write ``named`` as ``<root>/<name>.safetensors``; refuses to replace an
        existing entry unless ``overwrite``."""
        path = self.path(named.name)
        if path.exists() and not overwrite:
            raise WorkbenchError(f"direction {named.name!r} already exists in {self.root}")
        created = named.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        named.created = created
        meta = {
            "format": FORMAT,
            "name": named.name,
            "strength": named.strength,
            "mode": named.mode,
            "num_steps": named.num_steps,
            "options": named.options,
            "note": named.note,
            "created": created,
            "set": named.directions.metadata(),
        }
        return save_tensors(path, {"vectors": named.directions.vectors}, meta)

    def load(self, name: str, model: DiffusionModel | None = None) -> NamedDirection:
        """Read entry ``name``; with ``model``, refuse it unless it belongs to that model."""
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise WorkbenchError(f"no direction {name!r} in {self.root} (known: {known})")
        tensors, meta = load_tensors(path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise WorkbenchError(f"{path}: not a named direction file")
        _check_entry(meta, path)
        directions = DirectionSet.from_saved(tensors, meta["set"], path, model)
        return NamedDirection(
            name=name,
            directions=directions,
            strength=meta["strength"],
            mode=meta["mode"],
            num_steps=meta.get("num_steps"),
            options=meta.get("options") or {},
            note=meta.get("note", ""),
            created=meta.get("created", ""),
        )

    def remove(self, name: str) -> None:
        """Delete entry ``name``."""
        path = self.path(name)
        if not path.is_file():
            raise WorkbenchError(f"no direction {name!r} in {self.root}")
        path.unlink()

    def entries(self) -> list[dict[str, Any]]:
        """One summary row per entry (name, engine, space, timestep, strength, ...); an
        entry that cannot be read gives ``{"name": ..., "error": why}`` instead."""
        rows = []
        for name in self.names():
            try:
                rows.append(self.load(name).summary())
            except WorkbenchError as exc:
                rows.append({"name": name, "error": str(exc)})
        return rows

    def table(self) -> str:
        """The entries as a text table (an unreadable entry says why on its row)."""
        rows = self.entries()
        if not rows:
            return f"(no directions in {self.root})"
        head = f"{'name':<24} {'engine':<10} {'space':<5} {'timestep':<12} {'strength':>8}  model"
        lines = [head]
        for r in rows:
            if "error" in r:
                lines.append(f"{r['name']:<24} unreadable: {r['error']}")
                continue
            t = r["timestep"]
            when = f"{t[0]}-{t[1]}" if isinstance(t, (list, tuple)) else str(t)
            lines.append(
                f"{r['name']:<24} {r['engine']:<10} {r['space']:<5} {when:<12} "
                f"{r['strength']:>8.3g}  {r['model_fingerprint']}"
            )
        return "\n".join(lines)


def _check_entry(meta: dict[str, Any], path: Path) -> None:
    """A library entry's metadata has what :meth:`DirectionLibrary.save` writes, with its
    types (the set's own metadata is checked by ``DirectionSet.from_saved``)."""

    def bad(key: str, want: str) -> WorkbenchError:
        return WorkbenchError(f"{path}: entry key {key!r} must be {want}, got {meta.get(key)!r}")

    if not isinstance(meta.get("set"), dict):
        raise bad("set", "the direction set's metadata (an object)")
    strength = meta.get("strength")
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        raise bad("strength", "a number")
    if not isinstance(meta.get("mode"), str):
        raise bad("mode", "a string")
    try:
        NUM_STEPS.check(meta.get("num_steps"))
    except WorkbenchError as exc:
        raise WorkbenchError(f"{path}: entry key 'num_steps': {exc}") from None
    if not isinstance(meta.get("options") or {}, dict):
        raise bad("options", "an object")
    for key in ("note", "created"):
        if not isinstance(meta.get(key, ""), str):
            raise bad(key, "a string")
