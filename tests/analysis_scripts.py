"""Scripts of ``analysis/`` imported as modules, for tests of their functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


def load_script(name: str) -> ModuleType:
    """``analysis/<name>.py`` as the module ``name`` (registered first: dataclasses look
    their module up)."""
    spec = importlib.util.spec_from_file_location(name, ANALYSIS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
