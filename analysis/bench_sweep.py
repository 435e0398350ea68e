"""Throughput of a consistency sweep, in-process against Ray, side by side in one run;
the cost of one task and Ray's scheduling overhead per task (what N GPUs can expect).

    python analysis/bench_sweep.py --model shapes32 --n 64 --timesteps 999,800,600,400,200 \
        --out docs/measurements/bench_sweep_shapes32_cpu.json
    python analysis/bench_sweep.py --model shapes64 --backends local --device cuda ...
    python analysis/bench_sweep.py --random sd15 --dtype bfloat16 --n 2 --shard 1 \
        --backends local --device cuda --prompt "a photo" ...

``--random sd15|dit`` sweeps the real architecture with random weights (built as
``analysis/bench_models.py`` builds it; in-process only, since Ray workers load models by
name): enough for the cost of a task, not for its statistics.

Each backend computes the same sweep from an empty cache (``wb.sweep``, shards of
``--shard`` seeds): ``local`` in this process (every CPU thread of the machine, or the
GPU), ``ray`` as tasks on a local Ray with ``--workers`` workers of one CPU each. Printed:
wall seconds, samples x timesteps per second, the ratio to the first backend, the mean
seconds per task inside the task (the model's loading left out), and Ray's overhead: the
seconds per task of ``--noop`` empty tasks through the same ``ray.remote`` path, and the
wall time left over after the tasks' own work (wall x workers - the tasks' seconds),
per task. What N GPUs can expect: tasks x (seconds per task + overhead) / N.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

import workbench as wb
from workbench.store import Cache, write_json


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def noop(_: int) -> int:
    return 0


def ray_overhead(n_tasks: int) -> float:
    """Seconds per empty task through ``ray.remote`` (submitted at once, all awaited),
    times the workers (slot-seconds per task)."""
    import ray

    remote = ray.remote(noop).options(num_cpus=1)
    ray.get([remote.remote(i) for i in range(8)])  # warm workers
    start = time.perf_counter()
    ray.get([remote.remote(i) for i in range(n_tasks)])
    slots = ray.cluster_resources().get("CPU", 1)
    return (time.perf_counter() - start) * slots / n_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--shard", type=int, default=8)
    parser.add_argument("--timesteps", type=parse_ints, default=[999, 800, 600, 400, 200])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=None)
    parser.add_argument("--backends", default="local,ray")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--noop", type=int, default=200, help="empty Ray tasks timed")
    parser.add_argument("--random", choices=["sd15", "dit"], default=None)
    parser.add_argument("--prompt", default=None, help="a text-to-image model's prompt")
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--out", default=None, help="JSON file for the numbers")
    args = parser.parse_args()

    options = dict(timesteps=args.timesteps, k=args.k, num_steps=args.num_steps)
    options |= {k: v for k, v in (("prompt", args.prompt), ("max_iter", args.max_iter)) if v}
    model = args.model
    if args.random:
        import bench_models  # the real configs with random weights

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = bench_models.build(args.random, "real", device, bench_models.DTYPES[args.dtype])
    units = args.n * len(args.timesteps)
    rows = {}
    for backend in args.backends.split(","):
        extra = {}
        if backend == "ray":
            import ray

            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
            extra["workers"] = args.workers
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            result = wb.sweep(
                "consistency", model, n=args.n, shard=args.shard, backend=backend,
                device=args.device, dtype=args.dtype, cache=Cache(folder), progress=False,
                **extra, **options,
            )  # fmt: skip
            wall = time.perf_counter() - start
        if result.failures:
            raise SystemExit(result.summary())
        tasks = result.task_seconds
        slots = args.workers if backend == "ray" else 1
        row = {
            "wall_s": wall,
            "tasks": len(tasks),
            "task_s_mean": sum(tasks) / len(tasks),
            "task_s_min": min(tasks),
            "task_s_max": max(tasks),
            "units_per_s": units / wall,
            "headline": next(iter(result.results.values())).headline(),
            "overhead_s_per_task": (wall * slots - sum(tasks)) / len(tasks),
        }
        if backend == "ray":
            row["noop_s_per_task"] = ray_overhead(args.noop)
            ray.shutdown()
        rows[backend] = row
    first = rows[next(iter(rows))]["wall_s"]
    print(
        f"consistency sweep: {args.random or args.model}, {args.n} samples x "
        f"{len(args.timesteps)} timesteps (k={args.k}), shards of {args.shard}, "
        f"{torch.get_num_threads()} CPU threads here"
    )
    for backend, row in rows.items():
        line = (
            f"  {backend:>5}: {row['wall_s']:7.1f} s wall, {row['units_per_s']:.2f} samples x "
            f"timesteps / s, {first / row['wall_s']:.2f}x the first; {row['tasks']} tasks of "
            f"{row['task_s_mean']:.2f} s (min {row['task_s_min']:.2f}, max "
            f"{row['task_s_max']:.2f}); left over {row['overhead_s_per_task']:.2f} s per task"
        )
        if "noop_s_per_task" in row:
            line += f"; an empty Ray task {row['noop_s_per_task'] * 1e3:.1f} ms"
        print(line)
    if args.out:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        write_json(
            Path(args.out),
            {
                "command": "python analysis/bench_sweep.py " + shlex.join(sys.argv[1:]),
                "machine": platform.processor() or platform.machine(),
                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "results": rows,
            },
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
