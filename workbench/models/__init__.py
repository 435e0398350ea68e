"""Model layer: the :class:`DiffusionModel` wrapper, loading, presets."""

from workbench.models.loading import PRESETS, bundled_names, load, save
from workbench.models.presets import Preset
from workbench.models.wrapper import DiffusionModel, Prediction

__all__ = ["PRESETS", "DiffusionModel", "Prediction", "Preset", "bundled_names", "load", "save"]
