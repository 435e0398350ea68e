import math

import pytest
import torch

import workbench as wb
from workbench.editing import MODES
from workbench.engines.boundary import (
    fit_boundary,
    shapes_labels,
    signed_distance,
    svm_normal,
)
from workbench.models.presets import Preset
from workbench.models.wrapper import IMAGE_OVERSHOOT
from workbench.probes.mixing import find_mixing_step
from workbench.sampling import Step, make_timesteps


def _separable(n=600, d=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    normal = torch.randn(d, generator=gen, dtype=torch.float64)
    normal /= normal.norm()
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z = z[(z @ normal + 0.2).abs() > 0.3]  # a clear margin around the boundary n.z = -0.2
    return z, (z @ normal + 0.2) > 0, normal


def test_svm_recovers_the_true_normal_and_offset():
    z, labels, normal = _separable()
    found, offset, _ = svm_normal(z, labels)
    assert float(found @ normal) > 0.95
    assert abs(offset - 0.2) < 0.1


def _boundary(model, t, seed=1):
    """A boundary at t fitted on synthetic latents labelled by a known hyperplane."""
    gen = torch.Generator().manual_seed(seed)
    normal = torch.randn(model.d, generator=gen)
    normal /= normal.norm()
    labels = torch.arange(160) % 2 == 0
    z = torch.randn(160, model.d, generator=gen) + 4 * (2 * labels[:, None].float() - 1) * normal
    latents = z.reshape(-1, *model.sample_shape)
    images = torch.zeros_like(latents)  # only their count matters when latents are given
    return fit_boundary(model, images, labels, t=t, latents=latents, attribute="toy")


def test_the_default_step_and_distances_come_from_the_preset():
    """Without t the fit lands on the preset's boundary step where it names one, else on
    its mixing step; an h boundary records distances to +-the preset's boundary_distance
    (an x boundary its own), which the command line's edit applies."""
    from workbench.editing import working_strengths

    base = wb.load("tiny-test", device="cpu")
    there = wb.load("tiny-test", device="cpu", preset=base.preset.replace(
        boundary_step=300, boundary_distance=1.5))  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2 == 0
    latents = torch.randn(40, *base.sample_shape, generator=gen)
    for model, t, d in ((base, 500, 0.3), (there, 300, 1.5)):
        fit = fit_boundary(model, torch.zeros_like(latents), labels, latents=latents)
        assert fit.t == fit.h.timestep == t
        assert fit.h.params["edit"]["strengths"] == [-d, -d / 2, 0.0, d / 2, d]
        assert fit.x.params["edit"]["strengths"] == [-4.0, -2.0, 0.0, 2.0, 4.0]
    edited = wb.edit(there, fit.h, 0, working_strengths(fit.h), seeds=[0], num_steps=4)
    assert edited.mode == "distance" and edited.strengths == [-1.5, -0.75, 0.0, 0.75, 1.5]


def test_fit_boundary_on_given_latents(tiny):
    fit = _boundary(tiny, 500)
    assert fit.x.space == "x" and fit.h.space == "h" and fit.t == 500
    assert fit.accuracy["x"]["train"] == 1.0 and fit.accuracy["x"]["test"] > 0.95
    assert fit.n_train + fit.n_test == 160 and abs(fit.n_train - fit.n_test) <= 2
    flat = fit.x.vectors.flatten(1)
    assert abs(float(flat.norm()) - 1.0) < 1e-5
    assert "offsets" in fit.x.params and "test" in fit.summary()


def test_distance_edit_lands_at_the_distance_and_touches_one_step(tiny):
    fit = _boundary(tiny, 500)
    strengths = torch.tensor([-1.0, 0.0, 2.0])
    x = tiny.noise([0, 1, 2])
    plan = MODES["distance"](tiny, fit.x, 0, h=fit.h)
    hook = plan.make_hook(strengths)
    grid = make_timesteps(tiny, 10, include=plan.include)
    touched = []
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
        step = Step(index=i, t=t, t_next=t_next, x=x.clone())
        hook(step)
        if step.delta_h is not None or not torch.equal(step.x, x):
            touched.append(t)
        if t == 500:
            got = signed_distance(fit.x, step.x)
            torch.testing.assert_close(got, strengths.double() * tiny.preset.x_step)
            with torch.no_grad():
                h_after = tiny.h(step.x, t) + step.delta_h
            torch.testing.assert_close(
                signed_distance(fit.h, h_after),
                strengths.double() * tiny.preset.h_step,
                rtol=1e-4,
                atol=1e-4,
            )
    assert touched == [500]  # x and h are edited at the boundary's step only
    out = wb.edit(tiny, fit.x, 0, [-1, 1], seeds=[0], t_start=999, num_steps=6, mode="distance")
    assert out.images.shape == (2, 1, *tiny.sample_shape) and 500 in out.timesteps


def test_h_distance_reached_by_moving_x(tiny):
    """via_x: Newton steps in x_t bring the h distance to the target, and h itself is not
    edited (no delta_h): the edit reaches the decoder through x_t alone."""
    fit = _boundary(tiny, 500)
    strengths = torch.tensor([-0.5, 0.0, 0.5])
    x = tiny.noise([0, 1, 2])
    with torch.no_grad():
        before = signed_distance(fit.h, tiny.h(x, 500))
    plan = MODES["distance"](tiny, fit.h, 0, via_x=True, iterations=5)
    step = Step(index=0, t=500, t_next=400, x=x.clone())
    plan.make_hook(strengths)(step)
    assert step.delta_h is None
    with torch.no_grad():
        after = signed_distance(fit.h, tiny.h(step.x, 500))
    target = strengths.double() * tiny.preset.h_step
    assert (before - target).abs().min() > 0.05  # there was somewhere to go
    torch.testing.assert_close(after, target, rtol=1e-3, atol=1e-3)
    untouched = Step(index=0, t=999, t_next=900, x=x.clone())
    plan.make_hook(strengths)(untouched)
    assert torch.equal(untouched.x, x)
    with pytest.raises(wb.WorkbenchError, match="via_x edits take one h-space boundary"):
        MODES["distance"](tiny, fit.x, 0, via_x=True)
    out = wb.edit(tiny, fit.h, 0, [-0.5, 0.5], seeds=[0], num_steps=6, mode="distance", via_x=True)
    assert out.images.shape == (2, 1, *tiny.sample_shape)


def test_bad_labels_and_missing_step(tiny):
    images = torch.zeros(10, *tiny.sample_shape)
    with pytest.raises(wb.WorkbenchError, match="one class only"):
        fit_boundary(tiny, images, torch.ones(10, dtype=torch.bool), t=500, latents=images)
    with pytest.raises(wb.WorkbenchError, match="got 9 labels for 10 images"):
        fit_boundary(tiny, images, torch.arange(9) % 2 == 0, t=500, latents=images)
    with pytest.raises(wb.WorkbenchError, match="space"):
        fit_boundary(tiny, images, torch.arange(10) % 2 == 0, t=500, space="z")
    unmeasured = wb.load("tiny-test", device="cpu", preset=Preset(mixing_step=None))
    with pytest.raises(wb.WorkbenchError, match="no mixing step"):
        fit_boundary(unmeasured, images, torch.arange(10) % 2 == 0)
    with pytest.raises(wb.WorkbenchError, match="unknown attribute"):
        shapes_labels(images, "happy")


def test_shapes_labels_follow_the_factors():
    from workbench.data.shapes import generate

    images, factors = generate(64, seed=3)
    labels, valid = shapes_labels(images, "right")
    assert valid.all() and torch.equal(labels, factors.x > 16)
    labels, _ = shapes_labels(images, "square")
    assert torch.equal(labels, factors.shape == 1)


def test_lit_shapes_labels_and_the_engine_follow_the_models_scene(shapes64, shapes32):
    """Lit Shapes is read by its own read-out and adds the light's side; the engine labels
    a model's reference images by its scene's attributes."""
    from workbench.data.lit import generate_lit

    images, factors = generate_lit(48, seed=3)
    labels, valid = shapes_labels(images, "light-left", "lit-shapes")
    truth = torch.cos(2 * math.pi * factors.light) < 0  # light from the left half
    assert valid.all() and torch.equal(labels, truth)
    labels, _ = shapes_labels(images, "right", "lit-shapes")
    assert torch.equal(labels, factors.x > 32)
    with pytest.raises(wb.WorkbenchError, match="unknown attribute 'light-left' of the shapes"):
        shapes_labels(images, "light-left")
    with pytest.raises(wb.WorkbenchError, match="scene 'none' has no attributes"):
        shapes_labels(images, "large", "none")
    with pytest.raises(wb.WorkbenchError, match="light-left"):
        wb.discover("boundary", shapes32, attribute="light-left", images=16, num_steps=2)
    ds = wb.discover(
        "boundary", shapes64, attribute="light-left", images=24, num_steps=3, timestep=19
    )
    assert ds.labels == ["light-left@h19"] and ds.shape == shapes64.h_shape  # h by default


def test_mixing_step_search_reports_its_evidence(tiny):
    result = find_mixing_step(tiny, n=8, num_steps=5)
    assert len(result.timesteps) == len(result.ks) == len(result.sliced_ks) == 6
    assert result.tolerance == pytest.approx(1.358 * math.sqrt(2 / 8))
    # x_T ~ N(0, I): the sampled norms at T sit on the sqrt(d) shell
    assert abs(float(result.sampled[-1].mean()) - 1.0) < 0.05
    assert len(result.figure().data) >= 8 and "mixing step" in result.summary()


def test_mixing_step_follows_its_definition_and_the_data(tiny, monkeypatch):
    """The model's own samples invert back onto its sampled chain: agreement at every
    timestep, so the mixing step is the top of the grid; blank images invert off the shell:
    no agreement, no mixing step. Either way the step is the definition's (both statistics
    under the tolerance there and at every step below). The random model's samples lie
    further past [-1, 1] than the real-image check allows (asserted): they are passed as
    they are, not through that check, which would refuse them."""
    from workbench.stats import last_agreeing

    monkeypatch.setattr(tiny, "check_real_images", lambda images, name="images": images)
    own = wb.sample(tiny, seeds=range(100, 132), num_steps=5)
    assert float(own.abs().max()) > IMAGE_OVERSHOOT
    found = find_mixing_step(tiny, n=32, num_steps=5, images=own)
    blank = find_mixing_step(tiny, n=32, num_steps=5, images=torch.zeros(32, *tiny.sample_shape))
    for result in (found, blank):
        agree = [
            k <= result.tolerance and s <= result.tolerance
            for k, s in zip(result.ks, result.sliced_ks, strict=True)
        ]
        assert result.mixing_step == last_agreeing(result.timesteps, agree)
    assert found.mixing_step == max(found.timesteps)
    assert blank.mixing_step is None and min(blank.ks) == 1.0


def test_mixing_step_is_a_probe_of_the_cli(capsys, tmp_path):
    from workbench.cli import main

    code = main(
        [
            "probe",
            "mixing-step",
            "--model",
            "tiny-test",
            "--n",
            "8",
            "--num-steps",
            "4",
            "--out",
            str(tmp_path / "p"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in (tmp_path / "p").iterdir()} == {"mixing-step.json", "mixing-step.html"}


def test_via_x_holds_other_h_distances(tiny):
    """hold=: the target h distance is reached while another boundary's h distance stays
    where it was (it moves when not held)."""
    fit, other = _boundary(tiny, 500), _boundary(tiny, 500, seed=2)
    strengths = torch.tensor([-0.5, 0.5])
    x = tiny.noise([3, 4])
    with torch.no_grad():
        other_before = signed_distance(other.h, tiny.h(x, 500))
    moved = {}
    for name, hold in (("free", ()), ("held", (other.h,))):
        step = Step(index=0, t=500, t_next=400, x=x.clone())
        plan = MODES["distance"](tiny, fit.h, 0, via_x=True, iterations=5, hold=hold)
        plan.make_hook(strengths)(step)
        with torch.no_grad():
            h_after = tiny.h(step.x, 500)
        target = strengths.double() * tiny.preset.h_step
        torch.testing.assert_close(signed_distance(fit.h, h_after), target, rtol=1e-3, atol=1e-3)
        moved[name] = (signed_distance(other.h, h_after) - other_before).abs().max()
    assert moved["free"] > 0.01 and moved["held"] < 1e-3
    with pytest.raises(wb.WorkbenchError, match="hold= needs via_x"):
        MODES["distance"](tiny, fit.h, 0, hold=[other.h])
    with pytest.raises(wb.WorkbenchError, match="hold= takes one-direction h-space"):
        MODES["distance"](tiny, fit.h, 0, via_x=True, hold=[other.x])


def test_a_boundary_set_edits_as_its_working_edit_by_default(tiny):
    """Defaults that work: without ``mode`` a boundary set is edited as it records
    (distance; h through x_t with eta 1); given options win; other sets stay additive."""
    fit = _boundary(tiny, 500)
    h_edit = {k: v for k, v in fit.h.params["edit"].items() if k != "strengths"}
    assert h_edit == {"mode": "distance", "via_x": True, "eta": 1.0}
    assert fit.x.params["edit"]["mode"] == "distance"
    assert max(fit.h.params["edit"]["strengths"]) == 0.3  # the measured working distances
    common = dict(seeds=[0, 1], num_steps=6, progress=False)
    default = wb.edit(tiny, fit.h, 0, [-0.5, 0.5], **common)
    spelled = wb.edit(tiny, fit.h, 0, [-0.5, 0.5], mode="distance", via_x=True, eta=1.0, **common)
    assert default.mode == "distance" and torch.equal(default.images, spelled.images)
    additive = wb.edit(tiny, fit.h, 0, [-0.5, 0.5], mode="additive", **common)
    assert additive.mode == "additive" and not torch.equal(additive.images, default.images)
    randoms = wb.discover("random", tiny, k=1, space="h")
    assert wb.edit(tiny, randoms, 0, [1.0], **common).mode == "additive"


def test_distance_refuses_a_set_that_is_not_a_boundary(tiny):
    pca_like = wb.discover("random", tiny, k=1, space="x")
    with pytest.raises(wb.WorkbenchError, match="distance edits need a boundary .* got a random"):
        wb.edit(tiny, pca_like, 0, [1.0], seeds=[0], num_steps=4, mode="distance")


def test_the_unedited_reference_is_the_same_run_without_the_edit(tiny):
    """``unedited=True``: the sample on the same grid with the same step noise, unedited;
    an additive edit at strength 0 is exactly that, a distance edit at 0 is not."""
    fit = _boundary(tiny, 500)
    common = dict(seeds=[0, 1], num_steps=6, progress=False, eta=1.0)
    tiny.micro_batch = 1  # one sample per U-Net call: equal inputs give equal bits
    try:
        additive = wb.edit(tiny, fit.h, 0, [0.0, 2.0], mode="additive", unedited=True, **common)
        distance = wb.edit(tiny, fit.h, 0, [0.0, 0.3], unedited=True, **common)
        alone = wb.edit(tiny, fit.h, 0, [0.0, 0.3], **common)
    finally:
        tiny.micro_batch = None
    assert torch.equal(additive.unedited, additive.images[0])
    assert torch.equal(distance.unedited, additive.unedited)  # same grid, noise: no edit
    assert float((distance.images[0] - distance.unedited).abs().max()) > 1e-3
    assert torch.equal(alone.images, distance.images) and alone.unedited is None


def test_the_cli_edits_a_boundary_file_as_it_records(tiny, tmp_path, capsys):
    """``workbench edit`` on a boundary file, no --mode and no --strengths: the set's
    working edit at its working strengths."""
    import numpy as np

    from workbench.cli import main

    fit = _boundary(tiny, 500)
    fit.h.save(tmp_path / "b.safetensors")
    out = tmp_path / "e.npz"
    args = ["edit", "--model", "tiny-test", "--device", "cpu", "--seeds", "0", "--num-steps", "6"]
    assert main([*args, "--directions", str(tmp_path / "b.safetensors"), "--out", str(out)]) == 0
    saved = np.load(out)
    assert str(saved["mode"]) == "distance"
    assert np.allclose(saved["strengths"], fit.h.params["edit"]["strengths"])


@pytest.mark.parametrize(
    "name",  # shapes64's takes about 9 min on 2 cores: `long` (not in CI)
    [
        pytest.param("shapes32", marks=pytest.mark.slow),
        pytest.param("shapes64", marks=pytest.mark.long),
    ],
)
def test_the_cli_defaults_move_size_most_and_keep_the_images_valid(name, request, tmp_path, capsys):
    """``workbench discover boundary --attribute large --model M`` and then the edit
    ``workbench edit`` makes with no mode or strengths (the set's recorded working edit),
    scored with the read-out on 16 seeds: size is the factor it moves, at least twice as
    far as random x directions moved as far in x_t at the same step, and at least 90% of
    the edited images stay valid (one object the read-out can read). On both bundled
    models: shapes32 at its mixing step, shapes64 at its preset's boundary step."""
    from workbench.cli import main
    from workbench.engines.boundary import distance_move
    from workbench.eval import score_directions

    model = request.getfixturevalue(name)
    out = tmp_path / "large.safetensors"
    argv = ["discover", "boundary", "--attribute", "large", "--model", name]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0, capsys.readouterr().err
    ds = wb.DirectionSet.load(out, model=model)
    assert ds.timestep == (model.preset.boundary_step or model.preset.mixing_step)
    strengths = [s for s in ds.params["edit"]["strengths"] if s != 0]  # what edit applies
    seeds = range(16)
    scores = score_directions(model, ds, strengths=strengths, seeds=seeds, progress=False)
    assert scores.dominant[0] == "scale" and float(scores.validity[0]) >= 0.9, scores.table()
    move = float(distance_move(model, ds, [min(strengths), max(strengths)], seeds).mean())
    rnd = wb.discover("random", model, k=3, space="x", seed=3, timestep=ds.timestep)
    control = score_directions(
        model, rnd, strengths=[-move, move], seeds=seeds, mode="additive", progress=False
    )
    scale = scores.factors.index("scale")  # effects are per unit strength: times the largest
    size = float(scores.effect[0, scale]) * max(strengths)
    random_size = float(control.effect[:, scale].max()) * move
    assert size >= 2 * random_size, (scores.table(), control.table())
