"""One description per engine, probe and mode: a toy engine and a toy probe registered
here (no other file touched) reach the API, its checks, the CLI and the explorer."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.engines import ENGINES, register_engine
from workbench.options import Option, Spec, validated
from workbench.probes import PROBES, ProbeResult, register_probe

M = ("--model", "tiny-test", "--device", "cpu")


@pytest.fixture
def toys():
    """A toy engine (one h-channel direction, its sign an option) and a toy probe."""

    @register_engine(
        "toy",
        "a toy engine for the tests",
        (
            Option("channel", int, 0, "which h channel", low=0, high=15, control=True),
            Option("sign", str, "plus", "the direction's sign", choices=("plus", "minus")),
            Option("scale", float, 1.0, "a number", low=0.5, high=2.0),
        ),
    )
    def toy(model, k=8, timestep=None, seed=0, channel=0, sign="plus", scale=1.0):
        vectors = torch.zeros(k, model.h_shape[0])
        vectors[:, channel] = 1.0 if sign == "plus" else -1.0
        return wb.DirectionSet(
            vectors=vectors,
            space="h",
            timestep=model.preset.h_window,
            engine="toy",
            model_fingerprint=model.fingerprint,
            params={"channel": channel, "sign": sign, "scale": scale},
        )

    @dataclasses.dataclass
    class ToyResult(ProbeResult):
        name = "toy-probe"
        n: int
        norms: list

        def figure(self):
            import plotly.graph_objects as go

            return go.Figure(go.Scatter(y=self.norms))

    @register_probe(
        "toy-probe",
        "norms of x_T",
        (Option("n", int, 3, "seeds", low=1, high=64), wb.options.TIMESTEPS),
    )
    def toy_probe(model, n=3, timesteps=None):
        x = model.noise(range(n))
        return ToyResult(n=n, norms=x.flatten(1).norm(dim=1).tolist())

    yield toy, toy_probe
    ENGINES.pop("toy")
    PROBES.pop("toy-probe")


def test_a_registered_engine_and_probe_reach_the_api(toys):
    model = wb.load("tiny-test", device="cpu")
    d = wb.discover("toy", model, k=2, channel=3, sign="minus")
    assert d.engine == "toy" and float(d.vectors[0, 3]) == -1.0
    result = wb.probe("toy-probe", model, n=4)
    assert len(result.norms) == 4 and all(abs(v / model.d**0.5 - 1) < 0.1 for v in result.norms)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"channel": 16}, "channel must be in [0, 15], got 16"),
        ({"channel": 1.5}, "channel must be an integer"),
        ({"channel": True}, "channel must be a number"),
        ({"sign": "up"}, "sign must be one of plus, minus"),
        ({"scale": float("nan")}, "scale must be finite"),
        ({"scale": 3}, "scale must be in [0.5, 2]"),
        ({"k": 0}, "k must be in [1, 4096]"),
        ({"seed": -1}, "seed must be in [0, "),
        ({"colour": "red"}, "engine 'toy' has no option 'colour'"),
    ],
)
def test_bad_engine_options_are_one_line_errors(toys, options, message):
    model = wb.load("tiny-test", device="cpu")
    with pytest.raises(wb.WorkbenchError) as info:
        wb.discover("toy", model, **options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_cli_is_derived_from_the_description(toys, tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    code = main(["discover", "toy", *M, "--channel", "5", "--sign", "minus", "--out", str(out)])
    assert code == 0
    d = wb.DirectionSet.load(out)
    assert d.params == {"channel": 5, "sign": "minus", "scale": 1.0, "h_point": "mid"}
    capsys.readouterr()
    code = main(
        ["discover", "toy", *M, "--channel", "99", "--out", str(tmp_path / "e.safetensors")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "channel must be in [0, 15], got 99" in err and err.count("\n") == 1
    assert not (tmp_path / "e.safetensors").exists()

    code = main(["probe", "toy-probe", *M, "--n", "2", "--out", str(tmp_path / "p")])
    assert code == 0
    saved = json.loads((tmp_path / "p" / "toy-probe.json").read_text())
    assert saved["n"] == 2 and len(saved["norms"]) == 2
    capsys.readouterr()
    code = main(["probe", "toy-probe", *M, "--timesteps", "5,x", "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == 2 and "timesteps must be integers like 999,600,200" in err


def test_the_explorer_shows_the_new_engine_and_its_controls(toys, tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.viz import Explorer

    explorer = Explorer(
        wb.load("tiny-test", device="cpu"),
        engine="toy",
        k=2,
        seeds=range(2),
        options={"channel": 2},
        library=tmp_path / "lib",
        num_steps=4,
    )
    assert "toy" in explorer.engine_w.options
    channel = explorer.control("channel")
    assert channel.layout.display != "none" and channel.value == "2"
    assert float(explorer.directions.vectors[0, 2]) == 1.0
    channel.value = "7"
    explorer.discover_b.click()
    assert float(explorer.directions.vectors[0, 7]) == 1.0
    channel.value = "70"
    explorer.discover_b.click()
    assert "channel must be in [0, 15]" in explorer.status_w.value
    explorer.engine_w.value = "random"
    assert channel.layout.display == "none"


def test_validated_checks_positional_and_keyword_options():
    spec = Spec("function", "f", "", (Option("n", int, 1, "count", low=1),))

    def f(model, n=1, extra=None):
        return n, extra

    g = validated(spec, f)
    assert g(None, 3) == (3, None) and g(None, n=2, extra="x") == (2, "x")
    for args, kwargs, message in [
        ((None, 0), {}, "n must be at least 1"),
        ((None,), {"m": 1}, "has no option 'm'"),
        ((None, 1), {"n": 2}, "'n' given twice"),
        ((None, 1, 2, 3), {}, "too many positional arguments"),
    ]:
        with pytest.raises(wb.WorkbenchError, match=message):
            g(*args, **kwargs)
    with pytest.raises(ValueError, match="describes options its function lacks"):
        validated(Spec("function", "h", "", (Option("m", int, 1, ""),)), f)


def test_every_registered_function_matches_its_description():
    """Each engine, probe and mode: every described option is a parameter with the same
    default, so the API, the CLI and the explorer agree on what is left out."""
    import inspect

    from workbench.editing import EDIT, MODES, edit

    described = [(e.discover, e.spec) for e in ENGINES.values()]
    described += [(p, p.spec) for p in PROBES.values()]
    described += [(m, m.spec) for m in MODES.values()] + [(edit, EDIT)]
    for fn, spec in described:
        params = inspect.signature(fn).parameters  # context keywords included
        for option in spec.options:
            default = params[option.name].default
            if default is not inspect.Parameter.empty:
                assert default == option.default or (option.name == "hold" and default == ()), (
                    spec.owner,
                    option.name,
                )


def test_an_old_spelling_is_accepted_with_a_warning_and_mapped():
    """An option's CLI alias (``--steps`` for ``num_steps``) is accepted as a keyword too,
    with a FutureWarning naming the new name; both together are refused."""
    spec = Spec(
        "function",
        "f",
        "",
        (Option("num_steps", int, None, "steps", low=1, aliases=("--steps",)),),
    )
    f = validated(spec, lambda model, num_steps=None: num_steps)
    with pytest.warns(FutureWarning, match="'steps' is now called 'num_steps'"):
        assert f(None, steps=7) == 7
    with pytest.warns(FutureWarning), pytest.raises(wb.WorkbenchError, match="given twice"):
        f(None, steps=7, num_steps=7)
    with (
        pytest.warns(FutureWarning),
        pytest.raises(wb.WorkbenchError, match="num_steps must be at least 1"),
    ):
        f(None, steps=0)
    assert f(None, num_steps=3) == 3


def test_every_engine_spells_its_step_count_num_steps():
    """One vocabulary: no engine, probe or mode describes a plain ``steps`` option."""
    from workbench.editing import MODES

    specs = [e.spec for e in ENGINES.values()] + [p.spec for p in PROBES.values()]
    specs += [m.spec for m in MODES.values()]
    for spec in specs:
        assert "steps" not in spec, spec.owner
