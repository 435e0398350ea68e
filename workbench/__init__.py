"""workbench: latent-space geometry of pretrained diffusion models.

>>> import workbench as wb
>>> model = wb.load("shapes32")
>>> images = wb.sample(model, seeds=range(8))
"""

from typing import Any

from workbench._version import __version__
from workbench.directions import DirectionSet
from workbench.editing import EditResult, edit, edit_set, register_mode
from workbench.engines import ENGINES, get_engine
from workbench.errors import FingerprintMismatch, WorkbenchError
from workbench.eval.calibration import calibrate
from workbench.eval.judge import judge_directions as judge
from workbench.library import DirectionLibrary, NamedDirection
from workbench.models import DiffusionModel, Preset, load, save
from workbench.probes import PROBES, probe
from workbench.sampling import (
    ddim,  # noqa: F401  (the older name of run_chain; warns)
    invert,
    make_timesteps,
    run_chain,
    sample,
)
from workbench.sweep import SweepResult, sweep
from workbench.trajectories import TrajectoryBank, trajectory_bank


def discover(engine: str, model: DiffusionModel, **options: Any) -> DirectionSet:
    """Find directions with a registered engine (``"random"``, ...)."""
    return get_engine(engine).discover(model, **options)


__all__ = [
    "ENGINES",
    "PROBES",
    "__version__",
    "DiffusionModel",
    "DirectionLibrary",
    "DirectionSet",
    "EditResult",
    "FingerprintMismatch",
    "NamedDirection",
    "Preset",
    "SweepResult",
    "TrajectoryBank",
    "WorkbenchError",
    "calibrate",
    "run_chain",
    "discover",
    "edit",
    "edit_set",
    "invert",
    "judge",
    "load",
    "make_timesteps",
    "probe",
    "register_mode",
    "sample",
    "save",
    "sweep",
    "trajectory_bank",
]
