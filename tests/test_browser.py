"""JupyterLab in a real browser: notebook 04 run top to bottom in headless Chromium, its widgets
rendered and answering a click.

Needs a Chromium binary (``apt-get install chromium`` on Debian, or ``LAB2_CHROMIUM=/path``) and
Playwright (``pip install playwright``, in the dev extra); it uses the system's Chromium, since
Playwright's own browser download is not needed. Skipped, saying why, when either is missing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ports import free_port

from lab2.ops.experiment import run_experiment
from lab2.ops.sample import make_sample_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parent.parent
NOTEBOOK = "04_results.ipynb"


def chromium() -> str | None:
    """The Chromium binary: ``$LAB2_CHROMIUM``, else the first of the usual names on PATH."""
    named = os.environ.get("LAB2_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="module")
def browser_binary():
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium found: apt-get install chromium (Debian/Ubuntu), or set "
                    "LAB2_CHROMIUM to a Chromium or Chrome binary")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")
    return binary


@pytest.fixture(scope="module")
def lab(tmp_path_factory, browser_binary):
    """JupyterLab on 127.0.0.1 with a token, serving a copy of notebook 04 in a project folder
    that holds the synthetic sample and a finished smoke experiment."""
    home = tmp_path_factory.mktemp("lab")
    env = {**os.environ, "LAB2_HOME": str(home), "LAB2_PROFILE": "smoke",
           "LAB2_FIGURES_DIR": str(home / "figures"), "LAB2_DATA_DIR": "",
           "LAB2_SAMPLE_DIR": "", "LAB2_CACHE_DIR": "", "NO_ALBUMENTATIONS_UPDATE": "1",
           # the user's Jupyter settings and runtime files stay out of it
           "JUPYTER_CONFIG_DIR": str(home / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime")}
    saved = {k: os.environ.get(k) for k in ("LAB2_HOME", "LAB2_DATA_DIR", "LAB2_SAMPLE_DIR")}
    os.environ.update(LAB2_HOME=str(home), LAB2_DATA_DIR="", LAB2_SAMPLE_DIR="")
    try:
        sample = home / "data" / "sample"
        make_sample_dataset(sample, progress=False)
        run_experiment("smoke", sample, progress=False)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    notebooks = home / "notebooks"
    notebooks.mkdir()
    for name in (NOTEBOOK, "lab2_setup.py"):    # the notebook and its first cell's helper
        shutil.copy(PROJECT / "notebooks" / name, notebooks / name)
    port, token = free_port(), secrets.token_hex(16)
    log = open(home / "jupyter.log", "w", encoding="utf-8")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebooks}",
         "--LabApp.expose_app_in_browser=True"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        env=env, cwd=notebooks, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    started = (home / "jupyter.log").read_text(encoding="utf-8")
                    raise RuntimeError(f"jupyter lab did not start:\n{started[-3000:]}") from None
                time.sleep(0.5)
        yield {"url": url, "token": token, "home": home, "binary": browser_binary}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


#: The notebook's state from JupyterLab's own model: cells, their execution counts and outputs.
NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext.session) return null;
  const cells = panel.content.model.cells, out = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    const outputs = [];
    for (let j = 0; j < cell.outputs.length; j++) {
      const o = cell.outputs.get(j).toJSON();
      outputs.push({type: o.output_type, name: o.ename || o.name || '',
                    text: o.evalue || (Array.isArray(o.text) ? o.text.join('') : o.text) || ''});
    }
    out.push({count: cell.executionCount, outputs: outputs});
  }
  const kernel = panel.sessionContext.session.kernel;
  return {cells: out, kernel: kernel ? kernel.status : 'none'};
}"""


def test_notebook_04_runs_in_jupyterlab_and_its_browser_answers(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=lab["binary"], headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK}?token={lab['token']}")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell"
                                   ".currentWidget && window.jupyterapp.shell.currentWidget"
                                   ".sessionContext && window.jupyterapp.shell.currentWidget"
                                   ".sessionContext.session && window.jupyterapp.shell"
                                   ".currentWidget.sessionContext.session.kernel && window"
                                   ".jupyterapp.shell.currentWidget.sessionContext.session"
                                   ".kernel.status === 'idle'", timeout=120_000)
            page.evaluate("() => window.jupyterapp.commands.execute("
                          "'notebook:run-all-cells')")
            deadline = time.monotonic() + 300
            while True:
                state = page.evaluate(NOTEBOOK_STATE)
                done = state and state["kernel"] == "idle" and all(
                    c["count"] is not None for c in state["cells"])
                failed = state and state["kernel"] == "idle" and any(
                    o["type"] == "error" for c in state["cells"] for o in c["outputs"])
                if done or failed or time.monotonic() > deadline:
                    break
                time.sleep(1)
            page.screenshot(path=str(tmp_path / "after-run-all.png"), full_page=True)
            errors = [o for c in state["cells"] for o in c["outputs"] if o["type"] == "error"]
            assert not errors, errors      # run-all stops at an error: say it, do not wait
            assert done, f"the notebook did not finish within 5 minutes: {state}"

            # the ipywidgets browser rendered (not "Error displaying widget")
            page.wait_for_selector(".widget-dropdown select", timeout=60_000)
            text = page.inner_text(".jp-NotebookPanel")
            assert "Error displaying widget" not in text
            assert "Error rendering" not in text

            # another model in the dropdown → another prediction shown
            figure = ".widget-output img"
            page.wait_for_selector(figure, timeout=60_000)
            image_before = page.get_attribute(figure, "src")
            model = page.locator(".widget-dropdown select").first
            model.scroll_into_view_if_needed()
            options = model.locator("option").all_inner_texts()
            assert len(options) == 4, options
            model.select_option(index=2)
            page.wait_for_function(
                "(before) => { const img = document.querySelector('.widget-output img'); "
                "return img && img.src !== before; }", arg=image_before, timeout=60_000)
            page.locator(figure).scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "after-choosing-a-model.png"), full_page=True)
            assert page.get_attribute(figure, "src") != image_before
        finally:
            page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
            browser.close()
    assert (tmp_path / "after-choosing-a-model.png").stat().st_size > 10_000
