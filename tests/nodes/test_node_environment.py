"""ComfyUI imported into the pytest process stays out of everybody else's way."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tools.comfyui import PACK_NAME, REPO_ROOT


def test_comfyui_modules_are_comfyuis_and_the_pack_is_a_package(comfyui):
    assert Path(sys.modules["nodes"].__file__).resolve() == comfyui.comfyui_dir / "nodes.py"  # not our nodes/
    assert comfyui.pack is sys.modules[PACK_NAME] and Path(comfyui.pack.__file__).resolve() == REPO_ROOT / "__init__.py"
    ours = {name for name in comfyui.pack.NODE_CLASS_MAPPINGS}
    assert "LuminaFlowSampler" in ours and ours <= set(comfyui.nodes.NODE_CLASS_MAPPINGS)
    assert comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaFlowSampler"].__module__ == f"{PACK_NAME}.nodes.sampling"


def test_pytest_argv_was_not_parsed_and_comfyui_runs_on_the_cpu(comfyui):
    import comfy.cli_args
    import comfy.model_management
    import comfy.options

    assert comfy.options.args_parsing is False  # ComfyUI parsed [] (pytest's -q, paths, ... never reached it)
    assert vars(comfy.cli_args.args) == {**vars(comfy.cli_args.parser.parse_args([])), "cpu": True}
    assert comfy.model_management.get_torch_device().type == "cpu"


def test_the_torchvision_stand_in_is_gone_after_the_import(comfyui):
    stubbed = sys.modules.get("torchvision")
    assert stubbed is None or not getattr(stubbed, "IS_STUB", False)
    spec = importlib.util.find_spec("torchvision")
    assert spec is None or "stubs" not in str(spec.origin)


def test_comfyuis_folders_are_on_sys_path_while_these_tests_run(comfyui):
    assert str(comfyui.comfyui_dir) in comfyui.paths
    assert sys.path[:len(comfyui.paths)] == list(comfyui.paths)  # in front of the repository root: `nodes` is ComfyUI's


def test_release_takes_comfyuis_folders_off_sys_path(comfyui):
    comfyui.release()
    try:
        assert not set(comfyui.paths) & set(sys.path)
        import nodes  # already imported: still ComfyUI's, whatever sys.path says now

        assert nodes is comfyui.nodes
    finally:
        comfyui.attach()
    assert sys.path[:len(comfyui.paths)] == list(comfyui.paths)
