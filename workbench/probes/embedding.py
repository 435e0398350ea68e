"""h-space embedding: UMAP of the mid-block output over samples and timesteps.

``n`` trajectories are sampled (eta 0) and h is recorded at every DDIM step by a
mid-block hook (no extra forward passes); h at ``timesteps`` (default: 10 evenly spaced
grid steps) is flattened and embedded in 2-D by UMAP (umap-learn, fixed seed). Each point
carries its timestep, its sample, and, for Shapes-like models, the factors read out of
that sample's final image, so the plot can be coloured by timestep or by a factor.

Two numbers say what the picture shows: the **timestep agreement** (share of each
point's ``neighbours`` nearest neighbours in the embedding that have its timestep; chance
is 1 / number of timesteps) and, per factor and timestep, the **factor agreement** (for
the shape class: share of neighbours with the same class among points of that timestep;
for continuous factors: Spearman correlation of a point's value with its neighbours' mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import BANK, H_POINT, NUM_STEPS, PROGRESS, SEED, TIMESTEPS, Option
from workbench.probes import ProbeResult, register_probe
from workbench.probes.common import grid_with
from workbench.sampling import make_timesteps, run_chain
from workbench.stats import spearman
from workbench.trajectories import TrajectoryBank

if TYPE_CHECKING:
    import plotly.graph_objects as go


def neighbours(points: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``[N, count]`` of each point's nearest other points (Euclidean)."""
    dist = torch.cdist(points.double(), points.double())
    dist.fill_diagonal_(float("inf"))
    return dist.topk(count, largest=False).indices


def label_agreement(labels: torch.Tensor, near: torch.Tensor) -> float:
    """Share of neighbours ``near`` ``[N, c]`` that carry the point's own label ``[N]``."""
    return float((labels[near] == labels[:, None]).float().mean())


def value_agreement(values: torch.Tensor, near: torch.Tensor) -> float:
    """Spearman correlation of each point's value with its neighbours' mean value."""
    return spearman(values.double(), values.double()[near].mean(1))


@dataclass(repr=False)
class Embedding(ProbeResult):
    """``embedding`` ``[N, 2]`` of h; per point ``timestep`` and ``sample`` ``[N]``;
    ``factors``: name -> ``[N]`` (empty when the images cannot be read out)."""

    embedding: torch.Tensor
    timestep: torch.Tensor
    sample: torch.Tensor
    factors: dict[str, list[float]] = field(default_factory=dict)
    timestep_agreement: float = 0.0
    factor_agreement: dict[str, dict[int, float]] = field(default_factory=dict)
    neighbours: int = 10
    name: str = "umap"

    def headline(self) -> str:
        """Whether h is organised by timestep, and by which factor most."""
        steps = self.timestep.unique()
        text = (
            f"h clusters by timestep: neighbour agreement {self.timestep_agreement:.2f} "
            f"(chance {1 / len(steps):.2f})"
        )
        best = [
            (v, factor, t)
            for factor, per_t in self.factor_agreement.items()
            for t, v in per_t.items()
        ]
        if best:
            v, factor, t = max(best)
            text += f"; the factor that orders it best: {factor} at t={t} ({v:.2f})"
        return text

    def summary(self) -> str:
        """Points and timesteps of the embedding, as text."""
        steps = self.timestep.unique()
        lines = [
            f"UMAP of h: {self.embedding.shape[0]} points, {len(steps)} timesteps; "
            f"timestep agreement {self.timestep_agreement:.2f} (chance {1 / len(steps):.2f})"
        ]
        for factor, per_t in self.factor_agreement.items():
            best = max(per_t, key=per_t.get)
            lines.append(
                f"  {factor}: agreement by timestep "
                + ", ".join(f"{t}: {v:.2f}" for t, v in per_t.items())
                + f" (highest at t={best})"
            )
        return "\n".join(lines)

    def figure(self) -> go.Figure:
        """The 2-D embedding coloured by timestep."""
        import plotly.graph_objects as go

        colourings = {"timestep": self.timestep.tolist()} | {
            name: values for name, values in self.factors.items()
        }
        first = next(iter(colourings))
        hover = [
            f"t={t}, sample {s}"
            for t, s in zip(self.timestep.tolist(), self.sample.tolist(), strict=True)
        ]
        fig = go.Figure(
            go.Scattergl(
                x=self.embedding[:, 0].tolist(),
                y=self.embedding[:, 1].tolist(),
                mode="markers",
                text=hover,
                marker={
                    "color": colourings[first],
                    "colorscale": "Viridis",
                    "size": 5,
                    "colorbar": {"title": first},
                },
            )
        )
        fig.update_layout(
            title=f"UMAP of h over samples and timesteps (timestep agreement "
            f"{self.timestep_agreement:.2f})",
            xaxis_title="UMAP 1 (no unit)",
            yaxis_title="UMAP 2 (no unit)",
            template="plotly_white",
            updatemenus=[
                {
                    "buttons": [
                        {
                            "label": f"colour: {name}",
                            "method": "restyle",
                            "args": [
                                {"marker.color": [values], "marker.colorbar.title.text": name}
                            ],
                        }
                        for name, values in colourings.items()
                    ],
                    "x": 1.0,
                    "y": 1.15,
                }
            ],
        )
        return fig


@register_probe(
    "umap",
    "UMAP of x_t and h along the sampling chain, with neighbour agreement",
    (
        Option("n", int, 64, "sampled trajectories", low=2, high=100_000),
        TIMESTEPS,
        NUM_STEPS,
        SEED,
        Option("neighbours_count", int, 10, "neighbours compared", low=1, high=10000),
        Option("umap_neighbors", int, 15, "UMAP's n_neighbors", low=2, high=10000),
        PROGRESS,
        H_POINT,
        BANK,
    ),
)
def umap_embedding(
    model: DiffusionModel,
    n: int = 64,
    timesteps: Sequence[int] | None = None,
    num_steps: int | None = None,
    seed: int = 0,
    neighbours_count: int = 10,
    umap_neighbors: int = 15,
    progress: bool | None = None,
    bank: TrajectoryBank | None = None,
) -> Embedding:
    """UMAP of h for ``n`` sampled trajectories (seeds ``seed..``); see the module docstring.
    With ``bank`` the h and samples of its trajectories of the same seeds and grid are used
    (no sampling)."""
    import umap

    grid = make_timesteps(model, num_steps)
    steps = grid[:-1]
    if timesteps is None:
        pick = torch.linspace(0, len(steps) - 1, min(10, len(steps))).round().long().tolist()
        chosen = [steps[i] for i in sorted(set(pick))]
    else:
        chosen = sorted({model.check_timestep(int(t)) for t in timesteps}, reverse=True)
        grid = grid_with(model, num_steps, chosen)
        steps = grid[:-1]
    if bank is not None:
        seen = bank.sampled_h(model, grid, range(seed, seed + n))
        images = bank.at(model, grid, range(seed, seed + n), -1)
    else:
        with model.record_h() as seen:
            images = run_chain(model, model.noise(range(seed, seed + n)), grid, progress=progress)
    rows = [seen[steps.index(t)].flatten(1) for t in chosen]
    data = torch.cat(rows)
    total = data.shape[0]
    if total <= max(umap_neighbors, neighbours_count) + 1:
        raise WorkbenchError(f"{total} points are too few for {umap_neighbors} UMAP neighbours")
    reducer = umap.UMAP(n_neighbors=umap_neighbors, random_state=seed, n_jobs=1)
    emb = torch.from_numpy(reducer.fit_transform(data.numpy())).float()
    timestep = torch.tensor(chosen).repeat_interleave(n)
    sample = torch.arange(n).repeat(len(chosen))
    near = neighbours(emb, neighbours_count)
    result = Embedding(
        embedding=emb,
        timestep=timestep,
        sample=sample,
        timestep_agreement=label_agreement(timestep, near),
        neighbours=neighbours_count,
    )
    if model.sample_shape[0] == 3 and model.sample_shape[1] == model.sample_shape[2]:
        from workbench.data.readout import read_factors

        read = read_factors(images.cpu())
        per_sample = read.factors.as_dict()
        per_sample["valid"] = read.valid.float()
        result.factors = {k: v.float()[sample].tolist() for k, v in per_sample.items()}
        for factor in ("shape", "scale", "x", "y", "hue", "background"):
            values = per_sample[factor].float()
            per_t = {}
            for t in chosen:
                inside = (timestep == t).nonzero().squeeze(1)
                local = neighbours(emb[inside], min(neighbours_count, n - 1))
                own = values[sample[inside]]
                per_t[t] = (
                    label_agreement(own, local)
                    if factor == "shape"
                    else value_agreement(own, local)
                )
            result.factor_agreement[factor] = per_t
    return result
