"""Cross-sample and cross-timestep consistency of the local pullback bases.

For ``n`` samples at each timestep, the top-``k`` local bases V (x-space, from
:func:`~workbench.engines.pullback.local_basis`) are compared:

- **across samples** at one timestep: the principal angles theta_1..theta_k between the
  spans of samples a and b; reported as the Grassmann distance sqrt(sum theta_i^2) and the
  mean squared cosine (1 for the same subspace; for independent random k-dimensional
  subspaces of R^d its expectation is k / d, :func:`random_cos2`, the floor);
- **across timesteps** for the same sample: the same two numbers between its bases at
  every pair of timesteps (the x_t differ, so this asks whether the stretched directions
  persist along one trajectory);
- **per-direction alignment after parallel transport**: direction i of sample a is
  carried to sample b through h (v = V_b U_b^T u_a,i, normalised; the pullback engine's
  ``transport``), and |cos| with each of b's own directions j is recorded: a ``[k, k]``
  matrix averaged over ordered pairs a != b. A strong diagonal means "direction i" is the
  same thing in every sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from workbench.engines.pullback import PROBE_BASIS_OPTIONS
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import H_POINT, NUM_STEPS, PROGRESS, SEED, TIMESTEPS, Option
from workbench.probes import ProbeResult, register_probe
from workbench.probes.common import check_timesteps, sampled_states
from workbench.probes.spectrum import bases_over_timesteps
from workbench.stats import principal_angles

if TYPE_CHECKING:
    import plotly.graph_objects as go


def random_cos2(k: int, d: int) -> float:
    """Expected mean squared cosine of the principal angles between two independent
    uniformly random k-dimensional subspaces of R^d: E ||A^T B||_F^2 / k = k / d."""
    return k / d


def subspace_similarity(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grassmann distance and mean squared cosine between the spans of orthonormal rows
    ``a``, ``b`` ``[..., k, d]`` (same k); both ``[...]``.

    The angles are :func:`workbench.stats.principal_angles` (accurate for small angles too).
    """
    theta = principal_angles(a.transpose(-1, -2), b.transpose(-1, -2))
    return theta.pow(2).sum(-1).sqrt(), theta.cos().pow(2).mean(-1)


#: Bytes of float64 temporaries that one chunk of the pairwise statistics may take.
PAIR_BUDGET = 2**28


def pairwise_similarity(
    V: torch.Tensor, budget: int = PAIR_BUDGET
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grassmann distance and mean squared cosine between every pair of spans in ``V``
    ``[..., n, k, d]`` (orthonormal rows): both ``[..., n, n]``, float64. Computed in
    chunks of rows a (against every b) of at most ``budget`` bytes of temporaries, so
    thousands of samples fit (all pairs at once would take n^2 k d numbers)."""
    *lead, n, k, d = V.shape
    flat = V.reshape(-1, n, k, d)
    rows = max(1, budget // (4 * 8 * k * d * n))  # four float64 copies of a [rows, n, k, d]
    g = torch.empty(flat.shape[0], n, n, dtype=torch.float64)
    c = torch.empty_like(g)
    for lead_i, one in enumerate(flat):
        for a in range(0, n, rows):
            g[lead_i, a : a + rows], c[lead_i, a : a + rows] = subspace_similarity(
                one[a : a + rows, None], one[None]
            )
    return g.reshape(*lead, n, n), c.reshape(*lead, n, n)


def transport_alignment(U: torch.Tensor, budget: int = PAIR_BUDGET) -> torch.Tensor:
    """Mean |cos| ``[..., k, k]`` between sample a's direction i transported into sample b
    and b's direction j, over ordered pairs a != b; ``U`` ``[..., n, k, m]`` the h-space
    bases. Transport (``engines.pullback.transport``) is ``c @ V_b / |c|`` with
    ``c = U_b u_a,i``; b's rows V_b are orthonormal, so the cosine with V_b,j is
    ``c_j / |c|``: everything follows from U_b U_a^T, no transport call per direction.
    Summed in chunks of rows a (at most ``budget`` bytes), never all pairs at once."""
    *lead, n, k, m = U.shape
    flat = U.reshape(-1, n, k, m).double()
    rows = max(1, budget // (3 * 8 * n * k * k))
    out = torch.zeros(flat.shape[0], k, k, dtype=torch.float64)
    for lead_i, one in enumerate(flat):
        for a in range(0, n, rows):
            c = torch.einsum("bjd,aid->abij", one, one[a : a + rows])  # [rows, n, k, k]
            cos = c.abs() / c.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            own = torch.arange(a, min(a + rows, n))
            cos[own - a, own] = 0.0  # a == b is not a pair
            out[lead_i] += cos.sum((0, 1))
    return (out / (n * (n - 1))).reshape(*lead, k, k)


@dataclass(repr=False)
class Consistency(ProbeResult):
    """Consistency of local bases. ``timesteps`` decreasing; ``n`` samples; ``k`` directions.

    - ``across_samples``: mean squared cosine ``[T, n, n]``; ``grassmann_samples`` likewise;
    - ``across_time``: mean squared cosine ``[n, T, T]``; ``grassmann_time`` likewise;
    - ``alignment``: ``[T, k, k]`` mean |cos| after transport (row: a's direction i);
    - ``random_cos2``: the floor k / d.
    """

    timesteps: list[int]
    across_samples: torch.Tensor
    grassmann_samples: torch.Tensor
    across_time: torch.Tensor
    grassmann_time: torch.Tensor
    alignment: torch.Tensor
    random_cos2: float
    name: str = "consistency"

    def off_diagonal_mean(self, m: torch.Tensor) -> torch.Tensor:
        """Mean of the off-diagonal entries of square matrices ``[..., n, n]``."""
        n = m.shape[-1]
        mask = ~torch.eye(n, dtype=torch.bool)
        return m[..., mask].mean(-1)

    def summary(self) -> str:
        """Median alignment across samples and timesteps, as text."""
        lines = [f"consistency of local bases (random floor cos^2 = {self.random_cos2:.4f})"]
        across = self.off_diagonal_mean(self.across_samples)
        diag = self.alignment.diagonal(dim1=1, dim2=2).mean(-1)
        for i, t in enumerate(self.timesteps):
            lines.append(
                f"  t={t:>4}: across samples cos^2 {float(across[i]):.3f}, "
                f"transported direction i onto i |cos| {float(diag[i]):.3f}"
            )
        if len(self.timesteps) > 1:
            over_time = self.off_diagonal_mean(self.across_time.mean(0))
            lines.append(f"  same sample across timesteps: cos^2 {float(over_time):.3f}")
        return "\n".join(lines)

    def headline(self) -> str:
        """How far local bases agree across samples, against the random floor."""
        across = self.off_diagonal_mean(self.across_samples)
        i = int(across.argmax())
        return (
            f"local bases agree across samples most at t={self.timesteps[i]}: mean cos^2 "
            f"{float(across[i]):.3f}, {float(across[i]) / self.random_cos2:.0f}x the random "
            f"floor {self.random_cos2:.4f}"
        )

    def figure(self) -> go.Figure:
        """Heat maps of alignment across timesteps and samples."""
        from plotly.subplots import make_subplots

        t_labels = [str(t) for t in self.timesteps]
        k = self.alignment.shape[-1]
        fig = make_subplots(
            rows=1,
            cols=3,
            subplot_titles=(
                "across samples: mean cos^2 vs t",
                "same sample across timesteps: mean cos^2",
                f"transport alignment |cos| at t={self.timesteps[0]}",
            ),
        )
        across = self.off_diagonal_mean(self.across_samples)
        fig.add_scatter(x=self.timesteps, y=across.tolist(), name="across samples", row=1, col=1)
        fig.add_scatter(
            x=self.timesteps,
            y=[self.random_cos2] * len(self.timesteps),
            name="random subspaces",
            line={"dash": "dash", "color": "gray"},
            row=1,
            col=1,
        )
        fig.add_heatmap(
            z=self.across_time.mean(0).tolist(),
            x=t_labels,
            y=t_labels,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            showscale=False,
            row=1,
            col=2,
        )
        fig.add_heatmap(
            z=self.alignment[0].tolist(),
            x=list(range(k)),
            y=list(range(k)),
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            row=1,
            col=3,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=2)
        fig.update_yaxes(autorange="reversed", title_text="direction i of a", row=1, col=3)
        fig.update_xaxes(title_text="timestep t", row=1, col=1)
        fig.update_yaxes(title_text="mean cos^2", row=1, col=1)
        fig.update_xaxes(title_text="timestep t", row=1, col=2)
        fig.update_yaxes(title_text="timestep t", row=1, col=2)
        fig.update_xaxes(title_text="direction j of b", row=1, col=3)
        fig.update_layout(title="Consistency of the local pullback bases", template="plotly_white")
        return fig


@register_probe(
    "consistency",
    "how much the local bases of different samples share, per timestep",
    (
        Option("n", int, 4, "samples compared", low=2, high=4096),
        TIMESTEPS,
        Option("k", int, 8, "basis size", low=1, high=4096),
        NUM_STEPS,
        SEED,
        *PROBE_BASIS_OPTIONS,
        PROGRESS,
        H_POINT,
    ),
)
def consistency(
    model: DiffusionModel,
    n: int = 4,
    timesteps: Sequence[int] | None = None,
    k: int = 8,
    num_steps: int | None = None,
    seed: int = 0,
    tol_deg: float = 0.1,
    max_iter: int = 30,
    progress: bool | None = None,
    oversample: int = 4,
    method: str = "krylov",
    chunk: int | None = None,
    memory: float | None = None,
) -> Consistency:
    """Consistency of the local bases of ``n`` samples (seeds ``seed..``) at each timestep.

    Each sample's basis starts from its own seed and stops on its own, so the statistics
    of ``n`` samples equal those combined from shards of them (:func:`consistency_bases`
    per shard, :func:`consistency_from_bases` on all; what ``wb.sweep`` does)."""
    basis = dict(tol_deg=tol_deg, max_iter=max_iter, oversample=oversample, method=method)
    basis |= dict(chunk=chunk, memory=memory)
    seeds = range(seed, seed + n)
    bases = consistency_bases(model, seeds, timesteps, k, num_steps, progress, **basis)
    return consistency_from_bases(model, timesteps, **bases)


def consistency_bases(
    model: DiffusionModel,
    seeds: Sequence[int],
    timesteps: Sequence[int] | None = None,
    k: int = 8,
    num_steps: int | None = None,
    progress: bool | None = None,
    **basis: Any,
) -> dict[str, torch.Tensor]:
    """The local bases of the samples from ``seeds`` at each timestep, samples first:
    ``V`` ``[n, T, k, d]`` (x-space) and ``U`` ``[n, T, k, m]`` (h-space), on the CPU.
    ``basis``: the probe's basis options (its defaults where left out)."""
    seeds = list(seeds)
    timesteps = check_timesteps(model, timesteps)
    states = sampled_states(model, seeds, timesteps, num_steps, progress)
    bases = bases_over_timesteps(
        model, states, timesteps, k, seeds[0], progress, sample_seeds=seeds, **basis
    )
    n = len(seeds)
    stack = lambda part: torch.stack(  # noqa: E731
        [getattr(bases[t], part).reshape(n, k, -1).cpu() for t in timesteps], dim=1
    )
    return {"V": stack("V"), "U": stack("U")}


def consistency_from_bases(
    model: DiffusionModel,
    timesteps: Sequence[int] | None,
    V: torch.Tensor,
    U: torch.Tensor,
) -> Consistency:
    """The probe's statistics from the bases of :func:`consistency_bases` (``V``
    ``[n, T, k, d]``, ``U`` ``[n, T, k, m]``, any number of shards concatenated)."""
    timesteps = check_timesteps(model, timesteps)
    if V.ndim != 4 or V.shape[:2] != U.shape[:2] or V.shape[1] != len(timesteps):
        raise WorkbenchError(
            f"bases V {list(V.shape)} and U {list(U.shape)} do not match "
            f"[n, {len(timesteps)} timesteps, k, ...]"
        )
    k = V.shape[2]
    per_sample = V  # [n, T, k, d]
    V = V.transpose(0, 1)  # [T, n, k, d]
    g_s, c_s = pairwise_similarity(V)  # [T, n, n]
    g_t, c_t = pairwise_similarity(per_sample)  # [n, T, T]
    alignment = transport_alignment(U.transpose(0, 1))
    return Consistency(
        timesteps=timesteps,
        across_samples=c_s.float(),
        grassmann_samples=g_s.float(),
        across_time=c_t.float(),
        grassmann_time=g_t.float(),
        alignment=alignment.float(),
        random_cos2=random_cos2(k, model.d),
    )
