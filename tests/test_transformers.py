"""Diffusion transformers and flow matching: DiT (class-conditional, learned sigma, DDIM)
and Stable Diffusion 3 (MMDiT joint attention, rectified flow) on tiny folders built from
configs in ``tests/tiny_dit.py`` and loaded as a Hub id would be."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_dit
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from family_checks import ENGINES, labelled_boundary, probes, write_images
from jacobian_check import assert_basis_matches_jacobian

import workbench as wb
from workbench.engines.attention import default_module
from workbench.models.schedule import FlowSchedule
from workbench.sampling import make_timesteps, run_chain


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dit") / "tiny-dit"
    return folder, tiny_dit.build_dit(folder)


@pytest.fixture(scope="module")
def dit(dit_folder):
    return wb.load(dit_folder[0], device="cpu")


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd3") / "tiny-sd3"
    return folder, tiny_dit.build_sd3(folder)


@pytest.fixture(scope="module")
def sd3(sd3_folder):
    return wb.load(sd3_folder[0], device="cpu")


@pytest.fixture(scope="module")
def bare_sd3_folder(tmp_path_factory):
    """SD3 without text encoders: it runs on zero or given prompt embeddings."""
    folder = tmp_path_factory.mktemp("sd3-bare") / "tiny-sd3"
    return folder, tiny_dit.build_sd3(folder, seed=1, text=False)


def _in_unit(images: torch.Tensor) -> torch.Tensor:
    return (images / 2 + 0.5).clamp(0, 1)


# ---------------------------------------------------------------------- loading
def test_the_folders_load_with_their_parts(dit, sd3, dit_folder, sd3_folder):
    assert dit.family == "dit" and dit.latent and dit.class_conditional and not dit.conditional
    assert set(dit.components()) == {"transformer", "vae"} and dit.num_classes == 1000
    assert dit.h_points() == ["block.0", "block.1", "block.2", "block.3"]
    assert dit.h_point == "block.2" and dit.h_shape == (16, 4, 4)  # [C, H/p, W/p]
    assert "class-conditional" in repr(dit)
    assert sd3.family == "sd3" and sd3.conditional and sd3.prediction_type == "flow"
    assert isinstance(sd3.schedule, FlowSchedule) and sd3.schedule.shift == 3.0
    assert set(sd3.components()) == {"transformer", "vae", "text_encoder", "text_encoder_2"}
    assert sd3.h_points() == ["block.0", "block.1", "block.2"] and sd3.h_point == "block.1"
    for model, folder in ((dit, dit_folder), (sd3, sd3_folder)):
        assert wb.load(folder[0], device="cpu").fingerprint == model.fingerprint


def test_save_and_load_round_trip(sd3, dit, tmp_path):
    for model in (dit, sd3):
        wb.save(model, tmp_path / model.family)
        copy = wb.load(tmp_path / model.family, device="cpu")
        assert copy.fingerprint == model.fingerprint
        cond = {"class_label": 5} if model is dit else {"prompt": "a red square"}
        x_T = model.noise([3])
        one = wb.sample(model, x_T=x_T, num_steps=3, **cond)
        assert torch.equal(one, wb.sample(copy, x_T=x_T, num_steps=3, **cond))


# ---------------------------------------------------------------------- fidelity
@pytest.mark.parametrize("label, scale", [(3, 4.0), (7, 1.0)], ids=["cfg", "no-cfg"])
def test_dit_sampling_equals_the_diffusers_pipeline(dit, dit_folder, label, scale):
    """DiTPipeline (DDIM) and ``wb.sample`` from the pipeline's own noise draw, same class,
    steps and guidance: images in [0, 1] within 1e-3."""
    pipe = dit_folder[1]
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn((2, *dit.sample_shape), generator=gen)
    ref = pipe(
        class_labels=[label] * 2,
        guidance_scale=scale,
        num_inference_steps=8,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    images = wb.sample(dit, x_T=x_T, num_steps=8, class_label=label, guidance_scale=scale)
    assert float((_in_unit(images) - ref).abs().max()) < 1e-3
    other = wb.sample(dit, x_T=x_T, num_steps=8, class_label=label + 1, guidance_scale=scale)
    assert float((other - images).abs().max()) > 1e-2  # the label matters


@pytest.mark.parametrize(
    "options",
    [
        {"prompt": "a red square", "guidance_scale": 3.0},
        {"prompt": "a red square", "guidance_scale": 1.0},
        {"prompt": "a blue circle", "negative_prompt": "red", "guidance_scale": 5.0},
    ],
    ids=["cfg", "prompt", "negative"],
)
def test_sd3_sampling_equals_the_diffusers_pipeline(sd3, sd3_folder, options):
    """StableDiffusion3Pipeline (flow-matching Euler, shift 3) and ``wb.sample`` for the
    same latents, prompt, steps and guidance: latents within 1e-4, images within 1e-3."""
    pipe = sd3_folder[1]
    x_T = sd3.noise([0, 1])
    batch = {k: [v] * 2 if isinstance(v, str) else v for k, v in options.items()}
    common = {"latents": x_T, "num_inference_steps": 6, "height": 16, "width": 16}
    ref = pipe(output_type="pt", **common, **batch).images
    ref_latents = pipe(output_type="latent", **common, **batch).images
    latents = wb.sample(sd3, x_T=x_T, num_steps=6, decode=False, **options)
    assert float((latents - ref_latents).abs().max()) < 1e-4
    images = wb.sample(sd3, x_T=x_T, num_steps=6, **options)
    assert float((_in_unit(images) - ref).abs().max()) < 1e-3


def test_sd3_without_text_encoders_runs_on_zero_or_given_embeddings(bare_sd3_folder):
    folder, pipe = bare_sd3_folder
    model = wb.load(folder, device="cpu")
    assert not model.conditional and set(model.components()) == {"transformer", "vae"}
    zeros = model.zero_prompt()
    x_T = model.noise([0])
    common = {"latents": x_T, "num_inference_steps": 5, "height": 16, "width": 16}
    ref = pipe(
        prompt_embeds=zeros["encoder_hidden_states"],
        pooled_prompt_embeds=zeros["pooled_projections"],
        guidance_scale=1.0,
        output_type="latent",
        **common,
    ).images
    assert float((wb.sample(model, x_T=x_T, num_steps=5, decode=False) - ref).abs().max()) < 1e-4
    gen = torch.Generator().manual_seed(2)
    given = {k: torch.randn(v.shape, generator=gen) for k, v in zeros.items()}
    ref = pipe(
        prompt_embeds=given["encoder_hidden_states"],
        pooled_prompt_embeds=given["pooled_projections"],
        negative_prompt_embeds=zeros["encoder_hidden_states"],
        negative_pooled_prompt_embeds=zeros["pooled_projections"],
        guidance_scale=4.0,
        output_type="latent",
        **common,
    ).images
    with model.conditioned(prompt_embeds=given, guidance_scale=4.0):  # nests: wb.sample keeps it
        ours = wb.sample(model, x_T=x_T, num_steps=5, decode=False)
    assert float((ours - ref).abs().max()) < 1e-4
    with pytest.raises(wb.WorkbenchError, match="without its text encoders") as err:
        wb.sample(model, seeds=[0], num_steps=2, prompt="a red square")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- flow schedule
@pytest.mark.parametrize(
    "config",
    [
        {"shift": 3.0},
        {"shift": 1.0},
        {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15},
    ],
    ids=["shift3", "shift1", "dynamic"],
)
def test_the_flow_grid_and_step_are_diffusers(config):
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **config)
    schedule = FlowSchedule.from_scheduler(scheduler, image_seq_len=1024)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    v = torch.randn_like(x)
    for n in (1, 4, 28, 50):
        mu = schedule.mu if config.get("use_dynamic_shifting") else None
        scheduler.set_timesteps(n, mu=mu)
        grid = schedule.timesteps(n)
        assert grid[:-1] == scheduler.timesteps.tolist() and grid[-1] == -1
        for i, (t, t_next) in enumerate(zip(grid, grid[1:], strict=False)):
            ref = scheduler.step(v.float(), scheduler.timesteps[i], x.float()).prev_sample
            a, b = schedule.step_coefficients(t, t_next)
            assert float((a * x + b * v - ref.double()).abs().max()) < 1e-5
            pred = schedule.convert_at(v, x, t)  # x0 and eps give the same step
            assert torch.allclose(schedule.step_to(pred.x0, pred.eps, t_next), a * x + b * v)
    assert schedule.expected_square(1000, 0.3) == 1.0 and schedule.expected_square(-1, 0.3) == 0.3
    edit_grid = schedule.timesteps(10, t_start=600, include=[300])
    assert edit_grid[0] == 600 and 300 in edit_grid and len(edit_grid) == 11
    assert all(a > b for a, b in zip(edit_grid, edit_grid[1:], strict=False))


def test_flow_timesteps_are_checked_in_one_line(sd3):
    for bad, match in ((1001, r"out of range \(\[0, 1000\]\)"), ("x", "must be a number")):
        with pytest.raises(wb.WorkbenchError, match=match) as err:
            sd3.h(sd3.noise([0]), bad)
        assert "\n" not in str(err.value)
    with pytest.raises(wb.WorkbenchError, match="deterministically: eta must be 0"):
        wb.sample(sd3, seeds=[0], num_steps=2, eta=0.5)
    assert sd3.h(sd3.noise([0]), 437.5).shape == (1, *sd3.h_shape)  # real timesteps


def test_inversion_then_sampling_reconstructs_the_latent(sd3, dit):
    """Euler (flow) and DDIM (DiT) inversion then sampling on one grid: the error shrinks
    as the grid refines (reported: relative error at 10 and 40 steps)."""
    for model, cond in ((sd3, {"prompt": "a red square"}), (dit, {"class_label": 3})):
        x0 = wb.sample(model, seeds=[4], num_steps=10, decode=False, guidance_scale=1.0, **cond)
        errors = []
        for n in (10, 40):
            with model.conditioned(guidance_scale=1.0, **cond):
                grid = make_timesteps(model, n)
                x_T = run_chain(model, x0, grid[::-1])
                again = run_chain(model, x_T, grid)
            errors.append(float((again - x0).norm() / x0.norm()))
        assert errors[1] < errors[0] and errors[1] < 0.05, (model.family, errors)


# ---------------------------------------------------------------------- h at the blocks
@pytest.mark.parametrize("which", ["dit", "sd3"])
def test_h_is_the_block_tokens_on_the_patch_grid(which, request):
    model = request.getfixturevalue(which)
    x, t = model.noise([0, 1]), 500
    seen = {}
    block = model.network.transformer_blocks[2]
    handle = block.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        model.raw(x, t)
    finally:
        handle.remove()
    tokens = seen["out"][1] if isinstance(seen["out"], tuple) else seen["out"]
    with model.h_at("block.2"):
        h = model.h(x, t)
        assert h.shape == (2, *model.h_shape) == (2, 16, 4, 4)
        # token (i, j) of the 4 x 4 patch grid is row-major index 4 i + j
        assert torch.equal(h[:, :, 1, 2], tokens[:, 6])
        delta = torch.zeros(16, 4, 4)
        assert torch.equal(model.raw(x, t, delta), model.raw(x, t))  # a zero edit is none
        delta[:, 1, 2] = 5.0
        assert not torch.equal(model.raw(x, t, delta), model.raw(x, t))
        with model.record_h() as recorded:
            model.raw(x, t)
        assert torch.equal(recorded[0], h)
    assert model.hook_count() == 0


@pytest.mark.parametrize("which", ["dit", "sd3"])
def test_the_jacobian_safe_attention_is_the_stock_one(which, request):
    model = request.getfixturevalue(which)
    x = model.noise([0, 1])
    cond = {"class_label": 2} if which == "dit" else {"prompt": "a red square"}
    with model.conditioned(guidance_scale=3.0, **cond):
        stock = model.raw(x, 700)
        with model.jacobian_safe():
            safe = model.raw(x, 700)
    assert float((stock - safe).abs().max()) < 1e-5
    assert model.hook_count() == 0


@pytest.mark.parametrize("which", ["dit", "sd3"])
def test_the_pullback_basis_matches_the_jacobian(which, request):
    """Jacobian of latent x_t -> h at the middle block under the conditioning: singular
    values within 1%, subspace within 1 degree."""
    folder = request.getfixturevalue(f"{which}_folder")[0]
    model = wb.load(folder, device="cpu", dtype=torch.float64)
    cond = {"class_label": 3} if which == "dit" else {"prompt": "a red square"}
    with model.conditioned(**cond):
        assert_basis_matches_jacobian(model, model.noise([0]), 601)


def test_the_attention_engine_reads_the_blocks_own_attention(dit, sd3):
    assert default_module(dit) == "transformer_blocks.2.attn1"
    assert default_module(sd3) == "transformer_blocks.1.attn"  # joint: image-stream weights
    ds = wb.discover("attention", sd3, k=3, matrix="ov")
    attn = sd3.network.transformer_blocks[1].attn
    w = (attn.to_out[0].weight @ attn.to_v.weight).double()
    u = torch.linalg.svd(w).U[:, :3].T.float()
    assert torch.allclose((ds.vectors * u).sum(1).abs(), torch.ones(3), atol=1e-4)
    with sd3.h_at("block.0"):
        assert default_module(sd3) == "transformer_blocks.0.attn"


# ---------------------------------------------------------------------- edits
@pytest.mark.parametrize("which", ["dit", "sd3"])
def test_the_strength_zero_row_is_plain_sampling(which, request):
    """Bit for bit, with the network run one sample at a time (``micro_batch``) so that
    batch composition cannot enter: an edit runs on the model's sampling grid (the DiT's
    DDIM config is "leading" spaced: 800, 600, ... for 5 steps), its edit timestep in
    place of the nearest grid point; an h edit over a window is ``wb.sample`` itself."""
    model = request.getfixturevalue(which)
    cond = {"class_label": 3} if which == "dit" else {"prompt": "a red square"}
    model.micro_batch = 1
    try:
        for space in ("h", "x"):
            ds = wb.discover("random", model, k=2, space=space)
            result = wb.edit(model, ds, 0, [0.0, 2.0], seeds=[0, 1], num_steps=5, **cond)
            include = [ds.timestep] if space == "x" else []
            grid = make_timesteps(model, 5, include=include)
            with model.conditioned(**cond):
                plain = model.decode(run_chain(model, model.noise([0, 1]), grid))
            assert torch.equal(result.images[0], plain), space
            assert not torch.equal(result.images[1], result.images[0]), space
            if space == "h":
                sampled = wb.sample(model, seeds=[0, 1], num_steps=5, **cond)
                assert torch.equal(result.images[0], sampled)
    finally:
        model.micro_batch = None


def test_class_labels_are_checked_in_one_line(dit, sd3):
    cases = [
        (dit, {"class_label": 1000}, r"class_label must be an integer in \[0, 999\]"),
        (dit, {"class_label": True}, "class_label must be a"),
        (dit, {"prompt": "a cat"}, "class-conditional: give class_label, not a prompt"),
        (dit, {"guidance_scale": 3.0}, "needs a class_label"),
        (sd3, {"class_label": 2}, "text-conditional: it takes a prompt, not class_label"),
    ]
    for model, options, match in cases:
        with pytest.raises(wb.WorkbenchError, match=match) as err:
            wb.sample(model, seeds=[0], num_steps=2, **options)
        assert "\n" not in str(err.value)
    with pytest.raises(wb.WorkbenchError, match="takes no prompt, negative_prompt, guidance"):
        wb.sample(wb.load("tiny-test", device="cpu"), seeds=[0], num_steps=2, class_label=1)


def test_the_cli_samples_with_a_class_label_and_a_prompt(dit_folder, sd3_folder, tmp_path):
    from workbench.cli import main

    out = tmp_path / "s.npz"
    dit_model = ("--model", str(dit_folder[0]), "--device", "cpu", "--num-steps", "3")
    assert (
        main(["sample", *dit_model, "--class-label", "3", "--seeds", "0-1", "--out", str(out)]) == 0
    )
    assert np.load(out)["images"].shape == (2, 16, 16, 3)
    model = ("--model", str(sd3_folder[0]), "--device", "cpu", "--num-steps", "3")
    prompt = ("--prompt", "a red square", "--guidance-scale", "2")
    d = str(tmp_path / "d.safetensors")
    assert (
        main(["discover", "pullback", *model, *prompt, "--k", "2", "--max-iter", "2", "--out", d])
        == 0
    )
    found = wb.DirectionSet.load(d)
    assert (
        found.params["h_point"] == "block.1"
        and found.params["conditioning"]["guidance_scale"] == 2.0
    )
    e = str(tmp_path / "e.npz")
    assert main(["edit", *model, *prompt, "--directions", d, "--seeds", "0", "--out", e]) == 0
    probe = ["probe", "curvedness", *model, *prompt, "--n", "1", "--points", "3"]
    assert (
        main([*probe, "--timesteps", "800", "--h-point", "block.0", "--out", str(tmp_path / "p")])
        == 0
    )
    saved = json.loads((tmp_path / "p" / "curvedness.json").read_text())
    assert saved["h_point"] == "block.0"


# ---------------------------------------------------------------------- every engine, probe
@pytest.mark.parametrize("which", ["dit", "sd3"])
def test_every_engine_and_probe_runs(which, request, tmp_path):
    model = request.getfixturevalue(which)
    images, labelled = write_images(tmp_path, model.image_shape)
    cond = {"class_label": 3} if which == "dit" else {"prompt": "a red square"}
    cond["guidance_scale"] = 2.0
    assert set(ENGINES) | {"boundary"} == set(wb.ENGINES)
    for name, options in ENGINES.items():
        ds = wb.discover(name, model, k=2, **cond, **options)
        assert ds.params["conditioning"]["guidance_scale"] == 2.0, name
        result = wb.edit(model, ds, 0, [-1.0, 1.0], seeds=[0], num_steps=4, **cond)
        assert result.images.shape == (2, 1, 3, 16, 16), name
    assert set(probes(images)) == set(wb.PROBES)
    for name, options in probes(images).items():
        result = wb.probe(name, model, num_steps=4, progress=False, **cond, **options)
        assert result.to_dict()["conditioning"]["guidance_scale"] == 2.0, name
    ds = labelled_boundary(model, labelled, "h")
    assert ds.shape == model.h_shape and float(ds.scores[0]) >= 0.9  # held-out accuracy


@pytest.mark.parametrize("which, cond", [("dit", {"class_label": 3}), ("sd3", {"prompt": "a"})])
def test_the_default_guidance_is_the_family_pipelines(which, cond, request):
    """No guidance_scale given: a prompt or class is guided at the scale the family's
    diffusers pipeline uses by default (its ``__call__`` signature), and the sample is the
    one guided at that scale given explicitly; without a prompt or class, unguided."""
    import inspect

    import diffusers

    model = request.getfixturevalue(which)
    pipeline = getattr(diffusers, model.arch.pipeline)
    expected = inspect.signature(pipeline.__call__).parameters["guidance_scale"].default
    with model.conditioned(**cond) as conditioning:
        assert conditioning.guidance_scale == expected > 1 and conditioning.guided
    default = wb.sample(model, seeds=[0], num_steps=3, **cond)
    explicit = wb.sample(model, seeds=[0], num_steps=3, guidance_scale=expected, **cond)
    unguided = wb.sample(model, seeds=[0], num_steps=3, guidance_scale=1.0, **cond)
    assert torch.equal(default, explicit) and not torch.equal(default, unguided)
    with model.conditioned() as bare:
        assert bare is None or not bare.guided


def test_micro_batches_cover_the_doubled_guidance_batch(dit):
    """With guidance every call runs the conditional and unconditional halves together
    (twice the batch); ``micro_batch = 1`` still makes each sample's result independent
    of the others in the batch, bit for bit, and within float rounding of one call."""
    cond = {"class_label": 3, "num_steps": 3, "decode": False}  # the network's part only
    dit.micro_batch = 1
    try:
        both = wb.sample(dit, seeds=[0, 1, 2], **cond)
        alone = wb.sample(dit, seeds=[1], **cond)
    finally:
        dit.micro_batch = None
    assert torch.equal(both[1:2], alone)
    torch.testing.assert_close(wb.sample(dit, seeds=[0, 1, 2], **cond), both, rtol=0, atol=1e-4)


def test_the_explorer_edits_a_class_conditional_model_under_its_class(dit, tmp_path):
    """The explorer's samples and slider edits are the class-guided ones: what wb.sample
    and wb.edit give with the same class label."""
    from workbench.viz import Explorer

    explorer = Explorer(dit, engine="random", k=1, seeds=[0, 1], num_steps=3,
                        library=tmp_path, class_label=3, threads=0)  # fmt: skip
    guided = wb.sample(dit, seeds=[0, 1], num_steps=3, class_label=3)
    assert torch.equal(explorer._originals[(0, 1)], guided)
    explorer.sliders[0].value = 2.0
    edited = wb.edit(dit, explorer.directions, 0, [2.0], seeds=[0, 1], num_steps=3, class_label=3)
    assert torch.equal(explorer.result.images, edited.images)
    other = wb.edit(dit, explorer.directions, 0, [2.0], seeds=[0, 1], num_steps=3, class_label=4)
    assert not torch.equal(explorer.result.images, other.images)
