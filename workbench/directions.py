"""`DirectionSet`: ordered unit directions plus the metadata needed to reuse them.

Contract (``docs/architecture.md``): ``vectors`` ``[k, *shape]`` are unit vectors (norm over
all of ``shape``), ranked best first; ``space`` is ``"x"`` (shape ``(C, H, W)`` of x_t) or
``"h"`` (shape ``h_shape`` = ``(C, H, W)``, or ``(C,)`` for a channel direction added at
every spatial position); ``timestep`` is an int, or for h a window ``(t_high, t_low)``.
Saved as one ``.safetensors`` file whose metadata holds the JSON; loading against a
model checks the fingerprint and the shape and refuses a mismatch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench._version import __version__
from workbench.display import short_repr, summary_html
from workbench.errors import FingerprintMismatch, WorkbenchError, check_finite
from workbench.options import EDIT_ETA, STRENGTHS
from workbench.store import load_tensors, save_tensors

if TYPE_CHECKING:
    from workbench.models.wrapper import DiffusionModel


SPACES = ("x", "h")


def sign_fixed(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row of ``[k, D]`` so that its entry of largest magnitude is positive."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vectors.gather(1, idx))
    signs[signs == 0] = 1
    return vectors * signs


@dataclass(repr=False)
class DirectionSet:
    """Ranked unit directions found by one engine on one model.

    Attributes:
        vectors: ``[k, *shape]``, unit norm each.
        space: ``"x"`` or ``"h"``.
        timestep: int, or ``(t_high, t_low)`` window for h-space edits.
        engine: name of the engine that found them.
        model_fingerprint: :attr:`DiffusionModel.fingerprint` of the model.
        scores: ``[k]`` values that rank them (singular values, eigenvalues, accuracies).
        score_name: what ``scores`` are.
        params: the engine's parameters (JSON-serialisable).
        labels: optional names, one per direction.
    """

    vectors: torch.Tensor
    space: str
    timestep: int | tuple[int, int]
    engine: str
    model_fingerprint: str
    scores: torch.Tensor | None = None
    score_name: str = "score"
    params: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise WorkbenchError(f"space must be 'x' or 'h', got {self.space!r}")
        vectors = torch.as_tensor(self.vectors).detach().to("cpu", torch.float32)
        if vectors.ndim < 2 or vectors.shape[0] == 0:
            raise WorkbenchError(
                f"vectors must be [k, *shape] with k >= 1, got {list(vectors.shape)}"
            )
        check_finite("directions", vectors)
        wide = torch.as_tensor(self.vectors).detach().to("cpu", torch.float64)
        norms = wide.flatten(1).norm(dim=1)  # float64: huge or tiny vectors do not overflow
        if bool((norms < 1e-12).any()):
            raise WorkbenchError("a direction has zero norm")
        if bool(((norms - 1).abs() > 1e-6).any()):  # already-unit vectors stay bit-exact
            vectors = (wide / norms.reshape(-1, *([1] * (wide.ndim - 1)))).float()
        self.vectors = vectors
        k = vectors.shape[0]
        if self.scores is not None:
            self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1).cpu()
            if self.scores.shape[0] != k:
                raise WorkbenchError(f"{self.scores.shape[0]} scores for {k} directions")
        if self.labels is not None and len(self.labels) != k:
            raise WorkbenchError(f"{len(self.labels)} labels for {k} directions")
        if isinstance(self.timestep, (list, tuple)):
            if len(self.timestep) != 2 or self.space != "h":
                raise WorkbenchError(
                    "a timestep window (t_high, t_low) is for h-space directions only"
                )
            hi, lo = (_timestep(v) for v in self.timestep)
            if hi < lo:
                raise WorkbenchError(
                    f"timestep window must be (t_high, t_low), got {self.timestep}"
                )
            self.timestep = (hi, lo)
        else:
            self.timestep = _timestep(self.timestep)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one direction (``(C, H, W)``, ``h_shape`` or ``(C,)``)."""
        return tuple(self.vectors.shape[1:])

    def summary(self) -> str:
        """One line: how many directions, from which engine, where, ranked by what."""
        k, shape = self.vectors.shape[0], "x".join(map(str, self.shape))
        at = (
            f"t = {self.timestep[0]}..{self.timestep[1]}"
            if isinstance(self.timestep, tuple)
            else f"t = {self.timestep}"
        )
        text = f"{k} {self.engine} directions in {self.space} ({shape}) at {at}"
        if self.scores is not None and self.score_name != "none":  # random: no ranking
            top = ", ".join(f"{v:.3g}" for v in self.scores[:3].tolist())
            text += f"; {self.score_name}: {top}{', ...' if k > 3 else ''}"
        return text + f"; first: {self.name(0)}"

    def __repr__(self) -> str:
        return short_repr(self, self.summary())

    def _repr_html_(self) -> str:
        calls = (
            "wb.edit(model, dirs, index, strengths, seeds=...) edits along one; "
            "workbench.viz.figure(dirs) plots the scores; .save(path) writes safetensors"
        )
        return summary_html(self, self.summary(), calls)

    def name(self, index: int) -> str:
        """Display name of direction ``index``: its label, else ``engine[index]``."""
        if self.labels is not None:
            return self.labels[index]
        return f"{self.engine}[{index}]"

    def select(self, indices: list[int]) -> DirectionSet:
        """The directions at ``indices``, in that order."""
        for i in indices:
            self._check_index(i)
        idx = torch.as_tensor(indices, dtype=torch.long)
        return DirectionSet(
            vectors=self.vectors[idx],
            space=self.space,
            timestep=self.timestep,
            engine=self.engine,
            model_fingerprint=self.model_fingerprint,
            scores=None if self.scores is None else self.scores[idx],
            score_name=self.score_name,
            params=dict(self.params),
            labels=None if self.labels is None else [self.labels[i] for i in indices],
        )

    def combine(self, coefficients: list[float] | torch.Tensor) -> tuple[DirectionSet, float]:
        """One direction from a linear combination: ``(unit, strength)`` with
        ``strength * unit == sum_i coefficients[i] * vectors[i]`` (a single non-zero
        coefficient gives that direction itself and a signed strength).

        Editing along ``unit`` at ``strength`` is editing along all directions at once with
        the given per-direction strengths (the explorer's sliders). The result keeps the
        space, timestep, engine and fingerprint, and records the combination in ``params``.
        """
        c = torch.as_tensor(coefficients, dtype=torch.float32).reshape(-1)
        if c.shape[0] != len(self):
            raise WorkbenchError(f"{c.shape[0]} coefficients for {len(self)} directions")
        check_finite("coefficients", c)
        nonzero = c.nonzero().reshape(-1).tolist()
        if len(nonzero) == 1:  # one direction: itself, so the edit equals edit(..., index, [c])
            unit = self.select(nonzero)
            unit.labels = [self.name(nonzero[0])]
            return unit, float(c[nonzero[0]])
        v = torch.einsum("k,k...->...", c, self.vectors)
        strength = float(v.norm())
        if strength == 0.0:
            raise WorkbenchError("the combination is zero: give at least one non-zero coefficient")
        terms = [f"{float(x):+.3g} {self.name(i)}" for i, x in enumerate(c.tolist()) if x]
        unit = DirectionSet(
            vectors=(v / strength)[None],
            space=self.space,
            timestep=self.timestep,
            engine=self.engine,
            model_fingerprint=self.model_fingerprint,
            score_name=self.score_name,
            params=dict(self.params)
            | {"combination": c.tolist(), "of": [self.name(i) for i in range(len(self))]},
            labels=[" ".join(terms)],
        )
        return unit, strength

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise WorkbenchError(f"direction index {index} out of range for {len(self)} directions")
        return index % len(self)

    # ------------------------------------------------------------------ model checks
    def check_model(self, model: DiffusionModel) -> None:
        """Raise if these directions do not belong to ``model`` (fingerprint, shape, timestep)."""
        if self.model_fingerprint != model.fingerprint:
            raise FingerprintMismatch(
                f"fingerprint mismatch: directions were computed on model "
                f"{self.model_fingerprint}, not on {model.name!r} ({model.fingerprint})"
            )
        if self.space == "x":
            expected = [model.sample_shape]
        else:
            expected = [model.h_shape, model.h_shape[:1]]
        if self.shape not in expected:
            raise WorkbenchError(
                f"{self.space}-space directions of shape {list(self.shape)} do not fit "
                f"{model.name!r} (expected {' or '.join(str(list(e)) for e in expected)})"
            )
        times = self.timestep if isinstance(self.timestep, tuple) else (self.timestep,)
        for t in times:
            model.check_timestep(t)

    def vector(self, index: int, model: DiffusionModel | None = None) -> torch.Tensor:
        """Direction ``index`` as a unit tensor of the full space (``[C, H, W]``).

        A channel direction ``n`` ``[C]`` becomes ``n / sqrt(H W)`` at every position,
        which has unit norm over all of h, so that strengths compare across engines.
        """
        v = self.vectors[self._check_index(index)]
        if self.space == "h" and v.ndim == 1:
            if model is None:
                raise WorkbenchError("a model is needed to expand a channel direction over h")
            _, height, width = model.h_shape
            v = v[:, None, None].expand(-1, height, width) / math.sqrt(height * width)
        return v.contiguous()

    # ------------------------------------------------------------------ disk
    def metadata(self) -> dict[str, Any]:
        """The JSON metadata saved beside the vectors."""
        return {
            "format": "workbench.DirectionSet/1",
            "space": self.space,
            "shape": list(self.shape),
            "timestep": list(self.timestep) if isinstance(self.timestep, tuple) else self.timestep,
            "engine": self.engine,
            "model_fingerprint": self.model_fingerprint,
            "score_name": self.score_name,
            "params": self.params,
            "labels": self.labels,
            "workbench_version": __version__,
        }

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (``.safetensors``), atomically."""
        tensors = {"vectors": self.vectors}
        if self.scores is not None:
            tensors["scores"] = self.scores
        return save_tensors(path, tensors, self.metadata())

    @classmethod
    def load(cls, path: str | Path, model: DiffusionModel | None = None) -> DirectionSet:
        """Read a saved set; with ``model``, refuse it unless it belongs to that model."""
        tensors, meta = load_tensors(path)
        is_set = isinstance(meta, dict) and meta.get("format") == "workbench.DirectionSet/1"
        if not is_set or "vectors" not in tensors:
            raise WorkbenchError(f"{path}: not a DirectionSet file")
        return cls.from_saved(tensors, meta, path, model)

    @classmethod
    def from_saved(
        cls,
        tensors: dict[str, torch.Tensor],
        meta: dict[str, Any],
        path: str | Path,
        model: DiffusionModel | None = None,
    ) -> DirectionSet:
        """Rebuild a set from saved ``tensors`` and its :meth:`metadata` (``path`` names the
        file in errors); with ``model``, refuse it unless it belongs to that model."""
        if "vectors" not in tensors:
            raise WorkbenchError(f"{path}: no direction vectors stored")
        _check_metadata(meta, path)
        if list(tensors["vectors"].shape[1:]) != meta["shape"]:
            raise WorkbenchError(f"{path}: vectors do not have the recorded shape {meta['shape']}")
        offsets = (meta.get("params") or {}).get("offsets")
        if offsets is not None and len(offsets) != tensors["vectors"].shape[0]:
            raise WorkbenchError(
                f"{path}: {len(offsets)} recorded offsets for {tensors['vectors'].shape[0]} "
                "directions"
            )
        timestep = meta["timestep"]
        ds = cls(
            vectors=tensors["vectors"],
            space=meta["space"],
            timestep=tuple(timestep) if isinstance(timestep, list) else timestep,
            engine=meta["engine"],
            model_fingerprint=meta["model_fingerprint"],
            scores=tensors.get("scores"),
            score_name=meta.get("score_name", "score"),
            params=meta.get("params") or {},
            labels=meta.get("labels"),
        )
        if model is not None:
            ds.check_model(model)
        return ds


def check_directions(value: Any, name: str = "directions") -> DirectionSet:
    """``value`` if it is a :class:`DirectionSet`, else a one-line error that says how to
    get one."""
    if not isinstance(value, DirectionSet):
        shown = f" {value!r}"[:80] if isinstance(value, str | Path) else ""
        raise WorkbenchError(
            f"{name} must be a DirectionSet (wb.discover(...) or wb.DirectionSet.load(path)), "
            f"got {type(value).__name__}{shown}"
        )
    return value


def _timestep(value: Any) -> int:
    """A timestep as int; a fractional or non-numeric one is refused, not truncated."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise WorkbenchError(f"timestep must be an integer, got {value!r}")
    return int(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metadata(meta: Any, path: str | Path) -> None:
    """A saved set's metadata has the keys :meth:`DirectionSet.metadata` writes, with
    their types; anything else is a one-line error naming the key."""

    def bad(key: str, want: str) -> WorkbenchError:
        got = meta.get(key, "nothing") if isinstance(meta, dict) else meta
        return WorkbenchError(f"{path}: metadata key {key!r} must be {want}, got {got!r}")

    if not isinstance(meta, dict):
        raise WorkbenchError(f"{path}: metadata must be a JSON object, got {type(meta).__name__}")
    if meta.get("space") not in SPACES:
        raise bad("space", "'x' or 'h'")
    shape = meta.get("shape")
    if not isinstance(shape, list) or not shape or not all(_is_int(v) and v > 0 for v in shape):
        raise bad("shape", "a list of positive integers")
    t = meta.get("timestep")
    window = isinstance(t, list) and len(t) == 2 and all(_is_int(v) for v in t)
    if not (_is_int(t) or window):
        raise bad("timestep", "an integer or [t_high, t_low]")
    for key in ("engine", "model_fingerprint"):
        if not isinstance(meta.get(key), str):
            raise bad(key, "a string")
    if not isinstance(meta.get("score_name", ""), str):
        raise bad("score_name", "a string")
    if not isinstance(meta.get("params") or {}, dict):
        raise bad("params", "an object")
    labels = meta.get("labels")
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(v, str) for v in labels)
    ):
        raise bad("labels", "a list of strings")
    _check_params(meta.get("params") or {}, path)


def _check_params(params: dict[str, Any], path: str | Path) -> None:
    """The parameters a set records that later calls read back (the point of h, a
    boundary's offsets, the working edit), held to the types and ranges the command line
    holds them to; one line naming the key."""

    def bad(key: str, want: str, got: Any) -> WorkbenchError:
        return WorkbenchError(f"{path}: metadata key 'params.{key}' must be {want}, got {got!r}")

    point = params.get("h_point")
    if point is not None and not isinstance(point, str):
        raise bad("h_point", "a string like 'mid' or 'up.1'", point)
    offsets = params.get("offsets")
    if offsets is not None and not (
        isinstance(offsets, list)
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in offsets)
        and all(math.isfinite(v) for v in offsets)
    ):
        raise bad("offsets", "a list of finite numbers", offsets)
    recorded = params.get("edit")
    if recorded is None:
        return
    if not isinstance(recorded, dict):
        raise bad("edit", "an object (the working edit's mode and options)", recorded)
    if not isinstance(recorded.get("mode", ""), str):
        raise bad("edit.mode", "a string", recorded["mode"])
    for option in (EDIT_ETA, STRENGTHS):
        if option.name in recorded:
            try:
                option.check(recorded[option.name])
            except WorkbenchError as exc:
                key = f"params.edit.{option.name}"
                raise WorkbenchError(f"{path}: metadata key {key!r}: {exc}") from None
