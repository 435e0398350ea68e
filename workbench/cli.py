"""The ``workbench`` command: sample, discover, edit, probe, demo, train, bench.

Every command refuses bad input with a one-line ``workbench: error: ...`` on stderr and
exit status 2, and writes its outputs atomically (nothing partial is left behind).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.errors import WorkbenchError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_seeds(text: str) -> list[int]:
    """``"0-7"``, ``"1,4,9"`` or ``"3"`` -> list of ints."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                seeds.extend(range(lo_i, hi_i + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise WorkbenchError(f"bad seeds {text!r}: use e.g. 0-63 or 1,4,9") from None
    if not seeds or min(seeds) < 0:
        raise WorkbenchError(f"bad seeds {text!r}: seeds are non-negative integers")
    return seeds


def parse_floats(text: str, what: str = "strengths") -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise WorkbenchError(f"bad {what} {text!r}: use e.g. -3,0,3") from None
    if not values or any(v != v or abs(v) == float("inf") for v in values):
        raise WorkbenchError(f"bad {what} {text!r}: need finite numbers")
    return values


def _out_file(path: str, suffix: str) -> Path:
    out = Path(path)
    if out.suffix != suffix:
        raise WorkbenchError(f"--out must end in {suffix}, got {path!r}")
    if out.exists() and out.is_dir():
        raise WorkbenchError(f"--out {path!r} is a folder")
    return out


def _load(name: str, device: str | None = None):
    from workbench.models import load

    return load(name, device=device)


# ---------------------------------------------------------------------------- commands
def cmd_sample(args: argparse.Namespace) -> None:
    from workbench.sampling import sample
    from workbench.store import save_npz

    out = _out_file(args.out, ".npz")
    seeds = parse_seeds(args.seeds)
    model = _load(args.model, args.device)
    images = sample(model, seeds=seeds, num_steps=args.steps, eta=args.eta)
    save_npz(out, images=model.to_uint8(images).numpy(), seeds=seeds)
    shape = ", ".join(map(str, model.sample_shape[1:]))
    print(f"wrote {out}: images uint8 [{len(seeds)}, {shape}, 3]")


def cmd_discover(args: argparse.Namespace) -> None:
    from workbench.engines import get_engine

    engine = get_engine(args.engine)
    out = _out_file(args.out, ".safetensors")
    model = _load(args.model, args.device)
    options = {
        k: v for k, v in vars(args).items() if k not in _COMMON and k not in ("engine", "out")
    }
    directions = engine.discover(model, k=args.k, timestep=args.timestep, seed=args.seed, **options)
    directions.save(out)
    what = f"{len(directions)} {directions.space}-space directions"
    print(f"wrote {out}: {what}, shape {list(directions.shape)}")


def cmd_edit(args: argparse.Namespace) -> None:
    from workbench.directions import DirectionSet
    from workbench.editing import edit

    out = _out_file(args.out, ".npz")
    strengths = parse_floats(args.strengths)
    seeds = parse_seeds(args.seeds)
    model = _load(args.model, args.device)
    directions = DirectionSet.load(args.directions, model=model)
    result = edit(
        model,
        directions,
        args.index,
        strengths,
        seeds=seeds,
        mode=args.mode,
        num_steps=args.steps,
        eta=args.eta,
    )
    result.save_npz(out)
    shape = ", ".join(map(str, model.sample_shape[1:]))
    print(f"wrote {out}: images uint8 [{len(strengths)}, {len(seeds)}, {shape}, 3]")


def cmd_library(args: argparse.Namespace) -> None:
    from workbench.library import DirectionLibrary

    library = DirectionLibrary(args.library)
    if args.action == "list":
        print(library.table())
        return
    if not args.name:
        raise WorkbenchError(f"library {args.action} needs a direction name")
    if args.action == "remove":
        library.remove(args.name)
        print(f"removed {args.name!r} from {library.root}")
        return
    if not args.out:
        raise WorkbenchError("library apply needs --out FILE.npz")
    out = _out_file(args.out, ".npz")
    seeds = parse_seeds(args.seeds)
    model = _load(args.model, args.device)
    named = library.load(args.name, model)
    strengths = parse_floats(args.strengths) if args.strengths else None
    result = named.apply(model, seeds=seeds, strengths=strengths)
    result.save_npz(out)
    print(f"wrote {out}: {args.name!r} at strengths {result.strengths} on seeds {seeds}")


def cmd_probe(args: argparse.Namespace) -> None:
    from workbench.probes import get_probe
    from workbench.store import atomic_dir

    probe = get_probe(args.probe)
    model = _load(args.model, args.device)
    options = {"n": args.n} if args.n else {}
    if args.steps:
        options["num_steps"] = args.steps
    if args.timesteps:
        if "timesteps" not in inspect.signature(probe).parameters:
            raise WorkbenchError(f"probe {args.probe!r} takes no --timesteps")
        options["timesteps"] = [int(t) for t in parse_floats(args.timesteps, "timesteps")]
    result = probe(model, **options)
    with atomic_dir(args.out) as tmp:
        result.save(tmp)
    print(f"wrote {args.out}: {args.probe}.json, {args.probe}.html")


def cmd_demo(args: argparse.Namespace) -> None:
    from workbench.demo import run_demo

    model = _load(args.model, args.device)
    path = run_demo(model, args.out, n_seeds=args.seeds, num_steps=args.steps, quick=args.quick)
    print(f"wrote {path}")


def cmd_train(args: argparse.Namespace) -> None:
    from workbench.train import TrainConfig, train

    config = TrainConfig(
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
        preset=args.preset,
        eval_samples=args.eval_samples,
        max_minutes=args.max_minutes,
        cut_skips=_cut_skips(args.cut_skips),
        init_from=args.init_from,
    )
    folder = train(config)
    print(f"wrote {folder}")


def _cut_skips(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise WorkbenchError(
            f"--cut-skips: expected up-block indices like 0,1 or none: {text!r}"
        ) from None


def cmd_bench(args: argparse.Namespace) -> None:
    from workbench.bench import bench_sampling

    model = _load(args.model, args.device)
    report = bench_sampling(model, n=args.n, num_steps=args.steps, repeats=args.repeats)
    print(report.table())


_COMMON = {"command", "func", "model", "device", "k", "timestep", "seed"}


def build_parser() -> argparse.ArgumentParser:
    from workbench.engines import ENGINES
    from workbench.probes import PROBES

    parser = _Parser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def model_args(p: argparse.ArgumentParser, default: str | None = "shapes32") -> None:
        p.add_argument(
            "--model",
            default=default,
            required=default is None,
            help="bundled name, folder or Hub id",
        )
        p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")

    p = command("sample", "sample images from seeds", cmd_sample)
    model_args(p)
    p.add_argument("--seeds", default="0-7")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the preset's)")
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--out", required=True, help="FILE.npz")

    p = command("discover", "find directions with an engine", cmd_discover)
    esub = p.add_subparsers(dest="engine", required=True, parser_class=_Parser)
    for name, engine in sorted(ENGINES.items()):
        ep = esub.add_parser(name, help=engine.summary, description=engine.summary)
        model_args(ep)
        ep.add_argument("--out", required=True, help="FILE.safetensors")
        ep.add_argument("--k", type=int, default=8, help="number of directions")
        ep.add_argument("--timestep", type=int, default=None)
        ep.add_argument("--seed", type=int, default=0)
        engine.add_arguments(ep)

    p = command("edit", "edit seeds along one direction at several strengths", cmd_edit)
    model_args(p)
    p.add_argument("--directions", required=True, help="FILE.safetensors from discover")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--strengths", default="-3,0,3", help="comma-separated, in preset steps")
    p.add_argument("--seeds", default="0-7")
    p.add_argument("--mode", default="additive")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--out", required=True, help="FILE.npz")

    p = command("library", "list, apply or remove named directions", cmd_library)
    p.add_argument("action", choices=["list", "apply", "remove"])
    p.add_argument("name", nargs="?", default=None, help="direction name (apply, remove)")
    p.add_argument("--library", default=None, help="folder (default: $WORKBENCH_LIBRARY)")
    model_args(p)
    p.add_argument("--seeds", default="0-7")
    p.add_argument("--strengths", default=None, help="default: the saved strength")
    p.add_argument("--out", default=None, help="FILE.npz (apply)")

    p = command("probe", "run a geometry probe", cmd_probe)
    p.add_argument("probe", help=f"one of: {', '.join(sorted(PROBES))}")
    model_args(p)
    p.add_argument("--n", type=int, default=None, help="number of samples (pairs: curvedness)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--timesteps", default=None, help="e.g. 999,600,200 (the probe's default)")
    p.add_argument("--out", required=True, help="output folder")

    p = command("demo", "discover, edit and probe on a model; write report.html", cmd_demo)
    model_args(p)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seeds", type=int, default=6, help="number of seeds per edit grid")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="toy sizes (a smoke test of the report)")

    p = command("train", "train a bundled model (shapes32, shapes64) from scratch", cmd_train)
    p.add_argument("--out", default="runs/train")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument(
        "--preset",
        default="shapes32",
        help="architecture: shapes32, shapes64 (Lit Shapes), tiny or tiny-lit (tests)",
    )
    p.add_argument(
        "--cut-skips",
        default=None,
        help="up blocks whose skips are cut, e.g. 0,1, or none (default: the architecture's)",
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="exported model folder to go on from when --out has no checkpoint "
        "(e.g. workbench/models/bundled/shapes64)",
    )
    p.add_argument(
        "--eval-samples", type=int, default=512, help="samples for the final quality report"
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget: stop early (checkpoint, export, report) when it is spent",
    )

    p = command("bench", "time sampling on a model", cmd_bench)
    model_args(p)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    return parser


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--strengths -3,0,3`` -> ``--strengths=-3,0,3`` (argparse reads -3,0,3 as a flag)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--strengths" and i + 1 < len(argv):
            out.append(f"--strengths={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
