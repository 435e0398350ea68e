"""workbench: latent-space geometry of pretrained diffusion models.

>>> import workbench as wb
>>> model = wb.load("shapes32")
>>> images = wb.sample(model, seeds=range(8))
"""

from workbench.directions import DirectionSet
from workbench.editing import EditResult, edit, register_mode
from workbench.engines import ENGINES, get_engine
from workbench.errors import FingerprintMismatch, WorkbenchError
from workbench.library import DirectionLibrary, NamedDirection
from workbench.models import DiffusionModel, Preset, load, save
from workbench.sampling import ddim, invert, make_timesteps, sample

__version__ = "0.1.0"


def discover(engine: str, model: DiffusionModel, **options) -> DirectionSet:
    """Find directions with a registered engine (``"random"``, ...)."""
    return get_engine(engine).discover(model, **options)


__all__ = [
    "ENGINES",
    "DiffusionModel",
    "DirectionLibrary",
    "DirectionSet",
    "EditResult",
    "FingerprintMismatch",
    "NamedDirection",
    "Preset",
    "WorkbenchError",
    "ddim",
    "discover",
    "edit",
    "invert",
    "load",
    "make_timesteps",
    "register_mode",
    "sample",
    "save",
]
