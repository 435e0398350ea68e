"""Latent text-to-image U-Nets (the Stable Diffusion layout) on a tiny folder built from
configs in ``tests/tiny_sd.py`` and loaded as a Hub id would be."""

from __future__ import annotations

import json

import pytest
import tiny_sd
import torch
from jacobian_check import assert_basis_matches_jacobian

import workbench as wb

PROMPTS = [
    {"prompt": "a red square", "guidance_scale": 7.5},
    {"prompt": "a red square", "guidance_scale": 1.0},
    {"prompt": "", "guidance_scale": 1.0},
    {"prompt": "a blue circle", "negative_prompt": "red", "guidance_scale": 5.0},
]


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd") / "tiny-sd"
    pipe = tiny_sd.build(folder)
    return folder, pipe


@pytest.fixture(scope="module")
def sd(sd_folder):
    return wb.load(sd_folder[0], device="cpu")


def test_a_stable_diffusion_folder_loads_with_its_parts(sd, sd_folder):
    assert sd.latent and sd.conditional
    assert sd.sample_shape == (4, 8, 8) and sd.image_shape == (3, 16, 16)
    assert sd.h_shape == (64, 4, 4)
    assert set(sd.components()) == {"unet", "vae", "text_encoder"}
    assert sd.schedule.timestep_spacing == "leading" and sd.schedule.steps_offset == 1
    assert sd.schedule.final_alpha_cumprod < 1  # set_alpha_to_one=False, as SD's config
    again = wb.load(sd_folder[0], device="cpu")
    assert again.fingerprint == sd.fingerprint
    assert "latent text-to-image" in repr(sd)


@pytest.mark.parametrize("options", PROMPTS, ids=["cfg", "prompt", "empty", "negative"])
def test_sampling_equals_the_diffusers_pipeline(sd, sd_folder, options):
    """Same latents, prompt, steps and guidance: diffusers' StableDiffusionPipeline with
    DDIMScheduler and ``wb.sample`` agree on the images in [0, 1] within 1e-3."""
    pipe = sd_folder[1]
    x_T = sd.noise([0, 1])
    batch = {k: [v] * 2 if isinstance(v, str) else v for k, v in options.items()}
    ref = pipe(latents=x_T, num_inference_steps=10, output_type="pt", **batch).images
    ref_latents = pipe(latents=x_T, num_inference_steps=10, output_type="latent", **batch).images
    latents = wb.sample(sd, x_T=x_T, num_steps=10, decode=False, **options)
    images = wb.sample(sd, x_T=x_T, num_steps=10, **options)
    assert images.shape == (2, 3, 16, 16)
    assert float((latents - ref_latents).abs().max()) < 1e-4
    assert float(((images / 2 + 0.5).clamp(0, 1) - ref).abs().max()) < 1e-3


def test_the_prompt_and_the_guidance_change_the_sample(sd):
    """The agreement above could not come from ignoring the conditioning."""
    x_T = sd.noise([0])
    runs = [wb.sample(sd, x_T=x_T, num_steps=10, decode=False, **o) for o in PROMPTS]
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            assert float((runs[i] - runs[j]).abs().max()) > 1e-2, (PROMPTS[i], PROMPTS[j])


def test_guidance_combines_the_two_halves(sd):
    x, t = sd.noise([0, 1]), 501
    with sd.conditioned(prompt="a red square", guidance_scale=1.0):
        cond = sd.raw(x, t)
    with sd.conditioned(prompt="a red square", negative_prompt="blue", guidance_scale=2.0):
        uncond_twin = sd.conditioning.uncond["encoder_hidden_states"]
        guided = sd.raw(x, t)
    with sd.conditioned(prompt="blue", guidance_scale=1.0):
        assert torch.equal(sd.conditioning.cond["encoder_hidden_states"], uncond_twin)
        uncond = sd.raw(x, t)
    assert torch.allclose(guided, uncond + 2.0 * (cond - uncond), atol=1e-5)


def test_h_is_the_prompted_mid_block_and_hooks_see_the_prompted_half(sd):
    x, t = sd.noise([0, 1, 2]), 701
    with sd.conditioned(prompt="a red square"):  # guided (7.5)
        h = sd.h(x, t)
        with sd.record_h() as seen:
            sd.raw(x, t)
    assert h.shape == (3, *sd.h_shape) and len(seen) == 1 and seen[0].shape == h.shape
    assert torch.allclose(seen[0], h, atol=1e-5)
    with sd.conditioned(prompt="a blue circle"):
        assert float((sd.h(x, t) - h).abs().max()) > 1e-3
    # a per-sample h edit reaches both halves of the guided batch
    delta = torch.randn(3, *sd.h_shape)
    with sd.conditioned(prompt="a red square"):
        edited = sd.raw(x, t, delta_h=delta)
        one = sd.raw(x[1:2], t, delta_h=delta[1:2])
    assert torch.allclose(edited[1:2], one, atol=1e-5)
    assert sd.hook_count() == 0


def test_no_hook_is_left_after_an_exception(sd):
    with pytest.raises(wb.WorkbenchError), sd.conditioned(prompt="a red square"):
        sd.h(torch.zeros(1, 3, 8, 8), 10)
    assert sd.hook_count() == 0 and sd._conditioning is None


def test_the_pullback_basis_matches_the_jacobian_under_the_prompt(sd_folder):
    """Jacobian of latent x_t -> h under the prompt's conditioning (h of the prompted
    branch: guidance does not enter h): singular values within 1%, subspace within 1°."""
    model = wb.load(sd_folder[0], device="cpu", dtype=torch.float64)
    x, t, k = model.noise([0]), 601, 3
    spectra = []
    for prompt in ["a red square", "a blue circle"]:
        with model.conditioned(prompt=prompt, guidance_scale=7.5):
            spectra.append(assert_basis_matches_jacobian(model, x, t, k))
    assert float((spectra[0] - spectra[1]).abs().max()) > 1e-3  # the prompt matters
    assert model.hook_count() == 0


def test_vae_round_trip_and_shapes(sd):
    latents = wb.sample(sd, seeds=[0, 1], num_steps=4, decode=False)
    images = sd.decode(latents)
    assert images.shape == (2, *sd.image_shape)
    again = sd.encode(images)
    assert again.shape == latents.shape and torch.isfinite(again).all()
    with pytest.raises(wb.WorkbenchError, match=r"images have shape \[2, 4, 8, 8\]"):
        sd.encode(latents)


def test_save_and_load_round_trip(sd, tmp_path):
    sd.preset = sd.preset.replace(x_step=7.0, mixing_step=301)
    try:
        wb.save(sd, tmp_path / "copy")
    finally:
        sd.preset = wb.Preset()
    copy = wb.load(tmp_path / "copy", device="cpu")
    assert copy.fingerprint == sd.fingerprint
    assert copy.preset.x_step == 7.0 and copy.preset.mixing_step == 301
    x_T = sd.noise([3])
    one = wb.sample(sd, x_T=x_T, num_steps=4, prompt="a red square")
    two = wb.sample(copy, x_T=x_T, num_steps=4, prompt="a red square")
    assert torch.equal(one, two)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"prompt": 3}, "prompt must be a string"),
        ({"guidance_scale": -1.0}, r"guidance_scale must be in \[0, 100\]"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        (
            {"prompt": "a", "negative_prompt": "b", "guidance_scale": 1.0},
            "needs guidance_scale > 1",
        ),
    ],
)
def test_bad_conditioning_is_refused_in_one_line(sd, options, match):
    with pytest.raises(wb.WorkbenchError, match=match) as err:
        wb.sample(sd, seeds=[0], num_steps=2, **options)
    assert "\n" not in str(err.value)


def test_an_unconditional_model_refuses_a_prompt(tiny):
    with pytest.raises(wb.WorkbenchError, match="unconditional: it takes no prompt"):
        wb.sample(tiny, seeds=[0], num_steps=2, prompt="a red square")
    with tiny.conditioned():  # nothing asked: nothing changes
        assert tiny.conditioning is None


def test_a_long_prompt_is_truncated_with_a_warning(sd):
    with pytest.warns(UserWarning, match="the text encoder sees the first 16"):
        sd.encode_prompt(" ".join(["red"] * 40))


def test_every_sampling_command_runs_on_the_folder(sd, sd_folder, tmp_path, capsys):
    """sample (images, and latents with --no-decode), discover, edit and probe on the
    Stable Diffusion folder, prompted."""
    import numpy as np

    from workbench.cli import main

    model = ("--model", str(sd_folder[0]), "--device", "cpu")
    prompt = ("--prompt", "a red square", "--guidance-scale", "3")
    steps = ("--num-steps", "4")
    assert (
        main(
            ["sample", *model, *prompt, *steps, "--seeds", "0-2", "--out", str(tmp_path / "s.npz")]
        )
        == 0
    )
    assert np.load(tmp_path / "s.npz")["images"].shape == (3, 16, 16, 3)
    raw = ["sample", *model, *prompt, *steps, "--seeds", "0-2", "--batch-size", "2"]
    assert main([*raw, "--no-decode", "--out", str(tmp_path / "l.npz")]) == 0
    latents = np.load(tmp_path / "l.npz")["latents"]  # the VAE latents, decoded to the images
    decoded = sd.to_uint8(sd.decode(torch.from_numpy(latents))).numpy()
    np.testing.assert_allclose(decoded, np.load(tmp_path / "s.npz")["images"], atol=1)
    d = str(tmp_path / "d.safetensors")
    assert main(["discover", "pullback", *model, *prompt, *steps, "--k", "2", "--out", d]) == 0
    found = wb.DirectionSet.load(d)
    assert found.params["conditioning"]["prompt"] == "a red square"
    out = str(tmp_path / "e.npz")
    assert (
        main(["edit", *model, *prompt, *steps, "--directions", d, "--seeds", "0", "--out", out])
        == 0
    )
    assert np.load(out)["images"].shape == (3, 1, 16, 16, 3)
    probe = ["probe", "spectrum", *model, *prompt, *steps, "--n", "1", "--k", "2"]
    assert main([*probe, "--h-point", "up.1", "--out", str(tmp_path / "p")]) == 0
    saved = json.loads((tmp_path / "p" / "spectrum.json").read_text())
    assert saved["h_point"] == "up.1" and saved["conditioning"]["guidance_scale"] == 3.0
    capsys.readouterr()
    bad = ["sample", *model, "--guidance-scale", "-1", "--out", str(tmp_path / "b.npz")]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "guidance_scale must be in [0, 100]" in err and "\n" not in err
    assert not (tmp_path / "b.npz").exists()


def test_a_prompt_to_an_unconditional_model_is_one_cli_line(tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "x.npz"
    args = ["sample", "--model", "tiny-test", "--device", "cpu", "--prompt", "a", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "unconditional: it takes no prompt" in err and "\n" not in err and not out.exists()


def test_a_boundary_from_labelled_folders_of_your_images(sd, tmp_path):
    """Labels from two folders of the user's images: VAE-encoded, inverted, fitted."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for cls, level in (("bright", 200), ("dark", 50)):
        (tmp_path / cls).mkdir()
        for i in range(12):
            noise = torch.randint(-30, 31, (16, 16, 3), generator=gen)
            pixels = (level + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    ds = wb.discover(
        "boundary",
        sd,
        labels=str(tmp_path),
        positive="bright",
        timestep=301,
        space="h",
        num_steps=4,
        prompt="a photo",
    )
    assert ds.space == "h" and ds.shape == sd.h_shape
    assert ds.params["attribute"] == "bright" and float(ds.scores[0]) >= 0.9  # held out
    assert ds.params["conditioning"]["prompt"] == "a photo"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 16 small RGB images (the user's own, for a latent model)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    gen = torch.Generator().manual_seed(1)
    for i in range(16):
        pixels = torch.randint(0, 256, (16, 16, 3), generator=gen, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{i:02d}.png")
    return folder


def test_every_engine_and_probe_runs_on_the_folder(sd, photos):
    """Each registered engine and probe end to end on the latent model, prompted; the
    probes that read real images take a folder of them (VAE-encoded, then inverted)."""
    prompt = {"prompt": "a red square", "guidance_scale": 2.0}
    engines = {
        "random": {"space": "h"},
        "attention": {},
        "pca": {"n": 4, "num_steps": 4, "progress": False},
        "pullback": {"num_steps": 4, "max_iter": 3},
    }
    for name, options in engines.items():
        ds = wb.discover(name, sd, k=2, **prompt, **options)
        assert ds.params["conditioning"]["guidance_scale"] == 2.0, name
        result = wb.edit(sd, ds, 0, [-1.0, 1.0], seeds=[0], num_steps=4, progress=False, **prompt)
        assert result.images.shape == (2, 1, 3, 16, 16), name
    probes = {
        "norm": {"n": 8, "images": str(photos)},
        "mixing-step": {"n": 8, "images": str(photos), "projections": 4},
        "curvedness": {"n": 2, "points": 3, "timesteps": [801, 401]},
        "spectrum": {"n": 1, "k": 2, "timesteps": [801], "hutchinson": 4},
        "consistency": {"n": 2, "k": 2, "timesteps": [801, 401]},
        "umap": {"n": 8, "timesteps": [801, 401], "umap_neighbors": 4, "neighbours_count": 3},
    }
    assert set(probes) == set(wb.PROBES)
    for name, options in probes.items():
        result = wb.probe(name, sd, num_steps=4, progress=False, **prompt, **options)
        assert result.to_dict()["conditioning"]["prompt"] == "a red square", name
    norm = wb.probe("norm", sd, n=8, images=str(photos), num_steps=4, progress=False)
    assert len(norm.expected) == len(norm.timesteps)
    assert sd.hook_count() == 0 and sd.h_point == "mid" and sd._conditioning is None


def test_ground_truth_tools_say_the_model_has_none(sd):
    from workbench.eval import sample_quality

    with pytest.raises(wb.WorkbenchError, match="no built-in scene with ground truth") as err:
        sample_quality(sd, n=2, num_steps=2)
    assert "\n" not in str(err.value)
    with pytest.raises(wb.WorkbenchError, match="no built-in scene with ground truth"):
        wb.discover("boundary", sd, num_steps=2, timestep=301)  # no labels= given
    with pytest.raises(wb.WorkbenchError, match="no built-in scene with ground truth"):
        wb.probe("norm", sd, n=8, num_steps=2)  # no images= given


def test_the_library_and_the_explorer_work_on_the_folder(sd, tmp_path):
    from workbench.viz.explorer import Explorer

    explorer = Explorer(
        sd,
        engine="random",
        k=2,
        seeds=[0, 1],
        num_steps=3,
        options={"space": "h"},
        library=tmp_path / "lib",
        prompt="a red square",
        guidance_scale=2.0,
    )
    assert explorer.directions.params["conditioning"]["prompt"] == "a red square"
    explorer.set_strengths([2.0, 0.0])
    assert explorer.result.conditioning["guidance_scale"] == 2.0
    assert explorer.image.shape[-1] == 3 and explorer.image.shape[1] >= 2 * 16 * 4  # 16 px x4
    explorer.save_direction("red-h")  # saved with its prompt, applied again under it
    named = wb.DirectionLibrary(tmp_path / "lib").load("red-h", sd)
    again = named.apply(sd, seeds=[0, 1])
    assert torch.equal(again.images[0], explorer.result.images[0])
    assert again.conditioning["prompt"] == "a red square"
    explorer.prompt_w.value = "a blue circle"  # a new prompt: new samples and directions
    assert explorer.directions.params["conditioning"]["prompt"] == "a blue circle"
    assert sd.hook_count() == 0


# ---------------------------------------------------------------------- SDXL
@pytest.fixture(scope="module")
def xl_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl") / "tiny-sdxl"
    return folder, tiny_sd.build_xl(folder)


@pytest.fixture(scope="module")
def xl(xl_folder):
    return wb.load(xl_folder[0], device="cpu")


@pytest.mark.parametrize(
    "options",
    [
        {"prompt": "a red square", "guidance_scale": 5.0},
        {"prompt": "a red square", "guidance_scale": 1.0},
        {"prompt": "a blue circle", "negative_prompt": "red", "guidance_scale": 4.0},
    ],
    ids=["cfg-zero-negative", "prompt", "negative"],
)
def test_sdxl_sampling_equals_the_diffusers_pipeline(xl, xl_folder, options):
    """StableDiffusionXLPipeline (DDIM) and ``wb.sample``: two text encoders, the pooled
    and size conditions, zero negative embeddings without a negative prompt (the
    pipeline's ``force_zeros_for_empty_prompt``); latents within 1e-4, images within 1e-3."""
    pipe = xl_folder[1]
    assert xl.family == "sdxl" and set(xl.components()) == {
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
    }
    x_T = xl.noise([0, 1])
    batch = {k: [v] * 2 if isinstance(v, str) else v for k, v in options.items()}
    ref = pipe(latents=x_T, num_inference_steps=6, output_type="latent", **batch).images
    assert (
        float((wb.sample(xl, x_T=x_T, num_steps=6, decode=False, **options) - ref).abs().max())
        < 1e-4
    )
    ref = pipe(latents=x_T, num_inference_steps=6, output_type="pt", **batch).images
    images = wb.sample(xl, x_T=x_T, num_steps=6, **options)
    assert float(((images / 2 + 0.5).clamp(0, 1) - ref).abs().max()) < 1e-3


def test_sdxl_pullback_basis_and_engines(xl_folder, xl, tmp_path):
    model = wb.load(xl_folder[0], device="cpu", dtype=torch.float64)
    with model.conditioned(prompt="a red square"), model.h_at("up.0"):
        assert_basis_matches_jacobian(model, model.noise([0]), 601)
    prompt = {"prompt": "a red square", "guidance_scale": 3.0}
    engines = {"attention": {"h_point": "up.0"}, "pullback": {"max_iter": 2, "num_steps": 3}}
    for name, options in engines.items():
        ds = wb.discover(name, xl, k=2, **prompt, **options)
        result = wb.edit(xl, ds, 0, [-1.0, 1.0], seeds=[0], num_steps=3, **prompt)
        assert result.images.shape == (2, 1, 3, 16, 16) and torch.isfinite(result.images).all()
    probe = wb.probe("curvedness", xl, n=2, points=3, timesteps=[801], num_steps=3, **prompt)
    assert probe.to_dict()["conditioning"]["prompt"] == "a red square"
    assert xl.hook_count() == 0 and xl._conditioning is None
