import pytest
import torch

import workbench as wb
from workbench.editing import MODES
from workbench.sampling import Step, run_chain


def test_zero_strength_is_the_unedited_sample(tiny):
    for ds in (
        wb.discover("random", tiny, k=1, space="x"),
        wb.discover("random", tiny, k=1, space="h"),
    ):
        result = wb.edit(tiny, ds, 0, [-2.0, 0.0, 2.0], seeds=[0, 1], num_steps=10)
        assert result.images.shape == (3, 2, 3, 16, 16)
        plain = run_chain(tiny, tiny.noise([0, 1]), result.timesteps)
        torch.testing.assert_close(result.images[1], plain, rtol=1e-4, atol=1e-4)
        assert (result.images[0] - result.images[1]).abs().max() > 1e-3


@pytest.mark.parametrize("mode, space", [("additive", "x"), ("additive", "h"), ("guidance", "x")])
def test_the_edit_hook_at_strength_zero_changes_nothing(tiny, mode, space):
    """Not the shared unedited row (which never runs the hook): the mode's own hook, made
    for strength 0 and run in the sampling loop, gives the plain sample bit for bit; at
    strength 1 the same hook moves it (so the comparison can fail)."""
    ds = wb.discover("random", tiny, k=1, space=space, timestep=600)
    plan = MODES[mode](tiny, ds, 0)
    assert plan.zero_is_identity  # what lets edit() share the row: checked here
    grid = wb.make_timesteps(tiny, 10, include=plan.include)
    x, before = tiny.noise([0, 1]), tiny.micro_batch
    tiny.micro_batch = 1  # one sample per call: batch composition cannot enter
    try:
        plain = run_chain(tiny, x, grid)
        zero = run_chain(tiny, x, grid, edit=plan.make_hook(torch.zeros(2)))
        one = run_chain(tiny, x, grid, edit=plan.make_hook(torch.ones(2)))
    finally:
        tiny.micro_batch = before
    assert torch.equal(zero, plain)
    assert (one - plain).abs().max() > 1e-3


def test_x_edit_moves_x_t_by_exactly_strength_times_step(tiny):
    ds = wb.discover("random", tiny, k=2, space="x", timestep=600)
    plan = MODES["additive"](tiny, ds, 1)
    assert plan.include == [600]
    hook = plan.make_hook(torch.tensor([2.5, -1.0]))
    x = tiny.noise([0, 1])
    step = Step(index=0, t=600, t_next=500, x=x)
    hook(step)
    moved = (step.x - x).flatten(1)
    torch.testing.assert_close(moved.norm(dim=1), torch.tensor([2.5, 1.0]) * tiny.preset.x_step)
    cos = torch.nn.functional.cosine_similarity(moved[0], ds.vectors[1].flatten(), dim=0)
    assert cos > 0.9999
    other = Step(index=0, t=601, t_next=500, x=x)
    hook(other)
    assert torch.equal(other.x, x)


def test_h_edit_touches_exactly_the_window(tiny):
    ds = wb.discover("random", tiny, k=1, space="h", window=(800, 400))
    touched = []

    def spy(step):
        if step.delta_h is not None:
            touched.append(step.t)
            assert abs(float(step.delta_h[0].norm()) - 1.5 * tiny.preset.h_step) < 1e-3
            assert step.asymmetric == tiny.preset.asymmetric

    plan = MODES["additive"](tiny, ds, 0)
    result = run_chain(
        tiny,
        tiny.noise([0]),
        wb.make_timesteps(tiny, 20),
        edit=[plan.make_hook(torch.tensor([1.5])), spy],
    )
    assert result.shape == (1, 3, 16, 16)
    grid = wb.make_timesteps(tiny, 20)
    assert touched == [t for t in grid if 400 <= t <= 800]


@pytest.mark.parametrize("space", ["x", "h"])
def test_shared_trunk_equals_unshared(tiny, space):
    """The edit runs the unedited trunk down to the edit once for every strength; each
    strength's whole chain run on its own from x_T, the mode's hook in the loop, gives the
    same images (and so does a smaller batch size)."""
    ds = wb.discover("random", tiny, k=1, space=space, timestep=500)
    strengths = [-1.0, 1.0]
    a = wb.edit(tiny, ds, 0, strengths, seeds=[0, 1, 2], num_steps=10, batch_size=256)
    b = wb.edit(tiny, ds, 0, strengths, seeds=[0, 1, 2], num_steps=10, batch_size=2)
    torch.testing.assert_close(a.images, b.images, rtol=1e-4, atol=1e-5)
    plan = MODES["additive"](tiny, ds, 0)
    for row, s in enumerate(strengths):
        hook = plan.make_hook(torch.full((3,), s))
        alone = run_chain(tiny, tiny.noise([0, 1, 2]), a.timesteps, edit=hook)
        torch.testing.assert_close(a.images[row], alone, rtol=1e-4, atol=1e-5)


def test_edit_from_given_latents(tiny):
    ds = wb.discover("random", tiny, k=1, space="h", timestep=300)
    x0 = wb.sample(tiny, seeds=[0], num_steps=10)
    x_t = wb.invert(tiny, x0, num_steps=10, t_stop=300)
    result = wb.edit(tiny, ds, 0, [0.0, 3.0], x=x_t, t_start=300, num_steps=10)
    assert result.seeds is None and result.images.shape == (2, 1, 3, 16, 16)
    assert result.timesteps[0] == 300


def test_edit_errors(tiny, other_tiny, tmp_path):
    ds = wb.discover("random", tiny, k=1)
    with pytest.raises(wb.WorkbenchError, match="unknown edit mode"):
        wb.edit(tiny, ds, 0, [1.0], seeds=[0], mode="nope")
    with pytest.raises(wb.WorkbenchError, match="index"):
        wb.edit(tiny, ds, 4, [1.0], seeds=[0])
    with pytest.raises(wb.FingerprintMismatch):
        wb.edit(other_tiny, ds, 0, [1.0], seeds=[0])
    with pytest.raises(wb.WorkbenchError, match="above the start"):
        wb.edit(tiny, ds, 0, [1.0], x=tiny.noise([0]), t_start=100)
    result = wb.edit(tiny, ds, 0, [0.0, 1.0], seeds=[4, 5], num_steps=5)
    path = result.save_npz(tmp_path / "e.npz")
    import numpy as np

    data = np.load(path)
    assert data["images"].shape == (2, 2, 16, 16, 3) and data["images"].dtype == np.uint8
    assert data["seeds"].tolist() == [4, 5] and data["strengths"].tolist() == [0.0, 1.0]


def test_stochastic_edits_are_seeded_and_share_noise_across_strengths(tiny):
    ds = wb.discover("random", tiny, k=1, space="x", timestep=500)
    a = wb.edit(tiny, ds, 0, [0.0, 0.0], seeds=[3, 4], num_steps=6, eta=1.0)
    b = wb.edit(tiny, ds, 0, [0.0, 0.0], seeds=[3, 4], num_steps=6, eta=1.0)
    assert torch.equal(a.images, b.images)
    torch.testing.assert_close(a.images[0], a.images[1])  # same seed, same noise
    assert (a.images[0, 0] - a.images[0, 1]).abs().max() > 1e-3


def test_quality_boosting_touches_only_the_last_steps(tiny):
    ds = wb.discover("random", tiny, k=1, space="x", timestep=500)
    plain = wb.edit(tiny, ds, 0, [1.0], seeds=[0, 1], num_steps=10)
    boosted = wb.edit(tiny, ds, 0, [1.0], seeds=[0, 1], num_steps=10, boost=0.2)
    again = wb.edit(tiny, ds, 0, [1.0], seeds=[0, 1], num_steps=10, boost=0.2)
    assert torch.equal(boosted.images, again.images)
    assert (boosted.images - plain.images).abs().max() > 1e-4
    from workbench.editing import quality_boost

    grid = plain.timesteps
    seen = []
    run_chain(
        tiny,
        tiny.noise([0]),
        grid,
        edit=quality_boost(grid, 0.2),
        callback=lambda s: seen.append(s.eta),
    )
    assert seen == [0.0] * 8 + [1.0] * 2
    with pytest.raises(wb.WorkbenchError, match="boost"):
        wb.edit(tiny, ds, 0, [1.0], seeds=[0], boost=1.5)
