"""Memory-bounded Jacobian products: the count of tensor bytes, the columns per pass a
budget allows, and bases that keep to it with the result of one pass."""

import pytest
import torch

import workbench as wb
from workbench.engines import pullback
from workbench.engines.pullback import basis_memory, local_basis
from workbench.errors import WorkbenchError
from workbench.memory import GIB, TensorBytes, checkpointed, chunk_for, free_bytes

MB = 2**20


def assert_same_basis(a, b):
    """The same directions up to sign and rounding, and the same singular values."""
    cos = (a.V * b.V).flatten(2).sum(-1).abs()
    assert float(cos.min()) > 1 - 1e-6, cos
    torch.testing.assert_close(a.s, b.s, rtol=1e-5, atol=0)


def test_tensor_bytes_counts_what_is_alive_inside_once_per_storage():
    before = torch.ones(256, 1024)  # 1 MiB made outside: not counted
    with TensorBytes() as count:
        a = torch.ones(256, 1024) * 2  # 1 MiB
        view = a[:10].t()  # a view: no new storage
        b = a + 1  # 1 MiB more: 2 alive
        del a, view
        c = b @ torch.ones(1024, 512)  # 0.5 MiB result (and the 2 MiB operand)
        zero = torch._efficientzerotensor(1024, 1024)  # no memory behind it
        kept = before * 1  # 1 MiB
        outside = before.t()  # a view of storage made outside: not counted
        before.mul_(2)  # written in place: not new either
    assert count.peak == MB + 2 * MB + MB // 2  # b, the ones operand and c
    assert count.held == MB + MB // 2 + MB  # b, c, kept; the operand is gone
    del b, c, zero, kept, outside
    assert count.held == 0


def test_tensor_bytes_does_not_count_the_weights_a_network_uses():
    """A linear layer's forward takes a transposed view of its weight: the weights
    existed before, so a deeper stack of layers peaks no higher than a shallow one
    (only one layer's activations are alive at a time)."""

    def peak(depth: int) -> int:
        torch.manual_seed(0)
        layers = [torch.nn.Linear(256, 256) for _ in range(depth)]
        net = torch.nn.Sequential(*layers, torch.nn.GELU()).requires_grad_(False)
        with TensorBytes() as count:
            net(torch.ones(64, 256))
        return count.peak

    assert peak(8) == peak(2) <= 3 * 64 * 256 * 4  # a layer's input and output at most


def test_tensor_bytes_passes_over_a_sparse_result():
    dense = torch.eye(100)
    with TensorBytes() as count:
        sparse = dense.to_sparse()  # no plain storage: not counted, not an error
        again = sparse.to_dense()  # 40,000 bytes
    assert count.peak >= 40_000 and count.held >= 40_000
    del again


def test_tensor_bytes_sees_the_batched_size_under_vmap_and_jvp():
    """Each of 8 tangent columns is one more batch row inside a vmapped jvp: the count sees
    the physical batched tensors, so two columns cost more than one."""
    w = torch.randn(1024, 1024)
    f = lambda x: torch.tanh(x @ w) @ w
    x = torch.randn(16, 1024)

    def peak(columns: int) -> int:
        tangents = torch.randn(columns, 16, 1024)
        with TensorBytes() as count:
            torch.func.vmap(lambda v: torch.func.jvp(f, (x,), (v,))[1])(tangents)
        return count.peak

    one, eight = peak(1), peak(8)
    row = 16 * 1024 * 4  # one column's [16, 1024] float32
    assert eight - one >= 7 * 2 * row  # at least its tangent and its output, per column
    assert eight < 8 * one


def test_chunk_for_fits_the_budget_or_says_what_one_column_needs():
    assert chunk_for(12, fixed=100, per_column=10, budget=100 + 55) == 5
    assert chunk_for(12, fixed=100, per_column=10, budget=10**6) == 12
    with pytest.raises(
        WorkbenchError, match=r"need about 384\.0 MiB even one column at a time, and 256\.0 MiB is"
    ):
        chunk_for(12, fixed=GIB // 4, per_column=GIB // 8, budget=GIB // 4)
    with pytest.raises(
        WorkbenchError, match=r"need about 3\.00 GiB .*, and 2\.50 GiB is available"
    ):
        chunk_for(12, fixed=2 * GIB, per_column=GIB, budget=5 * GIB // 2)


def test_free_bytes_reads_the_cpu_and_knows_when_it_cannot():
    free = free_bytes("cpu")
    assert free is not None and 0 < free < 2**50  # Linux: MemAvailable
    assert free_bytes("meta") is None


@pytest.fixture(scope="module")
def start(shapes32):
    """x_t of seed 0 at t = 800 and its basis with all 8 columns in one pass."""
    x = wb.sampling.run_to(
        shapes32, shapes32.noise([0]), wb.sampling.make_timesteps(shapes32, 10, include=[800]), 800
    )
    options = dict(k=4, oversample=4, max_iter=4, min_iter=4)
    one_pass = local_basis(shapes32, x, 800, chunk=8, **options)
    return x, options, one_pass


def test_a_memory_budget_bounds_the_columns_per_pass_and_the_peak(shapes32, start):
    """With all columns in one pass a basis takes some peak; a budget of that peak or
    less makes it take passes of fewer columns, stay within the budget and give the same
    basis; a budget below one column's need, or below the Ritz step's, is refused in one
    line naming which."""
    x, options, one_pass = start
    options = options | dict(checkpoint="off")  # the forward pass kept, as counted here
    with TensorBytes() as whole:
        local_basis(shapes32, x, 800, chunk=8, ritz="h", **options)
    chunks = []
    for share in (1.5, 1.0, 0.9):
        budget = share * whole.peak / GIB
        with TensorBytes() as count:
            basis = local_basis(shapes32, x, 800, memory=budget, ritz="h", **options)
        assert count.peak <= budget * GIB, (share, count.peak, budget * GIB)
        assert_same_basis(basis, one_pass)
        chunks.append(basis.chunk or 8)
    assert chunks[0] == 8 and chunks[1] < 8 and chunks[2] < chunks[1], chunks
    options = options | dict(max_iter=2, min_iter=2)  # two Krylov blocks: a light Ritz step
    need = basis_memory(shapes32, x, 800, k=4, oversample=4, max_iter=2)
    usable = 1 - pullback.MARGIN  # of a budget, what a basis plans to use
    one_column = need.forward + need.held + need.fixed + need.per_column
    ritz_step = need.forward + need.algebra
    assert ritz_step < one_column  # here a pass of one column takes more than the Ritz step
    for needed, message in (
        (one_column, "Jacobian products need about .* MiB even one column"),
        (ritz_step, "linear algebra needs about .* MiB"),
    ):
        with pytest.raises(WorkbenchError, match=message):
            local_basis(shapes32, x, 800, memory=0.99 * needed / usable / GIB, ritz="h", **options)
    with pytest.raises(WorkbenchError, match="chunk .* or memory .*, not both"):
        local_basis(shapes32, x, 800, chunk=2, memory=1.0, **options)


def test_an_x_space_ritz_step_is_taken_where_it_lets_more_columns_fit(shapes32, start):
    """With ``ritz="auto"`` a budget that holds every column in one pass with the x-space
    Ritz step but not with the h-space one takes the x-space step (one pass, within the
    budget, the same basis); a budget that holds both takes the h-space step, and so does
    a basis given its columns per pass; a budget that holds neither is refused with the
    x-space step's need."""
    x, options, one_pass = start
    options = options | dict(max_iter=8, min_iter=8, checkpoint="off")  # the Ritz step counts
    h_space, x_space = (
        basis_memory(shapes32, x, 800, k=4, oversample=4, max_iter=8, ritz=ritz)
        for ritz in ("h", "x")
    )
    assert x_space.algebra < h_space.algebra and x_space.held < h_space.held
    usable = 1 - pullback.MARGIN
    between = (x_space.peak() + h_space.peak()) / 2 / usable / GIB
    assert h_space.columns_within(int(between * GIB * usable)) is not None  # h: fewer per pass
    with TensorBytes() as count:
        auto = local_basis(shapes32, x, 800, memory=between, **options)
    assert auto.ritz == "x" and auto.chunk is None and count.peak <= between * GIB
    reference = local_basis(shapes32, x, 800, chunk=8, ritz="h", **options)
    assert reference.ritz == "h"
    assert_same_basis(auto, reference)
    plenty = local_basis(shapes32, x, 800, memory=10 * between, **options)
    assert plenty.ritz == "h" and plenty.chunk is None
    assert local_basis(shapes32, x, 800, chunk=3, **options).ritz == "h"
    too_little = 0.9 * (x_space.forward + x_space.algebra) / usable / GIB  # neither fits
    with pytest.raises(WorkbenchError, match=r"linear algebra .*\(max_blocks\), checkpoint"):
        local_basis(shapes32, x, 800, memory=too_little, **options)  # the x-space need
    with pytest.raises(WorkbenchError, match="ritz"):
        basis_memory(shapes32, x, 800, ritz="auto")


class _Explicit:
    """Stands in for a network's Jacobian products: an explicit matrix ``J`` ``[m, d]``,
    whose products cost nothing but their results, so that a count of a basis is the count
    of its own linear algebra; records what is alive when each pass starts."""

    J: torch.Tensor
    count: TensorBytes | None = None
    held = 0

    def __init__(self, f, x, out_shape, algebra, chunk, auto, blocks=()):
        self.x, self.out_shape, self.algebra, self.chunk = x, out_shape, algebra, chunk
        self.checkpoint = False

    def start(self, count=False):
        return 0

    def _note(self):
        if _Explicit.count is not None:
            _Explicit.held = max(_Explicit.held, _Explicit.count.held)

    def forward(self, cols):
        self._note()
        return torch.einsum("md,bdw->bmw", self.J, cols)

    def reverse(self, cols):
        self._note()
        return torch.einsum("md,bmw->bdw", self.J, cols)


@pytest.mark.parametrize("ritz", ["h", "x"])
def test_the_linear_algebra_takes_what_its_bounds_say(shapes32, monkeypatch, ritz):
    """The iteration's own tensors, counted with products that cost nothing (an explicit
    Jacobian) for an h smaller and 16 times larger than x, after one and eight Krylov
    blocks: the most alive at once and the most alive when a pass starts are within the
    bounds the budgets use, and not over 1.7 times them; an x-space step keeps no
    h-space block."""
    d = shapes32.d
    monkeypatch.setattr(pullback, "_Products", _Explicit)
    x = torch.randn(1, *shapes32.sample_shape, generator=torch.Generator().manual_seed(0))
    held = {}
    for m in (512, 16 * d):
        gen = torch.Generator().manual_seed(1)
        _Explicit.J = torch.randn(m, d, generator=gen) * torch.logspace(0, -3, d)
        monkeypatch.setattr(pullback, "target_map", lambda *args, m=m: (None, (m,)))
        for blocks in (1, 8):
            _Explicit.held = 0
            with TensorBytes() as count:
                _Explicit.count = count
                basis = local_basis(
                    shapes32, x, 800, k=8, oversample=4, max_iter=blocks, min_iter=blocks,
                    tol_deg=0, chunk=12, ritz=ritz,
                )  # fmt: skip
            _Explicit.count = None
            assert basis.ritz == ritz and basis.U.shape == (1, 8, m)
            bound_held, bound_peak = pullback._algebra_bytes(
                1, d, m, 12, blocks, torch.float32, ritz
            )
            assert count.peak <= bound_peak <= 1.7 * count.peak, (m, blocks, count.peak)
            assert _Explicit.held <= bound_held <= 1.7 * _Explicit.held, (m, blocks)
            held[m, blocks] = _Explicit.held
    big = 16 * d
    grown = (held[big, 8] - held[512, 8]) / (big - 512) / (8 * 12) / 4  # h numbers a column
    assert grown > 0.9 if ritz == "h" else grown < 0.2, grown


@pytest.mark.parametrize("checkpoint", [False, True])
def test_basis_memory_predicts_the_peak_of_each_columns_per_pass(shapes32, start, checkpoint):
    """The counted cost of a forward pass and four small product passes predicts the
    peak of the whole basis at every number of columns per pass, to 15%, with the
    forward pass kept and with checkpointed blocks."""
    x, options, _ = start
    need = basis_memory(shapes32, x, 800, k=4, oversample=4, max_iter=4, checkpoint=checkpoint)
    assert need.width == 8 and need.per_column > 0 and need.forward > 0
    assert need.checkpoint is checkpoint
    on = "on" if checkpoint else "off"
    for columns in (1, 3, 8):
        with TensorBytes() as count:
            basis = local_basis(shapes32, x, 800, chunk=columns, checkpoint=on, **options)
        assert basis.checkpoint is checkpoint
        predicted = need.peak(columns)
        assert abs(predicted - count.peak) <= 0.15 * count.peak, (columns, predicted, count.peak)
    assert need.columns_within(need.peak(3) + need.per_column // 2) == 3
    assert need.columns_within(need.peak() + 1) is None


def test_blocks_are_checkpointed_where_that_lets_more_columns_fit(shapes32, start):
    """Checkpointed blocks keep a fraction of the forward pass and give the same basis;
    with ``checkpoint="auto"`` a budget that holds every column in one pass with them but
    not without takes them (one pass, within the budget), one that holds both does not,
    and one that holds neither is refused with the checkpointed need."""
    x, options, one_pass = start
    kept, checkpointed = (
        basis_memory(shapes32, x, 800, k=4, oversample=4, max_iter=4, checkpoint=on)
        for on in (False, True)
    )
    assert checkpointed.forward < 0.25 * kept.forward  # the blocks' inputs only
    assert checkpointed.peak() < kept.peak()
    usable = 1 - pullback.MARGIN
    between = (checkpointed.peak() + kept.peak()) / 2 / usable / GIB
    assert kept.columns_within(int(between * GIB * usable)) is not None
    with TensorBytes() as count:
        auto = local_basis(shapes32, x, 800, memory=between, **options)
    assert auto.checkpoint and auto.chunk is None and count.peak <= between * GIB
    assert_same_basis(auto, one_pass)
    plenty = local_basis(shapes32, x, 800, memory=10 * between, **options)
    assert not plenty.checkpoint and plenty.chunk is None
    assert not local_basis(shapes32, x, 800, chunk=3, **options).checkpoint
    too_little = 0.9 * (checkpointed.forward + checkpointed.algebra) / usable / GIB
    with pytest.raises(WorkbenchError, match=r"linear algebra .*\(max_blocks\), ritz='x' or"):
        local_basis(shapes32, x, 800, memory=too_little, ritz="h", **options)
    with pytest.raises(WorkbenchError, match="ritz='x', checkpoint='on' or"):
        local_basis(shapes32, x, 800, memory=too_little, ritz="h", checkpoint="off", **options)


def test_checkpointed_modules_get_their_own_forward_back():
    """Within ``checkpointed`` a module's backward pass runs its forward again (the
    gradient is the same); on exit, also after an exception, the module's forward is its
    own again, a forward set on the instance before included."""
    calls = []

    class Counted(torch.nn.Linear):
        def forward(self, x):
            calls.append(x.shape)
            return super().forward(x)

    first, second = Counted(4, 4), torch.nn.Sequential(torch.nn.Linear(4, 4))
    own = second.forward
    second.forward = own  # set on the instance: put back as it was
    x = torch.randn(3, 4, requires_grad=True)
    plain = torch.autograd.grad(second(torch.tanh(first(x))).sum(), x)[0]
    with checkpointed([first, second]):
        out = second(torch.tanh(first(x))).sum()
    assert "forward" not in first.__dict__ and second.__dict__["forward"] is own
    assert len(calls) == 2
    again = torch.autograd.grad(out, x)[0]  # the graph made inside still runs
    assert len(calls) == 3  # the backward pass ran the forward again
    torch.testing.assert_close(again, plain)
    with pytest.raises(RuntimeError, match="boom"), checkpointed([first, second]):
        raise RuntimeError("boom")
    assert "forward" not in first.__dict__ and second.__dict__["forward"] is own


def test_the_default_budget_is_the_free_memory(shapes32, start, monkeypatch):
    """Without chunk or memory the columns per pass follow what the device has free: all
    of them where plenty is, fewer where little is, all where it is not known."""
    x, options, one_pass = start
    with TensorBytes() as whole:
        local_basis(shapes32, x, 800, chunk=8, **options)
    assert local_basis(shapes32, x, 800, **options).chunk is None  # a CPU has plenty
    monkeypatch.setattr(pullback, "free_bytes", lambda device: int(0.9 * whole.peak))
    tight = local_basis(shapes32, x, 800, **options)
    assert tight.chunk is not None and tight.chunk < 8
    assert_same_basis(tight, one_pass)
    monkeypatch.setattr(pullback, "free_bytes", lambda device: None)
    assert local_basis(shapes32, x, 800, **options).chunk is None


def test_a_pass_that_runs_out_of_memory_is_retried_with_half_the_columns(
    shapes32, start, monkeypatch
):
    """A pass of more than 2 columns 'runs out of memory' (as a device would): the basis
    halves its columns per pass until they fit and gives the one-pass result; with a
    chunk the caller chose, the error is the caller's."""
    x, options, one_pass = start
    vmap = torch.func.vmap
    sizes = []

    def small_device(fn, *args, chunk_size=None, **kwargs):
        batched = vmap(fn, *args, chunk_size=chunk_size, **kwargs)

        def run(columns):
            sizes.append(chunk_size)
            if columns.shape[0] > 2 and (chunk_size is None or chunk_size > 2):
                raise torch.OutOfMemoryError("out of memory (simulated)")
            return batched(columns)

        return run

    monkeypatch.setattr(torch.func, "vmap", small_device)
    basis = local_basis(shapes32, x, 800, **options)
    assert basis.chunk == 2 and None in sizes and 4 in sizes
    assert_same_basis(basis, one_pass)
    with pytest.raises(torch.OutOfMemoryError):
        local_basis(shapes32, x, 800, chunk=4, **options)


def test_the_engine_and_the_probes_take_a_memory_budget(tiny):
    """``memory`` is a basis option everywhere a basis is made, and not a parameter of the
    result (the same cache entry)."""
    options = dict(k=2, timestep=999, num_steps=4, max_iter=3)
    plain = wb.discover("pullback", tiny, **options)
    bounded = wb.discover("pullback", tiny, memory=0.5, **options)
    assert bounded.params == plain.params
    torch.testing.assert_close(bounded.vectors, plain.vectors, rtol=1e-4, atol=1e-5)
    probe = wb.probe("consistency", tiny, n=2, timesteps=[999], k=2, num_steps=4, memory=0.5)
    assert probe.across_samples.shape[-1] == 2
    with pytest.raises(WorkbenchError, match="memory"):
        wb.discover("pullback", tiny, memory=0.0, **options)


@pytest.mark.parametrize("checkpoint", [False, True], ids=["kept", "checkpointed"])
def test_the_flux_count_extends_to_deeper_networks_exactly(checkpoint):
    """``analysis/count_flux.py`` counts FLUX.1-dev's basis on three shallow networks and
    extends each part of the count block by block: on a small FLUX config the extension
    gives what deeper networks count (forward pass kept, a pass's fixed bytes and bytes
    per column; the linear algebra does not change) within 2%, with the blocks' forward
    kept and with them checkpointed (run again by each reverse-mode pass)."""
    import argparse

    from analysis_scripts import load_script

    count_flux = load_script("count_flux")
    args = argparse.Namespace(
        dtype="float32", heads=2, head_dim=32, text_dim=64, text=16, side=32, checkpoint=checkpoint
    )
    counts = {shape: count_flux.count(args, *shape)[0] for shape in count_flux.SHAPES}
    deeper = (4, 3)  # two more blocks of each kind than the base, 2 + 1
    counted, extended = count_flux.count(args, *deeper)[0], count_flux.extend(counts, *deeper)
    for part in (*count_flux.PARTS, "algebra", "held"):
        assert getattr(extended, part) == pytest.approx(getattr(counted, part), rel=0.02), part
