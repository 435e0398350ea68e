"""Each engine's defaults as the command line applies them: ``workbench discover ENGINE
--model M`` with no options, then ``workbench edit`` with no mode, index or strengths
(direction 0, the set's recorded working edit if it has one, else additive at -3, 0, 3
preset steps with eta 0), scored with the read-out on 16 seeds against random directions
where the set acts (same space, form and timestep or h window) edited at the same
strengths.

    python analysis/engine_defaults.py --model shapes32 --engines pullback,local \
        > docs/measurements/engine_defaults_shapes32.txt
    python analysis/engine_defaults.py --model shapes64 --engines attention,pca \
        > docs/measurements/engine_defaults_shapes64.txt

The boundary engine's recorded edit moves x_t to a signed h distance, so its control is a
random x move of the same length: analysis/boundary_defaults.py.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import workbench as wb
from workbench.editing import working_strengths
from workbench.eval import score_directions
from workbench.eval.directions import DirectionScores, random_control


@dataclass
class DefaultCheck:
    """One engine's default discover and edit, scored (``scores``: direction 0;
    ``control``: the random directions; ``ratio``: the dominant factor's effect over the
    random directions' mean effect on it)."""

    engine: str
    scores: DirectionScores
    control: DirectionScores
    strengths: list[float]
    seconds: float

    @property
    def factor(self) -> str:
        return self.scores.dominant[0]

    @property
    def effect(self) -> float:
        return float(self.scores.effect[0, self.scores.factors.index(self.factor)])

    @property
    def ratio(self) -> float:
        floor = float(self.control.effect[:, self.scores.factors.index(self.factor)].mean())
        return self.effect / floor if floor > 0 else float("inf")

    @property
    def validity(self) -> float:
        return float(self.scores.validity[0])

    @property
    def locality(self) -> tuple[float, float]:
        """Share of the image change in the pixels that change most: direction 0's, and
        the random directions' mean (the judge's locality)."""
        return float(self.scores.image.locality[0]), float(self.control.image.locality.mean())

    def summary(self) -> str:
        return (
            f"{self.engine}: direction 0 at {self.strengths} moves {self.factor} by "
            f"{self.effect:.3f} spreads per unit ({self.ratio:.1f}x random of the same space), "
            f"purity {float(self.scores.purity[0]):.2f}, valid {self.validity:.2f}, locality "
            f"{self.locality[0]:.2f} (random {self.locality[1]:.2f}); {self.seconds:.0f} s"
        )


def check_defaults(model, engine: str, seeds=tuple(range(16))) -> DefaultCheck:
    """Discover with ``engine``'s defaults and score the command line's default edit."""
    began = time.perf_counter()
    directions = wb.discover(engine, model)
    strengths = [s for s in working_strengths(directions) if s != 0]
    scores = score_directions(model, directions, [0], strengths, seeds, progress=False)
    control = score_directions(
        model, random_control(model, directions), None, strengths, seeds,
        progress=False, mode="additive",
    )  # fmt: skip
    return DefaultCheck(engine, scores, control, strengths, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--engines", default="pullback,local,attention,pca")
    parser.add_argument("--n-seeds", type=int, default=16)
    args = parser.parse_args()
    model = wb.load(args.model, device="cpu")
    for engine in args.engines.split(","):
        check = check_defaults(model, engine, tuple(range(args.n_seeds)))
        print(check.summary())
        print(check.scores.table())
        print("random directions where it acts, additive, same strengths:")
        print(check.control.table())
        print()


if __name__ == "__main__":
    main()
