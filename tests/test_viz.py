"""Figures for every result type and the ipywidgets explorer, driven from code."""

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.library import DirectionLibrary
from workbench.viz import Explorer, direction_grid, figure, image_figure, score_bars


def test_figures_for_each_result_type(tiny):
    dirs = wb.discover("pca", tiny, k=3, n=8, num_steps=5)
    result = wb.edit(tiny, dirs, 1, [-2, 0, 2, 4], seeds=[0, 1], num_steps=5)
    grid = direction_grid(result)
    assert list(grid.layout.xaxis.ticktext) == ["-2", "0", "2", "4"]
    assert list(grid.layout.yaxis.ticktext) == ["0", "1"]
    # tick positions sit inside the image, one per column, increasing
    ticks = list(grid.layout.xaxis.tickvals)
    width = grid.data[0].z.shape[1]
    assert 0 < ticks[0] < ticks[-1] < width and ticks == sorted(ticks)
    assert figure(result).data[0].type == "image"
    bars = score_bars(dirs)
    assert list(bars.data[0].y) == pytest.approx(dirs.scores.tolist())
    assert figure(dirs).layout.yaxis.title.text == dirs.score_name
    assert image_figure(np.zeros((2, 8, 8, 3), np.uint8)).data[0].z.shape == (
        30,
        57,
        3,
    )  # one row, x3
    probe = wb.probes.get_probe("norm")(tiny, n=4, num_steps=5)
    assert figure(probe).to_dict() == probe.figure().to_dict()
    with pytest.raises(TypeError, match="no figure for object"):
        figure(object())


@pytest.fixture()
def explorer(shapes32, tmp_path):
    return Explorer(
        shapes32, engine="pullback", k=2, seeds=range(3), library=tmp_path, num_steps=20
    )


def _rows(explorer):
    """Top row (samples) and bottom row (edits) of the shown image, at pixel size 1."""
    img = explorer.image[:: explorer.upscale, :: explorer.upscale]
    half = img.shape[0] // 2
    return img[:half], img[half : 2 * half]


def test_explorer_sliders_edit_the_shown_samples(explorer, shapes32):
    assert len(explorer.sliders) == 2
    scores = explorer.directions.scores
    assert f"{float(scores[0]):.3g}" in explorer.sliders[0].description
    assert scores[0] >= scores[1]  # ranked best first
    top, bottom = _rows(explorer)
    assert np.array_equal(top, bottom)  # all sliders at 0: the edit row is the sample row
    expected = wb.sample(shapes32, seeds=[0, 1, 2], num_steps=20)
    assert torch.equal(explorer._originals[(0, 1, 2)], expected)

    before = explorer.image_w.value
    explorer.sliders[0].value = 3.0  # what the browser does: the observer re-renders
    assert explorer.image_w.value != before
    top, bottom = _rows(explorer)
    assert np.abs(top.astype(int) - bottom.astype(int)).mean() > 2
    # a single slider is exactly wb.edit along that direction
    alone = wb.edit(shapes32, explorer.directions, 0, [3.0], seeds=[0, 1, 2], num_steps=20)
    assert torch.equal(explorer.result.images, alone.images)

    explorer.reset_b.click()
    assert explorer.strengths() == [0.0, 0.0] and explorer.result is None
    top, bottom = _rows(explorer)
    assert np.array_equal(top, bottom)

    explorer.batch_w.value = 1
    assert explorer.image.shape[1] < explorer.image.shape[0]  # one column
    explorer.seed_b.click()
    assert explorer.seeds == [3, 4, 5] and explorer.shown_seeds() == [3]


def test_explorer_edits_ahead_and_shows_kept_positions_without_editing(
    explorer, shapes32, monkeypatch
):
    """After a render the slider positions next to the current one are planned; once
    computed (prefetch(), what the notebook does between events) a step to one of them
    shows the kept images, bit for bit wb.edit's, with no edit run."""
    import workbench.viz.explorer as module

    explorer.ahead = 2
    explorer.sliders[1].value = 1.0  # slider 1 moved last: its positions come first
    planned = [strengths for _, strengths in explorer._plan]
    assert planned[:4] == [(0.0, 0.75), (0.0, 1.25), (0.0, 0.5), (0.0, 1.5)]
    assert set(planned[4:]) == {(-0.25, 1.0), (0.25, 1.0), (-0.5, 1.0), (0.5, 1.0)}
    assert explorer.prefetch() == 8 and "nearby are ready" in explorer.status_w.value

    def no_edit(*args, **kwargs):
        raise AssertionError("a kept position was edited again")

    monkeypatch.setattr(module, "edit", no_edit)
    explorer.sliders[0].value = 0.5
    unit, strength = explorer.directions.combine([0.5, 1.0])
    alone = wb.edit(shapes32, unit, 0, [strength], seeds=[0, 1, 2], num_steps=20)
    assert torch.equal(explorer.result.images, alone.images)


def test_explorer_edits_ahead_on_the_event_loop_between_events(explorer):
    """In a notebook (an event loop runs) the planned positions are computed one per loop
    turn after the render returns, and the status says when they are ready."""
    import asyncio

    explorer.ahead = 1

    async def move() -> list[bool]:
        explorer.sliders[0].value = 1.0  # returns at once: nothing computed ahead yet
        waiting = [bool(explorer._plan)]
        for _ in range(600):
            await asyncio.sleep(0.05)  # the loop runs the planned steps between these
            if "nearby are ready" in explorer.status_w.value:
                break
        return waiting

    assert asyncio.run(move()) == [True]
    assert "nearby are ready" in explorer.status_w.value and not explorer._plan
    seeds = tuple(explorer.shown_seeds())
    for strengths in [(0.75, 0.0), (1.25, 0.0), (1.0, -0.25), (1.0, 0.25)]:
        assert explorer._key(seeds, strengths) in explorer._frames


def test_ahead_sets_how_far_the_explorer_edits_ahead(shapes32, tmp_path):
    """``ahead=1``: one step either way of each slider is planned after a render;
    ``ahead=0``: nothing is, and the status says the positions nearby are ready at once; a
    negative ``ahead`` is refused in one line naming it."""
    options = dict(engine="pullback", k=2, seeds=[0], library=tmp_path, num_steps=20)
    one = Explorer(shapes32, ahead=1, **options)
    one.sliders[0].value = 1.0
    assert sorted(s for _, s in one._plan) == [(0.75, 0.0), (1.0, -0.25), (1.0, 0.25), (1.25, 0.0)]
    none = Explorer(shapes32, ahead=0, **options)
    none.sliders[0].value = 1.0
    assert not none._plan and "nearby are ready" in none.status_w.value
    with pytest.raises(wb.WorkbenchError, match="ahead") as error:
        Explorer(shapes32, ahead=-1, **options)
    assert "\n" not in str(error.value)


def test_a_failed_edit_ahead_is_shown_and_stops_the_plan(explorer, monkeypatch):
    import asyncio

    import workbench.viz.explorer as module

    explorer.sliders[0].value = 1.0  # rendered (no loop here): the plan waits

    def broken(*args, **kwargs):
        raise wb.WorkbenchError("out of memory, say")

    monkeypatch.setattr(module, "edit", broken)

    async def later() -> None:
        explorer._plan_ahead(tuple(explorer.shown_seeds()), (1.0, 0.0))
        for _ in range(100):
            await asyncio.sleep(0.01)

    asyncio.run(later())
    assert "editing ahead: WorkbenchError: out of memory, say" in explorer.status_w.value
    assert "ready" not in explorer.status_w.value and not explorer._plan
    assert not explorer._stepping  # the next render plans and steps again


def test_explorer_judges_its_directions_on_the_shown_samples(explorer, shapes32, tmp_path):
    from workbench.eval.judge import judge_directions

    explorer.batch_w.value = 2
    scores = explorer.judge()
    assert scores.n_seeds == 2 and "workbench-judge" in explorer.judge_w.value
    assert explorer.sliders[0].description_tooltip == scores.caption(0)
    alone = judge_directions(
        shapes32, explorer.directions, strengths=[-2, 2], seeds=[0, 1], num_steps=20
    )
    assert torch.allclose(scores.effect, alone.effect)
    assert bool((scores.effect > 0.01).all())  # the pullback directions change the images
    assert "workbench-judge" in explorer.save_html(tmp_path / "snap.html").read_text()
    explorer.discover()  # new directions: the old scores are gone
    assert explorer.scores is None and explorer.judge_w.value == ""


def test_explorer_saves_and_reloads_named_directions_bit_for_bit(explorer, shapes32, tmp_path):
    explorer.set_strengths([2.0, -1.5])
    shown = explorer.result.images.clone()
    explorer.name_w.value = "combo"
    explorer.save_b.click()
    assert explorer.library_w.options == ("combo",) and "saved" in explorer.status_w.value
    named = DirectionLibrary(tmp_path).load("combo", shapes32)
    assert named.directions.params["combination"] == [2.0, -1.5]
    assert torch.equal(named.apply(shapes32, seeds=[0, 1, 2]).images, shown)

    explorer.reset()
    explorer.library_w.value = "combo"
    explorer.load_b.click()
    assert len(explorer.sliders) == 1
    assert explorer.strengths() == [pytest.approx(named.strength)]
    assert torch.equal(explorer.result.images, shown)

    # a direction saved with other DDIM steps is shown as it was saved
    unit, strength = explorer.directions.combine([1.0])
    DirectionLibrary(tmp_path).save(wb.NamedDirection("ten", unit, strength, num_steps=10))
    explorer.library_w.options = explorer.library.names()
    explorer.load_direction("ten")
    assert explorer.num_steps == 10
    ten = DirectionLibrary(tmp_path).load("ten").apply(shapes32, seeds=[0, 1, 2])
    assert torch.equal(explorer.result.images, ten.images)

    # errors from the widgets go to the status line, in one line
    explorer.reset()
    explorer.save_b.click()
    assert "nothing to save" in explorer.status_w.value
    explorer.set_strengths([1.0])
    explorer.save_b.click()  # the name "combo" is taken
    assert "already exists" in explorer.status_w.value
    with pytest.raises(wb.WorkbenchError, match="bad direction name"):
        explorer.save_direction("no spaces")


def test_explorer_controls_follow_the_engine(explorer, tmp_path):
    shown = {n: w.layout.display != "none" for n, w in explorer._controls.items()}
    assert shown == {  # two engines' "space" differ (boundary's default h): a control each
        "timestep": True, "matrix": False, "attribute": False, "boundary:space": False,
        "random:space": False, "box": False,
    }  # fmt: skip
    explorer.engine_w.value = "attention"
    assert explorer.control("matrix").layout.display != "none"
    assert explorer.control("timestep").layout.display == "none"
    explorer.control("matrix").value = "ov"
    explorer.k_w.value = 3
    explorer.discover_b.click()
    assert explorer.directions.engine == "attention" and len(explorer.sliders) == 3
    assert explorer.directions.params["matrix"] == "ov"
    assert explorer.sliders[0].max == 16.0  # h-space range

    explorer.engine_w.value = "pullback"
    explorer.control("timestep").value = "abc"
    explorer.discover_b.click()
    assert "timestep must be an integer" in explorer.status_w.value
    explorer.control("timestep").value = "5000"
    explorer.discover_b.click()
    assert "timestep" in explorer.status_w.value and "out of range" in explorer.status_w.value
    assert explorer.directions.engine == "attention"  # a failed discovery changes nothing

    explorer.engine_w.value = "local"  # the local engine brings its region as a control
    assert explorer.control("box").layout.display != "none"
    explorer.control("box").value = "4,6,20,22"
    explorer.control("timestep").value = ""
    explorer.k_w.value = 2
    explorer.discover_b.click()
    assert explorer.directions.engine == "local"
    assert explorer.directions.params["region"]["box"] == [4, 6, 20, 22]

    path = explorer.save_html(tmp_path / "snapshot.html")
    text = path.read_text()
    assert "data:image/png;base64" in text and "Plotly.newPlot" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_explorer_takes_a_folder_sets_threads_and_labels_its_image(tiny, tmp_path, monkeypatch):
    import os

    folder = wb.save(tiny, tmp_path / "my-model")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        explorer = Explorer(
            str(folder), engine="random", k=2, seeds=[5, 6], library=tmp_path / "lib", num_steps=4
        )
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))  # the cores we may use
        torch.set_num_threads(1)
        Explorer(explorer.model, engine="random", k=1, seeds=[0], num_steps=4, threads=0)
        assert torch.get_num_threads() == 1  # threads=0 leaves torch's setting alone
    finally:
        torch.set_num_threads(threads)
    assert explorer.model.fingerprint == tiny.fingerprint
    assert explorer.model_w.value == str(folder)  # the folder stays in the model box
    label = explorer.image_label_w.value
    assert "seeds 5, 6" in label and "all strengths 0" in label
    explorer.set_strengths([1.5, 0.0])
    assert explorer.status_w.value.count("rendered in") == 1  # after "rendering ..."
    assert f"{explorer.directions.name(0)} = +1.5" in explorer.image_label_w.value
    assert explorer.image_w.width == str(explorer.image.shape[1])  # its own pixel size
    assert explorer.image_w.layout.max_height == "45vh"
    # another folder typed into the model box loads it
    other = wb.save(tiny, tmp_path / "copy")
    explorer.model_w.value = str(other)
    assert explorer._model_source == str(other) and explorer.directions is not None
