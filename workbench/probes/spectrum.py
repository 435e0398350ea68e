"""Spectral decay of the pullback metric: singular values of J = dh/dx_t over timesteps
(or of the Jacobian of the model's prediction of the clean sample, ``target="x0"``, whose
low rank LOCO-Edit relies on; or of the predicted noise, ``"eps"``).

For ``n`` samples at each timestep, the top-``k`` singular values of J come from the
pullback engine's :func:`~workbench.engines.pullback.local_basis` (warm-started from the
previous timestep's basis). The rest of the spectrum is summarised by the squared
Frobenius norm, estimated without materialising J: ||J||_F^2 = sum_{i<=k} s_i^2 +
||J (I - V V^T)||_F^2, the second term by Hutchinson's estimator on random vectors projected off
the top-k basis (E ||J P z||^2 = ||J P||_F^2 for z ~ N(0, I), P the projector), so the
dominant part is exact and only the tail is sampled (the idea of Hutch++). Per sample and
timestep:

- **energy share** of the top k: sum_{i<=k} s_i^2 / ||J||_F^2;
- **stable rank** ||J||_F^2 / s_1^2 (a robust effective rank: the number of directions
  of the full spectrum worth s_1's energy);
- **decay exponent** alpha of a power law s_i ~ c i^(-alpha), least squares on
  log s_i = log c - alpha log i over i = 1..k;
- **rank at 90% energy**: the fewest top directions whose s_i^2 sum to 90% of ||J||_F^2
  (NaN when the top k do not reach it: the rank is above k).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from workbench.engines.pullback import (
    PROBE_BASIS_OPTIONS,
    TARGET,
    LocalBasis,
    local_basis,
    target_map,
)
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import H_POINT, NUM_STEPS, PROGRESS, SEED, TIMESTEPS, Option
from workbench.probes import ProbeResult, register_probe
from workbench.probes.common import check_timesteps, sampled_states
from workbench.settings import show_progress

if TYPE_CHECKING:
    import plotly.graph_objects as go


#: Offset of the seeds of the Hutchinson vectors from the sample seeds.
HUTCHINSON_STREAM = 1 << 40


def decay_exponent(s: torch.Tensor) -> torch.Tensor:
    """Power-law exponent alpha of singular values ``[..., k]`` (descending, positive):
    the least-squares slope of log s_i against log i, negated; ``[...]``."""
    if s.shape[-1] < 2:
        raise WorkbenchError("a decay exponent needs at least 2 singular values")
    x = torch.log(torch.arange(1, s.shape[-1] + 1, dtype=torch.float64))
    y = torch.log(s.double().clamp_min(1e-300))
    xc = x - x.mean()
    slope = ((y - y.mean(-1, keepdim=True)) * xc).sum(-1) / (xc * xc).sum()
    return -slope


def residual_frobenius_sq(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    V: torch.Tensor,
    vectors: int = 32,
    seed: int = 0,
    sample_seeds: Sequence[int] | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hutchinson estimate of ||J (I - V V^T)||_F^2 per sample, J the Jacobian of the
    batched map ``f`` at ``x`` ``[B, ...]``; ``V`` ``[B, k, ...]`` orthonormal rows.

    Returns (estimate ``[B]``, standard error ``[B]``); ``vectors`` >= 2 Gaussian vectors,
    pushed forward in vmapped jvps of ``chunk`` vectors at a time (None: all at once),
    drawn from ``seed`` for the batch at once or, with ``sample_seeds``, each sample's
    from its own seed (then a sample's estimate does not depend on the rest of its batch).
    """
    if vectors < 2:
        raise WorkbenchError(f"vectors must be at least 2, got {vectors}")
    b = x.shape[0]
    basis = V.reshape(b, V.shape[1], -1).to(x.dtype)
    if sample_seeds is None:
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(vectors, *x.shape, generator=gen, dtype=torch.float64)
    else:  # a stream apart from the basis's start, which the sample seed itself draws
        gens = [torch.Generator().manual_seed(HUTCHINSON_STREAM + int(s)) for s in sample_seeds]
        one = tuple(x.shape[1:])
        z = torch.stack(
            [torch.randn(vectors, *one, generator=g, dtype=torch.float64) for g in gens]
        )
        z = z.transpose(0, 1)  # [vectors, B, ...]
    z = z.to(x.device, x.dtype)
    flat = z.reshape(vectors, b, -1)
    flat = flat - torch.einsum("pbd,bkd,bke->pbe", flat, basis, basis)
    z = flat.reshape(z.shape)
    out = torch.func.vmap(lambda v: torch.func.jvp(f, (x,), (v,))[1], chunk_size=chunk)(z)
    sq = out.reshape(vectors, b, -1).double().pow(2).sum(-1)  # [vectors, B]
    return sq.mean(0), sq.std(0) / vectors**0.5


@dataclass(repr=False)
class Spectrum(ProbeResult):
    """Top-``k`` singular values ``s`` ``[T, n, k]`` per timestep (rows, decreasing) and
    sample, with ``frobenius_sq`` ``[T, n]`` (estimate), ``frobenius_se`` (its standard
    error), ``energy_top_k``, ``stable_rank`` and ``exponent`` ``[T, n]``."""

    timesteps: list[int]
    s: torch.Tensor
    frobenius_sq: torch.Tensor
    frobenius_se: torch.Tensor
    energy_top_k: torch.Tensor
    stable_rank: torch.Tensor
    exponent: torch.Tensor
    converged: list[bool]
    rank_90: torch.Tensor | None = None  # [T, n], NaN above k
    target: str = "h"
    name: str = "spectrum"

    @property
    def jacobian(self) -> str:
        """The Jacobian decomposed, in words."""
        return {"h": "dh/dx_t", "x0": "dx0_hat/dx_t", "eps": "deps/dx_t"}[self.target]

    def summary(self) -> str:
        """Median singular values per timestep, as text."""
        k = self.s.shape[-1]
        lines = [f"spectrum of {self.jacobian} (top {k}, {self.s.shape[1]} samples): medians"]
        for i, t in enumerate(self.timesteps):
            rank = ""
            if self.rank_90 is not None:  # a sample above k counts as larger than all
                r = float(self.rank_90[i].nan_to_num(nan=float("inf")).median())
                rank = f", rank at 90% energy {r:g}" if r < float("inf") else f", rank at 90% > {k}"
            lines.append(
                f"  t={t:>4}: s1 {float(self.s[i, :, 0].median()):.2f}, "
                f"energy in top {k} {float(self.energy_top_k[i].median()):.3f}, "
                f"stable rank {float(self.stable_rank[i].median()):.1f}, "
                f"exponent {float(self.exponent[i].median()):.2f}{rank}"
            )
        return "\n".join(lines)

    def headline(self) -> str:
        """Where the spectrum of the Jacobian is most concentrated."""
        k = self.s.shape[-1]
        energy = [float(e.median()) for e in self.energy_top_k]
        i = max(range(len(energy)), key=energy.__getitem__)
        return (
            f"the {self.jacobian} spectrum is most concentrated at t={self.timesteps[i]}: the "
            f"top {k} directions hold {energy[i]:.0%} of the energy (median; "
            + ", ".join(f"t={t}: {e:.0%}" for t, e in zip(self.timesteps, energy, strict=True))
            + ")"
        )

    def figure(self) -> go.Figure:
        """Singular values against rank, one line per timestep."""
        from plotly.colors import sample_colorscale
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=(
                "singular values s_i / s_1 (median over samples)",
                "energy share of the top k, decay exponent",
            ),
            specs=[[{}, {"secondary_y": True}]],
        )
        k = self.s.shape[-1]
        colours = sample_colorscale(
            "Viridis", [i / max(1, len(self.timesteps) - 1) for i in range(len(self.timesteps))]
        )
        for i, t in enumerate(self.timesteps):
            normed = (self.s[i] / self.s[i, :, :1]).median(0).values
            fig.add_scatter(
                x=list(range(1, k + 1)),
                y=normed.tolist(),
                name=f"t={t}",
                line={"color": colours[i]},
                row=1,
                col=1,
            )
        fig.update_xaxes(type="log", title_text="index i", row=1, col=1)
        fig.update_yaxes(type="log", title_text="s_i / s_1", row=1, col=1)
        med = lambda v: v.median(1).values.tolist()  # noqa: E731
        fig.add_scatter(
            x=self.timesteps, y=med(self.energy_top_k), name=f"energy in top {k}", row=1, col=2
        )
        fig.add_scatter(
            x=self.timesteps,
            y=med(self.exponent),
            name="decay exponent",
            line={"dash": "dash"},
            row=1,
            col=2,
            secondary_y=True,
        )
        fig.update_xaxes(title_text="timestep t", row=1, col=2)
        fig.update_yaxes(title_text=f"energy share of the top {k}", row=1, col=2)
        fig.update_yaxes(title_text="decay exponent", row=1, col=2, secondary_y=True)
        fig.update_layout(title=f"Spectral decay of {self.jacobian}", template="plotly_white")
        return fig


def bases_over_timesteps(
    model: DiffusionModel,
    states: dict[int, torch.Tensor],
    timesteps: Sequence[int],
    k: int,
    seed: int = 0,
    progress: bool | None = None,
    **options: Any,
) -> dict[int, LocalBasis]:
    """Local bases of the same samples at each timestep (decreasing), each warm-started
    from the previous timestep's basis."""
    out: dict[int, LocalBasis] = {}
    warm = None
    for t in tqdm(timesteps, desc="local bases", disable=not show_progress(progress), leave=False):
        basis = local_basis(
            model, states[t], t, k=k, warm_start=warm, seed=seed, dtype=model.dtype, **options
        )
        out[t] = basis
        warm = basis.V
    return out


@register_probe(
    "spectrum",
    "singular values of the pullback Jacobian dh/dx_t, per timestep",
    (
        Option("n", int, 4, "samples", low=1, high=4096),
        TIMESTEPS,
        Option(
            "k", int, 16, "singular values (2 at least: the decay exponent's fit)", low=2, high=4096
        ),
        Option(
            "hutchinson",
            int,
            32,
            "random vectors of Hutchinson's estimate of the Frobenius norm",
            low=2,
            high=100_000,
            aliases=("--probes",),  # the older name
        ),
        NUM_STEPS,
        SEED,
        *PROBE_BASIS_OPTIONS,
        PROGRESS,
        H_POINT,
        TARGET,
    ),
)
def spectrum(
    model: DiffusionModel,
    n: int = 4,
    timesteps: Sequence[int] | None = None,
    k: int = 16,
    hutchinson: int = 32,
    num_steps: int | None = None,
    seed: int = 0,
    tol_deg: float = 0.1,
    max_iter: int = 30,
    progress: bool | None = None,
    target: str = "h",
    oversample: int = 4,
    method: str = "krylov",
    chunk: int | None = None,
    memory: float | None = None,
) -> Spectrum:
    """Spectra of J for ``n`` samples (seeds ``seed..``) at each timestep.

    Each sample's basis and Hutchinson vectors come from its own seed, so the spectra of
    ``n`` samples equal those combined from shards of them (:func:`spectrum_values` per
    shard, :func:`spectrum_from_values` on all; what ``wb.sweep`` does)."""
    basis = dict(tol_deg=tol_deg, max_iter=max_iter, oversample=oversample, method=method)
    values = spectrum_values(
        model, range(seed, seed + n), timesteps, k, hutchinson, num_steps, progress, target,
        chunk=chunk, memory=memory, **basis,
    )  # fmt: skip
    return spectrum_from_values(model, timesteps, target=target, **values)


def spectrum_values(
    model: DiffusionModel,
    seeds: Sequence[int],
    timesteps: Sequence[int] | None = None,
    k: int = 16,
    hutchinson: int = 32,
    num_steps: int | None = None,
    progress: bool | None = None,
    target: str = "h",
    **basis: Any,
) -> dict[str, torch.Tensor]:
    """Per sample of ``seeds`` and timestep, samples first: the top-``k`` singular values
    ``s`` ``[n, T, k]``, the estimated ``frobenius_sq`` and its standard error
    ``frobenius_se`` ``[n, T]``, and ``converged`` ``[n, T]`` (the whole batch's).
    ``basis``: the probe's basis options (its defaults where left out)."""
    seeds = list(seeds)
    timesteps = check_timesteps(model, timesteps)
    states = sampled_states(model, seeds, timesteps, num_steps, progress)
    bases = bases_over_timesteps(
        model, states, timesteps, k, seeds[0], progress, target=target, sample_seeds=seeds,
        **basis,
    )  # fmt: skip
    s, frob, se = [], [], []
    for t in timesteps:
        basis = bases[t]
        with model.jacobian_safe():
            rest, rest_se = residual_frobenius_sq(
                target_map(model, t, target)[0], states[t], basis.V, hutchinson,
                sample_seeds=seeds, chunk=basis.chunk or basis.width or None,  # as the basis
            )  # fmt: skip
        top = basis.s.double().cpu()
        s.append(top.float())
        frob.append((top.pow(2).sum(-1) + rest.cpu()).float())
        se.append(rest_se.cpu().float())
    converged = torch.tensor([[bases[t].converged for t in timesteps]] * len(seeds))
    return {
        "s": torch.stack(s, dim=1),
        "frobenius_sq": torch.stack(frob, dim=1),
        "frobenius_se": torch.stack(se, dim=1),
        "converged": converged,
    }


def spectrum_from_values(
    model: DiffusionModel,
    timesteps: Sequence[int] | None,
    s: torch.Tensor,
    frobenius_sq: torch.Tensor,
    frobenius_se: torch.Tensor,
    converged: torch.Tensor,
    target: str = "h",
) -> Spectrum:
    """The probe's result from the values of :func:`spectrum_values` (any number of
    shards concatenated along the samples)."""
    timesteps = check_timesteps(model, timesteps)
    if s.ndim != 3 or s.shape[1] != len(timesteps) or frobenius_sq.shape != s.shape[:2]:
        raise WorkbenchError(
            f"spectrum values s {list(s.shape)}, frobenius_sq {list(frobenius_sq.shape)} "
            f"do not match [n, {len(timesteps)} timesteps, k]"
        )
    s_t, frob_t = s.transpose(0, 1), frobenius_sq.transpose(0, 1)  # [T, n, ...]
    return Spectrum(
        timesteps=timesteps,
        s=s_t,
        frobenius_sq=frob_t,
        frobenius_se=frobenius_se.transpose(0, 1),
        energy_top_k=s_t.pow(2).sum(-1) / frob_t,
        stable_rank=frob_t / s_t[..., 0].pow(2),
        exponent=decay_exponent(s_t).float(),
        converged=[bool(c) for c in converged.bool().all(0)],
        rank_90=rank_at_energy(s_t, frob_t, 0.9),
        target=target,
    )


def rank_at_energy(s: torch.Tensor, frobenius_sq: torch.Tensor, share: float) -> torch.Tensor:
    """The fewest top singular values ``s`` ``[..., k]`` whose squares reach ``share`` of
    ``frobenius_sq`` ``[...]``; NaN where the top k fall short."""
    cumulative = s.double().pow(2).cumsum(-1) / frobenius_sq.double()[..., None]
    reached = cumulative >= share
    rank = reached.float().argmax(-1).float() + 1
    return torch.where(reached.any(-1), rank, torch.full_like(rank, float("nan")))
