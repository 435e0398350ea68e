"""Benchmarks that print measured times; used by ``workbench bench`` and ``analysis/``."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from workbench.models.wrapper import DiffusionModel
from workbench.options import NUM_STEPS, Option, Spec, validated
from workbench.sampling import sample


@dataclass
class BenchReport:
    """Wall times of repeated runs of named cases."""

    title: str
    rows: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, seconds: list[float]) -> None:
        """Record the timings of case ``name``."""
        self.rows[name] = seconds

    def table(self, baseline: str | None = None) -> str:
        """The cases as a text table; with ``baseline``, each median as a ratio to it."""
        base = statistics.median(self.rows[baseline]) if baseline else None
        lines = [self.title] + [f"  {k}: {v}" for k, v in self.info.items()]
        header = f"  {'case':<40} {'median s':>10} {'min s':>10}"
        lines.append(header + ("  speed-up vs baseline" if base else ""))
        for name, times in self.rows.items():
            med = statistics.median(times)
            ratio = f"  {base / med:5.2f}x" if base else ""
            lines.append(f"  {name:<40} {med:>10.3f} {min(times):>10.3f}{ratio}")
        return "\n".join(lines)


def timed(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


#: The options of :func:`bench_sampling` (``workbench bench``).
BENCH = Spec(
    "function",
    "bench",
    "time sampling on a model",
    (
        Option("n", int, 64, "images", low=1, high=100_000),
        replace(NUM_STEPS, default=50, help="sampling steps", nullable=False),
        Option("repeats", int, 3, "timed runs", low=1, high=1000),
    ),
)


@functools.partial(validated, BENCH)
def bench_sampling(
    model: DiffusionModel, n: int = 64, num_steps: int = 50, repeats: int = 3
) -> BenchReport:
    """Time DDIM sampling of ``n`` images with ``num_steps`` steps, eta 0."""
    report = BenchReport(
        title=f"DDIM sampling on {model.name}",
        info={
            "device": str(model.device),
            "threads": str(torch.get_num_threads()),
            "images": str(n),
            "steps": str(num_steps),
        },
    )
    report.add(
        f"sample {n} x {num_steps} steps",
        timed(lambda: sample(model, seeds=range(n), num_steps=num_steps, progress=False), repeats),
    )
    return report
