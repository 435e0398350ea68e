"""Hardened edges: bad input is one line (CLI: exit 2, one stderr line; API:
``WorkbenchError``), nothing is left on disk, existing outputs are not destroyed, and the
cache neither fails a run nor serves a stale result."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import edit_weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.cli import main
from workbench.engines.boundary import fit_boundary
from workbench.engines.pullback import global_directions, local_basis, local_directions
from workbench.errors import WorkbenchError
from workbench.eval import sample_quality, score_directions
from workbench.eval.sensitivity import h_sensitivity
from workbench.store import Cache

M = ("--model", "tiny-test", "--device", "cpu")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tiny():
    return wb.load("tiny-test", device="cpu")


@pytest.fixture(scope="module")
def directions_file(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("d") / "d.safetensors"
    wb.discover("random", tiny, k=2).save(path)
    return path


def _bad_metadata_file(folder: Path, tiny, change) -> Path:
    """A direction file whose metadata ``change(meta)`` broke."""
    from safetensors.torch import save_file

    d = wb.discover("random", tiny, k=1)
    meta = d.metadata()
    change(meta)
    path = folder / "bad.safetensors"
    save_file({"vectors": d.vectors}, str(path), metadata={"workbench": json.dumps(meta)})
    return path


def _cli_cases(d: str) -> list[tuple[list[str], str]]:
    """Bad invocations, one per category of the fuzz run (argv, part of the message)."""
    o = ["--out", "o.npz"]
    s = ["--out", "o.safetensors"]
    return [
        # numbers: ranges, finiteness, integer-ness, sizes
        (["sample", *M, "--seeds", "99999999999999999999999", *o], "seeds must be in"),
        (["sample", *M, "--seeds", "0-99999999999", *o], "more than"),
        (["sample", *M, "--eta", "1e308", *o], "eta must be in [0, 1]"),
        (["sample", *M, "--eta", "-1", *o], "eta must be in [0, 1]"),
        (["sample", *M, "--eta", "nan", *o], "eta must be finite"),
        (["sample", *M, "--num-steps", "0", *o], "num_steps must be in [1, 10000]"),
        (["sample", *M, "--num-steps", "2.5", *o], "num_steps must be an integer"),
        (["discover", "random", *M, "--k", "100000000", *s], "k must be in [1, 4096]"),
        (["discover", "random", *M, "--seed", "1e23", *s], "seed must be an integer"),
        (["discover", "random", *M, "--form", "z", *s], "form must be one of full, channel"),
        (["discover", "random", *M, "--form", "channel", *s], "x-space ones are full"),
        (["discover", "boundary", *M, "--images", "-5", *s], "images must be in [4, 100000]"),
        (["discover", "pullback", *M, "--max-iter", "0", *s], "max_iter must be in [1, 10000]"),
        (["discover", "pullback", *M, "--tol-deg", "nan", *s], "tol_deg must be finite"),
        (["discover", "random", *M, "--timestep", "5000", *s], "out of range"),
        (["demo", *M, "--seeds", "0", "--out", "demo"], "n_seeds must be in [1, 1000]"),
        (["bench", *M, "--n", "0"], "n must be in [1, 100000]"),
        (["bench", *M, "--repeats", "0"], "repeats must be in [1, 1000]"),
        (["train", "--checkpoint-every", "0", "--out", "t"], "checkpoint_every must be in"),
        (["train", "--lr", "nan", "--out", "t"], "lr must be finite"),
        (["train", "--max-minutes", "nan", "--out", "t"], "max_minutes must be finite"),
        (["probe", "norm", *M, "--n", "0", "--out", "p"], "n must be in [2, 100000]"),
        (["probe", "norm", *M, "--num-steps", "0", "--out", "p"], "num_steps must be in"),
        (["probe", "curvedness", *M, "--timesteps", "5000", "--out", "p"], "out of range"),
        (["edit", *M, "--directions", d, "--index", "-1", *o], "index must be at least 0"),
        (["edit", *M, "--directions", d, "--strengths", "1,nan", *o], "strengths must be finite"),
        (["edit", *M, "--directions", d, "--gamma", "0.5", *o], "has no option 'gamma'"),
        (["edit", *M, "--directions", d, "--boost", "2", *o], "boost must be in [0, 1]"),
        # devices
        (["sample", "--model", "tiny-test", "--device", "foo", *o], "unknown device 'foo'"),
        (["sample", "--model", "tiny-test", "--device", "meta", *o], "device 'meta'"),
        # unwritable or bad --out, found before any compute
        (["sample", *M, "--out", ""], "--out must end in .npz"),
        (["probe", "norm", *M, "--out", ""], "--out must name a file or folder"),
        (["sample", *M, "--out", "x" * 250 + ".npz"], "name too long"),
        (["sample", *M, "--out", "afile/o.npz"], "is not a folder"),
        (["probe", "norm", *M, "--out", "afile"], "is a file, not a folder"),
        # models and files
        (["sample", "--model", "nope", *o], "unknown model"),
        (["sample", "--model", "broken", *o], "not a loadable diffusers model folder"),
        (["edit", *M, "--directions", "missing.safetensors", *o], "no such file"),
    ]


def test_every_bad_cli_case_is_one_line_exit_2_and_leaves_nothing(
    capsys, tmp_path, monkeypatch, directions_file
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    before = sorted(p.name for p in tmp_path.iterdir())
    failures = []
    for argv, message in _cli_cases(str(directions_file)):
        code, _, err = run(capsys, *argv)
        lines = err.strip("\n").split("\n")
        if code != 2 or len(lines) != 1 or message not in err or "Traceback" in err:
            failures.append((argv[:3], code, err[-300:]))
    assert not failures, failures
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("shape"), "metadata key 'shape'"),
        (lambda m: m.update(space=["x"]), "metadata key 'space'"),
        (lambda m: m.update(timestep="800"), "metadata key 'timestep'"),
        (lambda m: m.update(timestep=800.5), "metadata key 'timestep'"),
        (lambda m: m.update(labels=[1]), "metadata key 'labels'"),
        (lambda m: m.update(params=[1]), "metadata key 'params'"),
        (lambda m: m.update(params={"edit": {"eta": 5}}), "'params.edit.eta': eta must be in"),
        (lambda m: m.update(params={"edit": {"eta": "1"}}), "'params.edit.eta'"),
        (lambda m: m.update(params={"edit": {"strengths": ["a"]}}), "'params.edit.strengths'"),
        (lambda m: m.update(params={"edit": {"strengths": []}}), "'params.edit.strengths'"),
        (lambda m: m.update(params={"edit": [1]}), "'params.edit'"),
        (lambda m: m.update(params={"edit": {"mode": 3}}), "'params.edit.mode'"),
        (lambda m: m.update(params={"edit": {"mode": "sideways"}}), "unknown edit mode"),
        (lambda m: m.update(params={"edit": {"gamma": 1}}), "has no option 'gamma'"),
        (lambda m: m.update(params={"offsets": [float("nan")]}), "'params.offsets'"),
        (lambda m: m.update(params={"offsets": [0.0, 1.0]}), "2 recorded offsets for 1"),
        (lambda m: m.update(params={"h_point": 3}), "'params.h_point'"),
        (lambda m: m.update(format=None), "not a DirectionSet file"),
        (lambda m: m.clear(), "not a DirectionSet file"),
    ],
)
def test_a_directions_file_with_bad_metadata_is_one_line(capsys, tmp_path, tiny, change, message):
    path = _bad_metadata_file(tmp_path, tiny, change)
    code, _, err = run(
        capsys, "edit", *M, "--directions", str(path), "--out", str(tmp_path / "o.npz")
    )
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.npz").exists()


def test_direction_metadata_that_is_not_json_is_one_line(capsys, tmp_path, tiny):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    vectors = wb.discover("random", tiny, k=1).vectors
    for raw in ("{not json", "[1, 2]", "null"):
        save_file({"vectors": vectors}, str(path), metadata={"workbench": raw})
        code, _, err = run(
            capsys, "edit", *M, "--directions", str(path), "--out", str(tmp_path / "o.npz")
        )
        assert code == 2 and err.count("\n") == 1, err
        assert "bad.safetensors" in err
        assert not (tmp_path / "o.npz").exists()


def test_broken_model_folders_are_one_line(tmp_path, tiny):
    good = tmp_path / "good"
    wb.save(tiny, good)
    weights = good / "unet" / "diffusion_pytorch_model.safetensors"
    cases = {}
    for name, damage in {
        "bad-config": lambda f: (f / "unet" / "config.json").write_text("{"),
        "no-weights": lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
        "truncated": lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
            weights.read_bytes()[:1000]
        ),
        "bad-scheduler": lambda f: (f / "scheduler" / "scheduler_config.json").write_text("["),
    }.items():
        folder = tmp_path / name
        shutil.copytree(good, folder)
        damage(folder)
        with pytest.raises(wb.WorkbenchError) as info:
            wb.load(folder, device="cpu")
        cases[name] = str(info.value)
    assert all("\n" not in m and "not a loadable" in m for m in cases.values()), cases


@pytest.mark.parametrize("size", [-8, "32", 1e9, [16], [16, 0], True, 2**40])
def test_a_config_with_a_bad_sample_size_is_one_line(capsys, tmp_path, tiny, size):
    folder = tmp_path / "m"
    wb.save(tiny, folder)
    path = folder / "unet" / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"sample_size": size}))
    code, _, err = run(capsys, "sample", "--model", str(folder), "--device", "cpu",
                       "--seeds", "0", "--out", str(tmp_path / "s.npz"))  # fmt: skip
    assert code == 2 and "sample_size must be a positive integer" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "s.npz").exists()


# --------------------------------------------------------------------------- API fuzz
bad_ints = st.one_of(
    st.floats(allow_nan=True).filter(lambda v: not float(v).is_integer() or math.isinf(v)),
    st.integers(max_value=-1),
    st.integers(min_value=2**63),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=bad_ints)
def test_api_bad_seeds_are_workbench_errors(tiny, seed):
    with pytest.raises(wb.WorkbenchError):
        wb.sample(tiny, seeds=[seed], num_steps=2)


@settings(max_examples=60, deadline=None)
@given(
    option=st.sampled_from(["k", "seed", "timestep", "space", "form", "window", "colour"]),
    value=st.one_of(
        st.integers(min_value=-(2**70), max_value=-1),
        st.integers(min_value=2**63, max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not v.is_integer()),
        st.text(max_size=4).filter(lambda v: v not in ("x", "h", "full", "channel")),
        st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    ),
)
def test_api_bad_engine_options_are_workbench_errors(tiny, option, value):
    if option == "window" and isinstance(value, list) and len(value) == 2:
        value = [value[0], 5000]  # a window out of range
    with pytest.raises(wb.WorkbenchError):
        wb.discover("random", tiny, **{option: value})


@settings(max_examples=40, deadline=None)
@given(
    strengths=st.one_of(
        st.just([]),
        st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), min_size=1, max_size=3),
        st.text(min_size=1, max_size=3),
    ),
)
def test_api_bad_strengths_are_workbench_errors(tiny, strengths):
    directions = wb.discover("random", tiny, k=1)
    with pytest.raises(wb.WorkbenchError):
        wb.edit(tiny, directions, 0, strengths, seeds=[0], num_steps=2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seeds": []},
        {"seeds": [0], "batch_size": 0},
        {"seeds": [1.5]},
        {"seeds": [0], "num_steps": 2.5},
        {"seeds": [0], "eta": -1.0},
        {"seeds": range(10**12)},
    ],
)
def test_api_sample_edges(tiny, kwargs):
    with pytest.raises(wb.WorkbenchError):
        wb.sample(tiny, **kwargs)


def test_huge_vectors_are_normalised_not_zeroed():
    d = wb.DirectionSet(
        vectors=torch.full((2, 3, 4, 4), 1e30),
        space="x",
        timestep=800,
        engine="t",
        model_fingerprint="f",
    )
    assert torch.allclose(d.vectors.flatten(1).norm(dim=1), torch.ones(2))


def test_library_names_ending_in_a_newline_are_refused(tmp_path):
    from workbench.library import DirectionLibrary

    with pytest.raises(wb.WorkbenchError, match="bad direction name"):
        DirectionLibrary(tmp_path).path("ok\n")


# --------------------------------------------------------------------------- --out safety
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("set"), "entry key 'set'"),
        (lambda m: m.update(set=[1]), "entry key 'set'"),
        (lambda m: m.update(strength="2"), "entry key 'strength'"),
        (lambda m: m.update(mode=None), "entry key 'mode'"),
        (lambda m: m.update(mode="sideways"), "unknown edit mode"),
        (lambda m: m.update(num_steps=0), "entry key 'num_steps'"),
        (lambda m: m.update(options=[1]), "entry key 'options'"),
        (lambda m: m.update(note=3), "entry key 'note'"),
        (lambda m: m["set"].pop("space"), "metadata key 'space'"),
        (lambda m: m.update(format="other"), "not a named direction file"),
    ],
)
def test_a_library_entry_with_bad_metadata_is_one_line(capsys, tmp_path, tiny, change, message):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from workbench.library import DirectionLibrary, NamedDirection

    lib = DirectionLibrary(tmp_path / "lib")
    unit = wb.discover("random", tiny, k=1)
    lib.save(NamedDirection("good", unit, 1.0))
    path = lib.save(NamedDirection("broken", unit, 1.0))
    with safe_open(str(path), "pt") as f:  # the metadata as saved, then broken by ``change``
        meta = json.loads(f.metadata()["workbench"])
    change(meta)
    save_file(load_file(path), str(path), metadata={"workbench": json.dumps(meta)})
    out = str(tmp_path / "o.npz")
    lib_args = ("--library", str(lib.root))
    code, _, err = run(capsys, "library", "apply", "broken", *lib_args, *M, "--out", out)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not Path(out).exists()
    code, listing, err = run(capsys, "library", "list", *lib_args)
    assert code == 0 and err == ""  # the good entry listed, the broken one says why
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "unreadable" not in rows["good"] and message in rows["broken"]


def test_out_never_destroys_what_the_user_had(capsys, tmp_path):
    folder = tmp_path / "mydir"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    code, _, err = run(
        capsys, "probe", "norm", *M, "--n", "2", "--num-steps", "3", "--out", str(folder)
    )
    assert code == 2 and "not empty: give --overwrite" in err and err.count("\n") == 1
    assert (folder / "keep.txt").read_text() == "mine"

    npz = tmp_path / "s.npz"
    npz.write_bytes(b"old")
    code, _, err = run(capsys, "sample", *M, "--seeds", "0", "--num-steps", "2", "--out", str(npz))
    assert code == 2 and "exists: give --overwrite" in err
    assert npz.read_bytes() == b"old"
    code, _, _ = run(
        capsys, "sample", *M, "--seeds", "0", "--num-steps", "2", "--out", str(npz), "--overwrite"
    )
    assert code == 0 and npz.read_bytes()[:2] == b"PK"  # replaced by a real npz

    argv = ["probe", "norm", *M, "--n", "2", "--num-steps", "3", "--out", str(folder)]
    code, _, _ = run(capsys, *argv, "--overwrite")
    assert code == 0 and sorted(p.name for p in folder.iterdir()) == ["norm.html", "norm.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_train_refuses_a_folder_that_is_not_a_run(capsys, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("x")
    argv = ["train", "--preset", "tiny", "--train-steps", "1", "--out", str(folder)]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "holds other files" in err
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]


# --------------------------------------------------------------------------- the cache
def _pullback(model, cache, **kw):
    return wb.discover("pullback", model, k=2, max_iter=3, num_steps=4, cache=cache, **kw)


def test_a_corrupt_cache_entry_is_healed(tmp_path, tiny):
    cache = Cache(tmp_path)
    first = _pullback(tiny, cache)
    (entry,) = tmp_path.glob("*.safetensors")
    entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        again = _pullback(tiny, cache)
    assert torch.equal(first.vectors, again.vectors)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # healed: read back without a warning
        assert torch.equal(_pullback(tiny, cache).vectors, first.vectors)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_warns_and_the_run_completes(tmp_path, tiny):
    tmp_path.chmod(0o500)
    try:
        with pytest.warns(UserWarning, match="could not cache"):
            d = _pullback(tiny, Cache(tmp_path))
    finally:
        tmp_path.chmod(0o700)
    assert len(d) == 2


def test_an_unwritable_cache_warns_and_the_run_completes(tmp_path, tiny, monkeypatch):
    """A full disk (or read-only folder, as root cannot be refused one): the write fails."""

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("workbench.store.save_tensors", full)
    with pytest.warns(UserWarning, match="No space left"):
        d = _pullback(tiny, Cache(tmp_path))
    assert len(d) == 2 and not list(tmp_path.iterdir())


def test_stale_temp_files_are_cleaned(tmp_path, tiny):
    old = tmp_path / ".abc.safetensors.x1.tmp"
    new = tmp_path / ".def.safetensors.x2.tmp"
    old.write_bytes(b"killed writer")
    new.write_bytes(b"a writer at work")
    past = time.time() - 2 * Cache.STALE_SECONDS
    os.utime(old, (past, past))
    _pullback(tiny, Cache(tmp_path))
    assert not old.exists() and new.exists()


def test_a_changed_preset_or_edited_weights_give_fresh_vectors(tmp_path, tiny):
    cache = Cache(tmp_path)
    folder = tmp_path / "model"
    wb.save(tiny, folder)
    model = wb.load(folder, device="cpu")
    first = wb.discover("pullback", model, k=2, max_iter=3, cache=cache)
    preset = json.loads((folder / "workbench_preset.json").read_text())
    preset["num_inference_steps"] = 7
    (folder / "workbench_preset.json").write_text(json.dumps(preset))
    changed = wb.load(folder, device="cpu")
    second = wb.discover("pullback", changed, k=2, max_iter=3, cache=cache)
    assert not torch.equal(first.vectors, second.vectors)  # another x_t: not served stale
    assert len(list(tmp_path.glob("*.safetensors"))) == 2

    before = model.fingerprint
    with torch.no_grad():
        next(model.unet.parameters()).mul_(1.1)
    assert model.fingerprint != before
    with pytest.raises(wb.FingerprintMismatch):
        first.check_model(model)


# --------------------------------------------------------------------------- kill -9
def _age(path: Path, seconds: float = 2 * 3600) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_kill_9_leaves_no_visible_output_and_the_next_run_removes_the_orphans(tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "workbench.cli", "demo", "--quick", *M, "--out", str(out)]
    env = {**os.environ, "WORKBENCH_PROGRESS": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob(".report.*.tmp")):
            assert proc.poll() is None, "the demo ended before it was killed"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the compute (the quick demo takes far longer)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    (orphan,) = tmp_path.glob(".report.*.tmp")  # hidden, and only until the next run
    # a write killed in its final step: the hidden temp file beside the target
    dead_write = tmp_path / ".report.abc123.tmp"
    dead_write.write_bytes(b"half a file")
    fresh = tmp_path / ".report.def456.tmp"  # a writer at work right now: left alone
    fresh.mkdir()
    _age(orphan)
    _age(dead_write)
    assert main(["probe", "norm", *M, "--n", "2", "--num-steps", "3", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["norm.html", "norm.json"]
    assert not orphan.exists() and not dead_write.exists() and fresh.exists()


# --------------------------------------------------------------------------- determinism
def test_micro_batches_make_results_independent_of_the_batch_size(tiny):
    """With ``model.micro_batch`` set, sampling, h edits with per-sample strengths and the
    h recorded along the way are bit-identical for batch sizes 1, 7 and 64."""
    model = wb.load("tiny-test", device="cpu")
    model.micro_batch = 8
    seeds = range(64)
    runs = [wb.sample(model, seeds=seeds, num_steps=4, batch_size=b) for b in (1, 7, 64)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])

    directions = wb.discover("random", model, k=1, space="h")
    edits = [
        wb.edit(model, directions, 0, [-2.0, 3.0], seeds=range(9), num_steps=4, batch_size=b)
        for b in (1, 7, 18)
    ]
    assert torch.equal(edits[0].images, edits[1].images)
    assert torch.equal(edits[0].images, edits[2].images)

    from workbench.sampling import make_timesteps, run_chain

    grid = make_timesteps(model, 3)
    with model.record_h() as seen:
        run_chain(model, model.noise(range(11)), grid)
    assert len(seen) == 3 and all(h.shape == (11, *model.h_shape) for h in seen)
    model.micro_batch = None
    with model.record_h() as plain:
        run_chain(model, model.noise(range(11)), grid)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(seen, plain, strict=True))
    with pytest.raises(wb.WorkbenchError, match="micro_batch"):
        model.micro_batch = 0


def test_cpu_models_split_large_network_calls_and_give_the_same_results(monkeypatch):
    """``wb.load`` on the CPU caps a network call at 2^16 pixels of x (``max_batch``); a
    call of more samples runs in pieces of at most that many, h read the same way, with
    the h recorded along the way joined in order, and the results match one call."""
    model = wb.load("tiny-test", device="cpu")
    side = model.sample_shape[-1]
    assert model.max_batch == 2**16 // (side * side)
    x = model.noise(range(7))
    whole_out, whole_h = model.raw(x, 500), model.h(x, 500)
    model.max_batch = 3
    sizes: list[int] = []
    raw, forward = model._raw, model._h_of_forward
    monkeypatch.setattr(model, "_raw", lambda x_t, *a: sizes.append(x_t.shape[0]) or raw(x_t, *a))
    monkeypatch.setattr(
        model, "_h_of_forward", lambda x_t, *a: sizes.append(-x_t.shape[0]) or forward(x_t, *a)
    )
    out, h = model.raw(x, 500), model.h(x, 500)
    assert sizes == [3, 3, 1, -3, -3, -1]
    assert torch.allclose(out, whole_out, atol=1e-5) and torch.allclose(h, whole_h, atol=1e-5)
    from workbench.sampling import make_timesteps, run_chain

    grid = make_timesteps(model, 2)
    with model.record_h() as seen:
        run_chain(model, x, grid)
    assert all(h.shape == (7, *model.h_shape) for h in seen)
    model.max_batch = None
    with model.record_h() as plain:
        run_chain(model, x, grid)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(seen, plain, strict=True))
    with pytest.raises(wb.WorkbenchError, match="max_batch must be a positive integer"):
        model.max_batch = 0


def test_without_micro_batches_the_batch_size_moves_results_within_the_bound(tiny):
    """The documented bound (docs/architecture.md, "Determinism"): without micro-batches,
    eta-0 samples of different batch sizes agree within 1e-5 (measured up to 5.3e-6 on
    shapes32), i.e. at most one uint8 level."""
    runs = [wb.sample(tiny, seeds=range(64), num_steps=4, batch_size=b) for b in (1, 7, 64)]
    for other in runs[1:]:
        assert float((runs[0] - other).abs().max()) <= 1e-5
        diff = tiny.to_uint8(runs[0]).int() - tiny.to_uint8(other).int()
        assert int(diff.abs().max()) <= 1


def test_hostile_labelled_inputs_are_one_line(tmp_path, tiny):
    """A CSV that is not UTF-8 and a decompression-bomb PNG (a small file that claims
    a huge image) are refused with one line, not a traceback."""
    from PIL import Image

    from workbench.data.labelled import MAX_PIXELS, load_image, load_labelled

    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(b"path,label\n\xff\xfe.png,1\n")
    with pytest.raises(wb.WorkbenchError, match="not UTF-8"):
        load_labelled(csv_path, 16)
    side = int(MAX_PIXELS**0.5) + 1024
    bomb = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(bomb)  # a few hundred kB on disk
    assert bomb.stat().st_size < 20 * 2**20
    with pytest.raises(wb.WorkbenchError, match="too large"):
        load_image(bomb, 16)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, d: score_directions(m, d, strengths=[math.nan]), "strengths must be finite"),
        (lambda m, d: score_directions(m, d, seeds=[-1]), "seeds must be in"),
        (lambda m, d: score_directions(m, d, indices=[1.5]), "indices must be an integer"),
        (lambda m, d: local_directions(m, seeds=[]), "seeds must be a non-empty"),
        (lambda m, d: local_directions(m, seeds=[0], max_iter=0), "max_iter must be in"),
        (lambda m, d: local_basis(m, m.noise([0]), 500, tol_deg=math.nan), "tol_deg must be"),
        (lambda m, d: fit_boundary(m, m.noise([0, 1]), space="z"), "space must be one of"),
        (lambda m, d: fit_boundary(m, m.noise([0, 1]), test_fraction=1.0), "test_fraction"),
        (lambda m, d: fit_boundary(m, m.noise([0, 1]), c=-1.0), "c must be in"),
        (lambda m, d: fit_boundary(m, None), "images"),
        (lambda m, d: fit_boundary(m, m.noise([0, 1]), t=1.5), "t must be an integer"),
        (lambda m, d: global_directions(_basis(m), k=0), "k must be at least 1"),
        (lambda m, d: sample_quality(m, n=-3), "n must be in"),
        (lambda m, d: sample_quality(m, num_steps=math.inf), "num_steps must be"),
        (lambda m, d: h_sensitivity(m, n_timesteps=0), "n_timesteps must be in"),
        (lambda m, d: h_sensitivity(m, colour=1), "has no option 'colour'"),
    ],
)
def test_api_scoring_and_basis_edges(tiny, call, message):
    directions = wb.discover("random", tiny, k=2)
    with pytest.raises(wb.WorkbenchError, match=message) as err:
        call(tiny, directions)
    assert "\n" not in str(err.value)


def _basis(model):
    return local_basis(model, model.noise([0]), 500, k=2, max_iter=2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k": 0}, "k must be in"),
        ({"seeds": [-1]}, "seeds must be in"),
        ({"upscale": 1.5}, "upscale must be an integer"),
        ({"engine": "nope"}, "unknown engine"),
        ({"prompt": "a red square"}, "unconditional: it takes no prompt"),
    ],
)
def test_bad_explorer_arguments_are_one_line(tiny, options, message):
    from workbench.viz.explorer import Explorer

    with pytest.raises(wb.WorkbenchError, match=message) as err:
        Explorer(tiny, **options)
    assert "\n" not in str(err.value)
    with pytest.raises(wb.WorkbenchError, match="a library root is a folder path"):
        wb.DirectionLibrary(3)


# ---------------------------------------------------------------------- damaged weights
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("conv_out.bias"), "missing from the weight files: conv_out.bias"),
        (
            lambda s: s.__setitem__("extra.weight", torch.zeros(2)),
            "in the weight files but not in the model: extra.weight",
        ),
        (
            lambda s: s.__setitem__("conv_out.bias", torch.zeros(7)),
            "of another shape in the weight files: conv_out.bias",
        ),
    ],
)
def test_a_damaged_network_checkpoint_is_refused_not_filled_at_random(
    change, message, tmp_path, capsys
):
    from workbench.cli import main

    wb.save(wb.load("shapes32", device="cpu"), tmp_path / "m")
    edit_weights(tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors", change)
    with pytest.raises(WorkbenchError, match=re.escape(message)) as info:
        wb.load(tmp_path / "m", device="cpu")
    assert "\n" not in str(info.value)
    capsys.readouterr()
    assert main(["sample", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err  # diffusers' own warnings not passed on
    assert not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------------- presets
@pytest.mark.parametrize(
    "field, value, says",
    [
        ("x_step", 0, "'x_step' must be positive"),
        ("h_step", -2.5, "'h_step' must be positive"),
        ("x_step", "6", "'x_step' must be a number"),
        ("asymmetric", "no", "'asymmetric' must be true or false"),
        ("h_window", "999,600", "'h_window' must be a list of 2 timesteps"),
        ("h_window", None, "'h_window' must be a list of 2 timesteps"),
        ("h_window", [600, 999], "'h_window' must be (high, low)"),
        ("h_window", [999, -1], "'h_window' must be at least 0"),
        ("num_inference_steps", 0, "'num_inference_steps' must be an integer >= 1"),
        ("num_inference_steps", True, "'num_inference_steps' must be an integer >= 1"),
        ("pullback_timesteps", [], "'pullback_timesteps' must name a timestep"),
        ("mixing_step", float("nan"), "'mixing_step' must be finite"),
        ("boundary_step", -1, "'boundary_step' must be at least 0"),
        ("boundary_distance", 0.0, "'boundary_distance' must be positive"),
        ("boundary_distance", "2", "'boundary_distance' must be a number"),
        ("scene", "moon", "'scene' must be one of"),
    ],
)
def test_a_preset_is_checked_field_by_field(field, value, says, tmp_path):
    """In Python, from plain data and from a model folder's file: one line naming the
    field; nothing is used."""
    with pytest.raises(WorkbenchError, match=re.escape(says)):
        wb.Preset(**{field: value})
    data = wb.Preset().to_dict() | {field: value}
    folder = tmp_path / "m"
    wb.save(wb.load("tiny-test", device="cpu"), folder)
    (folder / "workbench_preset.json").write_text(json.dumps(data))
    with pytest.raises(WorkbenchError, match=re.escape(says)) as info:
        wb.load(folder, device="cpu")
    assert str(info.value).startswith(str(folder)) and "\n" not in str(info.value)


def test_a_preset_must_be_a_preset():
    with pytest.raises(WorkbenchError, match="preset must be a wb.Preset .* got dict"):
        wb.load("tiny-test", device="cpu", preset={"x_step": 2.0})
    assert wb.Preset.from_dict({"h_window": [999.0, 600.0]}).h_window == (999, 600)


# ---------------------------------------------------------------------- image modes
def _mode_cases(folder):
    """(file, the values the file holds as [3, H, W] in [-1, 1]) per image mode."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 1, 64, dtype=np.float64).reshape(8, 8)
    cases = []
    grey16 = (ramp * 65535).round().astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    cases.append(("grey16.png", np.repeat(grey16[None] / 65535.0, 3, 0)))
    Image.fromarray(ramp.astype(np.float32), mode="F").save(folder / "float.tif")
    cases.append(("float.tif", np.repeat(ramp.astype(np.float32)[None], 3, 0)))
    grey8 = (ramp * 255).round().astype(np.uint8)
    Image.fromarray(grey8).save(folder / "grey8.png")
    cases.append(("grey8.png", np.repeat(grey8[None] / 255.0, 3, 0)))
    rgb = np.stack([grey8, 255 - grey8, np.full_like(grey8, 77)], -1)
    rgba = np.concatenate([rgb, np.full_like(grey8, 10)[..., None]], -1)
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    cases.append(("rgba.png", rgb.transpose(2, 0, 1) / 255.0))  # alpha dropped
    la = np.stack([grey8, np.full_like(grey8, 200)], -1)
    Image.fromarray(la, mode="LA").save(folder / "la.png")
    cases.append(("la.png", np.repeat(grey8[None] / 255.0, 3, 0)))
    palette = Image.fromarray(rgb, mode="RGB").quantize(colors=16)
    palette.save(folder / "palette.png")
    expected = np.asarray(palette.convert("RGB"), dtype=np.float64)
    cases.append(("palette.png", expected.transpose(2, 0, 1) / 255.0))
    return [(name, torch.tensor(values * 2 - 1, dtype=torch.float32)) for name, values in cases]


def test_every_image_mode_is_read_at_its_own_range(tmp_path):
    """16-bit, float, greyscale, RGBA, LA and palette files give the values they hold
    (a 16-bit file of mean 0.0 in [-1, 1] no longer reads as +0.94)."""
    from workbench.data.labelled import load_image

    for name, expected in _mode_cases(tmp_path):
        got = load_image(tmp_path / name, 8)
        assert got.shape == (3, 8, 8), name
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=name)


def test_bad_pixels_and_bomb_headers_are_refused_in_one_line(tmp_path):
    import struct
    import zlib

    import numpy as np
    from PIL import Image

    from workbench.data.labelled import load_image

    Image.fromarray(np.full((8, 8), 3.0, np.float32), mode="F").save(tmp_path / "hot.tif")
    Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F").save(tmp_path / "nan.tif")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small.png")
    data = bytearray((tmp_path / "small.png").read_bytes())  # IHDR: 100000 x 100000
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    for name, says in (
        ("hot.tif", "float pixels must lie in [0, 1]"),
        ("nan.tif", "float pixels must lie in [0, 1]"),
        ("bomb.png", "too large"),
    ):
        with pytest.raises(wb.WorkbenchError, match=re.escape(says)) as info:
            load_image(tmp_path / name, 8)
        assert "\n" not in str(info.value), name


# ---------------------------------------------------------------------- the Python API
def test_the_api_refuses_what_is_not_a_model_in_one_line(tiny):
    directions = wb.discover("random", tiny, k=2, space="h")
    calls = {
        "discover": lambda m: wb.discover("random", m, k=2),
        "probe": lambda m: wb.probe("norm", m, n=2),
        "sample": lambda m: wb.sample(m, seeds=[0]),
        "edit": lambda m: wb.edit(m, directions, 0, [1.0], seeds=[0]),
    }
    for bad in ("shapes32", None, directions, 3):
        for name, call in calls.items():
            with pytest.raises(WorkbenchError, match="model must be a loaded model") as info:
                call(bad)
            assert "\n" not in str(info.value), (name, bad)


def _one_line(call, says):
    with pytest.raises(WorkbenchError, match=re.escape(says)) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["d.safetensors", torch.zeros(3, 16, 16), None, [1], 3])
def test_the_api_refuses_what_is_not_a_direction_set_in_one_line(tiny, bad):
    boundary = wb.discover("random", tiny, k=1)
    boundary.params["offsets"] = [0.0]
    for call in (
        lambda: wb.edit(tiny, bad, 0, [1.0], seeds=[0]),
        lambda: wb.edit_set(tiny, bad, [1.0], seeds=[0]),
        lambda: wb.judge(tiny, bad, strengths=[1.0], seeds=[0]),
        lambda: (
            wb.edit(tiny, boundary, 0, [1.0], seeds=[0], mode="distance", h=bad)
            if bad is not None
            else wb.edit(tiny, boundary, 0, [1.0], seeds=[0], mode="distance", hold=[bad])
        ),
    ):
        _one_line(call, "must be a DirectionSet")


def test_the_api_checks_tensors_caches_and_dtypes_up_front(tiny, tmp_path):
    import numpy as np

    d = wb.discover("random", tiny, k=1)
    x = torch.zeros(1, *tiny.sample_shape)
    image = torch.zeros(1, *tiny.image_shape)
    _one_line(lambda: wb.edit(tiny, d, 0, [1.0], x=x.numpy()), "x must be a torch.Tensor")
    _one_line(lambda: wb.edit(tiny, d, 0, [1.0], x=x[:0]), "x is an empty batch")
    _one_line(lambda: wb.invert(tiny, x[:0]), "x is an empty batch")
    _one_line(lambda: wb.edit(tiny, d, 0, [1.0], images=image[:0]), "empty batch")
    _one_line(lambda: wb.edit(tiny, d, 0, [1.0], images=image.numpy()), "got ndarray")
    for scale in (255 * image + 200, image + 2.0, image - 1.6):  # [0, 255], [0, 2], below
        _one_line(lambda s=scale: wb.edit(tiny, d, 0, [1.0], images=s), "must be in [-1, 1]")
        _one_line(lambda s=scale: wb.probe("norm", tiny, n=2, images=s), "must be in [-1, 1]")
    # a model's own overshoot (wb.sample output past 1) is clipped with a word
    over = image.clone()
    over[..., 0, 0] = 1.2
    with pytest.warns(UserWarning, match=r"0\.\d+% of the values lie outside \[-1, 1\].*clipped"):
        clipped = wb.edit(tiny, d, 0, [1.0], images=over, num_steps=4, progress=False)
    plain = wb.edit(tiny, d, 0, [1.0], images=over.clamp(-1, 1), num_steps=4, progress=False)
    assert torch.equal(clipped.images, plain.images)
    _one_line(lambda: wb.edit(tiny, d, 0, [1.0], images=torch.full_like(image, np.nan)), "images")
    # float rounding past the ends is clamped, not refused: the same edit as the clamped images
    edge = torch.ones_like(image)
    rounded = wb.edit(tiny, d, 0, [1.0], images=edge * (1 + 1e-6), num_steps=4, progress=False)
    exact = wb.edit(tiny, d, 0, [1.0], images=edge, num_steps=4, progress=False)
    assert torch.equal(rounded.images, exact.images)
    for bad in (3, 1.5, [tmp_path], object()):
        _one_line(lambda b=bad: wb.discover("pullback", tiny, k=1, cache=b), "cache must be")
    folder = tmp_path / "mine"  # a folder names a cache there
    wb.discover("pullback", tiny, k=1, samples=1, cache=str(folder))
    assert list(folder.glob("*.safetensors"))
    _one_line(lambda: wb.sweep("spectrum", tiny, n=2, cache=False), "needs a cache")
    for bad in ("half-ish", 3, torch.int64, torch.complex64):
        _one_line(lambda b=bad: wb.load("tiny-test", device="cpu", dtype=b), "dtype must be")
    assert wb.load("tiny-test", device="cpu", dtype="float16").dtype == torch.float16


# ------------------------------------------------- nothing of the user's replaced or left
def _pngs(folder: Path, names: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(folder / name)
    return folder


def _edit_image_args(directions_file, folder, out):
    return [
        "edit", *M, "--directions", str(directions_file), "--image", str(folder),
        "--strengths", "-1,1", "--num-steps", "3", "--out", str(out),
    ]  # fmt: skip


def test_edit_image_replaces_no_edited_png_without_overwrite(capsys, tmp_path, directions_file):
    folder = _pngs(tmp_path / "photos")
    out = tmp_path / "e.npz"
    assert run(capsys, *_edit_image_args(directions_file, folder, out))[0] == 0
    edited = sorted((folder / "edited").iterdir())
    assert len(edited) == 4
    mine = edited[0]
    mine.write_bytes(b"my retouched version")
    again = tmp_path / "again.npz"
    code, _, err = run(capsys, *_edit_image_args(directions_file, folder, again))
    assert code == 2 and "exist already" in err and err.count("\n") == 1
    assert mine.read_bytes() == b"my retouched version" and not again.exists()
    code, _, _ = run(capsys, *_edit_image_args(directions_file, folder, again), "--overwrite")
    assert code == 0 and mine.read_bytes()[:4] == b"\x89PNG" and again.exists()


@pytest.mark.parametrize(
    "breakage, says",
    [
        ("clash", "two images would write"),
        ("edited-is-a-file", "is a file: the edited images go into a folder"),
    ],
)
def test_edit_image_refuses_unwritable_pngs_before_the_edit(
    capsys, tmp_path, directions_file, monkeypatch, breakage, says
):
    import workbench.editing as editing

    folder = _pngs(tmp_path / "photos", ("a.png", "a.jpg") if breakage == "clash" else ("a.png",))
    if breakage == "edited-is-a-file":
        (folder / "edited").write_text("notes")
    monkeypatch.setattr(editing, "own_images", _never)  # refused before the images are read
    out = tmp_path / "e.npz"
    code, _, err = run(capsys, *_edit_image_args(directions_file, folder, out))
    assert code == 2 and says in err and err.count("\n") == 1
    assert not out.exists() and not (folder / "edited").is_dir()


def _never(*args, **kwargs):
    raise AssertionError("computed before the refusal")


def test_a_failed_edit_leaves_no_out_and_no_pngs(capsys, tmp_path, directions_file, monkeypatch):
    from PIL import Image

    folder = _pngs(tmp_path / "photos")
    calls = []

    def full_disk(self, *args, **kwargs):  # the second PNG finds the disk full
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return save(self, *args, **kwargs)

    save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "e.npz"
    code, _, err = run(capsys, *_edit_image_args(directions_file, folder, out))
    assert code == 2 and "No space left" in err and err.count("\n") == 1
    assert not out.exists() and not (folder / "edited").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png"]


def test_calibrate_replaces_a_preset_only_with_overwrite_and_keeps_the_old_one(
    capsys, tmp_path, monkeypatch
):
    import workbench.eval.calibration as calibration

    target = tmp_path / "cal"
    target.mkdir()
    preset = target / "workbench_preset.json"
    preset.write_text('{"x_step": 9.0}')
    argv = ["calibrate", *M, "--out", str(target), "--n", "2", "--reach-n", "0"]
    argv += ["--mixing-n", "0", "--num-steps", "4"]
    with monkeypatch.context() as patched:
        patched.setattr(calibration, "trajectory_norms", _never)  # refused before any compute
        code, _, err = run(capsys, *argv)
    assert code == 2 and "already holds workbench_preset.json" in err and err.count("\n") == 1
    assert preset.read_text() == '{"x_step": 9.0}' and len(list(target.iterdir())) == 1
    code, _, err = run(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert (target / "workbench_preset.previous.json").read_text() == '{"x_step": 9.0}'
    assert json.loads(preset.read_text())["x_step"] != 9.0
    names = sorted(p.name for p in target.iterdir())
    assert names == [
        "workbench_calibration.html", "workbench_calibration.json",
        "workbench_preset.json", "workbench_preset.previous.json",
    ]  # fmt: skip
    code, _, err = run(capsys, "calibrate", *M, "--out", str(target), "--mixing-n", "2")
    assert code == 2 and "mixing_n must be 0 or in [8, 4096]" in err  # as its help says


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", *M, "--seeds", "0", "--num-steps", "2", "--out", "{o}.npz"],
        ["discover", "random", *M, "--k", "1", "--out", "{o}.safetensors"],
        ["probe", "norm", *M, "--n", "2", "--num-steps", "3", "--out", "{o}"],
        ["sweep", "spectrum", "--model", "tiny-test", "--n", "2", "--out", "{o}"],
        ["calibrate", *M, "--out", "{o}", "--mixing-n", "0", "--reach-n", "0"],
        ["demo", *M, "--quick", "--out", "{o}"],
    ],
)
def test_a_second_writer_of_one_out_is_refused_while_the_first_runs(capsys, tmp_path, argv):
    """The first writer is another process holding the path's write lock (as a running
    command does from its start to its end): the second exits 2 at once, writing nothing."""
    import subprocess
    import sys

    out = tmp_path / "out"
    argv = [a.replace("{o}", str(out)) for a in argv]
    target = Path(argv[argv.index("--out") + 1])
    target = target / "workbench_preset.json" if argv[0] == "calibrate" else target
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom workbench.store import write_lock\n"
         f"with write_lock({str(target)!r}):\n print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.perf_counter()
        code, _, err = run(capsys, *argv)
        assert code == 2 and "being written by another workbench run" in err, err
        assert f"pid {holder.pid}" in err and err.count("\n") == 1
        assert time.perf_counter() - began < 10  # refused at once, not after the compute
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    from workbench.store import write_lock

    with write_lock(target):  # a killed holder's lock went with it
        pass


def test_figures_without_an_exporter_are_refused_before_the_demo(capsys, tmp_path, monkeypatch):
    import sys

    import workbench.cli as cli
    import workbench.viz.figures as figures

    monkeypatch.setattr(cli, "_load", _never)  # refused before the model loads
    monkeypatch.setattr(figures, "find_browser", lambda: None)
    out = tmp_path / "figs"
    began = time.perf_counter()
    code, _, err = run(capsys, "figures", *M, "--quick", "--format", "pdf", "--out", str(out))
    assert code == 2 and "need a Chrome or Chromium" in err and err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "kaleido", None)  # not installed
    code, _, err = run(capsys, "figures", *M, "--quick", "--format", "pdf", "--out", str(out))
    assert code == 2 and "need kaleido" in err and err.count("\n") == 1
    assert time.perf_counter() - began < 10 and not out.exists()
    assert not list(tmp_path.iterdir())


def test_sweep_grids_are_checked_before_any_shard(capsys, tmp_path):
    for grid, says in (
        (["--grid", "k=4;8", "--grid", "k=2"], "names 'k' twice"),
        (["--grid", "k=4;4"], "a value is given twice"),
        (["--grid", "k=1;2"], "k must be in [2, 4096]"),  # the spectrum's fit needs 2
    ):
        argv = ["sweep", "spectrum", "--model", "tiny-test", "--n", "2", "--out", str(tmp_path)]
        code, _, err = run(capsys, *argv[:-1], str(tmp_path / "o"), *grid)
        assert code == 2 and says in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_a_shape_prior_of_huge_weights_is_their_ratio_not_an_overflow():
    from workbench.data.shapes import draw_shapes

    drawn = draw_shapes(2000, torch.Generator().manual_seed(0), (1e308, 1e308, 1.0))
    counts = torch.bincount(drawn, minlength=3)
    assert counts[2] == 0 and abs(int(counts[0]) - 1000) < 120  # 1:1:1e-308
    for bad in ((1e308, float("inf"), 1.0), (0.0, 0.0, 0.0)):
        with pytest.raises(WorkbenchError, match="shape_probs"):
            draw_shapes(4, torch.Generator(), bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
recorded_edits = st.dictionaries(
    st.sampled_from(["mode", "eta", "strengths", "asymmetric", "gamma", "via_x", "other"]),
    json_values | st.sampled_from(["additive", "guidance", "distance", 0.5, [1.0, -1.0]]),
    max_size=3,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.fixed_dictionaries(
        {},
        optional={
            "edit": recorded_edits | json_values,
            "h_point": json_values | st.sampled_from(["mid", "up.0", "down.9"]),
            "offsets": json_values | st.lists(st.floats(), min_size=1, max_size=2),
        },
    ),
    space=st.sampled_from(["x", "h"]),
)
def test_fuzzed_recorded_parameters_are_used_or_refused_in_one_line(tiny, tmp_path, params, space):
    """Whatever a direction file records as the parameters later calls read back (the
    working edit, the point of h, a boundary's offsets), loading it and editing with it
    either works or is a one-line WorkbenchError, never another exception."""
    from safetensors.torch import save_file

    d = wb.discover("random", tiny, k=1, space=space)
    path = tmp_path / "fuzzed.safetensors"
    meta = d.metadata() | {"params": params}
    save_file({"vectors": d.vectors}, str(path), metadata={"workbench": json.dumps(meta)})
    try:
        directions = wb.DirectionSet.load(path, tiny)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wb.edit(tiny, directions, 0, [1.0], seeds=[0], num_steps=2, progress=False)
    except WorkbenchError as exc:
        assert "\n" not in str(exc)


def test_save_replaces_a_folder_only_with_overwrite(tmp_path, tiny):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    _one_line(lambda: wb.save(tiny, folder), "not empty: give overwrite=True")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    _one_line(lambda: wb.save(tiny, folder / "notes.txt"), "is a file")
    _one_line(lambda: wb.save("tiny-test", tmp_path / "x"), "model must be a loaded model")
    wb.save(tiny, folder, overwrite=True)
    assert not (folder / "notes.txt").exists()
    assert wb.load(folder, device="cpu").fingerprint == tiny.fingerprint


def test_the_overshoot_allowance_covers_a_trained_models_own_samples(shapes32):
    """Why a user's images may pass [-1, 1] by up to IMAGE_OVERSHOOT (clipped with a word):
    the bundled model's own few-step samples do pass 1, and stay within it."""
    from workbench.models.wrapper import IMAGE_OVERSHOOT

    own = wb.sample(shapes32, seeds=range(32), num_steps=5, progress=False)
    assert 1 < float(own.abs().max()) < IMAGE_OVERSHOOT
    with pytest.warns(UserWarning, match="clipped"):
        assert float(shapes32.check_real_images(own).abs().max()) == 1.0
