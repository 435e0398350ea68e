"""CPU sampling with glibc's own allocator against the workbench's (freed memory reused).

    python analysis/bench_allocator.py [--model shapes64] [--n 64] [--num-steps 10] \
        [--repeats 2]

The allocator setting is process-wide (``workbench.settings``), so each run is a fresh
process (``WORKBENCH_ALLOCATOR=system`` or ``reuse``), the two alternating; each samples
``--n`` seeds once (after a warm-up batch) and reports its wall time, its system CPU
time, its minor page faults and its peak resident memory. A third kind of run reuses freed
memory but runs every batch in one network call (``model.max_batch = None``, against the
CPU default of 2^16 pixels per call). Printed: one line per run and the ratios of the
medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _one(model: str, n: int, num_steps: int, one_call: bool) -> None:
    """The measured run (in the child process)."""
    import workbench as wb

    m = wb.load(model, device="cpu")
    if one_call:
        m.max_batch = None
    wb.sample(m, seeds=range(4), num_steps=2, progress=False)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    wb.sample(m, seeds=range(n), num_steps=num_steps, progress=False)
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "seconds": seconds,
        "system_cpu": after.ru_stime - before.ru_stime,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "peak_mib": after.ru_maxrss / 1024,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes64")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one-call", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _one(args.model, args.n, args.num_steps, args.one_call)
        return
    # "one call": the reused heap with every batch in one network call (model.max_batch None)
    runs: dict[str, list[dict]] = {"system": [], "reuse": [], "one call": []}
    for _ in range(args.repeats):
        for name in runs:
            allocator = "system" if name == "system" else "reuse"
            env = {**os.environ, "WORKBENCH_ALLOCATOR": allocator, "WORKBENCH_PROGRESS": "0"}
            one_call = ["--one-call"] if name == "one call" else []
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--model", args.model, "--n", str(args.n),
                 "--num-steps", str(args.num_steps), *one_call],
                env=env, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            run = json.loads(out.strip().splitlines()[-1])
            runs[name].append(run)
            print(
                f"{name:<8} {run['seconds']:6.2f} s, system CPU {run['system_cpu']:5.2f} s, "
                f"{run['minor_faults']:>9} minor faults, peak {run['peak_mib']:.0f} MiB",
                flush=True,
            )

    def median(name: str, key: str) -> float:
        values = sorted(r[key] for r in runs[name])
        return values[len(values) // 2]

    print(
        f"{args.model}, {args.n} samples x {args.num_steps} steps: system / reuse = "
        f"{median('system', 'seconds') / median('reuse', 'seconds'):.2f}x time, peak "
        f"{median('reuse', 'peak_mib') / median('system', 'peak_mib'):.2f}x with reuse; "
        f"calls of at most max_batch samples against one call: "
        f"{median('one call', 'seconds') / median('reuse', 'seconds'):.2f}x time, peak "
        f"{median('reuse', 'peak_mib'):.0f} against {median('one call', 'peak_mib'):.0f} MiB"
    )


if __name__ == "__main__":
    main()
