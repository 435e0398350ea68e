"""Pullback-metric directions: the local basis of x_t -> h (docs/methods.md, section 1).

For one timestep t, f(x) = h(x, t) maps x-space (d = C H W) to h-space. The pullback
metric is J^T J with J = df/dx; its top eigenvectors V (the top right singular vectors
of J) are the x-space directions the encoder stretches most, U = J V / |J V| their images
in h, and s the singular values.

Algorithm (:func:`local_basis`): randomized block Krylov (or subspace) iteration on
J^T J with oversampling ``p`` and Rayleigh-Ritz extraction, for a batch of samples at once
(written here for subspace iteration; Krylov below):

1. Q = orth(J^T Omega) ``[B, d, k + p]`` with Omega Gaussian in h-space (one reverse
   pass: a random start already inside the row space of J, half an iteration ahead of a
   Gaussian start in x-space), or a warm start padded with random columns;
2. Y = J Q by forward mode, all k + p columns in one ``vmap`` of ``jvp`` (``chunk`` bounds
   how many go through at once, and so the peak memory); P = orth(Y);
3. Z = J^T P by reverse mode (one ``vmap`` of the ``vjp``);
4. Ritz step on the left (as in randomized SVD, B = P^T J): Z = V S W^T (thin SVD), so the
   Ritz vectors are V, the values S and the h-space vectors U = P W; the next Q is V;
5. stop when the largest principal angle between the top-k Ritz subspaces of successive
   iterations is below ``tol_deg`` (after ``min_iter`` iterations), or at ``max_iter``.

The Ritz step uses the reverse pass that the next iteration needs anyway, so each
iteration's estimate lies in span(J^T J Q), half an iteration further than a Ritz step on
Q itself (which would need one more forward pass at the end). With ``method="krylov"``
(the default) the same passes build the block Krylov space K = [Q_1, (J^T J) Q_1, ...],
and the Ritz step runs on P = orth(J K), with J^T P taken from the stored J^T J Q_i (no
extra pass); after ``max_blocks`` blocks it restarts from the current Ritz vectors, which
bounds what it stores. ``method="subspace"`` keeps only Q (steps 2-4 as written).

Where h is much larger than x (a transformer's tokens: FLUX's h is 48 times its x), the
Krylov blocks' images J Q_i dominate what the iteration stores. With ``ritz="x"`` the
Ritz step keeps none of them: the Gram matrix of J K is K^T (J^T J K), from x-space
alone, and J^T P follows from its eigendecomposition (:func:`_pull_back_gram`); U is then
J V / |J V|, one forward pass of k columns at the end. ``ritz="auto"`` (the default)
takes it where the memory budget would otherwise shrink the columns per pass.

Runs under ``model.jacobian_safe()`` (forward-mode AD through attention). Samples do not
interact in the U-Net (GroupNorm and attention act per sample), so one batched JVP gives
each sample's own J v.

The map's output is a choice (``target``): ``"h"`` (the activation at the model's
:attr:`~workbench.models.DiffusionModel.h_point`: the pullback metric of the published
method), ``"x0"`` (the posterior mean, the model's prediction of the clean sample from
x_t: the Jacobian LOCO-Edit decomposes) or ``"eps"`` (the predicted noise). An output
``mask`` (weights on the ``[C, H, W]`` of x0 or eps, e.g. 0/1 for a region) restricts the
map to a region: the basis of the masked Jacobian ``diag(m) J``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workbench.directions import DirectionSet
from workbench.engines import register_engine
from workbench.errors import WorkbenchError, check_finite
from workbench.memory import (
    GIB,
    MARGIN,
    TensorBytes,
    checkpointed,
    chunk_for,
    free_bytes,
    gib,
)
from workbench.models import attention
from workbench.models.wrapper import DiffusionModel
from workbench.options import CACHE, MAX_SEED, NUM_STEPS, SEED, Option, Spec, validated
from workbench.sampling import make_timesteps, run_to
from workbench.stats import principal_angles
from workbench.store import Cache, as_cache, cache_key


class _Stopped:
    """Each sample's basis from the iteration where it stopped: top-k right singular
    vectors ``[B, d, k]``, singular values ``[B, k]`` and left singular vectors
    ``P W`` ``[B, m, k]``, filled in as samples stop."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.top = self.s = self.u = None

    def keep(
        self, rows: torch.Tensor, top: torch.Tensor, s: torch.Tensor, u: torch.Tensor | None
    ) -> None:
        """Record the current iteration for the samples where ``rows`` ``[B]`` is True:
        its top-k Ritz vectors, values and left vectors ``u`` (None after an x-space Ritz
        step, which has none: :meth:`images`)."""
        s = s[:, : self.k]
        if self.top is None:
            self.top, self.s = top.clone(), s.clone()
        self.top[rows], self.s[rows] = top[rows], s[rows]
        if u is not None:
            if self.u is None:
                self.u = u.clone()
            self.u[rows] = u[rows]

    def images(self, jv: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The left vectors ``[B, m, k]``: those kept, or else J V / |J V| by one forward
        pass of the k kept Ritz vectors (``jv``: J Q)."""
        if self.u is not None:
            return self.u
        u = jv(self.top)
        return u / u.norm(dim=1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)


@dataclass
class LocalBasis:
    """Top-k singular triplets of J = dh/dx_t for each sample.

    Attributes:
        V: ``[B, k, C, H, W]`` x-space directions (unit, orthonormal per sample).
        U: ``[B, k, *h_shape]`` their images in h-space, normalised (the left Ritz vectors:
            J V / |J V| up to the accuracy of V).
        s: ``[B, k]`` singular values, descending.
        t: the timestep.
        iterations: subspace iterations run.
        angles: largest principal angle (degrees) between successive top-k subspaces, per
            iteration (max over the batch).
        converged: whether the last angle fell below the tolerance.
        chunk: columns per vmapped pass at the end (None: all of them in one pass).
        width: columns of the iteration, k + oversample (0 where not computed here).
        ritz: where the Krylov Rayleigh-Ritz step ran, ``"h"`` or ``"x"``
            (:func:`local_basis`).
        checkpoint: whether its reverse-mode passes ran the network's blocks again
            instead of keeping their activations (:func:`local_basis`).
    """

    V: torch.Tensor
    U: torch.Tensor
    s: torch.Tensor
    t: int
    iterations: int
    angles: list[float] = field(default_factory=list)
    converged: bool = False
    chunk: int | None = None
    width: int = 0
    ritz: str = "h"
    checkpoint: bool = False

    @property
    def k(self) -> int:
        """Number of directions per sample."""
        return int(self.s.shape[1])


def _orth(m: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(m)
    return q


def _pull_back_range(
    y: torch.Tensor, z: torch.Tensor, rtol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal ``P`` ``[B, m, r]`` for the span of ``y = J K`` ``[B, m, n]`` and
    ``J^T P`` ``[B, d, r]`` from ``z = J^T y`` ``[B, d, n]``, without another product.

    With y = P S W^T (thin SVD), J^T P = z W S^{-1}; directions of y with
    s < ``rtol`` s_max (J K nearly singular there) are left out of P, since dividing by them
    would only amplify rounding.
    """
    p_h, sy, wh = torch.linalg.svd(y, full_matrices=False)
    keep = int((sy > rtol * sy[:, :1]).sum(1).min())
    w = wh[:, :keep].transpose(1, 2) / sy[:, None, :keep]
    return p_h[:, :, :keep], z @ w


def _pull_back_gram(space: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``J^T P`` ``[B, d, r]`` for P an orthonormal basis of the span of ``J K`` from x-space
    alone: the orthonormal ``space`` K ``[B, d, n]`` and ``z = J^T J K`` ``[B, d, n]``.

    The Gram matrix of J K is K^T z = W S^2 W^T (eigendecomposition, in float64), so
    P = J K W S^{-1} and J^T P = z W S^{-1}, without J K itself (h-space, m numbers a
    column, may be many times the size of x-space). A Gram matrix squares the condition
    number: directions of J K with s below ``sqrt(GRAM_FLOOR[dtype])`` s_max are left out
    (about 3e-3 s_max in float32, 3e-7 in float64), since their W is lost to rounding.
    """
    gram = (space.transpose(1, 2) @ z).double()
    gram = (gram + gram.transpose(1, 2)) / 2
    lam, w = torch.linalg.eigh(gram)  # ascending
    lam, w = lam.flip(-1), w.flip(-1)
    floor = GRAM_FLOOR[z.dtype] * lam[:, :1]
    keep = int((lam > floor).sum(1).min())
    w = w[:, :, :keep] / lam[:, None, :keep].sqrt()
    return z @ w.to(z.dtype)


#: Eigenvalues of a Gram matrix K^T J^T J K below this share of the largest are rounding
#: (:func:`_pull_back_gram`): some hundred times the unit roundoff of the products.
GRAM_FLOOR = {torch.float32: 1e-5, torch.float64: 1e-13}


#: What the Jacobian maps x_t to (module docstring).
TARGETS = ("h", "x0", "eps")
TARGET = Option(
    "target",
    str,
    "h",
    "the map's output: h at the activation point, x0 (the posterior mean) or eps",
    choices=TARGETS,
)
#: The options of a basis (:func:`local_basis`; the engine and the probes share them).
CHUNK = Option(
    "chunk",
    int,
    None,
    "columns per vmapped pass (default: the most that fit the memory; same result to rounding)",
    low=1,
)
MEMORY = Option(
    "memory",
    float,
    None,
    "GiB a basis may take on its device, which sets the columns per pass (default: the "
    "device's free memory)",
    low=0.001,
)
OVERSAMPLE = Option("oversample", int, 4, "extra columns of the iteration (p)", low=0, high=1024)
MAX_ITER = Option("max_iter", int, 30, "most iterations", low=1, high=10000)
TOL_DEG = Option("tol_deg", float, 0.1, "stop when the basis moves less (degrees)", low=0, high=90)
METHOD = Option(
    "method", str, "krylov", "block Krylov or subspace iteration", choices=("krylov", "subspace")
)
RITZ = Option(
    "ritz",
    str,
    "auto",
    "where the Krylov Ritz step finds J K's span: h (its images) or x (a Gram matrix; "
    "for an h much larger than x); auto: x where that lets more columns per pass fit",
    choices=("auto", "h", "x"),
    cli=False,
)
CHECKPOINT = Option(
    "checkpoint",
    str,
    "auto",
    "activation checkpointing: reverse-mode passes run the network's blocks again instead "
    "of keeping their activations (on, off; auto: on where that lets more columns per "
    "pass fit the memory)",
    choices=("auto", "on", "off"),
    cli=False,
)
#: The sampling steps that reach x_t from x_T before a basis is computed there.
REACH_STEPS = dataclasses.replace(
    NUM_STEPS, help="sampling steps over [0, T] to reach x_t (default: the preset's)"
)
#: The options of a basis at x_t, one group for every engine, probe and sweep that computes
#: one (the pullback and local engines, :func:`local_directions`, the consistency and
#: spectrum probes, :func:`sample_bases`); :func:`basis_options` gives a subset.
BASIS_OPTIONS = (OVERSAMPLE, MAX_ITER, TOL_DEG, METHOD, TARGET, CHUNK, MEMORY, REACH_STEPS)


def basis_options(*names: str) -> tuple[Option, ...]:
    """The :data:`BASIS_OPTIONS` named (all of them if none is), in that order."""
    unknown = set(names) - {o.name for o in BASIS_OPTIONS}
    if unknown:
        raise ValueError(f"not basis options: {sorted(unknown)}")
    return tuple(o for o in BASIS_OPTIONS if not names or o.name in names)


#: The basis options of the probes that compute bases (consistency, spectrum), with the
#: engines' defaults: on shapes32 their statistics at tol_deg 0.1 and 0.5 agree to four
#: decimals, for 16 s against 15 (analysis/probe_tolerance.py,
#: docs/measurements/probe_tolerance_shapes32.json), so one default serves both.
PROBE_BASIS_OPTIONS = basis_options(
    "max_iter", "tol_deg", "oversample", "method", "chunk", "memory"
)


def basis_params(k: int = 8, **options: Any) -> dict[str, Any]:
    """The parameters of a basis from ``options`` (:data:`BASIS_OPTIONS`, each left out at
    its default; any other name is refused): what :func:`sample_bases` uses and caches by
    and what the direction sets record (the target only when it is not h, so that the
    cache entries of h bases made before targets existed stay valid; ``chunk`` and
    ``memory`` never: they change the result only by rounding)."""
    unknown = sorted(set(options) - {o.name for o in BASIS_OPTIONS})
    if unknown:
        raise WorkbenchError(f"not a basis option: {unknown[0]!r}")
    params: dict[str, Any] = {"k": k}
    for o in BASIS_OPTIONS:
        if o.name not in ("chunk", "memory"):
            params[o.name] = options.get(o.name, o.default)
    if params["target"] == "h":
        del params["target"]
    order = ("k", "oversample", "max_iter", "tol_deg", "num_steps", "method", "target")
    return {name: params[name] for name in order if name in params}


LOCAL_BASIS = Spec(
    "function",
    "local_basis",
    "top-k right singular vectors of dh/dx_t",
    (
        Option("k", int, 8, "basis size", low=1, high=100_000),
        OVERSAMPLE,
        MAX_ITER,
        Option("min_iter", int, 2, "fewest iterations", low=1, high=10000),
        TOL_DEG,
        CHUNK,
        MEMORY,
        Option("warm_start", object, None, "x-space vectors to start from", cli=False),
        SEED,
        Option(
            "sample_seeds",
            object,
            None,
            "one seed per sample for its random start (default: seed, for the batch at once)",
            cli=False,
        ),
        Option("dtype", object, torch.float32, "dtype of the iteration", cli=False),
        Option("callback", object, None, "called with (iteration, V)", cli=False),
        METHOD,
        Option("max_blocks", int, 8, "Krylov blocks before a restart", low=1, high=1000),
        TARGET,
        Option("mask", object, None, "weights on the x0/eps output [C|1, H, W]", cli=False),
        RITZ,
        CHECKPOINT,
    ),
)


def _basis_checked(fn: Callable) -> Callable:
    return validated(LOCAL_BASIS, fn, first=3)


@_basis_checked
def local_basis(
    model: DiffusionModel,
    x_t: torch.Tensor,
    t: int,
    k: int = 8,
    oversample: int = 4,
    max_iter: int = 30,
    min_iter: int = 2,
    tol_deg: float = 0.1,
    chunk: int | None = None,
    memory: float | None = None,
    warm_start: torch.Tensor | None = None,
    seed: int = 0,
    sample_seeds: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    method: str = "krylov",
    max_blocks: int = 8,
    target: str = "h",
    mask: torch.Tensor | None = None,
    ritz: str = "auto",
    checkpoint: str = "auto",
) -> LocalBasis:
    """Top-``k`` right singular vectors of dh/dx_t at ``x_t`` ``[B, C, H, W]``, timestep ``t``
    (of dx0/dx_t or deps/dx_t with ``target``, masked on the output by ``mask``).

    Args:
        oversample: extra columns ``p`` carried along (accuracy of the top k).
        chunk: at most this many of the ``k + p`` columns per vmapped pass (memory bound).
            Without it, the most that fit ``memory`` (:func:`basis_memory`), and half
            as many again whenever a pass runs out of device memory all the same.
        memory: GiB the basis may take on its device: its forward pass, its Jacobian
            products and its linear algebra (:func:`basis_memory`). Default: what the
            device has free.
        warm_start: ``[B, k', C, H, W]`` or ``[k', C, H, W]`` x-space vectors to start from
            (e.g. the basis at a neighbouring timestep or sample).
        sample_seeds: one seed per sample for its random start; without them the starts
            of the whole batch are drawn from ``seed`` at once. Each sample also stops on
            its own (its basis is kept from the iteration where it moved less than
            ``tol_deg``, while the others go on), so with ``sample_seeds`` a sample's basis
            does not depend on which other samples share its batch (up to rounding):
            shards of a sweep give what one batch gives.
        dtype: dtype of the Jacobian products, the model's own: float32, float64, or
            float16/bfloat16 for a half-precision model (then the products run in half
            precision and the linear algebra in float32; the basis comes back in float32).
        callback: called after every iteration with (iteration, top-k Ritz vectors
            ``[B, d, k]``), e.g. to trace accuracy against time.
        method: ``"subspace"`` (block subspace iteration, the module docstring) or
            ``"krylov"`` (randomized block Krylov: the Rayleigh-Ritz step runs on the whole
            Krylov space [Q, (J^T J) Q, (J^T J)^2 Q, ...] built so far, one block of
            ``k + p`` columns per iteration at the same cost per iteration, which needs
            fewer iterations for the same accuracy when the spectrum decays slowly).
        max_blocks: Krylov only: once the space holds this many blocks, it restarts from
            its top ``k + p`` Ritz vectors, so the stored blocks never exceed
            ``max_blocks * (k + p) * (2 d + m)`` numbers per sample (m = the size of h).
        target: ``"h"``, ``"x0"`` or ``"eps"``: the output of the map (module docstring);
            ``U`` then has the output's shape.
        mask: weights ``[C, H, W]``, ``[1, H, W]`` or ``[H, W]`` multiplying an x0 or eps
            output (a region's 0/1 mask: the masked Jacobian).
        ritz: Krylov only: where its Rayleigh-Ritz step finds the span of J K. ``"h"``
            keeps every block's image J Q_i (m numbers a column) and takes an SVD of
            them; ``"x"`` keeps none and takes the Gram matrix K^T J^T J K from x-space
            (:func:`_pull_back_gram`: it resolves singular values down to about 3e-3 of
            the largest in float32, and ``U`` then costs one forward pass of k columns
            at the end: J V / |J V|); ``"auto"``: ``"x"`` where the memory budget would
            otherwise run the products in fewer columns per pass (or not at all), as for
            a FLUX transformer whose h is 48 times its x, else ``"h"`` (always ``"h"``
            with ``chunk`` given).
        checkpoint: ``"on"``: the forward pass that the reverse-mode passes reuse keeps
            only each network block's input (every activation point, :meth:`h_points`),
            and each reverse-mode pass runs the blocks again, one at a time, as it reaches
            them (activation checkpointing: one more forward pass per reverse-mode pass,
            the forward's activations held for one block instead of all of them);
            ``"off"``: everything kept; ``"auto"``: ``"on"`` where the memory budget
            would otherwise run the products in fewer columns per pass (or not at all),
            after the Ritz step's choice (``"off"`` with ``chunk`` given).
    """
    model.check_x(x_t, "x_t")
    check_finite("x_t", x_t)
    t = model.check_timestep(t)
    b, d = x_t.shape[0], model.d
    width = k + oversample
    if not 1 <= k <= d or oversample < 0 or width > d:
        raise WorkbenchError(f"need 1 <= k and k + oversample <= {d}, got k={k}, p={oversample}")
    if model.dtype != dtype:
        raise WorkbenchError(f"model is {model.dtype}; load it with dtype={dtype} for this basis")
    if chunk is not None and memory is not None:
        raise WorkbenchError("give chunk (columns per pass) or memory (GiB), not both")
    if method == "subspace":
        ritz = "h"  # it keeps one block: nothing to save
    # QR and SVD have no half-precision kernels: half models do their algebra in float32
    algebra = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    x = x_t.detach().to(model.device, dtype).clone()
    shape = model.sample_shape
    if sample_seeds is not None and len(sample_seeds) != b:
        raise WorkbenchError(f"sample_seeds has {len(sample_seeds)} seeds for {b} samples")
    gen = torch.Generator().manual_seed(seed)

    def draw(rows: int) -> torch.Tensor:  # Gaussian [B, rows, width], float64, on the CPU
        if sample_seeds is None:
            return torch.randn(b, rows, width, generator=gen, dtype=torch.float64)
        return torch.stack(
            [
                torch.randn(rows, width, generator=torch.Generator().manual_seed(int(s)),
                            dtype=torch.float64)
                for s in sample_seeds
            ]
        )  # fmt: skip

    start = None
    if warm_start is not None:
        warm = warm_start.to(x.device, algebra)
        if warm.ndim == 4:  # one start shared by every sample
            warm = warm.unsqueeze(0).expand(b, -1, -1, -1, -1)
        if warm.ndim != 5 or warm.shape[0] != b or tuple(warm.shape[2:]) != shape:
            raise WorkbenchError(
                f"warm_start has shape {list(warm_start.shape)}, expected [B, k', *{list(shape)}]"
            )
        start = draw(d).to(x.device, algebra)
        cols = min(warm.shape[1], width)
        start[:, :, :cols] = warm[:, :cols].reshape(b, cols, d).transpose(1, 2)

    f, out_shape = target_map(model, t, target, mask, x.device)
    blocks = _blocks(model)
    products = _Products(f, x, out_shape, algebra, chunk, auto=chunk is None, blocks=blocks)
    products.checkpoint = checkpoint == "on"
    jv, jtu = products.forward, products.reverse

    angles: list[float] = []
    previous = None
    converged = False
    done = torch.zeros(b, dtype=torch.bool, device=x.device)  # samples that stopped
    final = _Stopped(k)
    blocks: list[torch.Tensor] = []  # Krylov: orthonormal blocks Q_i, J Q_i and J^T J Q_i
    images: list[torch.Tensor] = []
    pulled: list[torch.Tensor] = []
    m = math.prod(out_shape)
    budget = None if chunk is not None else _budget(memory, x.device)
    with model.jacobian_safe(), torch.enable_grad():
        if budget is None:
            products.start()  # the forward pass that reverse mode reuses
            ritz = "h" if ritz == "auto" else ritz
        else:  # as many columns per pass as fit (basis_memory)
            kept = min(max_blocks, max_iter) if method == "krylov" else 1
            what = (target, mask is not None)
            need, ritz = _plan(model, products, width, kept, what, budget, ritz, checkpoint)
            products.chunk = need.columns_within(budget)
        if start is None:  # J^T Omega: a random start inside the row space of J
            start = jtu(draw(m).to(x.device, dtype))
        q = _orth(start)
        for it in range(1, max_iter + 1):
            y = jv(q)  # J Q, [B, m, w]
            if method == "subspace":
                p_h, _, _ = torch.linalg.svd(y, full_matrices=False)  # P = orth(J Q)
                z = jtu(p_h)  # J^T P, [B, d, w]
            else:
                blocks.append(q)
                pulled.append(jtu(y))  # J^T J Q_i
                if ritz == "h":
                    images.append(y)
                    p_h, z = _pull_back_range(torch.cat(images, 2), torch.cat(pulled, 2))
                else:  # the span of J K from x-space: no h-space block is kept
                    p_h, z = None, _pull_back_gram(torch.cat(blocks, 2), torch.cat(pulled, 2))
                del y
            # Rayleigh-Ritz on the left: P^T J = W S V^T, so V spans J^T P
            v, s, wh = torch.linalg.svd(z, full_matrices=False)
            u = None if p_h is None else p_h @ wh.transpose(1, 2)[:, :, :k]  # left: P W
            restart = method == "subspace" or len(blocks) == max_blocks
            following = v[:, :, :width].clone() if restart else None
            top = v[:, :, :k].clone()
            del v, wh, p_h, z  # only what the passes need stays while they run
            if callback is not None:
                callback(it, top)
            if previous is not None:
                moved = principal_angles(previous, top).amax(-1) * (180 / math.pi)  # [B]
                angles.append(float(moved[~done].amax()))
                newly = (moved < tol_deg) & ~done if it >= min_iter else torch.zeros_like(done)
                if bool(newly.any()):  # these samples stop here; the rest go on
                    final.keep(newly, top, s, u)
                    done |= newly
                if bool(done.all()):
                    converged = True
                    break
            previous = top
            if it == max_iter:
                break
            if restart:
                q = following  # orth(J^T P): the next subspace, or the Krylov restart
                blocks, images, pulled = [], [], []
                continue
            space = torch.cat(blocks, 2)
            if space.shape[2] + width > d:  # the Krylov space would fill x-space
                break
            z = pulled[-1]  # (J^T J) Q_i: the next block
            for _ in range(2):  # block Gram-Schmidt against the space, twice for stability
                z = z - space @ (space.transpose(1, 2) @ z)
            q = _orth(z)
        final.keep(~done, top, s, u)  # the samples still moving: their last iteration
        del blocks, images, pulled
        u_h = final.images(jv)
    top, s_k = final.top, final.s
    check_finite("local basis", s_k)
    V = top.transpose(1, 2).reshape(b, k, *shape)
    U = u_h.transpose(1, 2).reshape(b, k, *out_shape)
    return LocalBasis(
        V=V.detach(),
        U=U.detach(),
        s=s_k.detach(),
        t=t,
        iterations=it,
        angles=angles,
        converged=converged,
        chunk=products.chunk,
        width=width,
        ritz=ritz,
        checkpoint=products.checkpoint,
    )


def _budget(memory: float | None, device: torch.device) -> int | None:
    """Bytes a basis may take: ``memory`` GiB, else the device's free memory (None where
    unknown), less :data:`~workbench.memory.MARGIN` for what the count does not see."""
    total = free_bytes(device) if memory is None else memory * GIB
    return None if total is None else int(total * (1 - MARGIN))


def _algebra_bytes(
    b: int, d: int, m: int, width: int, blocks: int, dtype: torch.dtype, ritz: str = "h"
) -> tuple[int, int]:
    """Bytes of the iteration's own tensors, upper bounds: ``(held, peak)``, what it keeps
    while a pass of the products runs and the most at once in its Ritz step, for
    ``blocks`` blocks of ``width`` columns kept and ``ritz`` (:data:`ALGEBRA`)."""
    n = width * blocks
    held_x, held_h, peak_x, peak_h, start = ALGEBRA
    if ritz == "h":
        held, peak = held_x * d * n + held_h * m * n, peak_x * d * n + peak_h * m * n
    else:  # one block's image in flight; the random start drawn in float64
        held, peak = held_x * d * n + m * width, peak_x * d * n + start * m * width
    size = b * torch.finfo(dtype).bits // 8
    return int(size * held), int(size * peak)


#: The iteration's own tensors in numbers per column of its kept blocks
#: (:func:`_algebra_bytes`): held while a pass runs, per number of x (the blocks, their
#: pull-backs, the Ritz vectors) and of h (the blocks' images, with an h-space step);
#: at the peak of the Ritz step, per number of x (concatenations, factorisations) and of
#: h (the images, their concatenation, SVD and left factor); and with an x-space step,
#: per h number of one block, the random start (drawn in float64). Counted with
#: :class:`~workbench.memory.TensorBytes` on explicit Jacobians, tests/test_memory.py
#: holds every count within these bounds and the bounds within 1.7x of the counts.
ALGEBRA = (3.5, 1.1, 6.5, 3.25, 3)


def _ritz_within(needs: dict[str, BasisMemory], budget: int, ritz: str) -> tuple[BasisMemory, str]:
    """The memory and the Ritz step of a basis (``needs``: by step, from :func:`_need`):
    ``ritz``, or for ``"auto"`` the x-space step where it lets the products run in more
    columns per pass within ``budget`` bytes than the h-space one, or where neither fits
    (its need is the smaller one to report)."""
    if ritz != "auto":
        return needs[ritz], ritz
    fits = {step: _columns(need, budget) for step, need in needs.items()}
    ritz = "h" if fits["h"] >= fits["x"] and fits["h"] else "x"  # x: the smaller refusal
    return needs[ritz], ritz


def _columns(need: BasisMemory, budget: int) -> int:
    """Columns per pass that ``need`` fits within ``budget`` bytes (0: none)."""
    try:
        fit = need.columns_within(budget)
    except WorkbenchError:
        return 0
    return need.width if fit is None else fit


def _plan(
    model: DiffusionModel,
    products: _Products,
    width: int,
    kept: int,
    what: tuple,
    budget: int,
    ritz: str,
    checkpoint: str,
) -> tuple[BasisMemory, str]:
    """The memory and the Ritz step of a basis within ``budget`` bytes (:func:`_need`,
    :func:`_ritz_within`), with ``products`` set for it and their forward pass run. With
    ``checkpoint="auto"``, activation checkpointing only where it lets more columns per
    pass fit than keeping the forward pass does (or where neither fits: its need is the
    smaller one to report): it costs a forward pass per reverse-mode pass."""
    best: tuple[int, BasisMemory, str] | None = None
    for on in {"on": (True,), "off": (False,), "auto": (False, True)}[checkpoint]:
        products.checkpoint = on
        need, step = _ritz_within(_need(model, products, width, kept, what), budget, ritz)
        fit = _columns(need, budget)
        if best is None or fit > best[0] or fit == best[0] == 0:
            best = (fit, need, step)
        if fit == width:
            break
    _, need, step = best
    if products.checkpoint != need.checkpoint:  # the forward pass run last is the other
        products.checkpoint = need.checkpoint
        products.start()
    return need, step


class _Products:
    """J Q and J^T P for a batch ``x`` ``[B, C, H, W]`` of the map ``f``, by vmapped
    forward- and reverse-mode passes of ``chunk`` columns at a time (None: all); with
    ``auto``, a pass that runs out of memory is run again with half as many columns.
    With ``checkpoint`` set, the forward pass that the reverse-mode passes reuse keeps
    only what each of ``blocks`` is given, and every reverse-mode pass runs each block
    again (:func:`~workbench.memory.checkpointed`)."""

    def __init__(
        self,
        f: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        out_shape: tuple[int, ...],
        algebra: torch.dtype,
        chunk: int | None,
        auto: bool,
        blocks: Sequence[nn.Module] = (),
    ) -> None:
        self.f, self.x, self.out_shape, self.algebra = f, x, out_shape, algebra
        self.chunk, self.auto, self.blocks = chunk, auto, blocks
        self.checkpoint = False
        self.pull: Callable[[torch.Tensor], torch.Tensor] | None = None  # u -> J^T u

    def start(self, count: bool = False) -> int:
        """Run the forward pass that every reverse-mode pass reuses (again, letting go of
        an earlier one first); with ``count``, return the bytes it keeps
        (:class:`~workbench.memory.TensorBytes`), else 0."""
        self.pull = None
        counter = TensorBytes() if count else contextlib.nullcontext()
        with counter:
            if self.checkpoint:  # torch.func.vjp refuses checkpoints: autograd's graph
                x = self.x.detach().requires_grad_(True)
                with checkpointed(self.blocks):
                    out = self.f(x)
                self.pull = functools.partial(_pull_through, out, x)
            else:
                _, vjp_fn = torch.func.vjp(self.f, self.x)
                self.pull = lambda u: vjp_fn(u)[0]
        return counter.held if count else 0

    def forward(self, cols: torch.Tensor) -> torch.Tensor:
        """J Q: ``[B, d, w]`` -> ``[B, m, w]``."""
        w, b = cols.shape[2], self.x.shape[0]
        tangents = cols.permute(2, 0, 1).reshape(w, *self.x.shape).to(self.x.dtype)
        push = lambda v: torch.func.jvp(self.f, (self.x,), (v,))[1]
        out = self._fitting(w, lambda: torch.func.vmap(push, chunk_size=self.chunk)(tangents))
        return out.reshape(w, b, -1).permute(1, 2, 0).to(self.algebra)

    def reverse(self, cols: torch.Tensor) -> torch.Tensor:
        """J^T P: ``[B, m, w]`` -> ``[B, d, w]``."""
        w, b = cols.shape[2], self.x.shape[0]
        cot = cols.permute(2, 0, 1).reshape(w, b, *self.out_shape).to(self.x.dtype)
        out = self._fitting(w, lambda: torch.func.vmap(self.pull, chunk_size=self.chunk)(cot))
        return out.reshape(w, b, -1).permute(1, 2, 0).to(self.algebra)

    def _fitting(self, columns: int, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``run()`` (a pass of ``columns`` columns); when it runs out of memory with
        columns per pass chosen here (``auto``), again with half as many (down to one)."""
        while True:
            try:
                return run()
            except torch.OutOfMemoryError:
                now = min(self.chunk or columns, columns)
                if not self.auto or now == 1:
                    raise
                self.chunk = max(1, now // 2)
                if self.x.device.type == "cuda":
                    torch.cuda.empty_cache()


def _blocks(model: DiffusionModel) -> list[nn.Module]:
    """The network's blocks that checkpointing wraps: one per activation point."""
    return [model.arch.module(point) for point in model.h_points()]


def _pull_through(out: torch.Tensor, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """J^T u through the autograd graph from ``x`` to ``out`` (kept for the next pass):
    ``u`` has the shape of ``out``, the result that of ``x`` (under ``torch.func.vmap``
    a batch of them: functorch's batching, which has rules that ``is_grads_batched``
    lacks)."""
    return torch.autograd.grad(out, x, u, retain_graph=True)[0]


#: Counted costs (bytes of the forward pass kept, of a pass whatever its width, of a
#: column), per model and then per everything else that changes them (:func:`_need`).
_COUNTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _pass_cost(products: _Products) -> tuple[int, int]:
    """Bytes of a vmapped pass of the products beyond what it is given: whatever its
    number of columns, and per column. Counted (:class:`~workbench.memory.TensorBytes`)
    on passes of two and of three columns, forward and reverse mode; the larger intercept
    and slope of the two (a pass of one column is batched differently and costs less
    than its share)."""
    x = products.x
    b, d, m = x.shape[0], x[0].numel(), math.prod(products.out_shape)
    slopes, intercepts = [], []
    chunk, products.chunk = products.chunk, None
    for product, rows in ((products.forward, d), (products.reverse, m)):
        peaks = []
        for width in (2, 3):
            cols = torch.randn(b, rows, width, device=x.device, dtype=products.algebra)
            with TensorBytes() as count:
                product(cols)
            peaks.append(count.peak)
        slope = max(peaks[1] - peaks[0], 1)
        slopes.append(slope)
        intercepts.append(max(peaks[0] - 2 * slope, 0))
    products.chunk = chunk
    return max(intercepts), max(slopes)


@dataclass(frozen=True)
class BasisMemory:
    """Bytes a basis takes on its device, as :class:`~workbench.memory.TensorBytes`
    counts them (tensors only: an allocator's rounding and the kernels' workspaces come on
    top, which the budgets leave :data:`~workbench.memory.MARGIN` for).

    Attributes:
        forward: the forward pass that every reverse-mode pass reuses, kept throughout.
        algebra: the iteration's own tensors at the peak of its Ritz step (its blocks of
            columns, their pull-backs and images, concatenations and factorisations), an
            upper bound.
        held: the iteration's own tensors kept while a pass of the products runs (its
            blocks), an upper bound.
        fixed: a pass of the Jacobian products, whatever its number of columns.
        per_column: a pass, for each of its columns.
        width: the basis' columns, k + oversample.
        ritz: the Krylov Ritz step it is for, ``"h"`` or ``"x"`` (:func:`local_basis`).
        checkpoint: whether it is for reverse-mode passes that run the blocks again
            (activation checkpointing, :func:`local_basis`): then ``forward`` holds the
            blocks' inputs only, and a pass (``fixed``) one block's activations more.
    """

    forward: int
    algebra: int
    fixed: int
    per_column: int
    width: int
    held: int = 0
    ritz: str = "h"
    checkpoint: bool = False

    def peak(self, columns: int | None = None) -> int:
        """Bytes at the peak with ``columns`` per pass (default: all of them at once): in
        a pass of the products or in a Ritz step, whichever takes more."""
        n = self.width if columns is None else min(columns, self.width)
        in_pass = self.held + self.fixed + n * self.per_column
        return self.forward + max(in_pass, self.algebra)

    def columns_within(self, budget: int) -> int | None:
        """The most columns per pass that keep the peak within ``budget`` bytes; None when
        all of them fit in one pass, a one-line error when not even one column does or
        the Ritz step does not fit."""
        if self.forward + self.algebra > budget:
            other = ", ritz='x'" if self.ritz == "h" else ""
            other += ", checkpoint='on'" if not self.checkpoint else ""
            raise WorkbenchError(
                f"the basis' linear algebra needs about {gib(self.forward + self.algebra)} "
                f"with its forward pass, and {gib(budget)} is available: give a larger "
                f"memory budget, fewer Krylov blocks (max_blocks){other} or fewer samples"
            )
        held = self.forward + self.held + self.fixed
        n = chunk_for(self.width, held, self.per_column, budget, "the Jacobian products")
        return None if n >= self.width else n


def basis_memory(
    model: DiffusionModel,
    x_t: torch.Tensor,
    t: int,
    k: int = 8,
    oversample: int = 4,
    method: str = "krylov",
    max_iter: int = 30,
    max_blocks: int = 8,
    target: str = "h",
    mask: torch.Tensor | None = None,
    ritz: str = "h",
    checkpoint: bool = False,
) -> BasisMemory:
    """What :func:`local_basis` with these options takes on the model's device at
    ``x_t`` ``[B, C, H, W]``, counted on one forward pass and four small passes of the
    Jacobian products (two and three columns, both modes; the count :func:`local_basis`
    makes and reuses), without running the basis: e.g. to plan a model's size, dtype or
    batch for a card (``.peak()``). ``ritz``: the Krylov Ritz step, ``"h"`` or ``"x"``;
    ``checkpoint``: reverse-mode passes that run the blocks again (what ``"auto"`` picks
    for either depends on the budget: :func:`local_basis`)."""
    if ritz not in ("h", "x"):
        raise WorkbenchError(f"ritz must be 'h' or 'x' here, got {ritz!r}")
    model.check_x(x_t, "x_t")
    t = model.check_timestep(t)
    x = x_t.detach().to(model.device, model.dtype).clone()
    algebra = torch.float32 if model.dtype in (torch.float16, torch.bfloat16) else model.dtype
    f, out_shape = target_map(model, t, target, mask, x.device)
    blocks = _blocks(model)
    products = _Products(f, x, out_shape, algebra, None, auto=False, blocks=blocks)
    products.checkpoint = bool(checkpoint)
    kept = min(max_blocks, max_iter) if method == "krylov" else 1
    if method == "subspace":
        ritz = "h"
    with model.jacobian_safe(), torch.enable_grad():
        return _need(model, products, k + oversample, kept, (target, mask is not None))[ritz]


def _need(
    model: DiffusionModel, products: _Products, width: int, kept: int, what: tuple
) -> dict[str, BasisMemory]:
    """Run the forward pass that reverse mode reuses (``products.start``) and return the
    :class:`BasisMemory` of a basis of ``width`` columns keeping ``kept`` blocks, with an
    h-space and with an x-space Ritz step (by ``"h"`` and ``"x"``), with or without
    activation checkpointing as ``products`` is set. The
    forward pass and a pass of the products are counted the first time; later bases on
    the same model with the same map (``what``: its target and mask), activation point,
    conditioning, batch, dtype, device, attention rule and blocks and checkpointing take
    the earlier count."""
    x = products.x
    conditioning = model.conditioning
    described = None if conditioning is None else repr(conditioning.describe())
    rule = (attention.SCORE_BLOCK, attention.RECOMPUTE)
    key = (*what, model.h_point, described, x.shape, x.dtype, x.device, *rule, products.checkpoint)
    counted = _COUNTED.setdefault(model, {})
    if key in counted:
        products.start()
    else:
        counted[key] = (products.start(count=True), *_pass_cost(products))
    forward, fixed, per_column = counted[key]
    m = math.prod(products.out_shape)
    needs = {}
    for ritz in ("h", "x"):
        held, peak = _algebra_bytes(x.shape[0], model.d, m, width, kept, products.algebra, ritz)
        needs[ritz] = BasisMemory(
            forward, peak, fixed, per_column, width, held, ritz, products.checkpoint
        )
    return needs


def target_map(
    model: DiffusionModel,
    t: int,
    target: str = "h",
    mask: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], tuple[int, ...]]:
    """The batched map ``x_t [B, C, H, W] -> output`` at ``t`` that a basis decomposes, and
    the shape of one output: h (``h_shape``), or x0 / eps (``sample_shape``), times
    ``mask`` (x0 and eps only; ``[C, H, W]``, ``[1, H, W]`` or ``[H, W]``, finite)."""
    if target not in TARGETS:
        raise WorkbenchError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "h":
        if mask is not None:
            raise WorkbenchError("a mask weights an x0 or eps output: give target='x0' or 'eps'")
        return (lambda z: model.h(z, t)), tuple(model.h_shape)
    shape = tuple(model.sample_shape)
    weights = None
    if mask is not None:
        weights = check_mask(model, mask).to(device or model.device, model.dtype)

    def f(z: torch.Tensor) -> torch.Tensor:
        prediction = model.predict(z, t)
        out = prediction.x0 if target == "x0" else prediction.eps
        return out if weights is None else out * weights

    return f, shape


def check_mask(model: DiffusionModel, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as weights ``[C | 1, H, W]`` on x_t's grid (float64), or a one-line error."""
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask)
    _, height, width = model.sample_shape
    m = mask.detach().to("cpu", torch.float64)
    if m.ndim == 2:
        m = m[None]
    if (
        m.ndim != 3
        or tuple(m.shape[1:]) != (height, width)
        or m.shape[0]
        not in (
            1,
            model.sample_shape[0],
        )
    ):
        raise WorkbenchError(
            f"mask has shape {list(mask.shape)}, expected [{height}, {width}] or "
            f"[1 or {model.sample_shape[0]}, {height}, {width}] (x_t's grid)"
        )
    check_finite("mask", m)
    if not bool((m != 0).any()):
        raise WorkbenchError("the mask is zero everywhere: it selects nothing")
    return m


def transport(u_a: torch.Tensor, basis_b: LocalBasis, index: int = 0) -> torch.Tensor:
    """Parallel transport of an h-space direction ``u_a`` (``[*h_shape]``) into sample
    ``index`` of ``basis_b``: ``v_b = V_b (U_b^T u_a)``, normalised; returns ``[C, H, W]``.

    The direction is projected onto b's h-space basis and mapped back through b's x-space
    basis, so it lands in the span of b's top-k directions.
    """
    u_b = basis_b.U[index].reshape(basis_b.k, -1)
    v_b = basis_b.V[index].reshape(basis_b.k, -1)
    coeff = u_b @ u_a.reshape(-1).to(u_b.dtype)
    out = coeff @ v_b
    norm = out.norm()
    if float(norm) < 1e-12:
        raise WorkbenchError(
            "the direction is orthogonal to the target basis: nothing to transport"
        )
    return (out / norm).reshape(basis_b.V.shape[2:])


@functools.partial(
    validated,
    Spec(
        "function",
        "global_directions",
        "directions shared by several samples' local bases",
        (Option("k", int, None, "directions (default: the bases' k)", low=1),),
    ),
)
def global_directions(basis: LocalBasis, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Directions shared by the local bases of several samples.

    Every sample's x-space directions, weighted by their singular values, are stacked
    (``[B k, d]``); the top right singular vectors of the stack span the subspace that the
    samples stretch most in common. Returns ``(vectors [k, C, H, W], weights [k])`` with
    weights = singular values of the stack / sqrt(B) (for one sample: its own s), signs by
    the largest-entry rule.
    """
    from workbench.directions import sign_fixed

    b, kk = basis.s.shape
    k = kk if k is None else k
    if not 1 <= k <= kk:
        raise WorkbenchError(f"k must be in [1, {kk}], got {k}")
    stack = (basis.V.reshape(b, kk, -1) * basis.s[:, :, None]).reshape(b * kk, -1)
    _, s, vh = torch.linalg.svd(stack.double(), full_matrices=False)
    vectors = sign_fixed(vh[:k]).to(basis.V.dtype)
    return vectors.reshape(k, *basis.V.shape[2:]), (s[:k] / b**0.5).to(basis.s.dtype)


def sample_bases(
    model: DiffusionModel,
    t: int,
    seeds: Sequence[int],
    cache: Cache | None | bool = None,
    k: int = 8,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Local bases of the samples from ``seeds`` at ``t``, each from its own random start,
    cached: ``(V [B, k, C, H, W], s [B, k], meta)`` with ``meta`` the iterations and
    whether they converged; x_t is reached by DDIM from each seed's x_T. ``options``: the
    :data:`BASIS_OPTIONS` (their defaults where left out); ``chunk`` (columns per vmapped
    pass) and ``memory`` (GiB) bound memory only and are not in the cache key
    (:func:`basis_params`)."""
    params = basis_params(k, **options)
    chunk, memory = options.get("chunk"), options.get("memory")
    store = as_cache(cache)
    seeds = list(seeds)
    grid = make_timesteps(model, params["num_steps"], include=[t])
    # what else changes the basis (left out when absent, so older entries stay valid)
    conditioning = model.conditioning
    context = {} if conditioning is None else {"conditioning": conditioning.describe()}
    if model.h_point != "mid":
        context["h_point"] = model.h_point
    if len(seeds) > 1:  # each sample's own start (one sample's start is the same either way)
        context["starts"] = "per-sample"
    key = cache_key(
        engine="pullback",
        model=model.fingerprint,
        t=t,
        seeds=seeds,
        grid=grid[: grid.index(t) + 1],  # the effective steps down to t (preset included)
        dtype=str(model.dtype),
        device=model.device.type,
        **params,
        **context,  # a text-to-image model's prompt and guidance; the point of h
    )
    hit = store.get(key) if store is not None else None
    if hit is not None:
        tensors, meta = hit
        return tensors["V"], tensors["s"], meta
    x_t = run_to(model, model.noise(seeds), grid, t)
    basis = local_basis(
        model,
        x_t,
        t,
        k=params["k"],
        oversample=params["oversample"],
        max_iter=params["max_iter"],
        tol_deg=params["tol_deg"],
        seed=seeds[0],
        sample_seeds=seeds,  # each sample's own start: shards of seeds give the same bases
        dtype=model.dtype,
        method=params["method"],
        target=params.get("target", "h"),
        chunk=chunk,
        memory=memory,
    )
    meta = {"iterations": basis.iterations, "converged": basis.converged}
    if store is not None:
        store.put(key, {"V": basis.V, "s": basis.s}, meta)
    return basis.V, basis.s, meta


def _labels(t: int, k: int, target: str) -> list[str]:
    """Direction names: ``pullback-t880[0]``, or ``pullback-x0-t599[0]`` for another target."""
    stem = "pullback" if target == "h" else f"pullback-{target}"
    return [f"{stem}-t{t}[{i}]" for i in range(k)]


#: The pullback engine's options (its basis parameters, the sample count).
OPTIONS = (
    *BASIS_OPTIONS,
    Option("samples", int, 1, "seeds seed..seed+N-1: their shared directions", low=1, high=4096),
    CACHE,
)


@register_engine("pullback", "top singular vectors of dh/dx_t (pullback metric)", OPTIONS)
def pullback_directions(
    model: DiffusionModel,
    k: int = 8,
    timestep: int | None = None,
    seed: int = 0,
    oversample: int = 4,
    max_iter: int = 30,
    tol_deg: float = 0.1,
    num_steps: int | None = None,
    samples: int = 1,
    cache: Cache | None = None,
    method: str = "krylov",
    target: str = "h",
    chunk: int | None = None,
    memory: float | None = None,
) -> DirectionSet:
    """The local basis at x_t of the sample from ``seed``, x_t reached by DDIM from x_T;
    with ``samples > 1``, the :func:`global_directions` of seeds ``seed .. seed+samples-1``.

    ``target="x0"`` (or ``"eps"``) decomposes the Jacobian of the model's prediction of
    the clean sample (of the noise) instead of h's. Cached by model fingerprint, timestep,
    seeds and parameters (``store.Cache``). The Jacobian products take at most ``memory``
    GiB (default: the device's free memory), in passes of as many columns as fit, or of
    ``chunk`` columns; either changes the result only by rounding and is not in the cache
    key.
    """
    t = model.check_timestep(model.preset.x_timestep if timestep is None else timestep)
    options = dict(oversample=oversample, max_iter=max_iter, tol_deg=tol_deg, method=method)
    options |= dict(num_steps=num_steps, target=target)
    V, s, meta = sample_bases(
        model, t, range(seed, seed + samples), cache, k, chunk=chunk, memory=memory, **options
    )
    return directions_from_bases(model, t, V, s, basis_params(k, **options) | {"seed": seed} | meta)


def directions_from_bases(
    model: DiffusionModel, t: int, V: torch.Tensor, s: torch.Tensor, params: dict[str, Any]
) -> DirectionSet:
    """The engine's direction set from the local bases ``V`` ``[n, k, C, H, W]`` and
    singular values ``s`` ``[n, k]`` of n samples at ``t``: one sample's own basis, or
    the :func:`global_directions` of several (``params``: what the set records)."""
    n, k = s.shape
    if n > 1:
        basis = LocalBasis(V=V, U=torch.empty(0), s=s, t=t, iterations=0)
        vectors, scores = global_directions(basis)
    else:
        vectors, scores = V[0], s[0]
    return DirectionSet(
        vectors=vectors,
        space="x",
        timestep=t,
        engine="pullback",
        model_fingerprint=model.fingerprint,
        scores=scores,
        score_name="singular value",
        params=params | {"samples": n},
        labels=_labels(t, k, params.get("target", "h")),
    )


def _local_checked(fn: Callable) -> Callable:
    spec = Spec(
        "function",
        "local_directions",
        "each sample's own local basis",
        (
            Option(
                "seeds", "ints", None, "one basis per seed", low=0, high=MAX_SEED, required=True
            ),
            Option("k", int, 8, "basis size", low=1, high=100_000),
            Option("timestep", int, None, "default: the preset's x_timestep", low=0),
            *BASIS_OPTIONS,
            CACHE,
        ),
    )
    return validated(spec, fn)


@_local_checked
def local_directions(
    model: DiffusionModel,
    seeds: Sequence[int],
    k: int = 8,
    timestep: int | None = None,
    oversample: int = 4,
    max_iter: int = 30,
    tol_deg: float = 0.1,
    num_steps: int | None = None,
    cache: Cache | None = None,
    method: str = "krylov",
    target: str = "h",
    chunk: int | None = None,
    memory: float | None = None,
) -> list[DirectionSet]:
    """Each sample's own local basis, one :class:`DirectionSet` per seed (one batched
    :func:`local_basis` for all of them). Direction ``i`` of seed ``j``'s set is meant for
    that sample: pass the list to ``workbench.eval.score_directions`` with the same seeds
    to score the local directions as the published method uses them."""
    seeds = list(seeds)
    if not seeds:
        raise WorkbenchError("give at least one seed")
    t = model.check_timestep(model.preset.x_timestep if timestep is None else timestep)
    options = dict(oversample=oversample, max_iter=max_iter, tol_deg=tol_deg, method=method)
    options |= dict(num_steps=num_steps, target=target)
    V, s, meta = sample_bases(model, t, seeds, cache, k, chunk=chunk, memory=memory, **options)
    params = basis_params(k, **options)
    return [
        DirectionSet(
            vectors=V[j],
            space="x",
            timestep=t,
            engine="pullback",
            model_fingerprint=model.fingerprint,
            scores=s[j],
            score_name="singular value",
            params=params | {"seed": seed, "samples": 1} | meta,
            labels=_labels(t, k, target),
        )
        for j, seed in enumerate(seeds)
    ]
