import json
import subprocess
import sys

import numpy as np
import pytest

import workbench as wb
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.options import SEEDS, STRENGTHS

M = ["--model", "tiny-test"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_parsers():
    assert SEEDS.parse("0-3") == (0, 1, 2, 3)
    assert SEEDS.parse("1,4,9") == (1, 4, 9)
    assert SEEDS.parse(" 0-2, 9 ") == (0, 1, 2, 9)
    assert STRENGTHS.parse("-3,0,3") == (-3.0, 0.0, 3.0)
    for bad in ("a", "3-1", "-2", "1,,2", "2-"):
        with pytest.raises(WorkbenchError, match="seeds"):
            SEEDS.parse(bad)
    for bad in ("1,nan", "", "a"):
        with pytest.raises(WorkbenchError, match="strengths"):
            STRENGTHS.parse(bad)


def test_sample_discover_edit_probe_demo(capsys, tmp_path):
    def ok(*argv):
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        return out

    ok("sample", *M, "--seeds", "0-3", "--num-steps", "5", "--out", str(tmp_path / "s.npz"))
    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 16, 16, 3)

    for space in ("x", "h"):
        d = str(tmp_path / f"{space}.safetensors")
        ok("discover", "random", *M, "--space", space, "--k", "3", "--out", d)
        out = str(tmp_path / f"e{space}.npz")
        edit = ["--index", "2", "--strengths", "-3,0,3", "--seeds", "0-1", "--num-steps", "5"]
        ok("edit", *M, "--directions", d, *edit, "--out", out)
        images = np.load(out)["images"]
        assert images.shape == (3, 2, 16, 16, 3) and images.dtype == np.uint8

    d = tmp_path / "attn.safetensors"
    ok("discover", "attention", *M, "--matrix", "ov", "--k", "4", "--out", str(d))
    assert wb.DirectionSet.load(d).params["matrix"] == "ov"
    d = tmp_path / "pca.safetensors"
    ok("discover", "pca", *M, "--n", "4", "--num-steps", "4", "--k", "2", "--out", str(d))
    assert wb.DirectionSet.load(d).shape == (32, 4, 4)

    ok("probe", "norm", *M, "--n", "4", "--num-steps", "5", "--out", str(tmp_path / "p"))
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["norm.html", "norm.json"]
    timesteps = ["--timesteps", "999,500", "--num-steps", "4"]
    ok("probe", "curvedness", *M, "--n", "2", *timesteps, "--out", str(tmp_path / "c"))
    written = json.loads((tmp_path / "c" / "curvedness.json").read_text())
    assert written["timesteps"] == [999, 500] and len(written["ratio"][0]) == 2

    ok("demo", *M, "--num-steps", "4", "--n-seeds", "2", "--quick", "--out", str(tmp_path / "demo"))
    names = {p.name for p in (tmp_path / "demo").iterdir()}
    expected = {"report.html", "samples.png", "probes", "random-x.safetensors"}
    expected |= {"random-h.safetensors", "attention-qk.safetensors", "pca-channel.safetensors"}
    expected |= {"pullback.safetensors", "boundary-large.safetensors", "boundary-large-0.png"}
    expected |= {"local-centre.safetensors", "local-centre-0.png"}
    assert expected <= names
    report = (tmp_path / "demo" / "report.html").read_text()
    # every engine's edits judged without ground truth: a table and a caption per grid
    assert report.count("class='workbench-judge'") == 8 and "consistency" in report

    out = ok("bench", *M, "--n", "2", "--num-steps", "2", "--repeats", "1")
    assert "sample 2 x 2 steps" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--model", "nope", "--out", "o.npz"], "unknown model"),
        (["sample", *M, "--seeds", "x", "--out", "o.npz"], "seeds must be a list like 0-7"),
        (["sample", *M, "--seeds", "", "--out", "o.npz"], "seeds must be a list like 0-7"),
        (["sample", *M, "--out", "o.txt"], "must end in .npz"),
        (
            ["discover", "random", *M, "--timestep", "1000", "--out", "o.safetensors"],
            "out of range",
        ),
        (["discover", "random", *M, "--k", "0", "--out", "o.safetensors"], "k must be"),
        (["edit", *M, "--directions", "missing.safetensors", "--out", "o.npz"], "no such file"),
        (["probe", "nope", *M, "--out", "o"], "invalid choice: 'nope'"),
        (["probe", "norm", *M, "--timesteps", "5", "--out", "o"], "unrecognized arguments"),
        (["probe", "curvedness", *M, "--timesteps", "5000", "--out", "o"], "out of range"),
        (["discover", "nope", "--out", "o.safetensors"], "invalid choice"),
    ],
)
def test_bad_input_one_line_nonzero_no_file(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_edit_with_bad_index_or_foreign_directions_writes_nothing(capsys, tmp_path, other_tiny):
    d = tmp_path / "d.safetensors"
    assert run(capsys, "discover", "random", *M, "--k", "2", "--out", str(d))[0] == 0
    code, _, err = run(
        capsys, "edit", *M, "--directions", str(d), "--index", "5", "--out", str(tmp_path / "o.npz")
    )
    assert code == 2 and "index 5 out of range" in err
    folder = tmp_path / "other"
    wb.save(other_tiny, folder)
    code, _, err = run(
        capsys,
        "edit",
        "--model",
        str(folder),
        "--directions",
        str(d),
        "--out",
        str(tmp_path / "o.npz"),
    )
    assert code == 2 and "fingerprint mismatch" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors", "other"]


def test_console_script_entry_point(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "sample",
            "--model",
            "nope",
            "--out",
            str(tmp_path / "o.npz"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("workbench: error: unknown model")


def test_train_command_on_the_tiny_architecture(capsys, tmp_path):
    out = tmp_path / "run"
    argv = [
        "train",
        "--architecture",
        "tiny",
        "--train-steps",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    code, stdout, err = run(capsys, *argv, "--eval-samples", "4", "--out", str(out))
    assert code == 0, err
    assert (out / "model" / "training.json").is_file()
    assert (out / "checkpoint" / "state.json").is_file()
    code, _, err = run(capsys, "train", "--preset", "nope", "--out", str(out))
    assert code == 2 and "architecture must be one of shapes32" in err
    code, _, err = run(capsys, *argv, "--cut-skips", "first", "--out", str(tmp_path / "x"))
    assert code == 2 and "--cut-skips" in err and len(err.strip().splitlines()) == 1
    for prior in ("1,2", "a,b,c", "1,-1,1"):
        code, _, err = run(capsys, *argv, "--shape-prior", prior, "--out", str(tmp_path / "z"))
        assert code == 2 and "shape" in err and "prior" in err
        assert len(err.strip().splitlines()) == 1
    shapes32 = ["train", "--preset", "shapes32", "--cut-skips", "1", "--out", str(tmp_path / "y")]
    code, _, err = run(capsys, *shapes32)
    assert code == 2 and "GroupNorm mixes" in err


def test_discover_boundary_and_edit_at_distance(capsys, tmp_path):
    out = tmp_path / "b.safetensors"
    argv = ["discover", "boundary", *M, "--attribute", "right", "--images", "40"]
    code, text, err = run(capsys, *argv, "--num-steps", "4", "--out", str(out))
    assert code == 0, err
    ds = wb.DirectionSet.load(out)
    assert ds.engine == "boundary" and len(ds) == 1 and ds.timestep == 500
    assert ds.params["attribute"] == "right" and 0.0 <= float(ds.scores[0]) <= 1.0
    edit_argv = ["edit", *M, "--directions", str(out), "--mode", "distance", "--seeds", "0"]
    code, _, err = run(capsys, *edit_argv, "--strengths", "-1,1", "--out", str(tmp_path / "e.npz"))
    assert code == 0, err
    code, _, err = run(
        capsys, *argv, "--attribute", "happy", "--out", str(tmp_path / "c.safetensors")
    )
    assert code == 2 and "attribute must be one of" in err
    assert not (tmp_path / "c.safetensors").exists()


def test_old_spellings_work_and_say_their_new_name(capsys):
    """One word, one meaning: --steps (DDIM steps) is --num-steps, demo's --seeds (a count)
    is --n-seeds, train's --steps (training steps) is --train-steps; each old spelling
    still sets the same option and says the new name in one stderr line."""
    from workbench.cli import build_parser

    parser = build_parser()
    cases = [
        (["sample", "--steps", "3", "--out", "s.npz"], "num_steps", "--num-steps"),
        (["probe", "norm", "--steps", "3", "--out", "p"], "num_steps", "--num-steps"),
        (["demo", "--seeds", "3"], "n_seeds", "--n-seeds"),
        (["train", "--steps", "3"], "train_steps", "--train-steps"),
    ]
    for argv, dest, new in cases:
        old = parser.parse_args(argv)
        spelling = next(a for a in argv if a in ("--steps", "--seeds"))
        assert capsys.readouterr().err == f"workbench: warning: {spelling} is now {new}\n"
        current = [new if a in ("--steps", "--seeds") else a for a in argv]
        assert getattr(parser.parse_args(current), dest) == getattr(old, dest) == 3
        assert capsys.readouterr().err == ""
    assert parser.parse_args(["sample", "--seeds", "0-2,7", "--out", "s.npz"]).seeds == (0, 1, 2, 7)


def _flags(parser, *path):
    """The option flags of the (sub)command at ``path`` of ``parser``."""
    import argparse

    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {s for a in parser._actions for s in a.option_strings}


def test_each_commands_flags_come_from_its_description():
    """Every command's flags are its descriptions' options, both ways: every option a
    description puts on the command line (``cli=True``) is a flag of its command, under
    the description's name and older spellings, and the command has no other flag than
    those, the shared model and output flags and the few it names as its own (so no flag
    is written by hand beside a description)."""
    from workbench.bench import BENCH
    from workbench.cli import _CONDITIONING, build_parser
    from workbench.demo import DEMO
    from workbench.editing import EDIT, MODES
    from workbench.engines import ENGINES
    from workbench.eval.calibration import CALIBRATE
    from workbench.eval.judge import JUDGE
    from workbench.probes import PROBES
    from workbench.sampling import SAMPLE
    from workbench.sweep import SWEEP_SPEC, SWEEPS
    from workbench.train import TRAIN

    parser = build_parser()

    def expected(spec, skip=()):
        return {
            f for o in spec.options if o.cli and o.name not in skip for f in (o.flag, *o.aliases)
        }

    model = {"--model", "--device", "--resolution"}
    out = {"--out", "--overwrite"}
    modes = {"--mode"}.union(*(expected(m.spec) for m in MODES.values()))
    edit_own = ("strengths", "seeds", "mode")
    checks = [(("discover", n), (e.spec,), model | out) for n, e in ENGINES.items()]
    checks += [(("probe", n), (p.spec,), model | out) for n, p in PROBES.items()]
    checks += [
        (("sweep", n), (s.spec.without(*s.own), SWEEP_SPEC), {"--model", "--grid"} | out)
        for n, s in SWEEPS.items()
    ]
    own = {"--directions", "--strengths", "--seeds", "--image"}
    mode_specs = [m.spec for m in MODES.values()]
    checks += [(("edit",), (EDIT.without(*edit_own), *mode_specs),
                model | out | own | modes)]  # fmt: skip
    checks += [
        (("judge",), (JUDGE.without("strengths", "mode"), _CONDITIONING, *mode_specs),
         model | out | modes | {"--directions", "--strengths", "--num-steps", "--steps"}),
        (("calibrate",), (CALIBRATE,), model | out),
        (("sample",), (SAMPLE, _CONDITIONING), model | out),
        (("bench",), (BENCH, _CONDITIONING), model),
        (("demo",), (DEMO,), model | out),
        (("figures",), (DEMO,), model | out | {"--format"}),
        (("train",), (TRAIN,), out),
        (("library",), (_CONDITIONING,), model | out | {"--library", "--seeds", "--strengths"}),
    ]  # fmt: skip
    for path, specs, shared in checks:
        flags = _flags(parser, *path) - {"-h", "--help"}
        described = set().union(*(expected(spec) for spec in specs))
        assert described <= flags, (path, described - flags)
        negated = {f"--no-{o.flag[2:]}" for spec in specs for o in spec.options if o.type is bool}
        assert flags <= described | negated | shared, (path, flags - described - shared)
    assert {tuple(p) for p, _, _ in checks} >= {
        (c,) for c in _subcommands(parser) if c not in ("discover", "probe", "sweep")
    }


def _subcommands(parser):
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)
