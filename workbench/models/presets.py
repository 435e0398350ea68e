"""Per-model presets: edit timesteps, strength steps, h edit window, mixing step.

A strength of 1 in :func:`workbench.edit` means a perturbation of norm ``x_step`` in x-space
or of total norm ``h_step`` over the whole h tensor ``[C, H, W]`` in h-space, so that
directions of different engines in the same space are compared at equal perturbation
norms. The values for bundled models are to be measured on them (``analysis/shapes32_report.py``
prints the calibration; ``docs/shapes.md`` records it);
a local folder may carry its own ``workbench_preset.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

PRESET_FILE = "workbench_preset.json"


#: The ``scene`` of a model with no procedural ground truth (an outside model).
NO_SCENE = "none"


@dataclass(frozen=True)
class Preset:
    """Editing defaults of one model.

    Attributes:
        num_inference_steps: sampling steps used by sampling and editing by default.
        x_step: norm of an x-space perturbation of strength 1.
        h_step: total norm (over ``[C, H, W]``) of an h-space perturbation of strength 1.
        x_timestep: default timestep of x-space edits and of x-space discovery.
        h_window: ``(t_high, t_low)``: h-space edits act on every step with
            ``t_low <= t <= t_high``.
        asymmetric: h edits use the asymmetric reverse step (Asyrp): the edited noise
            prediction forms the predicted x_0, the unedited one the direction to x_{t-1}.
        pullback_timesteps: timesteps at which the pullback engine is examined by default
            (early/coarse first, late/fine last).
        mixing_step: the mixing step found for this model by the boundary engine's search,
            or ``None`` if not measured yet.
        boundary_step: the timestep at which the boundary engine fits and edits by
            default; ``None``: the mixing step. Set where the mixing step lies so close to
            the data end that a one-step edit there cannot move an attribute without
            breaking the image (shapes64: t = 19, measured in docs/boundary.md).
        boundary_distance: the largest signed distance (in ``h_step`` units) of an h
            boundary's recorded working edit (``workbench edit``'s default strengths
            ``-d, -d/2, 0, d/2, d``).
        scene: the procedural scene with ground truth the model was trained on
            (``workbench.data.scenes``); ``None``: ``shapes`` (presets of older versions);
            :data:`NO_SCENE` (``"none"``): no ground truth, as for a model loaded without
            a preset.
    """

    num_inference_steps: int = 50
    x_step: float = 6.0
    h_step: float = 10.0
    x_timestep: int = 800
    h_window: tuple[int, int] = (999, 600)
    asymmetric: bool = True
    pullback_timesteps: tuple[int, ...] = (880, 580)
    mixing_step: int | None = None
    boundary_step: int | None = None
    boundary_distance: float = 0.3
    scene: str | None = None

    def __post_init__(self) -> None:
        """Every field checked (one line naming the field): steps, positive step sizes,
        timesteps, an ordered window, a real boolean, a known scene."""
        _whole("num_inference_steps", self.num_inference_steps, low=1)
        for name in ("x_step", "h_step"):
            value = _number(name, getattr(self, name))
            if not value > 0:
                raise WorkbenchError(f"preset field {name!r} must be positive, got {value!r}")
        _number("x_timestep", self.x_timestep, low=0)
        window = _sequence("h_window", self.h_window, length=2)
        if window[0] < window[1]:
            raise WorkbenchError(
                f"preset field 'h_window' must be (high, low) with high >= low, got {window}"
            )
        object.__setattr__(self, "h_window", window)
        steps = _sequence("pullback_timesteps", self.pullback_timesteps)
        if not steps:
            raise WorkbenchError("preset field 'pullback_timesteps' must name a timestep")
        object.__setattr__(self, "pullback_timesteps", steps)
        for name in ("mixing_step", "boundary_step"):
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), low=0)
        if not _number("boundary_distance", self.boundary_distance) > 0:
            raise WorkbenchError(
                f"preset field 'boundary_distance' must be positive, got {self.boundary_distance!r}"
            )
        if not isinstance(self.asymmetric, bool):
            raise WorkbenchError(
                f"preset field 'asymmetric' must be true or false, got {self.asymmetric!r}"
            )
        if self.scene is not None:
            from workbench.data.scenes import SCENES

            known = (*SCENES, NO_SCENE)
            if self.scene not in known:
                raise WorkbenchError(
                    f"preset field 'scene' must be one of {', '.join(known)}, got {self.scene!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The preset as plain JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """A preset from plain data (one-line error on an unknown key)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WorkbenchError(f"unknown preset keys: {', '.join(unknown)}")
        return cls(**data)  # every field checked by __post_init__

    @classmethod
    def from_folder(cls, folder: str | Path) -> Preset | None:
        """The preset saved in ``folder``, or None if it has none."""
        path = Path(folder) / PRESET_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkbenchError(f"{path}: not a JSON preset ({exc})") from None
        if not isinstance(data, dict):
            raise WorkbenchError(f"{path}: a preset is a JSON object")
        try:
            return cls.from_dict(data)
        except WorkbenchError as exc:
            raise WorkbenchError(f"{path}: {exc}") from None

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``workbench_preset.json`` into ``folder`` (created if need be), atomically,
        beside a model's own config files."""
        from workbench.store import write_json

        Path(folder).mkdir(parents=True, exist_ok=True)
        return write_json(Path(folder) / PRESET_FILE, self.to_dict())

    @classmethod
    def from_pretrained(cls, source: str | Path, **hub_kwargs: Any) -> Preset | None:
        """The preset of a model folder or Hub repo (its ``workbench_preset.json``), or None
        if it has none; a Hub repo that cannot be reached (offline) counts as none."""
        if Path(source).is_dir():
            return cls.from_folder(source)
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(str(source), PRESET_FILE, **hub_kwargs)
        except Exception:  # noqa: BLE001 - no file, no network, no such repo: no preset
            return None
        return cls.from_folder(Path(path).parent)

    def replace(self, **changes: Any) -> Preset:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def _number(name: str, value: Any, low: float | None = None) -> int | float:
    """A real number (not a boolean, finite), at least ``low``; one line naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkbenchError(f"preset field {name!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise WorkbenchError(f"preset field {name!r} must be finite, got {value!r}")
    if low is not None and value < low:
        raise WorkbenchError(f"preset field {name!r} must be at least {low}, got {value!r}")
    return value


def _whole(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise WorkbenchError(f"preset field {name!r} must be an integer >= {low}, got {value!r}")
    return value


def _sequence(name: str, value: Any, length: int | None = None) -> tuple:
    """A list or tuple of timesteps (numbers >= 0), as a tuple; whole floats as ints."""
    if not isinstance(value, list | tuple) or (length is not None and len(value) != length):
        size = f"{length} " if length else ""
        raise WorkbenchError(
            f"preset field {name!r} must be a list of {size}timesteps, got {value!r}"
        )
    out = []
    for item in value:
        number = _number(name, item, low=0)
        out.append(int(number) if float(number).is_integer() else number)
    return tuple(out)
