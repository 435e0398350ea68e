"""Package-wide switches.

``progress``: show ``tqdm`` progress bars (default on; ``WORKBENCH_PROGRESS=0`` turns them off).

``flush_denormal``: when a model is loaded on the CPU, set the CPU to flush denormal floats to
zero (``torch.set_flush_denormal``; process-wide). Denormals (below about 1e-38) appear in
attention probabilities and in strongly edited activations, and each one costs the CPU a
slow path: on ``shapes64`` sampling ran 3x and an h edit 7x faster with them flushed. The
results differ from strict IEEE only below 1e-38. ``WORKBENCH_FLUSH_DENORMAL=0`` keeps them.
"""

from __future__ import annotations

import os

progress: bool = os.environ.get("WORKBENCH_PROGRESS", "1") not in ("0", "false", "False")
flush_denormal: bool = os.environ.get("WORKBENCH_FLUSH_DENORMAL", "1") not in (
    "0",
    "false",
    "False",
)
