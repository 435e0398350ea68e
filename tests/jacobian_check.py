"""The pullback basis against the materialised Jacobian, for the tests of every model
family (the bar: singular values within 1%, subspace within 1 degree)."""

from __future__ import annotations

import math

import torch

from workbench.engines.pullback import local_basis, target_map
from workbench.stats import principal_angles


def assert_basis_matches_jacobian(
    model, x: torch.Tensor, t: int, k: int = 3, target: str = "h", mask=None
) -> torch.Tensor:
    """Assert that ``local_basis`` at ``x`` ``[1, C, H, W]`` (a float64 model, under the
    conditioning and activation point in force) matches the SVD of the Jacobian of
    x_t -> h (or x0 / eps with ``target``, masked by ``mask``); returns the Jacobian's
    top-``k`` singular values."""
    f, _ = target_map(model, t, target, mask)
    with model.jacobian_safe():
        jac = torch.func.jacrev(lambda z: f(z[None])[0].reshape(-1))(x[0])
    basis = local_basis(
        model,
        x,
        t,
        k=k,
        oversample=6,
        tol_deg=0.05,
        dtype=torch.float64,
        target=target,
        mask=mask,
    )
    _, s, vh = torch.linalg.svd(jac.reshape(jac.shape[0], -1), full_matrices=False)
    assert torch.allclose(basis.s[0], s[:k], rtol=1e-2), (basis.s[0], s[:k])
    angle = principal_angles(vh[:k].T, basis.V[0].reshape(k, -1).T).max()
    assert float(angle) * 180 / math.pi < 1.0, float(angle) * 180 / math.pi
    assert model.hook_count() == 0
    return s[:k]
