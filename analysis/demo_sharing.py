"""How much network work the demo's sharing saves: network rows (samples through the
network, Jacobian passes included) per demo stage, each engine, probe and edit run on its own
(``run_demo(share=False)``), shared (one trajectory bank, batched edits), and shared again
with the bank cached.

    python analysis/demo_sharing.py --model tiny-test --num-steps 10
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

import workbench as wb
import workbench.demo as demo
from workbench.options import add_renamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-test")
    add_renamed(
        parser, "--num-steps", "--steps", type=int, default=10, help="DDIM steps of the demo"
    )
    add_renamed(parser, "--n-seeds", "--seeds", type=int, default=4, help="seeds per edit grid")
    args = parser.parse_args()
    model = wb.load(args.model)
    rows = {"n": 0}

    def count(module, inputs, kwargs):  # noqa: ANN001 - a forward pre-hook
        x = inputs[0] if inputs else kwargs["sample"]
        rows["n"] += x.shape[0]

    per_stage: dict[str, dict[str, int]] = {}
    stage = demo._Stages.stage

    def counted(run: str):
        @contextlib.contextmanager
        def wrapped(self, name):  # noqa: ANN001, ANN202 - replaces _Stages.stage
            before = rows["n"]
            with stage(self, name):
                yield
            per_stage.setdefault(name, {})[run] = rows["n"] - before

        return wrapped

    handle = model.unet.register_forward_pre_hook(count, with_kwargs=True)
    totals = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["WORKBENCH_CACHE"] = str(Path(tmp) / "cache")  # a fresh cache: no bank yet
        try:
            for run, share in (("alone", False), ("shared", True), ("cached", True)):
                demo._Stages.stage = counted(run)
                rows["n"] = 0
                demo.run_demo(
                    model,
                    Path(tmp) / run,
                    n_seeds=args.n_seeds,
                    num_steps=args.num_steps,
                    share=share,
                )
                totals[run] = rows["n"]
        finally:
            demo._Stages.stage = stage
            handle.remove()
    print(f"{'stage':<22}{'alone':>8}{'shared':>8}{'cached':>8}")
    for name, counts in per_stage.items():
        print(f"{name:<22}" + "".join(f"{counts.get(r, 0):>8}" for r in totals))
    print(f"{'total':<22}" + "".join(f"{v:>8}" for v in totals.values()))
    print(
        f"alone / shared {totals['alone'] / totals['shared']:.2f}x, "
        f"alone / cached {totals['alone'] / totals['cached']:.2f}x"
    )


if __name__ == "__main__":
    main()
