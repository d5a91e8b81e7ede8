"""Bad input through a real ComfyUI server (HTTP): a clear node error, never a black image
reported as success, and the server keeps serving the next good prompt."""

from __future__ import annotations

import copy

import pytest

from tools.comfyui import execution_error
from test_nodes import t2i_graph

pytestmark = pytest.mark.e2e


def _fails_then_next_succeeds(server, bad: dict, good: dict) -> dict:
    entry = server.run(bad, check=False)
    assert entry["status"]["status_str"] == "error", "a bad prompt was reported as a success"
    error = execution_error(entry)
    assert server.run(good)["status"]["status_str"] == "success", "the server did not serve the next prompt"
    return error


def test_nan_cfg_is_an_error_on_the_flow_sampler_and_on_ksampler(comfy_server, tiny_assets, unique_prefix):
    good = t2i_graph(tiny_assets, unique_prefix, steps=3)
    flow = copy.deepcopy(good)
    flow["5"]["inputs"]["cfg"] = float("nan")
    error = _fails_then_next_succeeds(comfy_server, flow, good)
    assert error["node_type"] == "LuminaFlowSampler" and "cfg=nan is not a finite number" in error["exception_message"]

    ksampler = copy.deepcopy(good)
    ksampler["5"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "seed": 3, "steps": 3, "cfg": float("nan"), "sampler_name": "euler", "scheduler": "simple",
        "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["4", 0], "denoise": 1.0}}
    error = _fails_then_next_succeeds(comfy_server, ksampler, good)
    assert error["node_type"] == "KSampler" and "contains NaN or infinite values; use a finite cfg" in error["exception_message"]


def test_a_size_that_cannot_fit_is_refused_before_it_runs(comfy_server, tiny_assets, unique_prefix):
    """The node maximum (8192², batch 64) needs ~100 GiB even for the tiny model: a clear error naming
    the largest size that fits, on both sampling paths, and the server serves the next prompt."""
    good = t2i_graph(tiny_assets, unique_prefix, steps=3)
    huge = copy.deepcopy(good)
    huge["4"]["inputs"].update(width=8192, height=8192, batch_size=64)
    error = _fails_then_next_succeeds(comfy_server, huge, good)
    message = error["exception_message"]
    assert error["node_type"] == "LuminaFlowSampler"
    assert "sampling 64 images of 8192×8192 px needs about" in message and "The largest square image that fits is" in message

    ksampler = copy.deepcopy(huge)
    ksampler["5"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "seed": 3, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["4", 0], "denoise": 1.0}}
    error = _fails_then_next_succeeds(comfy_server, ksampler, good)
    assert error["node_type"] == "KSampler" and "8192×8192 px needs about" in error["exception_message"]


def _video_graph(tiny_assets, prefix: str) -> dict:
    import json

    from tools.comfyui.assets import substitute_tiny
    from test_nodes import WORKFLOWS

    graph = substitute_tiny(json.loads((WORKFLOWS / "api" / "lumina_video_t2v.json").read_text()), tiny_assets, prefix)
    graph["6"]["inputs"]["steps"] = 2
    return graph


def test_lumina_video_bad_inputs_are_node_errors(comfy_server, tiny_assets, unique_prefix):
    """The Lumina-Video workflow with 12 frames (3 latent frames: not a multiple of the temporal patch 2),
    with 10 frames (not a multiple of 4), with a core KSampler, and at a size that cannot fit."""
    good = _video_graph(tiny_assets, unique_prefix)
    cases = [
        ({"4": {"frames": 12}}, "LuminaEmptyVideoLatent", "temporal patch size 2 needs 1 or a multiple of 2"),
        ({"4": {"frames": 10}}, "LuminaEmptyVideoLatent", "use a multiple of 4 (8 or 12)"),
        ({"4": {"width": 4096, "height": 4096, "frames": 512}}, "LuminaFlowSampler", "fewer frames"),
    ]
    for changes, node_type, needle in cases:
        bad = copy.deepcopy(good)
        for node, inputs in changes.items():
            bad[node]["inputs"].update(inputs)
        error = _fails_then_next_succeeds(comfy_server, bad, good)
        assert error["node_type"] == node_type and needle in error["exception_message"], error["exception_message"]
    ksampler = copy.deepcopy(good)
    ksampler["6"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["4", 0], "denoise": 1.0}}
    error = _fails_then_next_succeeds(comfy_server, ksampler, good)
    assert error["node_type"] == "KSampler" and "samples with the Lumina Flow Sampler" in error["exception_message"]
