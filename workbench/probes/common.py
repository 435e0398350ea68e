"""What several probes share: sampled states at chosen timesteps, local bases over a grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.sampling import make_timesteps, run_chain

#: default timesteps of the probes: coarse (near T) to fine (near 0)
DEFAULT_TIMESTEPS = (999, 800, 600, 400, 200)


def check_timesteps(model: DiffusionModel, timesteps: Sequence[int] | None) -> list[int]:
    """Distinct, valid timesteps in decreasing order (default :data:`DEFAULT_TIMESTEPS`)."""
    chosen = DEFAULT_TIMESTEPS if timesteps is None else timesteps
    out = sorted({model.check_timestep(int(t)) for t in chosen}, reverse=True)
    if not out:
        raise WorkbenchError("give at least one timestep")
    return out


def grid_with(model: DiffusionModel, num_steps: int | None, timesteps: Sequence[int]) -> list[int]:
    """The DDIM grid of ``num_steps`` steps (the preset's by default) with ``timesteps``
    added as extra points; decreasing, ending at the clean end -1."""
    return sorted(set(make_timesteps(model, num_steps)) | set(timesteps), reverse=True)


def sampled_states(
    model: DiffusionModel,
    seeds: Sequence[int],
    timesteps: Sequence[int],
    num_steps: int | None = None,
    progress: bool | None = None,
) -> dict[int, torch.Tensor]:
    """x_t ``[n, C, H, W]`` of the samples from ``seeds`` at each of ``timesteps``: one DDIM
    run from x_T down to the lowest of them, on the ``num_steps`` grid with the timesteps
    added to it (so each is visited exactly, however coarse the grid). x_T sits at the
    grid's first point, or at a timestep above it (a "leading" grid starts below T - 1)."""
    grid = grid_with(model, num_steps, timesteps)
    lowest = grid.index(min(timesteps))
    if lowest == 0:  # the only timestep asked for is where the chain starts: x_T itself
        return {grid[0]: model.noise(list(seeds))}
    _, trajectory = run_chain(
        model,
        model.noise(list(seeds)),
        grid[: lowest + 1],
        return_trajectory=True,
        progress=progress,
    )
    return {t: trajectory.at(t).to(model.device, model.dtype) for t in timesteps}
