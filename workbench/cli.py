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

from workbench.errors import WorkbenchError, one_line
from workbench.options import CONDITIONING, DEVICE, NUM_STEPS, SEEDS, STRENGTHS, Option, Spec


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


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
    from workbench.sampling import SAMPLE, sample
    from workbench.store import save_npz

    out = _out_file(args.out, ".npz", args.overwrite)
    options = SAMPLE.from_args(args)
    seeds = list(options["seeds"])
    model = _load(args)
    result = sample(model, **options)
    if options.get("decode", True) or not model.latent:
        save_npz(out, images=model.to_uint8(result).numpy(), seeds=seeds)
        shape = ", ".join(map(str, model.image_shape[1:]))
        print(f"wrote {out}: images uint8 [{len(seeds)}, {shape}, 3]")
    else:
        save_npz(out, latents=result.float().cpu().numpy(), seeds=seeds)
        print(f"wrote {out}: latents float32 {list(result.shape)}")


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

    if args.model is None:
        raise WorkbenchError("calibrate needs --model: the folder of the model to calibrate")
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
    from workbench.editing import (
        EDIT,
        MODES,
        check_edited_paths,
        edit,
        edited_paths,
        working_strengths,
    )

    out = _out_file(args.out, ".npz", args.overwrite)
    strengths = None if args.strengths is None else list(args.strengths)
    if args.image is not None and args.seeds is not None:
        raise WorkbenchError("give --seeds or --image, not both")
    seeds = None if args.image is not None else list(args.seeds or range(8))
    model = _load(args)
    directions = DirectionSet.load(args.directions, model=model)
    strengths = strengths or working_strengths(directions)
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
    truth (effect, locality, consistency, and a linear classifier's change with --labelled)."""
    import json

    from workbench.directions import DirectionSet
    from workbench.editing import MODES, working_strengths
    from workbench.eval.judge import JUDGE, judge_directions
    from workbench.store import write_text

    out = None if args.out is None else _out_file(args.out, ".json", args.overwrite)
    strengths = None if args.strengths is None else list(args.strengths)
    model = _load(args)
    directions = DirectionSet.load(args.directions, model=model)
    strengths = strengths or working_strengths(directions, [-2.0, -1.0, 0.0, 1.0, 2.0])
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
    strengths = None if args.strengths is None else list(args.strengths)
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
    """``--format``: one or more of pdf, svg, png, comma-separated."""
    from workbench.viz.figures import FORMATS

    given = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in given if f not in FORMATS]
    if not given or bad:
        raise WorkbenchError(
            f"unknown figure format {', '.join(bad) or repr(text)}; known: {', '.join(FORMATS)}"
        )
    return ",".join(dict.fromkeys(given))


def cmd_demo(args: argparse.Namespace) -> None:
    """``workbench demo``: every engine and probe on one model, with a report;
    ``workbench figures``: the same run's figures as static PDF, SVG or PNG files."""
    from workbench.demo import DEMO, run_demo

    fmt = getattr(args, "format", None)
    if fmt is not None:
        from workbench.viz.figures import check_exporter

        fmt = _formats(fmt)
        check_exporter()  # before any compute
    if args.quick and args.full:
        raise WorkbenchError("give --quick or --full, not both")
    _out_dir(args.out, args.overwrite)
    model = _load(args)
    path = run_demo(model, args.out, **DEMO.from_args(args), figures=fmt, report=fmt is None)
    if fmt is None:
        print(f"wrote {path}")
    else:
        print(f"wrote {len(list(path.iterdir()))} figures ({fmt}) into {path}")


def cmd_train(args: argparse.Namespace) -> None:
    """``workbench train``: train (or resume) a bundled architecture on its scene."""
    from workbench.models.loading import check_device
    from workbench.train import CHECKPOINT, TRAIN, TrainConfig, train

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

    config = TrainConfig.of(args.out, **TRAIN.from_args(args))
    folder = train(config)
    print(f"wrote {folder}")


def cmd_bench(args: argparse.Namespace) -> None:
    """``workbench bench``: time sampling on a model."""
    from workbench.bench import BENCH, bench_sampling

    model = _load(args)
    with model.conditioned(**_CONDITIONING.from_args(args)):
        report = bench_sampling(model, **BENCH.from_args(args))
    print(report.table())


# ---------------------------------------------------------------------------- the parser
def _model_options(default: str | None = "shapes32") -> Spec:
    """``--model``, ``--device``, ``--resolution``: which model each command loads."""
    from workbench.models.families.base import MAX_SIDE

    return Spec(
        "command",
        "model",
        "the model",
        (
            Option("model", str, default, "bundled name, folder or Hub id"),
            DEVICE,
            Option(
                "resolution",
                int,
                None,
                "image pixels per side (default: the model's; FLUX.1: 1024)",
                low=8,
                high=MAX_SIDE,
            ),
        ),
    )


def _out_options(what: str, default: str | None = None, required: bool = True) -> Spec:
    """``--out`` (``what``: the file or folder written) and ``--overwrite``."""
    replace_text = "replace --out if it exists (atomically)"
    return Spec(
        "command",
        "out",
        what,
        (
            Option("out", "path", default, what, required=required and default is None),
            Option("overwrite", bool, False, replace_text),
        ),
    )


def _own(name: str, *options: Option) -> Spec:
    """A command's own options (filled in on the command line)."""
    return Spec("command", name, name, options)


#: ``workbench sweep``'s own: its models and the grid of option values.
_SWEEP_OWN = Spec(
    "command",
    "sweep",
    "a sweep's models and grid",
    (
        Option(
            "model",
            str,
            None,
            "bundled name, folder or Hub id (repeat for several; default shapes32)",
            repeat=True,
        ),
        Option(
            "grid",
            str,
            None,
            "an option's values to sweep, NAME=V1;V2, e.g. 'k=4;8' (repeat for several)",
            repeat=True,
        ),
    ),
)
_DIRECTIONS = Option("directions", "path", None, "FILE.safetensors from discover", required=True)


def _strengths(default: str) -> Option:
    """``--strengths`` of a command that defaults to recorded ones (``default`` says which)."""
    return dataclasses.replace(STRENGTHS, required=False, help=f"{STRENGTHS.help} ({default})")


def _commands() -> dict[str, tuple[Callable, str, tuple[Spec, ...]]]:
    """The commands that are not one registry entry each: name -> (function, summary, the
    descriptions whose options are its flags, the first of a name winning)."""
    from workbench.bench import BENCH
    from workbench.demo import DEMO
    from workbench.editing import EDIT, MODES
    from workbench.eval.calibration import CALIBRATE
    from workbench.eval.judge import JUDGE
    from workbench.sampling import SAMPLE
    from workbench.train import TRAIN

    mode = _own(
        "mode",
        Option(
            "mode",
            str,
            None,
            "edit mode (default: the one the direction file records, else additive)",
            choices=tuple(sorted(MODES)),
        ),
    )
    modes = (mode, *(m.spec for m in MODES.values()))
    seeds = dataclasses.replace(SEEDS, default=tuple(range(8)))
    demo = (_model_options("shapes64"), DEMO.command())
    recorded = "default: the set's working strengths, else"
    return {
        "sample": (cmd_sample, SAMPLE.summary, (
            _model_options(), SAMPLE.command(seeds=range(8)), _out_options("FILE.npz"),
        )),
        "edit": (cmd_edit, "edit seeds along one direction at several strengths", (
            _model_options(), _out_options("FILE.npz"), EDIT.without(*_EDIT_OWN, "seeds"),
            _own("edit", _DIRECTIONS, _strengths(f"{recorded} -3,0,3"), dataclasses.replace(
                SEEDS, help=f"{SEEDS.help} (default 0-7; not with --image)"), Option(
                "image", "path", None, "your image file or folder of them, edited instead of "
                "seeds (PNGs written to an edited/ folder beside them)")),
            *modes,
        )),
        "judge": (cmd_judge, JUDGE.summary, (
            _model_options(), JUDGE.without(*_JUDGE_OWN), _JUDGE_EDIT, _CONDITIONING,
            _own("judge", _DIRECTIONS, _strengths(f"{recorded} -2,-1,0,1,2")),
            _out_options("FILE.json for the scores (optional)", required=False), *modes,
        )),
        "calibrate": (cmd_calibrate, CALIBRATE.summary, (
            _model_options(default=None), CALIBRATE, _out_options(
                "folder for the preset and its evidence (default: the model's)", required=False),
        )),
        "library": (cmd_library, "list, apply or remove named directions", (
            _model_options(), _CONDITIONING, _out_options("FILE.npz (apply)", required=False),
            _own("library", Option("library", "path", None, "folder (default: "
                 "$WORKBENCH_LIBRARY)"), seeds, _strengths("default: the saved strength")),
        )),
        "demo": (cmd_demo, DEMO.summary, (*demo, _out_options("output folder", "runs/demo"))),
        "figures": (cmd_demo, "write the demo's figures as PDF, SVG or PNG files", (
            *demo, _out_options("output folder (the files go into its figures/)",
                                "runs/figures"),
            _own("figures", Option("format", str, "pdf", "pdf, svg or png, or several: pdf,svg")),
        )),
        "train": (cmd_train, TRAIN.summary, (
            TRAIN, _out_options("run folder (resumed if it holds a checkpoint)", "runs/train"),
        )),
        "bench": (cmd_bench, "time sampling on a model", (
            _model_options(), BENCH.command(), _CONDITIONING,
        )),
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``workbench`` argument parser: every flag from a registered description (the
    engines', probes', sweepables', edit modes' and each command's own)."""
    from workbench.engines import ENGINES
    from workbench.probes import PROBES
    from workbench.sweep import SWEEP_SPEC, SWEEPS

    parser = _Parser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(
        into: argparse._SubParsersAction, name: str, summary: str, specs: Sequence[Spec]
    ) -> argparse.ArgumentParser:
        """A (sub)command with the flags of ``specs``, each name once (the first wins)."""
        p = into.add_parser(name, help=summary, description=summary)
        taken: set[str] = set()
        for spec in specs:
            spec.add_arguments(p, skip=tuple(taken))
            taken |= set(spec.names)
        return p

    groups = {  # one subcommand per registry entry: its description, the model, --out
        "discover": ("find directions with an engine", cmd_discover, "engine", ENGINES,
                     "FILE.safetensors"),
        "probe": ("run a geometry probe", cmd_probe, "probe", PROBES, "output folder"),
        "sweep": ("a probe over many samples, models and options, in shards", cmd_sweep,
                  "probe", SWEEPS, "output folder"),
    }  # fmt: skip
    for group, (summary, func, dest, registry, what) in groups.items():
        p = sub.add_parser(group, help=summary, description=summary)
        p.set_defaults(func=func)
        entries = p.add_subparsers(dest=dest, required=True, parser_class=_Parser)
        for name, entry in sorted(registry.items()):
            spec = entry.spec
            if group == "sweep":
                specs = (_SWEEP_OWN, SWEEP_SPEC, spec.without(*entry.own))
            else:
                specs = (_model_options(), spec)
            command(entries, name, spec.summary, (*specs, _out_options(what)))
    for name, (func, summary, specs) in _commands().items():
        command(sub, name, summary, specs).set_defaults(func=func)
    library = sub.choices["library"]
    library.add_argument("action", choices=["list", "apply", "remove"])
    library.add_argument("name", nargs="?", default=None, help="direction name (apply, remove)")
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
