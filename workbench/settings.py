"""Package-wide switches.

``progress``: show ``tqdm`` progress bars (default on; ``WORKBENCH_PROGRESS=0`` turns them off).
"""

from __future__ import annotations

import os

progress: bool = os.environ.get("WORKBENCH_PROGRESS", "1") not in ("0", "false", "False")


def show_progress(progress: bool | None) -> bool:
    """Whether to show a progress bar: ``progress`` if given, else the package setting."""
    return globals()["progress"] if progress is None else progress
