"""The family conformance suite: one row per model family, the same checks for each.

Every row is a tiny folder of the family's own diffusers classes, built from a config in
the tests and saved with ``save_pretrained``, loaded by ``wb.load``. For each: sampling
equals the family's diffusers pipeline for the same latents and conditioning (with and
without guidance, empty prompt); ``wb.edit`` at strength 0 equals ``wb.sample`` bit for
bit; h is written and read back at every activation point; the Jacobian-safe attention
equals the stock one; the pullback basis at the default point matches the materialised
Jacobian; every engine and probe runs; no hook is left after an exception. The older
families (pixel U-Net, SD 1.x/2.x, SDXL, DiT, SD3) have these checks in test_models,
test_sd and test_transformers; the refusals of the families the workbench cannot run yet
are at the end. A new family is one file in workbench/models/families/ and one row of
:data:`ROWS`.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import edit_weights
from family_checks import ENGINES, labelled_boundary, probes, write_images
from jacobian_check import assert_basis_matches_jacobian
from tiny_families import (
    build_auraflow,
    build_chroma,
    build_flux,
    build_hunyuandit,
    build_kandinsky3,
    build_ldm,
    build_lumina2,
    build_pixart,
    build_sana,
)

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.models.families import FAMILIES, UNSUPPORTED

#: name -> (builder, builder kwargs, wb.load kwargs, pipeline call kwargs, conditionings:
#: each a dict of wb options and the pipeline's own defaults to pass to it)
ROWS = {
    "pixart": (
        build_pixart,
        {},
        {},
        {"use_resolution_binning": False},
        [
            ({"prompt": "a red square"}, {"guidance_scale": 4.5}),
            ({"prompt": "a red square", "guidance_scale": 2.0}, {}),
            ({"prompt": "a red square", "guidance_scale": 1.0}, {}),
            ({"prompt": "a red square", "negative_prompt": "blue", "guidance_scale": 3.0}, {}),
            ({"prompt": ""}, {"guidance_scale": 1.0}),
        ],
    ),
    "pixart-sigma": (
        build_pixart,
        {"sigma": True},
        {},
        {"use_resolution_binning": False},
        [
            ({"prompt": "a large circle"}, {"guidance_scale": 4.5}),
            ({"prompt": "a large circle", "guidance_scale": 1.0}, {}),
        ],
    ),
    "flux": (
        build_flux,
        {},
        {"resolution": 8},
        {"height": 8, "width": 8, "max_sequence_length": 32},
        [
            ({"prompt": "a red square"}, {"guidance_scale": 3.5}),
            ({"prompt": "a red square", "guidance_scale": 1.5}, {}),
            ({"prompt": ""}, {"guidance_scale": 3.5}),
        ],
    ),
    "flux-schnell": (
        build_flux,
        {"guidance": False},
        {"resolution": 8},
        {"height": 8, "width": 8, "max_sequence_length": 32},
        [({"prompt": "a red square"}, {}), ({"prompt": ""}, {})],
    ),
    "chroma": (
        build_chroma,
        {},
        {"resolution": 8},
        {"height": 8, "width": 8, "max_sequence_length": 32},
        [
            ({"prompt": "a red square"}, {"guidance_scale": 5.0}),
            ({"prompt": "a red square", "guidance_scale": 1.0}, {}),
            ({"prompt": "a red square", "negative_prompt": "blue", "guidance_scale": 3.0}, {}),
            ({"prompt": ""}, {"guidance_scale": 1.0}),
        ],
    ),
    "auraflow": (
        build_auraflow,
        {},
        {},
        {"height": 16, "width": 16, "max_sequence_length": 32},
        [
            ({"prompt": "a red square"}, {"guidance_scale": 3.5}),
            ({"prompt": "a red square", "guidance_scale": 1.0}, {}),
            ({"prompt": "a red square", "negative_prompt": "blue", "guidance_scale": 3.0}, {}),
            ({"prompt": ""}, {"guidance_scale": 1.0}),
        ],
    ),
    "ldm": (  # the pipeline takes a list of prompts, 8 px of height per latent position
        build_ldm,
        {},
        {},
        {"height": 64, "width": 64},
        [
            ({"prompt": "a red square"}, {}),
            ({"prompt": "a red square", "guidance_scale": 3.0}, {}),
            ({"prompt": ""}, {}),
        ],
    ),
    "sana": (
        build_sana,
        {},
        {},
        {"height": 32, "width": 32, "use_resolution_binning": False},
        [
            ({"prompt": "a red square"}, {"guidance_scale": 4.5}),
            ({"prompt": "a red square", "guidance_scale": 1.0}, {}),
            ({"prompt": "a red square", "negative_prompt": "blue", "guidance_scale": 3.0}, {}),
            ({"prompt": ""}, {"guidance_scale": 1.0}),  # an empty prompt: unguided by default
            ({"prompt": "", "guidance_scale": 4.5}, {}),  # its instruction vs a bare negative
        ],
    ),
    "lumina2": (
        build_lumina2,
        {},
        {},
        {"height": 16, "width": 16, "max_sequence_length": 48},
        [
            ({"prompt": "a red square"}, {"guidance_scale": 4.0}),
            ({"prompt": "a red square", "guidance_scale": 1.0}, {}),
            ({"prompt": "a red square", "negative_prompt": "blue", "guidance_scale": 3.0}, {}),
            ({"prompt": ""}, {"guidance_scale": 1.0}),
        ],
    ),
    "kandinsky3": (  # no sample_size in the U-Net config: loaded at 16 px
        build_kandinsky3,
        {},
        {"resolution": 16},
        {"height": 16, "width": 16},
        [
            ({"prompt": "a red square"}, {"guidance_scale": 3.0}),
            ({"prompt": "a red square", "guidance_scale": 1.0}, {}),
            ({"prompt": "a red square", "negative_prompt": "blue", "guidance_scale": 3.0}, {}),
            ({"prompt": ""}, {"guidance_scale": 1.0}),
        ],
    ),
    "hunyuandit": (
        build_hunyuandit,
        {},
        {},
        {"height": 64, "width": 64, "use_resolution_binning": False},
        [
            ({"prompt": "a red square"}, {"guidance_scale": 5.0}),
            ({"prompt": "a red square", "guidance_scale": 1.0}, {}),
            ({"prompt": "a red square", "negative_prompt": "blue", "guidance_scale": 3.0}, {}),
            ({"prompt": ""}, {"guidance_scale": 1.0}),
        ],
    ),
}
NAMES = list(ROWS)
#: The conditioning engines and probes run under, per row.
COND = {
    "pixart": {"prompt": "a red square", "guidance_scale": 2.0},
    "pixart-sigma": {"prompt": "a red square", "guidance_scale": 2.0},
    "flux": {"prompt": "a red square", "guidance_scale": 2.0},
    "flux-schnell": {"prompt": "a red square"},
    "chroma": {"prompt": "a red square", "guidance_scale": 2.0},
    "auraflow": {"prompt": "a red square", "guidance_scale": 2.0},
    "ldm": {"prompt": "a red square", "guidance_scale": 2.0},
    "sana": {"prompt": "a red square", "guidance_scale": 2.0},
    "lumina2": {"prompt": "a red square", "guidance_scale": 2.0},
    "kandinsky3": {"prompt": "a red square", "guidance_scale": 2.0},
    "hunyuandit": {"prompt": "a red square", "guidance_scale": 2.0},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (folder, pipeline), built once per module."""
    out = {}
    for name, (builder, kwargs, *_rest) in ROWS.items():
        folder = tmp_path_factory.mktemp(name) / name
        out[name] = (folder, builder(folder, **kwargs))
    return out


@pytest.fixture(scope="module")
def models(built):
    return {
        name: wb.load(built[name][0], device="cpu", **ROWS[name][2])
        for name in NAMES  # the load notice (no preset) is expected here
    }


def _pipeline_latents(name, pipe, x):
    """The pipeline's own latent layout for our x_T (FLUX packs 2 x 2 patches)."""
    if name.startswith(("flux", "chroma")):
        b, c, h, w = x.shape
        return pipe._pack_latents(x, b, c, h, w)
    return x


@pytest.mark.parametrize("name", NAMES)
def test_the_family_is_recognised_and_loads_its_parts(name, models):
    model = models[name]
    assert model.family == name.replace("-schnell", "") and model.conditional and model.latent
    assert model.hook_count() == 0
    assert set(model.components()) >= {model.arch.folder, "vae", "text_encoder"}
    assert model.arch.pipeline and model.arch.title in repr(model)


def _run_pipeline(name, pipe, x, ours, theirs, output_type):
    """The family's diffusers pipeline from our x_T, under our options and its own."""
    options = {**ours, **theirs, **ROWS[name][3]}
    if name == "ldm":  # LDMTextToImagePipeline: a list of prompts, no negative prompt
        options["prompt"] = [options["prompt"]] * x.shape[0]
    else:
        options["num_images_per_prompt"] = x.shape[0]
    latents = _pipeline_latents(name, pipe, x)
    out = pipe(num_inference_steps=4, latents=latents, output_type=output_type, **options).images
    if name == "kandinsky3" and output_type == "pt":  # its "pt" images are in [-1, 1]
        out = (out * 0.5 + 0.5).clamp(0, 1)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_sampling_equals_the_diffusers_pipeline(name, models, built):
    """Images within 1e-3 on [0, 1], latents within 1e-4 (where the pipeline returns
    them), for every conditioning."""
    model, pipe = models[name], built[name][1]
    seeds = [0, 1]
    for ours, theirs in ROWS[name][4]:
        x = model.noise(seeds)
        images = wb.sample(model, seeds=seeds, num_steps=4, **ours)
        out = _run_pipeline(name, pipe, x, ours, theirs, "pt")
        error = float((images.clamp(-1, 1) * 0.5 + 0.5 - out).abs().max())
        assert error <= 1e-3, (name, ours, error)
        if name == "ldm":  # its pipeline always decodes
            continue
        latents = _run_pipeline(name, pipe, x, ours, theirs, "latent")
        with model.conditioned(**ours):
            mine = wb.sampling.run_chain(model, x, wb.sampling.make_timesteps(model, 4))
        mine = _pipeline_latents(name, pipe, mine)
        assert float((mine - latents).abs().max()) <= 1e-4, (name, ours)
    assert model.hook_count() == 0


@pytest.mark.parametrize("name", NAMES)
def test_the_strength_zero_row_is_sample(name, models):
    """h edits over the window: the strength-0 row is ``wb.sample`` with the same settings,
    bit for bit; x edits at a timestep: the sample on the sampling grid with that timestep
    in place of its nearest point (``wb.sample`` itself where the timestep is on the grid:
    the DDIM rows; the flow rows' shifted grids are fractional, and an engine's timestep
    is an integer)."""
    model, cond = models[name], COND[name]
    model.micro_batch = 1
    try:
        sampled = wb.sample(model, seeds=[0, 1], num_steps=4, **cond)
        t = round(wb.sampling.make_timesteps(model, 4)[1])
        grid = wb.sampling.make_timesteps(model, 4, include=[t])
        with model.conditioned(**cond):
            on_grid = model.decode(wb.sampling.run_chain(model, model.noise([0, 1]), grid))
        if grid == wb.sampling.make_timesteps(model, 4):
            assert torch.equal(on_grid, sampled)
        for space, options, reference in (("h", {}, sampled), ("x", {"timestep": t}, on_grid)):
            ds = wb.discover("random", model, k=2, space=space, **options)
            result = wb.edit(model, ds, 0, [0.0, 2.0], seeds=[0, 1], num_steps=4, **cond)
            assert torch.equal(result.images[0], reference), space
            assert not torch.equal(result.images[1], reference), space
    finally:
        model.micro_batch = None


@pytest.mark.parametrize("name", NAMES)
def test_h_is_written_and_read_back_at_every_point(name, models):
    model = models[name]
    x = model.noise([0, 1])
    t = model.schedule.timesteps(4)[1]
    with model.conditioned(**COND[name]):
        plain = model.raw(x, t)
        for point in model.h_points():
            with model.h_at(point):
                h = model.h(x, t)
                assert h.shape == (2, *model.h_shape), point
                delta = torch.randn(h.shape, generator=torch.Generator().manual_seed(0))
                with model.h_edit(delta):
                    edited = model.h(x, t)
                assert torch.allclose(edited, h + delta, atol=1e-6), point
                assert torch.equal(model.raw(x, t, torch.zeros_like(h)), plain), point
                assert not torch.equal(model.raw(x, t, delta), plain), point
                with model.record_h() as seen:  # the guided batch's prompted half
                    model.raw(x, t)
                assert torch.allclose(seen[0], h, atol=1e-5), point  # another batch size
    assert model.hook_count() == 0


@pytest.mark.parametrize("name", NAMES)
def test_the_jacobian_safe_attention_is_the_stock_one(name, models):
    model = models[name]
    modules = model.attention_modules()
    own = [model.arch.self_attention(p) for p in model.h_points()]
    assert modules and set(own) - {None} <= set(modules) and any(own)
    x = model.noise([0, 1])
    with model.conditioned(**COND[name]):
        stock = model.raw(x, 700)
        with model.jacobian_safe():
            names = {type(m.processor).__name__ for m in modules.values()}
            # softmax attention made explicit, or the family's own kept (Sana's linear
            # attention; Lumina 2's, whose SDPA runs on the math backend here)
            kept = {type(model.arch.safe_processor(m)).__name__ for m in modules.values()}
            assert names == kept, names
            safe = model.raw(x, 700)
    assert float((stock - safe).abs().max()) < 1e-5
    assert all(not type(m.processor).__name__.startswith("JacobianSafe") for m in modules.values())


@pytest.mark.parametrize("name", NAMES)
def test_attention_in_blocks_of_queries_gives_the_same_products(name, models, monkeypatch):
    """With blocks of a few queries (a long sequence's case, forced on the tiny model), h
    and its forward- and reverse-mode products are those of the whole score matrix: in
    our processors and in the stock ones a family keeps (their SDPA); and those of the
    recomputing attention rule are those of plain AD through the matrix products."""
    from workbench.models import attention

    model = models[name]
    x = model.noise([0, 1])
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(x.shape, generator=gen)
    u = torch.randn(2, *model.h_shape, generator=gen)
    f = lambda z: model.h(z, 601)
    results, calls = [], []
    probabilities = attention._probabilities
    for block, recompute in ((attention.SCORE_BLOCK, True), (64, True), (64, False)):
        monkeypatch.setattr(attention, "SCORE_BLOCK", block)
        monkeypatch.setattr(attention, "RECOMPUTE", recompute)
        counted = []
        monkeypatch.setattr(
            attention, "_probabilities", lambda *a, c=counted: c.append(1) or probabilities(*a)
        )
        with model.conditioned(**COND[name]), model.jacobian_safe(), torch.enable_grad():
            h, jv = torch.func.jvp(f, (x,), (v,))
            _, vjp_fn = torch.func.vjp(f, x)
            results.append((h, jv, vjp_fn(u)[0]))
        calls.append(len(counted))
    if calls[0] == 0:  # Sana: linear attention, no softmax to take in blocks
        assert name == "sana", name
        pytest.skip(f"{name} has no softmax attention")
    assert calls[1] > calls[0], calls  # the blocks were used
    for other in results[1:]:
        for whole, blocked in zip(results[0], other, strict=True):
            scale = float(whole.abs().max())
            assert float((whole - blocked).abs().max()) <= 1e-5 * max(scale, 1.0), name


@pytest.mark.parametrize("name", NAMES)
def test_checkpointed_blocks_give_the_same_reverse_products(name, models):
    """With every block checkpointed (the forward pass keeps what each block is given and
    a reverse-mode pass runs the blocks again) J^T u of h and of x0 are those of keeping
    the whole forward pass, the forward pass keeps less, and no block's forward is left
    replaced."""
    from workbench.engines.pullback import _Products, target_map

    model = models[name]
    x = model.noise([0, 1])
    blocks = [model.arch.module(point) for point in model.h_points()]
    gen = torch.Generator().manual_seed(0)
    with model.conditioned(**COND[name]), model.jacobian_safe(), torch.enable_grad():
        for target in ("h", "x0"):
            f, shape = target_map(model, 601, target)
            u = torch.randn(2, math.prod(shape), 3, generator=gen)
            kept, pulled = [], []
            for on in (False, True):
                products = _Products(f, x, shape, torch.float32, None, False, blocks=blocks)
                products.checkpoint = on
                kept.append(products.start(count=True))
                pulled.append(products.reverse(u))
            assert kept[1] < kept[0], (target, kept)
            scale = float(pulled[0].abs().max())
            assert float((pulled[0] - pulled[1]).abs().max()) <= 1e-5 * max(scale, 1.0), target
    assert all("forward" not in block.__dict__ for block in blocks)


@pytest.mark.parametrize("name", NAMES)
def test_the_pullback_basis_matches_the_jacobian(name, built):
    model = wb.load(built[name][0], device="cpu", dtype=torch.float64, **ROWS[name][2])
    with model.conditioned(**COND[name]):
        assert_basis_matches_jacobian(model, model.noise([0]), 601)


@pytest.mark.parametrize("name", NAMES)
def test_no_hook_is_left_after_an_exception(name, models):
    model = models[name]

    def boom(module, args, output):
        raise RuntimeError("boom")

    handle = model.network.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with model.conditioned(**COND[name]), model.jacobian_safe():
                with model.h_edit(torch.zeros(model.h_shape)), model.record_h():
                    model.raw(model.noise([0]), 500)
    finally:
        handle.remove()
    assert model.hook_count() == 0 and model._conditioning is None


@pytest.mark.parametrize("name", NAMES)
def test_every_engine_and_probe_runs(name, models, tmp_path):
    model, cond = models[name], COND[name]
    images, labelled = write_images(tmp_path, model.image_shape)
    engines = dict(ENGINES)
    assert set(engines) | {"boundary"} == set(wb.ENGINES)
    with_attention = [p for p in model.h_points() if model.arch.self_attention(p)]
    if model.arch.self_attention(model.h_point) is None:  # Kandinsky 3: its up blocks'
        engines["attention"] = {"h_point": with_attention[0]}
    for engine, options in engines.items():
        ds = wb.discover(engine, model, k=2, **cond, **options)
        result = wb.edit(model, ds, 0, [-1.0, 1.0], seeds=[0], num_steps=4, **cond)
        assert result.images.shape == (2, 1, *model.image_shape), engine
        assert bool(torch.isfinite(result.images).all()), engine
    assert set(probes(images)) == set(wb.PROBES)
    for probe, options in probes(images).items():
        wb.probe(probe, model, num_steps=4, progress=False, **cond, **options)
    ds = labelled_boundary(model, labelled, "x")
    assert ds.shape == model.sample_shape


# ---------------------------------------------------------------------- guidance kinds
def test_guidance_distilled_and_unguided_families_say_what_guidance_means(models):
    dev, schnell = models["flux"], models["flux-schnell"]
    with dev.conditioned(prompt="a red square") as c:
        assert c.guidance_scale == 3.5 and not c.guided  # embedded, one batch
    with dev.conditioned() as c:  # unprompted: still the pipeline's embedded default
        assert c.guidance_scale == 3.5 and not c.guided
    x = dev.noise([0])
    with dev.conditioned(prompt="a red square", guidance_scale=1.0):
        low = dev.raw(x, 500)
    with dev.conditioned(prompt="a red square", guidance_scale=6.0):
        high = dev.raw(x, 500)
    assert not torch.equal(low, high)  # the guidance value reaches the network
    with pytest.raises(WorkbenchError, match="guidance-distilled.*negative_prompt"):
        with dev.conditioned(prompt="a", negative_prompt="b", guidance_scale=3.0):
            pass
    with pytest.raises(WorkbenchError, match="not guided"):
        with schnell.conditioned(prompt="a", guidance_scale=3.0):
            pass
    with schnell.conditioned(prompt="a red square") as c:
        assert c.guidance_scale == 1.0 and not c.guided


def test_flux_runs_at_the_resolution_it_is_loaded_with(built):
    folder = built["flux"][0]
    model = wb.load(folder, device="cpu", resolution=16)
    assert model.sample_shape == (1, 16, 16) and model.h_shape == (32, 8, 8)
    small = wb.load(folder, device="cpu", resolution=8)
    assert small.fingerprint != model.fingerprint  # cached results are per resolution
    assert small.schedule.mu != model.schedule.mu  # the shift depends on the token count
    with pytest.raises(WorkbenchError, match="resolution must be a positive multiple of 2"):
        wb.load(folder, device="cpu", resolution=9)
    default = wb.load(folder, device="cpu")  # the pipeline's 1024 px: 128 latent positions
    assert default.sample_shape == (1, 128, 128)


def test_a_saved_model_loads_as_the_same_family(models, tmp_path):
    """``wb.save`` writes the family's pipeline into model_index.json (and its own folder
    names: LDM's vqvae/ and bert/), so PixArt-Sigma and LDM come back as themselves."""
    for name in ("pixart-sigma", "ldm", "flux"):
        model = models[name]
        folder = wb.save(model, tmp_path / name)
        again = wb.load(folder, device="cpu", **ROWS[name][2])
        assert again.family == model.family and again.fingerprint == model.fingerprint, name
    assert (tmp_path / "ldm" / "vqvae").is_dir() and (tmp_path / "ldm" / "bert").is_dir()


def test_pixart_sigma_is_told_apart_by_its_pipeline(built, models):
    assert models["pixart-sigma"].arch.max_sequence_length == 300
    assert models["pixart"].arch.max_sequence_length == 120
    assert models["flux"].arch.text_length() == 32  # min(512, the tiny tokenizer's 32)
    index = json.loads((built["pixart-sigma"][0] / "model_index.json").read_text())
    assert index["_class_name"] == "PixArtSigmaPipeline"


# ---------------------------------------------------------------------- refusals
@pytest.mark.parametrize("pipeline", sorted(UNSUPPORTED))
def test_a_family_that_cannot_run_is_refused_in_one_line(pipeline, tmp_path, capsys):
    """Whatever the folder holds, a pipeline the workbench knows it cannot run is refused
    by name before anything loads; the CLI says it in one line, exit 2."""
    from workbench.cli import main

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    with pytest.raises(WorkbenchError, match=re.escape(pipeline)) as info:
        wb.load(folder, device="cpu")
    assert "\n" not in str(info.value)
    assert main(["sample", "--model", str(folder), "--seeds", "0", "--out", "x.npz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and pipeline in err


def test_a_consistency_sampler_is_refused_not_replaced_by_ddim(tmp_path):
    from diffusers import CMStochasticIterativeScheduler, UNet2DModel

    from workbench.models.configs import ARCHITECTURES

    folder = tmp_path / "cm"
    UNet2DModel(**ARCHITECTURES["tiny"]).save_pretrained(folder / "unet")
    CMStochasticIterativeScheduler().save_pretrained(folder / "scheduler")
    with pytest.raises(WorkbenchError, match="CMStochasticIterativeScheduler.*consistency"):
        wb.load(folder, device="cpu")


def test_an_lcm_unet_is_refused(tmp_path):
    import tiny_sd

    folder = tmp_path / "lcm"
    pipe = tiny_sd.build(folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["time_cond_proj_dim"] = 32
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    del pipe
    with pytest.raises(WorkbenchError, match="guidance-embedding"):
        wb.load(folder, device="cpu")


# ---------------------------------------------------------------------- one file per family
def test_no_family_branch_outside_the_families_folder():
    """Outside workbench/models/families/, no code names a family tag in a comparison or
    tests a network or schedule class: the family answers instead."""
    root = Path(wb.__file__).parent
    tags = {f.name for f in FAMILIES}
    network_classes = {f.network_class for f in FAMILIES}
    found = []
    for path in root.rglob("*.py"):
        if "families" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                names = [
                    n.value
                    for n in ast.walk(node)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                ]
                touches_family = any(
                    isinstance(n, ast.Attribute) and n.attr == "family" for n in ast.walk(node)
                )
                if touches_family or (set(names) & tags and "family" in ast.unparse(node)):
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                text = ast.unparse(node)
                if re.search(r"FlowSchedule|\bSchedule\b", text) or any(
                    c in text for c in network_classes
                ):
                    found.append(f"{path.name}:{node.lineno}: {text}")
    assert not found, found


def test_every_family_is_one_file_with_a_pipeline_and_a_title():
    folder = Path(wb.__file__).parent / "models" / "families"
    for family in FAMILIES:
        assert family.name and family.title and family.network_class, family
        module = family.__module__.rsplit(".", 1)[-1]
        assert (folder / f"{module}.py").is_file(), family
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_the_cli_samples_and_edits_every_family(name, built, tmp_path):
    import numpy as np

    from workbench.cli import main

    folder = str(built[name][0])
    small = name.startswith(("flux", "chroma"))
    size = (
        ["--resolution", "8"] if small else (["--resolution", "16"] if name == "kandinsky3" else [])
    )
    model = ["--model", folder, *size]
    prompt = ["--prompt", "a red square"]
    if name != "flux-schnell":
        prompt += ["--guidance-scale", "2"]
    out = tmp_path / "s.npz"
    argv = ["sample", *model, *prompt, "--seeds", "0-1", "--num-steps", "3", "--out", str(out)]
    assert main(argv) == 0
    images = np.load(out)["images"]
    side = 8 if small else {"sana": 32, "hunyuandit": 64}.get(name, 16)
    assert images.shape == (2, side, side, 3) and images.dtype == np.uint8
    d = str(tmp_path / "d.safetensors")
    assert main(["discover", "random", *model, *prompt, "--k", "2", "--out", d]) == 0
    e = str(tmp_path / "e.npz")
    edit = ["edit", *model, *prompt, "--directions", d, "--seeds", "0", "--num-steps", "3"]
    assert main([*edit, "--out", e]) == 0
    assert np.load(e)["images"].shape[1:] == (1, side, side, 3)


def test_a_dpm_solver_on_flow_sigmas_is_read_as_the_flow_euler_step(built, tmp_path):
    """Sana's released scheduler (DPM-Solver++ on flow sigmas) is sampled with the flow
    Euler step of the same shift, said once in one line."""
    import shutil

    from diffusers import DPMSolverMultistepScheduler

    folder = tmp_path / "sana-dpm"
    shutil.copytree(built["sana"][0], folder)
    shutil.rmtree(folder / "scheduler")
    DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0
    ).save_pretrained(folder / "scheduler")
    with pytest.warns(UserWarning, match="sampling with flow Euler .* DPMSolverMultistepScheduler"):
        model = wb.load(folder, device="cpu")
    assert model.prediction_type == "flow" and model.schedule.shift == 3.0
    assert bool(torch.isfinite(wb.sample(model, seeds=[0], num_steps=3, prompt="a")).all())


@pytest.mark.parametrize("name", ["pixart", "flux", "lumina2", "kandinsky3"])
def test_calibration_sweeps_and_the_explorer_run_on_the_family(name, models, tmp_path):
    """The tools above the engines: a calibration (steps, h reach), a sweep in shards,
    and the explorer with a prompt, whose slider edits the shown samples."""
    from workbench.store import Cache
    from workbench.viz.explorer import Explorer

    model, cond = models[name], COND[name]
    result = wb.calibrate(
        model, n=2, num_steps=5, mixing_n=0, reach_n=2, reach_steps=4, progress=False, **cond
    )
    assert result.preset["x_step"] > 0 and result.preset["h_step"] > 0
    swept = wb.sweep(
        "consistency",
        model,
        n=4,
        shard=2,
        backend="local",
        cache=Cache(tmp_path / "cache"),
        timesteps=[801],
        k=2,
        num_steps=4,
        progress=False,
        **cond,
    )
    assert swept.failures == [] and swept.computed == 2
    explorer = Explorer(
        model, engine="random", k=2, seeds=range(2), library=tmp_path, num_steps=4, **cond
    )
    before = explorer.image_w.value
    explorer.sliders[0].value = 3.0
    assert explorer.image_w.value != before
    assert model.hook_count() == 0


# ---------------------------------------------------------------------- strict weights
def test_a_text_encoder_missing_a_weight_is_refused_extra_ones_are_dropped(built, tmp_path):
    import shutil

    folder = tmp_path / "pixart"
    shutil.copytree(built["pixart"][0], folder)
    path = folder / "text_encoder" / "model.safetensors"
    edit_weights(path, lambda s: s.__setitem__("decoder.extra", torch.zeros(3)))
    assert wb.load(folder, device="cpu").family == "pixart"  # a checkpoint's unused head
    edit_weights(path, lambda s: s.pop("encoder.final_layer_norm.weight"))
    with pytest.raises(WorkbenchError, match="text_encoder: weights missing .*final_layer_norm"):
        wb.load(folder, device="cpu")


# ---------------------------------------------------------------------- the older families
@pytest.mark.parametrize("which", ["pixel", "sd", "sdxl"])
def test_strength_zero_is_sample_on_the_older_families(which, tmp_path):
    """The families whose strength-0 row differed from ``wb.sample`` before edits ran on
    the sampling grid (a "leading" SD config: 901, 801, ... for 10 steps; the issue
    measured up to 0.083 apart): h edits and x edits at an on-grid timestep now equal it
    bit for bit (SD and SDXL fail under the old grid; the trailing pixel model did not)."""
    import tiny_sd

    if which == "pixel":
        model, cond = wb.load("tiny-test", device="cpu"), {}
    else:
        (tiny_sd.build if which == "sd" else tiny_sd.build_xl)(tmp_path / which)
        model, cond = wb.load(tmp_path / which, device="cpu"), {"prompt": "a red square"}
    model.micro_batch = 1
    try:
        sampled = wb.sample(model, seeds=[0, 1], num_steps=10, **cond)
        t = wb.sampling.make_timesteps(model, 10)[2]
        for space, options in (("h", {}), ("x", {"timestep": t})):
            ds = wb.discover("random", model, k=2, space=space, **options)
            result = wb.edit(model, ds, 0, [0.0, 2.0], seeds=[0, 1], num_steps=10, **cond)
            assert torch.equal(result.images[0], sampled), space
            assert not torch.equal(result.images[1], sampled), space
    finally:
        model.micro_batch = None


def test_each_familys_default_guidance_is_its_pipelines():
    """The guidance scale a family uses when none is given is its diffusers pipeline's
    default (read from the pipeline's ``__call__`` signature)."""
    import inspect

    import diffusers

    from workbench.models.families import FAMILIES

    checked = 0
    for family in FAMILIES:
        if family.pipeline is None:
            continue
        call = inspect.signature(getattr(diffusers, family.pipeline).__call__)
        if "guidance_scale" in call.parameters:
            default = call.parameters["guidance_scale"].default
            assert family.default_guidance == default, family.__name__
            checked += 1
    assert checked >= 14
