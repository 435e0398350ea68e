"""The ``workbench`` command: sample, discover, edit, judge, calibrate, probe, demo, train,
bench.

Every command refuses bad input with a one-line ``workbench: error: ...`` on stderr and
exit status 2, before any compute where the refusal needs none, and writes its outputs
atomically (nothing partial is left behind). Nothing that exists is replaced without
``--overwrite``; each output is held under a write lock while the command runs (a second
command writing the same path is refused), and a command that fails leaves none of the
outputs it was creating.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError, one_line
from workbench.options import (
    CONDITIONING,
    MAX_SEED,
    NUM_STEPS,
    SEEDS,
    Option,
    Renamed,
    Spec,
    argparse_type,
)

if TYPE_CHECKING:
    from workbench.directions import DirectionSet


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_floats(text: str, what: str = "strengths") -> list[float]:
    """Parse comma-separated numbers; a one-line error names ``what`` otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise WorkbenchError(f"bad {what} {text!r}: use e.g. -3,0,3") from None
    if not values or any(v != v or abs(v) == float("inf") for v in values):
        raise WorkbenchError(f"bad {what} {text!r}: need finite numbers")
    return values


class _Outputs:
    """The paths the running command writes (each ``--out``, a calibration's files, the
    edited PNGs beside a user's images): each held under its write lock
    (:func:`workbench.store.write_lock`) until the command ends; when it fails, those that
    did not exist before it are removed."""

    def __init__(self) -> None:
        self.locks = contextlib.ExitStack()
        self.new: list[Path] = []

    def claim(self, path: Path, what: str = "--out", keep: bool = False, lock: bool = True) -> None:
        """Hold ``path``'s write lock (unless not ``lock``: a file in a folder held as a
        whole); ``keep``: leave it even when the command fails (a training run's
        checkpoints)."""
        from workbench.store import write_lock

        if lock:
            self.locks.enter_context(write_lock(path, what))
        if not keep and not os.path.lexists(path):
            self.new.append(path)

    def close(self, failed: bool) -> None:
        """Remove what a failed command was creating; release the locks."""
        try:
            for path in self.new if failed else ():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.lexists(path):
                    path.unlink()
        finally:
            self.locks.close()


#: The running command's outputs (a fresh one per :func:`main`).
_OUTPUTS = _Outputs()


def _writable(out: Path, flag: str = "--out") -> None:
    """Refuse, before any compute, an output path that cannot be written: an empty name,
    a parent that is a file or read-only, a name too long once the temp suffix is added."""
    if str(out) in ("", "."):
        raise WorkbenchError(f"{flag} must name a file or folder, got {str(out)!r}")
    if len(out.name.encode()) + 16 > 255:  # the temp file is .NAME.XXXXXXXX.tmp
        raise WorkbenchError(f"{flag}: name too long ({len(out.name)} characters)")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise WorkbenchError(f"{flag} {str(out)!r}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WorkbenchError(f"{flag} {str(out)!r}: {parent} is not writable")


def _out_file(path: str, suffix: str, overwrite: bool = False) -> Path:
    """An output file: the right suffix, writable, and not an existing file unless
    ``--overwrite`` (then it is replaced atomically)."""
    out = Path(path)
    if out.suffix != suffix:
        raise WorkbenchError(f"--out must end in {suffix}, got {path!r}")
    if out.is_dir():
        raise WorkbenchError(f"--out {path!r} is a folder")
    _OUTPUTS.claim(out)
    if out.exists() and not overwrite:
        raise WorkbenchError(f"--out {path!r} exists: give --overwrite to replace it")
    _writable(out)
    return out


def _out_dir(path: str, overwrite: bool = False) -> Path:
    """An output folder: writable, and not an existing non-empty folder unless
    ``--overwrite`` (then the finished result replaces it atomically)."""
    out = Path(path)
    _writable(out)
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"--out {path!r} is a file, not a folder")
    _OUTPUTS.claim(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise WorkbenchError(
            f"--out {path!r} is not empty: give --overwrite to replace it (its content goes)"
        )
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise WorkbenchError(f"--out {path!r} is not writable")
    return out


def _load(args: argparse.Namespace):
    """The model of ``--model`` on ``--device``, at ``--resolution`` where given."""
    from workbench.models import load

    return load(args.model, device=args.device, resolution=getattr(args, "resolution", None))


# ---------------------------------------------------------------------------- commands
def cmd_sample(args: argparse.Namespace) -> None:
    """``workbench sample``: images (and x_T) of seeds to an ``.npz``."""
    from workbench.sampling import sample
    from workbench.store import save_npz

    out = _out_file(args.out, ".npz", args.overwrite)
    seeds = list(args.seeds)
    model = _load(args)
    images = sample(
        model, seeds=seeds, num_steps=args.num_steps, eta=args.eta, **_CONDITIONING.from_args(args)
    )
    save_npz(out, images=model.to_uint8(images).numpy(), seeds=seeds)
    shape = ", ".join(map(str, model.image_shape[1:]))
    print(f"wrote {out}: images uint8 [{len(seeds)}, {shape}, 3]")


def cmd_discover(args: argparse.Namespace) -> None:
    """``workbench discover ENGINE``: a direction set to ``.safetensors``."""
    from workbench.engines import get_engine

    engine = get_engine(args.engine)
    out = _out_file(args.out, ".safetensors", args.overwrite)
    model = _load(args)
    directions = engine.discover(model, **engine.spec.from_args(args))
    directions.save(out)
    what = f"{len(directions)} {directions.space}-space directions"
    print(f"wrote {out}: {what}, shape {list(directions.shape)}")


#: Where ``workbench calibrate --overwrite`` keeps the preset it replaces.
PRESET_BACKUP = "workbench_preset.previous.json"


def cmd_calibrate(args: argparse.Namespace) -> None:
    """``workbench calibrate``: the model's preset measured, ``workbench_preset.json`` and
    the evidence (``workbench_calibration.json``/``.html``) written to the model folder or
    ``--out``; existing ones only with ``--overwrite``, the old preset kept beside them
    (:data:`PRESET_BACKUP`)."""
    from workbench.eval.calibration import CALIBRATE, Calibration, calibrate
    from workbench.models.presets import PRESET_FILE, Preset
    from workbench.store import write_text

    if args.out is None and not Path(args.model).is_dir():
        raise WorkbenchError(f"--model {args.model!r} is not a local folder: give --out DIR")
    flag = "--out" if args.out is not None else "--model"
    target = Path(args.out if args.out is not None else args.model)
    if target.exists() and not target.is_dir():
        raise WorkbenchError(f"{flag} {str(target)!r} is not a folder")
    _writable(target / PRESET_FILE, flag)
    name = Calibration.name
    files = [target / n for n in (PRESET_FILE, f"{name}.json", f"{name}.html", PRESET_BACKUP)]
    for path in files:
        _OUTPUTS.claim(path, flag)
    there = [p.name for p in files[:3] if p.exists()]
    if there and not args.overwrite:
        raise WorkbenchError(
            f"{flag} {str(target)!r} already holds {', '.join(there)}: give --overwrite to "
            f"replace them (the old preset is kept as {PRESET_BACKUP})"
        )
    model = _load(args)
    result = calibrate(model, **CALIBRATE.from_args(args))
    result.save(target)  # the evidence first: the preset is replaced last, with a backup
    old = target / PRESET_FILE
    if old.is_file():
        write_text(target / PRESET_BACKUP, old.read_text())
    preset = Preset.from_dict(result.preset).save_pretrained(target)
    print(f"wrote {preset}: {result.summary()}")
    for note in result.notes:
        print(f"  {note}")


def cmd_edit(args: argparse.Namespace) -> None:
    """``workbench edit``: edit seeds along saved directions, grid to PNG."""
    from workbench.data.labelled import image_paths
    from workbench.directions import DirectionSet
    from workbench.editing import EDIT, MODES, check_edited_paths, edit, edited_paths

    out = _out_file(args.out, ".npz", args.overwrite)
    strengths = None if args.strengths is None else parse_floats(args.strengths)
    if args.image is not None and args.seeds is not None:
        raise WorkbenchError("give --seeds or --image, not both")
    seeds = None if args.image is not None else list(args.seeds or range(8))
    model = _load(args)
    directions = DirectionSet.load(args.directions, model=model)
    strengths = strengths or _recorded_strengths(directions, [-3.0, 0.0, 3.0])
    options = EDIT.from_args(args, skip=_EDIT_OWN) | _mode_options(args, MODES)
    if args.mode is not None:
        options["mode"] = args.mode
    if args.image is not None:  # the PNGs beside the images: checked and held before the edit
        index = options.get("index", 0)
        directions.select([index])  # an index out of range refused here, before the edit
        pngs = edited_paths(image_paths(args.image), directions.name(index), strengths)
        check_edited_paths(pngs, args.overwrite)
        for folder in dict.fromkeys(p.parent for p in pngs):  # each edited/ held as a whole
            _OUTPUTS.claim(folder, "the edited images' folder")
        for path in pngs:
            _OUTPUTS.claim(path, lock=False)
    result = edit(model, directions, strengths=strengths, seeds=seeds, images=args.image, **options)
    if result.sources is not None:  # the PNGs first, the --out last: a failure leaves neither
        written = result.save_beside_sources(overwrite=args.overwrite)
        print(
            f"wrote {len(written)} edited images to {written[0].parent} (the images inverted "
            f"and sampled back unedited: MSE {result.reconstruction_mse:.4f} in [-1, 1])"
        )
    result.save_npz(out)
    shape = ", ".join(map(str, model.image_shape[1:]))
    n = len(result.images[0])
    print(f"wrote {out}: images uint8 [{len(strengths)}, {n}, {shape}, 3]")


def cmd_judge(args: argparse.Namespace) -> None:
    """``workbench judge``: edit along saved directions and score the edits without ground
    truth (effect, locality, consistency, and a linear probe's change with --labelled)."""
    import json

    from workbench.directions import DirectionSet
    from workbench.editing import MODES
    from workbench.eval.judge import JUDGE, judge_directions
    from workbench.store import write_text

    out = None if args.out is None else _out_file(args.out, ".json", args.overwrite)
    strengths = None if args.strengths is None else parse_floats(args.strengths)
    model = _load(args)
    directions = DirectionSet.load(args.directions, model=model)
    strengths = strengths or _recorded_strengths(directions, [-2.0, -1.0, 0.0, 1.0, 2.0])
    options = (
        JUDGE.from_args(args, skip=_JUDGE_OWN)
        | _JUDGE_EDIT.from_args(args)
        | _CONDITIONING.from_args(args)
        | _mode_options(args, MODES)
    )
    if args.mode is not None:
        options["mode"] = args.mode
    scores = judge_directions(model, directions, strengths=strengths, **options)
    print(scores.table())
    if out is not None:
        write_text(out, json.dumps(scores.to_dict(), indent=1) + "\n")
        print(f"wrote {out}")


def _recorded_strengths(directions: DirectionSet, default: list[float]) -> list[float]:
    """A set's working strengths (a boundary's distances), else ``default``."""
    recorded = (directions.params.get("edit") or {}).get("strengths")
    return [float(s) for s in recorded] if recorded else default


#: The edit options ``workbench judge`` passes on (besides the mode and the prompt).
_JUDGE_EDIT = Spec("function", "judge edits", "how the judged edits are made", (NUM_STEPS,))

#: The text conditioning of a text-to-image model, on every command that samples.
_CONDITIONING = Spec("text", "conditioning", "a text-to-image model's prompt", CONDITIONING)

#: The edit command's own spellings of these (the seeds, not with ``--image``; the
#: strengths, by default the set's recorded ones; the modes, with their options).
_EDIT_OWN = ("strengths", "seeds", "mode")
#: The judge command's (its seeds are its description's).
_JUDGE_OWN = ("strengths", "mode")


def _mode_options(args: argparse.Namespace, modes: dict) -> dict:
    """The edit-mode options given on the command line (the mode checks they are its own)."""
    given: dict = {}
    for mode in modes.values():
        given |= mode.spec.from_args(args)
    return given


def cmd_library(args: argparse.Namespace) -> None:
    """``workbench library``: list, add, show, apply and remove named directions."""
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
    out = _out_file(args.out, ".npz", args.overwrite)
    seeds = list(args.seeds)
    model = _load(args)
    named = library.load(args.name, model)
    strengths = parse_floats(args.strengths) if args.strengths else None
    with model.conditioned(**_CONDITIONING.from_args(args)):
        result = named.apply(model, seeds=seeds, strengths=strengths)
    result.save_npz(out)
    print(f"wrote {out}: {args.name!r} at strengths {result.strengths} on seeds {seeds}")


def cmd_probe(args: argparse.Namespace) -> None:
    """``workbench probe PROBE``: a probe's result (JSON, tensors, figure) to a folder."""
    from workbench.probes import get_probe
    from workbench.store import atomic_dir

    probe = get_probe(args.probe)
    out = _out_dir(args.out, args.overwrite)
    model = _load(args)
    result = probe(model, **probe.spec.from_args(args))
    with atomic_dir(out) as tmp:
        result.save(tmp)
    print(f"wrote {out}: {args.probe}.json, {args.probe}.html")


def cmd_sweep(args: argparse.Namespace) -> None:
    """``workbench sweep NAME``: a probe (or the pullback engine) over many samples (and
    models, option values) in shards, in-process or on Ray; each complete point's result
    to a folder."""
    from workbench.sweep import SWEEP_SPEC, SWEEPS, sweep

    sweepable = SWEEPS[args.probe]
    out = _out_dir(args.out, args.overwrite)
    grid = {}
    for text in args.grid or []:
        name, _, values = text.partition("=")
        if name not in sweepable.spec or not values or name in sweepable.own:
            raise WorkbenchError(
                f"--grid {text!r}: give NAME=V1;V2 with NAME an option of {args.probe!r}"
            )
        if name in grid:
            raise WorkbenchError(f"--grid names {name!r} twice: give its values in one, V1;V2")
        option = sweepable.spec[name]
        grid[name] = [option.parse(v, sweepable.spec.owner) for v in values.split(";")]
        if len(set(map(str, grid[name]))) != len(grid[name]):
            raise WorkbenchError(f"--grid {text!r}: a value is given twice")
    result = sweep(
        args.probe,
        args.model or ["shapes32"],
        grid=grid,
        **SWEEP_SPEC.from_args(args),
        **sweepable.spec.from_args(args, skip=sweepable.own),
    )
    print(result.summary())
    if result.failures:  # a failed command leaves no --out
        raise WorkbenchError(
            f"{len(result.failures)} shard(s) failed (listed above), so nothing was written "
            f"to {str(out)!r}; the finished shards are cached: run the same command again to "
            "complete the sweep"
        )
    result.save(out)
    print(f"wrote {out}: sweep.json and one folder per complete point")


def _formats(text: str) -> str:
    """``--format``: one or more of pdf, svg, png, comma-separated (an argparse type)."""
    from workbench.viz.figures import FORMATS

    given = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in given if f not in FORMATS]
    if not given or bad:
        raise argparse.ArgumentTypeError(
            f"unknown figure format {', '.join(bad) or repr(text)}; known: {', '.join(FORMATS)}"
        )
    return ",".join(dict.fromkeys(given))


def cmd_demo(args: argparse.Namespace) -> None:
    """``workbench demo``: every engine and probe on one model, with a report;
    ``workbench figures``: the same run's figures as static PDF, SVG or PNG files."""
    from workbench.demo import run_demo

    fmt = getattr(args, "format", None)
    if fmt is not None:
        from workbench.viz.figures import check_exporter

        check_exporter()  # before any compute
    _out_dir(args.out, args.overwrite)
    model = _load(args)
    path = run_demo(
        model,
        args.out,
        n_seeds=args.n_seeds,
        num_steps=args.num_steps,
        quick=args.quick,
        full=args.full,
        verbose=args.verbose,
        figures=fmt,
        report=fmt is None,
    )
    if fmt is None:
        print(f"wrote {path}")
    else:
        print(f"wrote {len(list(path.iterdir()))} figures ({fmt}) into {path}")


def cmd_train(args: argparse.Namespace) -> None:
    """``workbench train``: train (or resume) a bundled architecture on its scene."""
    from workbench.models.loading import check_device
    from workbench.train import CHECKPOINT, TrainConfig, train

    if args.device is not None:
        check_device(args.device)
    out = Path(args.out)
    _writable(out)
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"--out {args.out!r} is a file, not a folder")
    _OUTPUTS.claim(out, keep=True)  # a failed run keeps its checkpoints (resumable)
    is_run = (out / CHECKPOINT).is_dir() or (out / "model").is_dir()
    if out.is_dir() and any(out.iterdir()) and not is_run and not args.overwrite:
        raise WorkbenchError(
            f"--out {args.out!r} holds other files, not a training run: give --overwrite to "
            "write the run (checkpoint/, model/) among them"
        )

    config = TrainConfig(
        out=args.out,
        steps=args.train_steps,
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
        shape_prior=_shape_prior(args.shape_prior),
    )
    folder = train(config)
    print(f"wrote {folder}")


def _comma_list(text: str, convert: Callable, flag: str, expected: str) -> tuple:
    """``text`` split at commas and converted (one-line error naming ``flag``)."""
    try:
        return tuple(convert(v) for v in text.split(","))
    except ValueError:
        raise WorkbenchError(f"{flag}: expected {expected}: {text!r}") from None


def _shape_prior(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    return _comma_list(text, float, "--shape-prior", "three weights like 0.32,0.42,0.26")


def _cut_skips(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    return _comma_list(text, int, "--cut-skips", "up-block indices like 0,1 or none")


def cmd_bench(args: argparse.Namespace) -> None:
    """``workbench bench``: time sampling on a model."""
    from workbench.bench import bench_sampling

    model = _load(args)
    with model.conditioned(**_CONDITIONING.from_args(args)):
        report = bench_sampling(model, n=args.n, num_steps=args.num_steps, repeats=args.repeats)
    print(report.table())


def build_parser() -> argparse.ArgumentParser:
    """The ``workbench`` argument parser, options derived from the registered descriptions."""
    from workbench.editing import EDIT, MODES
    from workbench.engines import ENGINES
    from workbench.probes import PROBES

    parser = _Parser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], None]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def out_args(p: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
        p.add_argument("--out", required=default is None, default=default, help=what)
        p.add_argument(
            "--overwrite", action="store_true", help="replace --out if it exists (atomically)"
        )

    def num(
        p: argparse.ArgumentParser,
        name: str,
        kind: type,
        default: float | None,
        text: str,
        low: float,
        high: float | None = None,
        aliases: tuple[str, ...] = (),
        nullable: bool = False,
    ) -> None:
        """A numeric option, parsed and range-checked by its :class:`Option`."""
        o = Option(name, kind, default, text, low=low, high=high, nullable=nullable)
        p.add_argument(
            o.flag,
            *aliases,
            action=Renamed,
            old=aliases,
            dest=name,
            default=default,
            type=argparse_type(o),
            metavar=name.upper(),
            help=o.describe(),
        )

    def mode_args(p: argparse.ArgumentParser, taken: Sequence[str]) -> None:
        """``--mode`` and each edit mode's own options (once per name; ``taken``: names the
        command has already)."""
        p.add_argument(
            "--mode",
            choices=sorted(MODES),
            default=None,
            help="edit mode (default: the one the direction file records, else additive)",
        )
        seen: set[str] = set(taken)
        for mode in MODES.values():
            mode.spec.add_arguments(p, skip=tuple(seen))
            seen |= {o.name for o in mode.spec.options}

    def seeds_arg(
        p: argparse.ArgumentParser, default: str | None = "0-7", text: str | None = None
    ) -> None:
        """``--seeds``: the ``seeds`` option type (``0-7``, ``1,4,9``, ``0-3,9``)."""
        p.add_argument(
            "--seeds",
            default=None if default is None else SEEDS.parse(default),
            type=argparse_type(dataclasses.replace(SEEDS, required=True)),  # "" is no seeds
            metavar="SEEDS",
            help=text or f"{SEEDS.help} (default {default})",
        )

    def model_args(p: argparse.ArgumentParser, default: str | None = "shapes32") -> None:
        p.add_argument(
            "--model",
            default=default,
            required=default is None,
            help="bundled name, folder or Hub id",
        )
        p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
        text = "image pixels per side (default: the model's; FLUX.1: 1024)"
        num(p, "resolution", int, None, text, 8, 16384)

    p = command("sample", "sample images from seeds", cmd_sample)
    model_args(p)
    seeds_arg(p)
    num(p, "num_steps", int, None, "DDIM steps (default: the preset's)", 1, 10000, ("--steps",))
    num(p, "eta", float, 0.0, "DDIM eta (0: deterministic)", 0, 1)
    _CONDITIONING.add_arguments(p)
    out_args(p, "FILE.npz")

    p = command("discover", "find directions with an engine", cmd_discover)
    esub = p.add_subparsers(dest="engine", required=True, parser_class=_Parser)
    for name, engine in sorted(ENGINES.items()):
        ep = esub.add_parser(name, help=engine.summary, description=engine.summary)
        model_args(ep)
        out_args(ep, "FILE.safetensors")
        engine.spec.add_arguments(ep)

    p = command("edit", "edit seeds along one direction at several strengths", cmd_edit)
    model_args(p)
    p.add_argument("--directions", required=True, help="FILE.safetensors from discover")
    p.add_argument(
        "--strengths",
        default=None,
        help="comma-separated, in preset steps (default: the set's working strengths, else -3,0,3)",
    )
    seeds_arg(p, None, "seeds of x_T, e.g. 0-7 or 1,4,9 (default 0-7; not with --image)")
    p.add_argument(
        "--image",
        default=None,
        help="your image file or folder of them, edited instead of seeds (PNGs written to "
        "an edited/ folder beside them)",
    )
    out_args(p, "FILE.npz")
    EDIT.add_arguments(p, skip=_EDIT_OWN)
    mode_args(p, EDIT._index)

    from workbench.eval.judge import JUDGE

    p = command(
        "judge",
        "score directions without ground truth: effect, locality, consistency, probe",
        cmd_judge,
    )
    model_args(p)
    p.add_argument("--directions", required=True, help="FILE.safetensors from discover")
    p.add_argument(
        "--strengths",
        default=None,
        help="comma-separated, in preset steps (default: the set's working strengths, else "
        "-2,-1,0,1,2)",
    )
    p.add_argument("--out", default=None, help="FILE.json for the scores (optional)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    JUDGE.add_arguments(p, skip=_JUDGE_OWN)
    _JUDGE_EDIT.add_arguments(p)
    _CONDITIONING.add_arguments(p)
    mode_args(p, (*JUDGE._index, *_JUDGE_EDIT._index, *_CONDITIONING._index))

    from workbench.eval.calibration import CALIBRATE

    p = command("calibrate", "measure a model's preset; write workbench_preset.json", cmd_calibrate)
    model_args(p, default=None)
    p.add_argument(
        "--out", default=None, help="folder for the preset and its evidence (default: the model's)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing preset and evidence (the old preset kept as {PRESET_BACKUP})",
    )
    CALIBRATE.add_arguments(p)

    p = command("library", "list, apply or remove named directions", cmd_library)
    p.add_argument("action", choices=["list", "apply", "remove"])
    p.add_argument("name", nargs="?", default=None, help="direction name (apply, remove)")
    p.add_argument("--library", default=None, help="folder (default: $WORKBENCH_LIBRARY)")
    model_args(p)
    seeds_arg(p)
    p.add_argument("--strengths", default=None, help="default: the saved strength")
    p.add_argument("--out", default=None, help="FILE.npz (apply)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _CONDITIONING.add_arguments(p)

    p = command("probe", "run a geometry probe", cmd_probe)
    psub = p.add_subparsers(dest="probe", required=True, parser_class=_Parser)
    for name, probe in sorted(PROBES.items()):
        pp = psub.add_parser(name, help=probe.spec.summary, description=probe.spec.summary)
        model_args(pp)
        out_args(pp, "output folder")
        probe.spec.add_arguments(pp)

    from workbench.sweep import SWEEP_SPEC, SWEEPS

    p = command("sweep", "a probe over many samples, models and options, in shards", cmd_sweep)
    ssub = p.add_subparsers(dest="probe", required=True, parser_class=_Parser)
    for name, sweepable in sorted(SWEEPS.items()):
        sp = ssub.add_parser(name, help=sweepable.spec.summary, description=sweepable.spec.summary)
        sp.add_argument(
            "--model",
            action="append",
            help="bundled name, folder or Hub id (repeat for several; default shapes32)",
        )
        sp.add_argument(
            "--grid",
            action="append",
            metavar="NAME=V1;V2",
            help="an option's values to sweep, e.g. 'k=4;8' (repeat for several options)",
        )
        out_args(sp, "output folder")
        SWEEP_SPEC.add_arguments(sp)
        sweepable.spec.add_arguments(sp, skip=sweepable.own)

    def demo_args(p: argparse.ArgumentParser) -> None:
        model_args(p)
        num(p, "n_seeds", int, None, "seeds per grid (default 4; --full 6)", 1, 1000, ("--seeds",))
        steps_help = "DDIM steps (default 20; --full: the preset's)"
        num(p, "num_steps", int, None, steps_help, 1, 10**4, ("--steps",))
        p.add_argument("--quick", action="store_true", help="toy sizes (a smoke test)")
        p.add_argument(
            "--full",
            action="store_true",
            help="thorough sizes (the preset's steps, 6 seeds, the mixing step from 128 "
            "trajectories, 128 boundary images)",
        )
        p.add_argument(
            "--verbose", action="store_true", help="every stage's own progress bars, not one bar"
        )

    p = command("demo", "discover, edit and probe on a model; write report.html", cmd_demo)
    demo_args(p)
    out_args(p, "output folder", default="runs/demo")
    p = command("figures", "write the demo's figures as PDF, SVG or PNG files", cmd_demo)
    demo_args(p)
    out_args(p, "output folder (the files go into its figures/)", default="runs/figures")
    p.add_argument(
        "--format", default="pdf", type=_formats, help="pdf, svg or png, or several: pdf,svg"
    )

    p = command("train", "train a bundled model (shapes32, shapes64) from scratch", cmd_train)
    out_args(p, "run folder (resumed if it holds a checkpoint)", default="runs/train")
    num(p, "train_steps", int, 6000, "training steps", 1, 10**8, ("--steps",))
    num(p, "batch_size", int, 128, "images per step", 1, 65536)
    num(p, "lr", float, 2e-4, "learning rate", 1e-12, 1.0)
    num(p, "seed", int, 0, "random seed", 0, MAX_SEED)
    p.add_argument("--device", default=None)
    num(p, "checkpoint_every", int, 500, "steps between checkpoints", 1, 10**8)
    p.add_argument(
        "--architecture",
        "--preset",  # the older spelling (a preset is a model's editing defaults)
        dest="preset",
        default="shapes32",
        help="shapes32, shapes64 (Lit Shapes), tiny or tiny-lit (tests)",
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
        "--shape-prior",
        default=None,
        help="class prior of the training data, weights for disc,square,triangle "
        "(default: uniform, the scene's); for a fine-tune that corrects a model's class shares",
    )
    num(p, "eval_samples", int, 512, "samples for the final quality report", 0, 100_000)
    num(
        p,
        "max_minutes",
        float,
        None,
        "wall-clock budget: stop early (checkpoint, export, report) when it is spent",
        1e-6,
        10**7,
        nullable=True,
    )

    p = command("bench", "time sampling on a model", cmd_bench)
    model_args(p)
    num(p, "n", int, 64, "images", 1, 100_000)
    num(p, "num_steps", int, 50, "DDIM steps", 1, 10000, ("--steps",))
    num(p, "repeats", int, 3, "timed runs", 1, 1000)
    _CONDITIONING.add_arguments(p)
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
    """Run the command line; return the exit status (2 for bad input, one stderr line)."""
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a one-line argparse error (2)
        return int(stop.code or 0)
    global _OUTPUTS
    _OUTPUTS, failed = _Outputs(), True
    try:
        args.func(args)
        failed = False
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as exc:  # the machine refused: disk, permissions, memory
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        print(f"workbench: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line; WORKBENCH_DEBUG=1 shows the traceback
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        print(
            f"workbench: internal error: {one_line(exc)} (WORKBENCH_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        _OUTPUTS.close(failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
