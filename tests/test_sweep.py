"""Sweeps in shards: equal to the probe on the same seeds, resumable through the cache,
one-line failures; on a local Ray with 2 workers (marked slow: Ray's start and its
workers' imports take about 10 s each time), the same bits as in-process, and a worker
killed mid-sweep loses only its own shard."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.engines.pullback import local_basis
from workbench.errors import WorkbenchError
from workbench.probes.consistency import consistency_bases
from workbench.sampling import make_timesteps, run_chain
from workbench.stats import principal_angles
from workbench.store import Cache
from workbench.sweep import SWEEPS, sweep

KW = dict(timesteps=[800, 400], k=3)  # tiny-test, two timesteps, 3 directions


def entries(cache: Cache) -> int:
    """Shards written to the cache (one file each)."""
    return len(list(Path(cache.root).glob("*.safetensors")))


def tensors(result) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vars(result).items() if isinstance(v, torch.Tensor)}


@pytest.fixture(scope="module")
def tiny():
    return wb.load("tiny-test", device="cpu")


def test_a_sample_basis_does_not_depend_on_its_batch(tiny):
    """With per-sample seeds a sample's basis is the same alone or in a batch (rounding):
    its own random start, and it stops on its own."""
    grid = make_timesteps(tiny, None, include=[600])
    x = run_chain(tiny, tiny.noise([0, 1, 2]), grid[: grid.index(600) + 1], progress=False)
    both = local_basis(tiny, x, 600, k=3, sample_seeds=[0, 1, 2], tol_deg=0.5)
    for i in (0, 2):
        alone = local_basis(tiny, x[i : i + 1], 600, k=3, sample_seeds=[i], tol_deg=0.5)
        v_both = both.V[i].reshape(3, -1).T.double()
        v_alone = alone.V[0].reshape(3, -1).T.double()
        assert float(principal_angles(v_both, v_alone).max()) < 1e-3
        torch.testing.assert_close(both.s[i], alone.s[0], rtol=1e-4, atol=0)
    with pytest.raises(WorkbenchError, match="sample_seeds has 2 seeds for 3 samples"):
        local_basis(tiny, x, 600, k=3, sample_seeds=[0, 1])


def test_pairwise_statistics_in_chunks_equal_all_pairs_at_once():
    """The consistency statistics are summed in chunks (thousands of samples fit); the
    smallest chunk gives what all pairs at once give."""
    from workbench.probes.consistency import (
        pairwise_similarity,
        subspace_similarity,
        transport_alignment,
    )

    gen = torch.Generator().manual_seed(0)
    V = torch.linalg.qr(torch.randn(3, 7, 50, 4, generator=gen))[0].transpose(-1, -2)
    g, c = pairwise_similarity(V, budget=1)
    g_all, c_all = subspace_similarity(V[:, :, None], V[:, None, :])
    torch.testing.assert_close(g, g_all, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_all, rtol=0, atol=1e-12)
    assert float(c[0, 0, 0]) == pytest.approx(1.0) and float(c[0, 0, 1]) < 0.5
    cos = torch.einsum("tbjd,taid->tabij", V.double(), V.double()).abs()  # unit rows
    cos = cos / cos.norm(dim=-1, keepdim=True)
    pairs = ~torch.eye(7, dtype=torch.bool)
    expected = cos[:, pairs].mean(1)
    for budget in (1, 2**30):
        torch.testing.assert_close(transport_alignment(V, budget), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["consistency", "spectrum"])
def test_sweep_equals_the_probe_on_the_same_seeds(tiny, tmp_path, name):
    """Shards of 2 combined give the probe's numbers on 6 seeds (pairs across shards
    included); each shard is computed once, then read from the cache."""
    cache = Cache(tmp_path)
    result = sweep(name, tiny, n=6, shard=2, backend="local", cache=cache, **KW)
    assert (result.shards, result.computed, result.cached, result.failures) == (3, 3, 0, [])
    assert entries(cache) == 3
    probe = wb.probe(name, tiny, n=6, **KW)
    swept = result[f"{name} | tiny-test"]
    for field, value in tensors(probe).items():
        torch.testing.assert_close(
            getattr(swept, field), value, rtol=1e-3, atol=1e-4, equal_nan=True
        )  # (rank at 90% energy: NaN above k, in both)
    again = sweep(name, tiny, n=6, shard=2, backend="local", cache=cache, **KW)
    assert (again.computed, again.cached) == (0, 3)
    for field, value in tensors(swept).items():
        assert torch.equal(
            getattr(again[f"{name} | tiny-test"], field).nan_to_num(), value.nan_to_num()
        )


def test_the_pullback_engine_in_shards_equals_its_shared_directions(tiny, tmp_path):
    """The engine's directions shared by 4 samples (``samples=4``), from shards of 2."""
    cache = Cache(tmp_path / "sweep")
    result = sweep("pullback", tiny, n=4, shard=2, backend="local", cache=cache,
                   timestep=600, k=3, tol_deg=0.5)  # fmt: skip
    swept = result["pullback | tiny-test"]
    whole = wb.discover("pullback", tiny, samples=4, timestep=600, k=3, tol_deg=0.5,
                        cache=Cache(tmp_path / "engine"))  # fmt: skip
    assert swept.params["samples"] == 4 and swept.params["seed"] == 0
    torch.testing.assert_close(swept.vectors, whole.vectors, rtol=0, atol=1e-4)
    torch.testing.assert_close(swept.scores, whole.scores, rtol=1e-4, atol=0)
    assert swept.labels == whole.labels and swept.timestep == 600
    with pytest.raises(WorkbenchError, match="samples belong to the sweep"):
        sweep("pullback", tiny, n=4, backend="local", cache=cache, samples=4)
    result.save(tmp_path / "out")
    assert (tmp_path / "out" / "point-000" / "directions.safetensors").is_file()


def failing_shard(model, seeds, **options):
    if 3 in seeds:
        raise WorkbenchError("this shard is broken")
    return consistency_bases(model, seeds, **options)


def test_a_failed_shard_is_one_line_and_a_rerun_computes_only_it(tiny, tmp_path):
    cache = Cache(tmp_path)
    broken = dataclasses.replace(SWEEPS["consistency"], shard=failing_shard)
    result = sweep(
        broken,
        tiny,
        n=6,
        shard=2,
        backend="local",
        cache=cache,
        grid={"k": [2, 3]},
        timesteps=KW["timesteps"],
    )
    lines = [str(f) for f in result.failures]
    assert lines == [
        "shard failed (consistency | tiny-test | k=2, seeds 2-3): "
        "WorkbenchError: this shard is broken",
        "shard failed (consistency | tiny-test | k=3, seeds 2-3): "
        "WorkbenchError: this shard is broken",
    ]
    assert result.results == {} and result.computed == 4 and entries(cache) == 4
    assert "2 failed" in result.summary()
    with pytest.raises(WorkbenchError, match="no complete sweep point"):
        result["consistency | tiny-test | k=2"]
    fixed = sweep("consistency", tiny, n=6, shard=2, backend="local", cache=cache,
                  grid={"k": [2, 3]}, timesteps=KW["timesteps"])  # fmt: skip
    assert (fixed.computed, fixed.cached, fixed.failures) == (2, 4, [])
    assert set(fixed.results) == {"consistency | tiny-test | k=2", "consistency | tiny-test | k=3"}


def test_sweep_refuses_bad_input_in_one_line(tiny, tmp_path):
    cache = Cache(tmp_path)
    cases = [
        (dict(what="norm"), "'norm' cannot be swept; sweepable: consistency, pullback, spectrum"),
        (dict(n=1), "n must be"),
        (dict(backend="spark"), "backend"),
        (dict(k=0), "k must be"),
        (dict(seed=0, grid={"k": []}), "grid\\['k'\\] must be a non-empty list"),
        (dict(grid={"k": [2]}, k=3), "'k' is given both as an option and in the grid"),
        (dict(timesteps=[5000]), "timestep"),
        (dict(bogus=1), "no option 'bogus'"),
    ]
    for given, message in cases:
        args = {"what": "consistency", "models": tiny, "n": 4, "backend": "local"} | given
        with pytest.raises(WorkbenchError, match=message):
            sweep(args.pop("what"), args.pop("models"), cache=cache, **args)
    assert entries(cache) == 0  # refused before any compute


def test_the_sweep_command_writes_each_point(tmp_path, monkeypatch, capsys):
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["sweep", "consistency", "--model", "tiny-test", "--n", "4", "--shard", "2",
            "--backend", "local", "--timesteps", "800,400", "--grid", "k=2;3",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "4 computed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["point-000", "point-001", "sweep.json"]
    assert (out / "point-001" / "consistency.json").is_file()
    assert main([*args, "--overwrite"]) == 0
    assert "0 computed, 4 from the cache" in capsys.readouterr().out
    assert main([*args[:-4], "--grid", "n=2;3", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "workbench: error: --grid 'n=2;3': give NAME=V1;V2 with NAME an option of 'consistency'"
    )


def test_a_sweep_command_with_a_failed_shard_writes_no_out(tmp_path, monkeypatch, capsys):
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        SWEEPS, "consistency", dataclasses.replace(SWEEPS["consistency"], shard=failing_shard)
    )
    out = tmp_path / "out"
    args = ["sweep", "consistency", "--model", "tiny-test", "--n", "4", "--shard", "2",
            "--backend", "local", "--timesteps", "800,400", "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 shard(s) failed" in err and "nothing was written" in err and not out.exists()


# ----------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_two_workers():
    if os.environ.get("WORKBENCH_REQUIRE_RAY"):  # CI installs the cluster extra
        import ray
    else:
        ray = pytest.importorskip("ray", reason='needs pip install "workbench[cluster]"')
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",  # loopback only
    )
    # the test's own shard functions travel by value (the workers cannot import this file)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


MARKER = {"path": ""}  # set by the test; travels with the function (by value)


def dying_shard(model, seeds, **options):
    """Kills its own worker process on the shard with seed 2 while the marker is absent
    (the marker is written first, so a retry gets through)."""
    marker = Path(MARKER["path"])
    if 2 in seeds and not marker.exists():
        marker.write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    return consistency_bases(model, seeds, **options)


@pytest.mark.slow
def test_ray_gives_the_in_process_bits(ray_two_workers, tiny, tmp_path):
    local = sweep("consistency", tiny, n=6, shard=2, backend="local", threads=1,
                  cache=Cache(tmp_path / "a"), **KW)  # fmt: skip
    on_ray = sweep("consistency", "tiny-test", n=6, shard=2, backend="ray", threads=1,
                   cache=Cache(tmp_path / "b"), **KW)  # fmt: skip
    assert on_ray.backend == "ray" and on_ray.computed == 3
    a, b = local["consistency | tiny-test"], on_ray["consistency | tiny-test"]
    for field, value in tensors(a).items():
        assert torch.equal(getattr(b, field), value), field


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_shard(ray_two_workers, tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(MARKER, "path", str(tmp_path / "marker"))
    dying = dataclasses.replace(SWEEPS["consistency"], shard=dying_shard)
    cache = Cache(tmp_path / "cache")
    common = dict(n=8, shard=2, backend="ray", threads=1, cache=cache, **KW)
    first = sweep(dying, "tiny-test", retries=0, **common)
    assert len(first.failures) == 1 and first.results == {}
    (failure,) = first.failures
    assert "seeds 2-3" in str(failure) and "\n" not in str(failure)
    assert first.computed == 3 and entries(cache) == 3  # the other shards finished
    rerun = sweep("consistency", "tiny-test", **common)
    assert (rerun.computed, rerun.cached, rerun.failures) == (1, 3, [])  # nothing redone
    assert entries(cache) == 4
    whole = sweep("consistency", tiny, n=8, shard=2, backend="local", threads=1,
                  cache=Cache(tmp_path / "whole"), **KW)  # fmt: skip
    for field, value in tensors(whole["consistency | tiny-test"]).items():
        assert torch.equal(getattr(rerun["consistency | tiny-test"], field), value), field
    # with a retry, Ray reruns the killed shard by itself
    (tmp_path / "marker").unlink()
    retried = sweep(dying, "tiny-test", retries=1, **(common | {"cache": Cache(tmp_path / "c")}))
    assert (retried.computed, retried.failures) == (4, [])
    assert (tmp_path / "marker").exists()


@pytest.mark.slow
def test_a_shard_error_on_ray_is_one_line(ray_two_workers, tmp_path):
    broken = dataclasses.replace(SWEEPS["consistency"], shard=failing_shard)
    result = sweep(broken, "tiny-test", n=4, shard=2, backend="ray", cache=Cache(tmp_path), **KW)
    assert [str(f) for f in result.failures] == [
        "shard failed (consistency | tiny-test, seeds 2-3): WorkbenchError: this shard is broken"
    ]
    assert result.computed == 1
