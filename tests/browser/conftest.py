"""Fixtures of the browser test: ComfyUI 0.3.64 serving its pinned frontend, headless Chromium.

    browser_server   tools.comfyui.ComfyServer (0.3.64) over a workspace with the tiny assets, the
                     released file names linked to them (released_names.py), the embedded demo
                     model, and the input images the workflows load
    page             a Playwright page with the app loaded, page errors collected in page.errors
    shots_dir        where screenshots and result images go (printed at the end of the run)

Every test here is marked `browser`. Without Chromium (/usr/bin/chromium, `apt-get install
chromium`) or the playwright package (.ci/requirements-browser.txt) or ComfyUI 0.3.64 they skip
with the reason; with $CI set they fail instead (`.ci/run` installs all three).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tools.comfyui import ComfyServer, Workspace, targets

BROWSER_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BROWSER_DIR))  # frontend, released_names (tests/browser has no __init__)
REPO = BROWSER_DIR.parents[1]
CHROMIUM = os.environ.get("LUMINA_CHROMIUM", "/usr/bin/chromium")
_SHOTS: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: the workflows in ComfyUI's web frontend (tests/browser)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if BROWSER_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


def pytest_terminal_summary(terminalreporter) -> None:
    for folder in _SHOTS:
        terminalreporter.write_line(f"browser screenshots and results: {folder}")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def release_comfyui() -> targets.ComfyTarget:
    target = targets.release()
    if target.missing:
        _unavailable(target.missing)
    return target


@pytest.fixture(scope="session")
def playwright_browser():
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does it)")
    if importlib.util.find_spec("playwright") is None:
        _unavailable("no playwright package: `.venv/bin/pip install -r .ci/requirements-browser.txt` (.ci/venv does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root; the binary is Debian's, never a downloaded browser build
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser-screenshots")
    _SHOTS.append(folder)
    return folder


@pytest.fixture(scope="session")
def browser_server(tmp_path_factory: pytest.TempPathFactory, release_comfyui, playwright_browser):
    from released_names import link_released_names
    from tools.comfyui import assets

    ws = Workspace.create(tmp_path_factory.mktemp("comfyui-browser"))
    server = ComfyServer(ws, release_comfyui.comfyui_dir, python=release_comfyui.python, name="browser")
    server.launch()  # boots while the assets build
    try:
        tiny = assets.build_all(ws.models_dir)
        link_released_names(tiny, ws.models_dir)
        from tools.comfyui.demo_files import link_demo_files

        link_demo_files(ws.models_dir, ws.input_dir)  # the demo models, text encoder, LoRA and edit input
        from PIL import Image

        Image.new("RGB", (64, 64), (200, 40, 40)).save(ws.input_dir / "example.png")
        server.wait_ready(timeout=180)
        server.assert_pack_loaded()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def page(browser_server, playwright_browser):
    from frontend import open_app

    context = playwright_browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    pg.errors = []  # page errors (uncaught exceptions), in order
    pg.on("pageerror", lambda err: pg.errors.append(f"{err.name}: {err.message}\n{err.stack or ''}"))
    open_app(pg, browser_server.url)
    pg.startup_errors = list(pg.errors)  # before any workflow: the frontend's own (fresh user, offline)
    yield pg
    context.close()
