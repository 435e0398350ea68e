"""The control engine: seeded random unit directions, the floor every engine must beat."""

from __future__ import annotations

import torch

from workbench.directions import DirectionSet
from workbench.engines import register_engine
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import WINDOW, Option

OPTIONS = (
    Option("space", str, "x", "x_t or h", choices=("x", "h"), control=True),
    Option(
        "form",
        str,
        "full",
        "h only: full [C,H,W] directions, or channel [C] directions added at every position",
        choices=("full", "channel"),
    ),
    WINDOW,
)


@register_engine("random", "seeded random unit directions (control)", OPTIONS)
def random_directions(
    model: DiffusionModel,
    k: int = 8,
    timestep: int | None = None,
    seed: int = 0,
    space: str = "x",
    form: str = "full",
    window: tuple[int, int] | None = None,
) -> DirectionSet:
    """``k`` independent Gaussian directions, normalised, drawn from ``seed``.

    x-space: at ``timestep`` (default: the preset's ``x_timestep``). h-space: over
    ``window`` (default: the preset's ``h_window``), or at the single ``timestep`` if given.
    """
    if space == "x" and form != "full":
        raise WorkbenchError(f"form {form!r} is for h-space directions; x-space ones are full")
    if space == "x" and window is not None:
        raise WorkbenchError("window is for h-space directions; x-space ones take a timestep")
    if space == "x":
        shape = model.sample_shape
        when: int | tuple[int, int] = model.check_timestep(
            model.preset.x_timestep if timestep is None else timestep
        )
    elif space == "h":
        shape = model.h_shape if form == "full" else model.h_shape[:1]
        if timestep is not None:
            when = model.check_timestep(timestep)
        else:
            when = tuple(window or model.preset.h_window)  # type: ignore[assignment]
    else:
        raise WorkbenchError(f"space must be 'x' or 'h', got {space!r}")
    gen = torch.Generator().manual_seed(int(seed))
    vectors = torch.randn(k, *shape, generator=gen)
    return DirectionSet(
        vectors=vectors,
        space=space,
        timestep=when,
        engine="random",
        model_fingerprint=model.fingerprint,
        scores=torch.zeros(k),
        score_name="none",
        params={"k": k, "seed": seed, "space": space, "form": form},
    )
