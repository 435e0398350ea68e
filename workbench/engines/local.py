"""Local edits from the posterior-mean Jacobian (LOCO-Edit; Chen et al., NeurIPS 2024).

The model's prediction of the clean sample, x0_hat(x_t) (the posterior mean E[x_0 | x_t]),
is locally linear in x_t over a range of noise levels, and its Jacobian J is low-rank
there. Given a region (a mask M on x_t's grid: a 0/1 array or a box), LOCO-Edit edits
inside it while keeping the rest:

1. ``J_in = diag(M) J``: its top-``k`` right singular vectors ``V_in`` are the x_t
   directions that change the predicted image most inside the region (the basis of
   :func:`~workbench.engines.pullback.local_basis` with ``target="x0"`` and ``mask=M``);
2. ``J_out = diag(1 - M) J``: its top-``outside`` right singular vectors ``V_out`` are
   the directions that change the outside most;
3. each direction is projected off them (the null-space projection): ``w = (I - V_out
   V_out^T) v``, and the projected set is orthonormalised in rank order, then ranked by
   the gain left inside, ``|J_in w|``. To first order
   the outside then changes by at most ``sigma_{outside + 1}(J_out)`` per unit step,
   and not at all where J_out's rank is below ``outside``.

The edit is LOCO-Edit's one-step edit: ``x_t + strength * x_step * w`` at the direction's
timestep, then the unedited deterministic sampler to t = 0 (the ``additive`` x-space edit
of :func:`workbench.edit`). A direction is the sample's own (its basis is at that sample's
x_t); applied to other seeds it is the published "transfer".

Recorded with the set (``params``): the region (box or mask's share of the grid), the
target, ``outside``, and per direction the gain ``|J_in w|`` (``scores``) and the leak
``|J_out w| / |J_in w|`` (the first-order share of the change that lands outside).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.directions import DirectionSet, sign_fixed
from workbench.engines import register_engine
from workbench.engines.pullback import (
    TARGET,
    basis_options,
    check_mask,
    local_basis,
    target_map,
)
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import Option
from workbench.sampling import make_timesteps, run_to

#: Default edit timestep, as a fraction of the chain (LOCO-Edit edits at intermediate
#: noise, where x0_hat is locally linear and J low-rank).
TIMESTEP_FRACTION = 0.6

OPTIONS = (
    Option("k", int, 4, "number of directions", low=1, high=4096),
    Option(
        "timestep",
        int,
        None,
        f"edit timestep (default: {TIMESTEP_FRACTION} of the chain, e.g. 599 of 1000)",
        low=0,
        control=True,
    ),
    Option(
        "box",
        "ints",
        None,
        "the region: top,left,bottom,right in image pixels (bottom, right exclusive)",
        low=0,
        length=4,
        control=True,
    ),
    Option("mask", object, None, "the region: weights [H, W] on the image or x_t grid", cli=False),
    Option(
        "outside",
        int,
        8,
        "directions of the outside's Jacobian projected away (0: no projection)",
        low=0,
        high=4096,
    ),
    Option(
        TARGET.name,
        str,
        "x0",
        "the map's output: x0 (the posterior mean, as published) or eps",
        choices=("x0", "eps"),
    ),
    *basis_options("oversample", "max_iter", "tol_deg", "method", "num_steps"),
)


def region_mask(
    model: DiffusionModel,
    box: tuple[int, int, int, int] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The region as weights ``[1 | C, h, w]`` on x_t's grid from a ``box`` (top, left,
    bottom, right in image pixels) or a ``mask`` (``[H, W]`` on the image grid or x_t's;
    an image-grid mask of a latent model is pooled to x_t's grid, a cell counting fully
    when any of its pixels is in the region); neither: the centre of the image, half its
    height and width (:func:`centre_box`)."""
    if box is not None and mask is not None:
        raise WorkbenchError("give the region as box=(top, left, bottom, right) or mask=, not both")
    _, height, width = model.image_shape
    if box is None and mask is None:
        box = centre_box(model)
    if box is not None:
        top, left, bottom, right = (int(v) for v in box)
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise WorkbenchError(
                f"box {list(box)} is not top,left,bottom,right inside the {height}x{width} image "
                "(bottom, right exclusive)"
            )
        mask = torch.zeros(height, width)
        mask[top:bottom, left:right] = 1.0
    m = torch.as_tensor(mask).detach().to("cpu", torch.float64)
    _, h, w = model.sample_shape
    if m.shape[-2:] == (height, width) and (height, width) != (h, w):  # image grid: pool it
        pooled = torch.nn.functional.adaptive_max_pool2d(m.reshape(-1, 1, height, width), (h, w))
        m = pooled.reshape(*m.shape[:-2], h, w)
    return check_mask(model, m)


@register_engine(
    "local",
    "LOCO-Edit: directions of the masked posterior-mean Jacobian, projected off the outside's",
    OPTIONS,
)
def local_edit_directions(
    model: DiffusionModel,
    k: int = 4,
    timestep: int | None = None,
    seed: int = 0,
    box: tuple[int, int, int, int] | None = None,
    mask: torch.Tensor | None = None,
    outside: int = 8,
    target: str = "x0",
    oversample: int = 4,
    max_iter: int = 30,
    tol_deg: float = 0.1,
    method: str = "krylov",
    num_steps: int | None = None,
) -> DirectionSet:
    """The sample of ``seed``'s local-edit directions for a region (module docstring), at
    x_t reached by the deterministic sampler from its x_T. The region is ``box`` or
    ``mask``, by default the centre of the image (:func:`centre_box`)."""
    if box is None and mask is None:
        box = centre_box(model)
    region = region_mask(model, box, mask)
    t = default_timestep(model) if timestep is None else model.check_timestep(timestep)
    grid = make_timesteps(model, num_steps, include=[t])
    x_t = run_to(model, model.noise([seed]), grid, t)
    basis = dict(
        oversample=oversample, max_iter=max_iter, tol_deg=tol_deg, seed=seed,
        dtype=model.dtype, method=method, target=target,
    )  # fmt: skip
    inside = local_basis(model, x_t, t, k=k, mask=region, **basis)
    v_in = inside.V[0].reshape(k, -1).double()
    rest = 1.0 - region
    if outside > 0 and bool((rest != 0).any()):
        if outside + oversample > model.d:
            raise WorkbenchError(f"outside + oversample must be at most {model.d}")
        v_out = local_basis(model, x_t, t, k=outside, mask=rest, **basis).V[0]
        v_out = v_out.reshape(outside, -1).double()
        projected = v_in - (v_in @ v_out.T) @ v_out
    else:
        projected = v_in
    q, r = torch.linalg.qr(projected.T)  # orthonormal, in rank order
    kept = r.diagonal().abs() > 1e-6 * projected.norm(dim=1).max()
    if not bool(kept.all()):
        raise WorkbenchError(
            f"only {int(kept.sum())} of {k} directions survive the projection off the "
            f"outside's top {outside}: lower k or outside"
        )
    vectors = sign_fixed(q.T).float().reshape(k, *model.sample_shape)
    gain, leak = _gains(model, x_t, t, target, region, rest, vectors)
    order = torch.argsort(gain, descending=True)  # ranked by the gain left after projection
    vectors, gain, leak = vectors[order], gain[order], leak[order]
    return DirectionSet(
        vectors=vectors,
        space="x",
        timestep=t,
        engine="local",
        model_fingerprint=model.fingerprint,
        scores=gain,
        score_name="gain inside the region |J_in v|",
        params={
            "k": k,
            "seed": seed,
            "target": target,
            "outside": outside,
            "region": _describe(box, region),
            "leak": [round(float(v), 6) for v in leak / gain.clamp_min(1e-30)],
            "oversample": oversample,
            "max_iter": max_iter,
            "tol_deg": tol_deg,
            "method": method,
            "num_steps": num_steps,
            "iterations": inside.iterations,
            "converged": inside.converged,
        },
        labels=[f"local-t{t}[{i}]" for i in range(k)],
    )


def _gains(
    model: DiffusionModel,
    x_t: torch.Tensor,
    t: int,
    target: str,
    region: torch.Tensor,
    rest: torch.Tensor,
    vectors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``|J_in v|`` and ``|J_out v|`` ``[k]`` for each direction (one jvp of each map)."""
    f_in, _ = target_map(model, t, target, region, x_t.device)
    f_out = target_map(model, t, target, rest, x_t.device)[0] if bool((rest != 0).any()) else None
    x = x_t.to(model.dtype)
    tangents = vectors.to(x.device, model.dtype)[:, None]  # [k, 1, C, H, W]
    out = []
    with model.jacobian_safe():
        for f in (f_in, f_out):
            if f is None:
                out.append(torch.zeros(len(vectors)))
                continue
            pushed = torch.func.vmap(lambda v, f=f: torch.func.jvp(f, (x,), (v,))[1])(tangents)
            out.append(pushed.reshape(len(vectors), -1).double().norm(dim=1).float().cpu())
    return out[0], out[1]


def centre_box(model: DiffusionModel) -> tuple[int, int, int, int]:
    """The default region: the centre of the image, half its height and width."""
    _, height, width = model.image_shape
    return (height // 4, width // 4, height - height // 4, width - width // 4)


def _describe(box: Any, region: torch.Tensor) -> dict[str, Any]:
    """The region as recorded: the box, or the mask's share of x_t's grid."""
    share = float((region != 0).double().mean())
    if box is not None:
        return {"box": [int(v) for v in box], "share": round(share, 6)}
    return {"mask": True, "share": round(share, 6), "cells": int((region != 0).sum())}


def default_timestep(model: DiffusionModel) -> int:
    """The engine's default edit timestep on ``model``."""
    return model.check_timestep(
        int(math.floor(TIMESTEP_FRACTION * (model.schedule.num_train_timesteps - 1) + 0.5))
    )
