"""Sweeps: a probe (or the pullback engine) over many samples, models and option values,
in shards of seeds, in this process or as tasks on Ray, resumable through the cache.

A sweep is a grid of *points* (a sweepable probe or engine, a model, one value of each
option in ``grid``); each point's samples (seeds ``seed..seed+n-1``) are cut into
*shards* of ``shard`` seeds, and each shard is one task. A task computes the per-sample
part (the local bases of its samples, their spectra) and writes it to the cache
(:class:`workbench.store.Cache`: atomic, keyed by the model's fingerprint, the probe, the
shard's seeds, the options, dtype and device). When every shard of a point is there, the
point's statistics (or the engine's shared directions) are computed from all its
samples at once (pairs across shards included), in the process that called the sweep.
So:

- a rerun, or a sweep resumed after an interruption, computes only the shards that are
  not in the cache; a worker killed mid-task loses only its own shard;
- a shard that fails is reported in one line with its parameters, and the other shards
  are kept (its point has no result until a rerun completes it);
- the result equals the probe run on the same seeds in one process: each sample's basis
  starts from its own seed and stops on its own (:func:`workbench.local_basis`'s
  ``sample_seeds``), so it does not depend on which samples share its shard (up to
  rounding between batch sizes), and two sweeps with the same shards and the same
  ``threads`` per task give the same bits, on Ray or in-process (the probes sample
  deterministically, eta 0; CPU reductions round differently with another thread count,
  so the threads must match for bits, not for the statistics).

Backends: ``"local"`` runs the tasks one after another in this process; ``"ray"`` runs
them on Ray (``pip install "workbench[cluster]"``): a local Ray started with ``workers``
CPUs, or the cluster at ``address``; one GPU per task where the cluster has GPUs. The
cache folder must be one that every worker and the caller see (a shared file system on a
cluster). ``"auto"`` is Ray when it is installed, else local.

Sweepable probes are listed in :data:`SWEEPS`; another is a :class:`Sweepable` (a shard
function, a combine function and the probe's description).
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench.directions import DirectionSet
from workbench.engines import get_engine
from workbench.engines.pullback import basis_params, directions_from_bases, sample_bases
from workbench.errors import WorkbenchError, one_line
from workbench.models.loading import DTYPES
from workbench.models.wrapper import DiffusionModel
from workbench.options import MAX_SEED, PROGRESS, SEED, Option, Spec, in_context, validated
from workbench.probes import ProbeResult, get_probe
from workbench.probes.consistency import consistency_bases, consistency_from_bases
from workbench.probes.spectrum import spectrum_from_values, spectrum_values
from workbench.settings import show_progress
from workbench.store import Cache, as_cache, atomic_dir, cache_key, write_json

#: Options of a probe that a sweep sets itself (the samples, the progress bars).
OWN = ("n", "seed", "progress")


@dataclass(frozen=True)
class Sweepable:
    """A probe that can be computed in shards of samples.

    ``shard(model, seeds, **options) -> {name: tensor [n_shard, ...]}`` computes the
    per-sample part for the samples of ``seeds`` (samples first, on the CPU);
    ``combine(model, values, **options) -> ProbeResult`` the result from the values of all
    samples (each tensor the shards' concatenated in seed order). ``spec`` describes the
    options (the probe's own: ``n``, ``seed`` and ``progress`` are the sweep's).
    ``version`` goes into the cache key: change it when the shard function changes.
    ``own``: the options of the description that the sweep sets itself (the samples, the
    first seed, progress bars, an engine's own cache), refused when given.
    """

    name: str
    spec: Spec
    shard: Callable[..., dict[str, torch.Tensor]]
    combine: Callable[..., ProbeResult | DirectionSet]
    version: int = 1
    own: tuple[str, ...] = OWN

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` checked against the description (one-line errors), the sweep's own
        options refused."""
        own = [name for name in self.own if name in given]
        if own:
            raise WorkbenchError(
                f"sweep of {self.name!r}: {', '.join(own)} belong to the sweep (n, seed), "
                f"not to the {self.spec.kind}'s options"
            )
        return self.spec.validate(given)

    def run_shard(
        self, model: DiffusionModel, seeds: list[int], options: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """The shard function under the options' conditioning and point of h."""
        fn = in_context(self.shard, self.spec.options)
        return fn(model, seeds, progress=False, **options)

    def run_combine(
        self,
        model: DiffusionModel,
        values: dict[str, torch.Tensor],
        seeds: list[int],
        options: dict[str, Any],
    ) -> ProbeResult | DirectionSet:
        """The combine function under the options' conditioning and point of h (which the
        result records)."""
        fn = in_context(self.combine, self.spec.options)
        return fn(model, values, seeds=seeds, **options)


def _probe_spec(name: str) -> Spec:
    return get_probe(name).spec  # type: ignore[attr-defined]


Values = dict[str, torch.Tensor]


def _consistency_shard(model: DiffusionModel, seeds: list[int], **options: Any) -> Values:
    return consistency_bases(model, seeds, **options)


def _consistency_combine(
    model: DiffusionModel, values: Values, timesteps: Sequence[int] | None = None, **_: Any
) -> ProbeResult:  # (the seeds, and the options the bases were made with, are not needed)
    return consistency_from_bases(model, timesteps, **values)


def _spectrum_shard(model: DiffusionModel, seeds: list[int], **options: Any) -> Values:
    return spectrum_values(model, seeds, **options)


def _spectrum_combine(
    model: DiffusionModel,
    values: Values,
    timesteps: Sequence[int] | None = None,
    target: str = "h",
    **_: Any,
) -> ProbeResult:
    return spectrum_from_values(model, timesteps, target=target, **values)


def _pullback_timestep(model: DiffusionModel, timestep: int | None) -> int:
    return model.check_timestep(model.preset.x_timestep if timestep is None else timestep)


def _pullback_shard(
    model: DiffusionModel, seeds: list[int], timestep: int | None = None,
    chunk: int | None = None, progress: bool | None = None, **options: Any,
) -> Values:  # fmt: skip
    t = _pullback_timestep(model, timestep)
    V, s, meta = sample_bases(model, t, seeds, False, chunk=chunk, **options)
    n = len(seeds)
    return {
        "V": V.cpu(),
        "s": s.cpu(),
        "iterations": torch.full((n,), int(meta["iterations"])),
        "converged": torch.full((n,), bool(meta["converged"])),
    }


def _pullback_combine(
    model: DiffusionModel, values: Values, seeds: list[int], timestep: int | None = None,
    **options: Any,
) -> DirectionSet:  # fmt: skip
    params = basis_params(**options) | {
        "seed": seeds[0],
        "iterations": int(values["iterations"].max()),
        "converged": bool(values["converged"].all()),
    }
    t = _pullback_timestep(model, timestep)
    return directions_from_bases(model, t, values["V"], values["s"], params)


#: What a sweep can shard, by name: two probes and the pullback engine (the directions
#: shared by many samples: ``wb.discover("pullback", samples=n)`` in shards).
SWEEPS: dict[str, Sweepable] = {
    "consistency": Sweepable(
        "consistency", _probe_spec("consistency"), _consistency_shard, _consistency_combine
    ),
    "spectrum": Sweepable("spectrum", _probe_spec("spectrum"), _spectrum_shard, _spectrum_combine),
    "pullback": Sweepable(
        "pullback",
        get_engine("pullback").spec,
        _pullback_shard,
        _pullback_combine,
        own=("seed", "samples", "cache"),
    ),
}


def get_sweepable(what: str | Sweepable) -> Sweepable:
    """The sweepable ``what`` (a name in :data:`SWEEPS`, or one given as is)."""
    if isinstance(what, Sweepable):
        return what
    if what not in SWEEPS:
        raise WorkbenchError(f"{what!r} cannot be swept; sweepable: {', '.join(sorted(SWEEPS))}")
    return SWEEPS[what]


@dataclass(frozen=True)
class Shard:
    """One task: a sweepable's per-sample part for ``seeds`` of one model, cached as ``key``."""

    what: str | Sweepable
    model: str
    fingerprint: str
    seeds: tuple[int, ...]
    options: dict[str, Any]
    dtype: str
    device: str
    key: str
    point: str
    threads: int | None = None

    def describe(self) -> str:
        """The shard's parameters in one line."""
        return f"{self.point}, seeds {self.seeds[0]}-{self.seeds[-1]}"


@dataclass(frozen=True)
class ShardFailure:
    """A shard that did not finish, with its parameters and the error in one line."""

    shard: str
    error: str

    def __str__(self) -> str:
        return f"shard failed ({self.shard}): {self.error}"


def _finding(result: ProbeResult | DirectionSet) -> str:
    """A point's result in one line."""
    if isinstance(result, DirectionSet):
        return result.summary().splitlines()[0]
    return result.headline()


@dataclass(repr=False)
class SweepResult:
    """What a sweep found: each complete point's result (``results``, keyed by the point's
    label ``probe | model | options``), the failed shards, and what was computed now
    (``computed``; ``task_seconds``: each computed shard's time in its task, the model's
    loading left out) or read from the cache (``cached``)."""

    results: dict[str, ProbeResult | DirectionSet]
    failures: list[ShardFailure]
    shards: int
    computed: int
    cached: int
    seconds: float
    backend: str
    points: list[str] = field(default_factory=list)
    task_seconds: list[float] = field(default_factory=list)

    def __getitem__(self, label: str) -> ProbeResult | DirectionSet:
        if label not in self.results:
            known = ", ".join(self.results) or "none complete"
            raise WorkbenchError(f"no complete sweep point {label!r}; points: {known}")
        return self.results[label]

    @property
    def complete(self) -> bool:
        """Whether every shard finished."""
        return not self.failures

    def summary(self) -> str:
        """Counts, failures and each point's finding, as text."""
        lines = [
            f"sweep ({self.backend}): {len(self.points)} points, {self.shards} shards: "
            f"{self.computed} computed, {self.cached} from the cache, "
            f"{len(self.failures)} failed, {self.seconds:.1f} s"
        ]
        lines += [f"  {f}" for f in self.failures]
        lines += [f"  {label}: {_finding(r)}" for label, r in self.results.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def save(self, folder: str | Path) -> Path:
        """Each point's result in a subfolder (its probe's JSON and HTML) and ``sweep.json``
        (counts, failures, the points), written atomically."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            names = {}
            for i, (label, result) in enumerate(self.results.items()):
                names[label] = f"point-{i:03d}"
                if isinstance(result, DirectionSet):
                    result.save(tmp / names[label] / "directions.safetensors")
                else:
                    result.save(tmp / names[label])
            write_json(
                tmp / "sweep.json",
                {
                    "backend": self.backend,
                    "points": self.points,
                    "folders": names,
                    "shards": self.shards,
                    "computed": self.computed,
                    "cached": self.cached,
                    "seconds": self.seconds,
                    "task_seconds": self.task_seconds,
                    "failures": [str(f) for f in self.failures],
                },
            )
        return folder


SWEEP_SPEC = Spec(
    "function",
    "sweep",
    "a probe over many samples, models and option values, in shards, resumable",
    (
        Option("n", int, 64, "samples per point (seeds seed..seed+n-1)", low=2, high=10**7),
        SEED,
        Option("shard", int, 8, "samples per task", low=1, high=10**6),
        Option(
            "backend",
            str,
            "auto",
            "where the tasks run: ray, local (this process), auto (ray when installed)",
            choices=("auto", "local", "ray"),
        ),
        Option("address", str, None, "a Ray cluster's address (default: start a local Ray)"),
        Option("workers", int, None, "CPUs of a local Ray (default: all)", low=1, high=4096),
        Option(
            "threads",
            int,
            None,
            "CPU threads per task (Ray: its CPUs; default 1 there, all in-process)",
            low=1,
            high=4096,
        ),
        Option("retries", int, 1, "retries of a task whose worker died (Ray)", low=0, high=100),
        Option("device", str, None, "device of the tasks (default: cuda where there is one)"),
        Option("dtype", str, "float32", "dtype of the models", choices=tuple(DTYPES)),
        Option("grid", object, None, "option values to sweep: {name: [values]}", cli=False),
        Option(
            "cache", object, None, "a store.Cache or its folder (default: the user's)", cli=False
        ),
        PROGRESS,
    ),
)

_MODELS: dict[tuple[str, str, str], DiffusionModel] = {}


def _model(name: str, device: str, dtype: str) -> DiffusionModel:
    """The model ``name`` on ``device`` in ``dtype``, loaded once per process."""
    from workbench.models.loading import load

    key = (name, device, dtype)
    if key not in _MODELS:
        _MODELS[key] = load(name, device=device, dtype=DTYPES[dtype])
    return _MODELS[key]


def run_shard(task: Shard, cache_root: str, model: DiffusionModel | None = None) -> float | None:
    """Compute one shard and write it to the cache at ``cache_root`` (a Ray task, or a
    call in this process with the caller's ``model``): the seconds its computation took
    (the model's loading left out), None when it was in the cache already."""
    cache = Cache(cache_root)
    if cache.path(task.key).is_file():
        return None
    if model is None:
        model = _model(task.model, task.device, task.dtype)
    start = time.perf_counter()
    if model.fingerprint != task.fingerprint:
        raise WorkbenchError(
            f"model {task.model!r} on this worker has fingerprint {model.fingerprint[:12]}, "
            f"the sweep's {task.fingerprint[:12]}: the workers see other weights"
        )
    sweepable = get_sweepable(task.what)
    before = torch.get_num_threads()
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    try:
        values = sweepable.run_shard(model, list(task.seeds), task.options)
    finally:
        torch.set_num_threads(before)
    bad = [name for name, v in values.items() if v.shape[0] != len(task.seeds)]
    if bad:
        raise WorkbenchError(f"shard values {bad} do not have one row per seed")
    if cache.put(task.key, {k: v.contiguous() for k, v in values.items()}, {}) is None:
        raise WorkbenchError(f"could not write the shard to the cache {cache.root}")
    return time.perf_counter() - start


def _label(name: str, model: str, options: dict[str, Any], varied: Iterable[str]) -> str:
    shown = ", ".join(f"{k}={options[k]}" for k in varied)
    return " | ".join(part for part in (name, model, shown) if part)


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(options)
    except TypeError as exc:
        raise WorkbenchError(f"sweep options must be plain values (numbers, text): {exc}") from None
    return options


@functools.partial(validated, SWEEP_SPEC, first=2)
def sweep(
    what: str | Sweepable | Sequence[str | Sweepable],
    models: str | DiffusionModel | Sequence[str | DiffusionModel],
    n: int = 64,
    seed: int = 0,
    shard: int = 8,
    backend: str = "auto",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    retries: int = 1,
    device: str | None = None,
    dtype: str = "float32",
    grid: dict[str, Sequence[Any]] | None = None,
    cache: Cache | None = None,
    progress: bool | None = None,
    **options: Any,
) -> SweepResult:
    """Run the probe(s) ``what`` on ``models`` over seeds ``seed..seed+n-1``, in shards of
    ``shard`` seeds (module docstring), for every combination of the values in ``grid``
    (``{"k": [4, 8]}``) with the fixed ``options`` (the probe's, e.g. ``timesteps``).

    ``models``: names or folders (what ``wb.load`` takes), or loaded models (the local
    backend uses them as they are; Ray workers load their ``source``). Returns a
    :class:`SweepResult`: each complete point's probe result, the failed shards (one
    line each), and how many shards were computed or read from the cache.
    """
    start = time.perf_counter()
    whats = [what] if isinstance(what, str | Sweepable) else list(what)
    sweepables = [get_sweepable(w) for w in whats]
    given = [models] if isinstance(models, str | DiffusionModel | Path) else list(models)
    if not given or not sweepables:
        raise WorkbenchError("give at least one probe and one model")
    if seed + n - 1 > MAX_SEED:
        raise WorkbenchError(f"seeds {seed}..{seed + n - 1} pass the largest seed {MAX_SEED}")
    grid = dict(grid or {})
    for name, values in grid.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise WorkbenchError(f"grid[{name!r}] must be a non-empty list of values")
        if name in options:
            raise WorkbenchError(f"{name!r} is given both as an option and in the grid")
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    checked = {
        (s.name, i): _jsonable(s.options({**options, **combo}))
        for s in sweepables
        for i, combo in enumerate(combos)
    }  # every option checked before any model loads
    cache = as_cache(cache)
    if cache is None:
        raise WorkbenchError("a sweep needs a cache (its shards are kept there): not False")

    backend = _backend(backend)
    if backend == "ray":
        gpus = _ray_start(address, workers) > 0
        worker_device = device or ("cuda" if gpus else "cpu")
    else:
        from workbench.models.loading import check_device

        gpus, worker_device = False, check_device(device).type
    # (label, what a worker loads, the model here: its fingerprint, and the statistics)
    loaded: list[tuple[str, str, DiffusionModel]] = []
    for m in given:
        if isinstance(m, DiffusionModel):
            loaded.append((m.name, m.source, m))
        else:  # loaded here once: on the tasks' device in-process, else on the CPU
            here = worker_device if backend == "local" else "cpu"
            loaded.append((str(m), str(m), _model(str(m), here, dtype)))
    seeds = list(range(seed, seed + n))
    chunks = [tuple(seeds[i : i + shard]) for i in range(0, n, shard)]

    points: list[tuple[str, Sweepable, str, DiffusionModel, dict, list[Shard]]] = []
    for s, (name, source, model), i in itertools.product(
        sweepables, loaded, range(len(combos))
    ):  # fmt: skip
        opts = checked[(s.name, i)]
        for t in [*(opts.get("timesteps") or ()), opts.get("timestep")]:
            if t is not None:  # the model's range, checked before any task
                model.check_timestep(t)
        label = _label(s.name, name, combos[i], grid)
        tasks = [
            Shard(
                what=s.name if SWEEPS.get(s.name) is s else s,
                model=source,
                fingerprint=model.fingerprint,
                seeds=chunk,
                options=opts,
                dtype=str(model.dtype).removeprefix("torch."),
                device=worker_device,
                key=cache_key(
                    kind="sweep-shard",
                    probe=s.name,
                    version=s.version,
                    model=model.fingerprint,
                    seeds=list(chunk),
                    options=opts,
                    dtype=str(model.dtype),
                    device=worker_device,
                ),  # fmt: skip
                point=label,
                threads=threads,
            )
            for chunk in chunks
        ]
        points.append((label, s, name, model, opts, tasks))

    every = [task for *_, tasks in points for task in tasks]
    todo = [task for task in every if not cache.path(task.key).is_file()]
    if backend == "local":
        by_source = {source: model for _, source, model in loaded}
        failures, took = _run_local(todo, cache, by_source, progress)
    else:
        failures, took = _run_ray(todo, cache, retries, gpus, threads, progress)
    failed = {f.shard for f in failures}

    results: dict[str, ProbeResult | DirectionSet] = {}
    for label, s, _, model, opts, tasks in points:
        if any(task.describe() in failed for task in tasks):
            continue
        parts = [cache.get(task.key) for task in tasks]
        if any(part is None for part in parts):  # removed or unreadable since: not lost, redo
            failures.append(ShardFailure(label, "a shard's cache entry went missing: rerun"))
            continue
        values = {
            name: torch.cat([part[0][name] for part in parts])  # type: ignore[index]
            for name in parts[0][0]  # type: ignore[index]
        }
        results[label] = s.run_combine(model, values, seeds, opts)
    return SweepResult(
        results=results,
        failures=failures,
        shards=len(every),
        computed=len(took),
        cached=len(every) - len(todo),
        task_seconds=took,
        seconds=time.perf_counter() - start,
        backend=backend,
        points=[label for label, *_ in points],
    )


def _backend(backend: str) -> str:
    """``auto`` resolved: ray when it can be imported, else local."""
    if backend == "local":
        return backend
    try:
        import ray  # noqa: F401
    except ImportError:
        if backend == "ray":
            raise WorkbenchError(
                'backend "ray" needs Ray: pip install "workbench[cluster]" (or backend="local")'
            ) from None
        return "local"
    return "ray"


def _ray_start(address: str | None, workers: int | None) -> float:
    """Connect to Ray (the cluster at ``address``, else a local one with ``workers``
    CPUs; an already connected Ray is kept); the cluster's GPUs."""
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return float(ray.cluster_resources().get("GPU", 0))


def _run_local(
    todo: list[Shard],
    cache: Cache,
    models: dict[str, DiffusionModel],
    progress: bool | None,
) -> tuple[list[ShardFailure], int]:
    failures, seconds = [], []
    for task in tqdm(todo, desc="shards", disable=not show_progress(progress) or not todo):
        try:
            took = run_shard(task, str(cache.root), models[task.model])
        except Exception as exc:  # one shard's failure is reported; the others go on
            failures.append(ShardFailure(task.describe(), one_line(exc)))
        else:
            seconds += [] if took is None else [took]
    return failures, seconds


def _run_ray(
    todo: list[Shard],
    cache: Cache,
    retries: int,
    gpus: bool,
    threads: int | None,
    progress: bool | None,
) -> tuple[list[ShardFailure], int]:
    import ray

    remote = ray.remote(run_shard).options(
        num_cpus=threads or 1,
        num_gpus=1 if gpus else 0,
        max_retries=retries,
        retry_exceptions=False,
    )
    pending = {remote.remote(task, str(cache.root)): task for task in todo}
    failures, seconds = [], []
    bar = tqdm(total=len(todo), desc="shards", disable=not show_progress(progress) or not todo)
    with bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready[0])
            try:
                took = ray.get(ready[0])
            except Exception as exc:  # a task's error or its worker's death
                failures.append(ShardFailure(task.describe(), one_line(exc)))
            else:
                seconds += [] if took is None else [took]
            bar.update()
    return failures, seconds
