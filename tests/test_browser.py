"""In a real browser: JupyterLab runs the quick-start notebook, its plotly figures and the
explorer render, a slider changes the shown image; the demo report's figures render.

Marked ``browser`` (``pytest -m browser``; CI runs it as its own step). Needs Chromium
(Debian's ``chromium``, at ``$WORKBENCH_CHROMIUM`` or ``/usr/bin/chromium``) and the
``playwright`` Python package (its driver only; no browser download). Without them the
test is skipped, unless ``WORKBENCH_REQUIRE_BROWSER=1`` (CI), where it fails. Screenshots
go to ``$WORKBENCH_ARTIFACTS`` (default ``runs/browser``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parent.parent
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("WORKBENCH_ARTIFACTS", ROOT / "runs" / "browser"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _need_browser():
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"Chromium at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("WORKBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab, headless, serving a copy of the notebooks (the run must not write
    outputs into the committed files)."""
    _need_browser()
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", root)
    home = root / ".jupyter-home"
    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "WORKBENCH_PROGRESS": "0",
    }
    # the kernel must be this interpreter (the venv with workbench), whatever "python3" is
    kernel = home / "data" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]}
    spec |= {"display_name": "Python 3", "language": "python"}
    (kernel / "kernel.json").write_text(json.dumps(spec))
    # no "get notified about news?" prompt over the page
    notes = home / "settings" / "@jupyterlab" / "apputils-extension"
    notes.mkdir(parents=True)
    (notes / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), "workbench-test"
    log = open(root / "lab.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            f"--LabServerApp.user_settings_dir={home / 'settings'}",
            f"--LabServerApp.workspaces_dir={home / 'workspaces'}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start in 60 s")
        yield url, token, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(autouse=True)
def _no_kernel_left(request):
    """After each test that used JupyterLab, shut its kernels down: a closed page leaves
    its kernel running, and an explorer's kernel goes on computing, slowing the next test."""
    yield
    if "lab" in request.fixturenames:
        url, token, _ = request.getfixturevalue("lab")
        for kernel in _lab_api(url, token, "/api/kernels"):
            _lab_api(url, token, f"/api/kernels/{kernel['id']}", "DELETE")


def _lab_api(url: str, token: str, path: str, method: str = "GET"):
    """A call to the Jupyter server's REST API; its JSON answer (None if empty)."""
    request = urllib.request.Request(
        f"{url}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        body = answer.read()
    return json.loads(body) if body else None


def _console(page) -> list[str]:
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    return messages


def _run_all(page, url: str, token: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab (a workspace of its own: no other notebook's
    output on the page), wait for its kernel, run all its cells."""
    space = notebook.removesuffix(".ipynb")
    page.goto(f"{url}/lab/workspaces/{space}/tree/{notebook}?token={token}")
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
        "&& window.jupyterapp.shell.currentWidget.sessionContext "
        "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
        "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel "
        "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
        " === 'idle'",
        timeout=120_000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext.session) return null;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return {
    kernel: panel.sessionContext.session.kernel ? panel.sessionContext.session.kernel.status
                                                  : 'none',
    done: cells.filter(c => c.model.executionCount !== null).length,
    code: cells.length,
    errors: cells.flatMap(c => c.model.outputs.toJSON())
                 .filter(o => o.output_type === 'error')
                 .map(o => o.ename + ': ' + o.evalue),
  };
}"""


#: Figures of the page without a title, and visible axes without one (plotly's full layout).
AXES_WITHOUT_TITLES = """() => {
  const out = [];
  document.querySelectorAll('.figure .js-plotly-plot').forEach((el, i) => {
    const full = el._fullLayout;
    const title = full.title && full.title.text;
    if (!title) out.push(`figure ${i}: no title`);
    Object.keys(full).filter(k => /^[xy]axis[0-9]*$/.test(k)).forEach(k => {
      const axis = full[k];
      if (axis.visible && !(axis.title && axis.title.text))
        out.push(`figure ${i} (${title}): ${k} has no title`);
    });
  });
  return out;
}"""


#: Legends that overlap an axis title or a colour bar (their boxes on the page).
LEGEND_OVERLAPS = """() => {
  const meet = (a, b) =>
    a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const out = [];
  document.querySelectorAll('.figure .js-plotly-plot').forEach((el, i) => {
    const legend = el.querySelector('g.legend');
    if (!legend) return;
    const box = legend.getBoundingClientRect();
    el.querySelectorAll('.infolayer text[class$="title"]:not(.gtitle), g.colorbar')
      .forEach(other => {
        if (meet(box, other.getBoundingClientRect()))
          out.push(`figure ${i}: the legend covers ${other.getAttribute('class')}`);
      });
  });
  return out;
}"""


def test_the_legend_check_sees_a_legend_over_an_axis_title(browser, tiny, tmp_path):
    """The overlap check can fail: the norm probe's figure with plotly's default legend (the
    old report layout) is caught; the report's layout is not."""
    import workbench as wb
    from workbench.viz.report import Report

    def figure():
        return wb.probe("norm", tiny, n=4, num_steps=3).figure()

    found = {}
    for layout in ("default", "report"):
        report = Report(layout)
        if layout == "report":
            report.figure(figure(), "a caption")
        else:
            html = figure().to_html(include_plotlyjs=False, full_html=False)
            report.parts.append(f'<div class="figure">{html}</div>')
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(report.save(tmp_path / f"{layout}.html").resolve().as_uri())
        page.wait_for_function("() => document.querySelector('.figure .main-svg')")
        found[layout] = page.evaluate(LEGEND_OVERLAPS)
        page.close()
    assert found["default"] and not found["report"], found


def test_quickstart_runs_in_jupyterlab_and_the_explorer_slider_edits(browser, lab):
    url, token, root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    messages = _console(page)
    _run_all(page, url, token, "01_quickstart.ipynb")
    deadline = time.time() + 600
    state = None
    while time.time() < deadline:
        state = page.evaluate(NOTEBOOK_STATE)
        if state and (
            state["errors"] or (state["done"] == state["code"] and state["kernel"] == "idle")
        ):
            break
        time.sleep(2)
    page.screenshot(path=str(ARTIFACTS / "quickstart-run.png"), full_page=True)
    assert state is not None and not state["errors"], state
    assert state["done"] == state["code"], f"not all cells ran in 10 minutes: {state}"

    # plotly figures rendered by the JupyterLab plotly renderer
    plots = page.locator(".jp-OutputArea .js-plotly-plot")
    plots.first.wait_for(timeout=60_000)
    assert plots.count() >= 5
    assert page.locator(".jp-OutputArea .js-plotly-plot .main-svg").count() >= 5

    # the explorer: one slider per direction (k = 4) and the image
    explorer = page.locator(".workbench-explorer")
    explorer.wait_for(timeout=60_000)
    explorer.scroll_into_view_if_needed()
    sliders = explorer.locator(".workbench-direction")
    assert sliders.count() == 4
    assert "pullback" in sliders.first.inner_text()
    image = explorer.locator("img").first
    image.wait_for(timeout=30_000)
    before = image.screenshot()

    # the image fits the screen: no taller than 45% of it, no wider than the output area
    box = image.bounding_box()
    assert box is not None and box["height"] <= 0.45 * 1000 + 1, box
    area = explorer.bounding_box()
    assert area is not None and box["width"] <= area["width"] + 1, (box, area)
    label = explorer.locator(".workbench-image-label").inner_text()
    assert "top row: samples" in label and "seeds" in label, label

    # move the first slider with the keyboard, as a user does; two steps (the second after
    # the explorer planned again), each timed from the key press to the new image in the
    # page (the latency a user feels)
    latencies, waits = _slider_steps(page, explorer, steps=2)
    _write_latency("shapes32", latencies, waits)
    page.wait_for_timeout(500)
    after = image.screenshot()
    explorer.screenshot(path=str(ARTIFACTS / "explorer-after-slider.png"))
    page.screenshot(path=str(ARTIFACTS / "quickstart.png"), full_page=False)
    assert after != before, "the shown image did not change when the slider moved"
    readout = sliders.first.locator(".widget-readout").inner_text()
    assert float(readout) < 2.0  # it was set to 2.0 by the notebook and moved down
    errors = [m for m in messages if m.startswith("pageerror")]
    (ARTIFACTS / "quickstart-console.txt").write_text("\n".join(messages))
    assert not errors, errors
    page.close()


#: A notebook with the explorer on shapes64 (h carries the image: the attention engine).
EXPLORER_64 = """import workbench as wb
from workbench.viz import Explorer

explorer = Explorer(wb.load("shapes64"), engine="attention", k=4, seeds=range(4), ahead=1)
explorer"""


def test_the_explorer_keeps_up_on_shapes64(browser, lab):
    """The explorer on shapes64 (attention directions, 4 seeds, the preset's 50 steps) in
    JupyterLab: a slider step shows a new image; its latency is written
    (:data:`LATENCY_FILE`) beside the shapes32 one. One step, with the explorer editing
    one step ahead (its default 3 steps for 4 sliders, 24 edits, took 334 s here on 2
    cores before the step); the quick start's test steps twice, at the default."""
    url, token, root = lab
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}
    notebook = {
        "cells": [cell | {"source": EXPLORER_64}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "explorer64.ipynb").write_text(json.dumps(notebook))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    messages = _console(page)
    _run_all(page, url, token, "explorer64.ipynb")
    explorer = page.locator(".workbench-explorer")
    explorer.wait_for(timeout=300_000)
    assert "attn-ov" in explorer.locator(".workbench-direction").first.inner_text()
    image = explorer.locator("img").first
    image.wait_for(timeout=300_000)
    before = image.screenshot()
    latencies, waits = _slider_steps(page, explorer, steps=1)
    _write_latency("shapes64", latencies, waits)
    page.wait_for_timeout(500)
    explorer.screenshot(path=str(ARTIFACTS / "explorer64-after-slider.png"))
    assert image.screenshot() != before, "the shown image did not change when the slider moved"
    errors = [m for m in messages if m.startswith("pageerror")]
    assert not errors, errors
    page.close()


#: The explorer's slider latency per model, as the browser tests measured it.
LATENCY_FILE = "explorer-latency.txt"


def _slider_steps(page, explorer, steps: int) -> tuple[list[float], list[float]]:
    """Step the first slider down ``steps`` times with the keyboard, as a user does, each
    time once the explorer says the nearby positions are ready (it edits them ahead,
    between events); the seconds from each key press to the new image in the page, and
    the seconds of editing ahead waited for before each."""
    image = explorer.locator("img").first
    handle = explorer.locator(".workbench-direction").first.locator(".noUi-handle")
    handle.focus()
    root = explorer.element_handle()  # this explorer's, not another notebook's
    changed = (
        "([root, old]) => { const img = root.querySelector('img');"
        " return img && img.getAttribute('src') !== old; }"
    )
    ready = (
        "(root) => { const s = root.querySelector('.workbench-status');"
        " return s && s.innerText.includes('nearby are ready'); }"
    )
    latencies, waits = [], []
    for _ in range(steps):
        start = time.perf_counter()
        page.wait_for_function(ready, arg=root, timeout=600_000)
        waits.append(time.perf_counter() - start)
        src = image.get_attribute("src")
        start = time.perf_counter()
        handle.press("ArrowLeft")
        page.wait_for_function(changed, arg=[root, src], timeout=120_000)
        latencies.append(time.perf_counter() - start)
    return latencies, waits


def _write_latency(model: str, latencies: list[float], waits: list[float]) -> None:
    """One line per model in :data:`LATENCY_FILE` (other models' lines kept)."""
    path = ARTIFACTS / LATENCY_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    lines = [ln for ln in lines if not ln.startswith(f"{model}:")]
    steps = ", ".join(f"{v:.2f}" for v in latencies)
    ahead = ", ".join(f"{v:.0f}" for v in waits)
    line = f"{model}: slider step to new image {steps} s (editing ahead before each: {ahead} s)"
    path.write_text("\n".join([*lines, line]) + "\n")
    print(f"explorer on {line}")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The demo's report: ``$WORKBENCH_REPORT`` if set (CI: the README's demo run), else
    a quick demo on the test model."""
    given = os.environ.get("WORKBENCH_REPORT")
    if given:
        return Path(given)
    import workbench as wb
    from workbench.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    return run_demo(wb.load("tiny-test"), out, n_seeds=2, num_steps=5, quick=True)


def test_report_figures_render(browser, report):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    messages = _console(page)
    page.goto(report.resolve().as_uri())
    figures = page.locator(".figure")
    expected = figures.count()
    assert expected >= 6  # one per probe at least
    page.wait_for_function(
        "(n) => document.querySelectorAll('.figure .js-plotly-plot .main-svg').length >= n",
        arg=expected,
        timeout=60_000,
    )
    images = page.locator("figure img")
    assert images.count() >= 5
    widths = page.evaluate(
        "() => Array.from(document.querySelectorAll('figure img')).map(i => i.naturalWidth)"
    )
    assert all(w > 0 for w in widths)  # every PNG decoded
    headings = page.locator("h2").all_inner_texts()
    assert any(h.startswith("Engine: boundary") for h in headings), headings
    assert headings[0] == "Summary", headings
    # the summary: one row per direction set, the probes' findings under it
    engines = [h for h in headings if h.startswith("Engine: ")]
    rows = page.locator("table.summary tr").count() - 1
    assert rows == len(engines) >= 8, (rows, engines)
    findings = page.locator("h3 + ul li").all_inner_texts()
    assert len(findings) == len([h for h in headings if h.startswith("Probe: ")]) >= 6
    # every plotted figure: a title, a title on each visible axis, a caption under it
    untitled = page.evaluate(AXES_WITHOUT_TITLES)
    assert not untitled, untitled
    overlaps = page.evaluate(LEGEND_OVERLAPS)
    assert not overlaps, overlaps
    captions = page.locator(".figure .caption").all_inner_texts()
    assert len(captions) == expected and all(len(c) > 40 for c in captions)
    # edit grids: strengths as column headers with the unedited column marked, seeds as rows
    assert page.locator("table.grid th.marked").first.inner_text().startswith("0 (")
    assert page.locator("table.grid tr th", has_text="seed 0").count() >= 8
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
    errors = [m for m in messages if m.startswith("pageerror") or "error" in m.split(":")[0]]
    assert not errors, errors
    page.close()
