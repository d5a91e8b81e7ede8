"""What only ComfyUI 0.3.64 has, with the pack's models: SamplerCustomAdvanced and its guiders,
core nodes written against the V3 node schema (comfy_api io.ComfyNode), and the workflows of
custom-node packs served as templates. These skip on the vendored 2024 ComfyUI, which has none
of them; everything else runs on both (the `comfyui` fixture)."""

from __future__ import annotations

import copy
import json
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_nodes import t2i_graph

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def release(comfyui):
    if not comfyui.is_release:
        pytest.skip(f"{comfyui.name} has no SamplerCustomAdvanced, V3 schema nodes or custom-node templates")
    return comfyui


def _latent(runner, graph, node="5") -> torch.Tensor:
    entry = runner.run(graph, dump=[node])
    return load_file(entry["dumps"][node])["0.samples"]


def test_sampler_custom_advanced_with_cfg_guider_is_the_official_euler(release, comfy_inprocess, tiny_assets, unique_prefix):
    """CFGGuider over Lumina Official CFG + Lumina Scheduler + core euler = the Flow Sampler's euler;
    BasicGuider (no negative) samples too."""
    ours = t2i_graph(tiny_assets, unique_prefix, seed=3, steps=5, solver="euler")
    core = copy.deepcopy(ours)
    core.update({
        "11": {"class_type": "LuminaOfficialCFG", "inputs": {"model": ["1", 0]}},
        "12": {"class_type": "LuminaScheduler", "inputs": {"steps": 5, "step_convention": "grid points (official)",
                                                          "schedule": "shift", "shift": 4.0, "denoise": 1.0}},
        "13": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "14": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "15": {"class_type": "CFGGuider", "inputs": {"model": ["11", 0], "positive": ["3", 0], "negative": ["3", 1], "cfg": 4.0}},
        "5": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["14", 0], "guider": ["15", 0], "sampler": ["13", 0], "sigmas": ["12", 0], "latent_image": ["4", 0]}},
    })
    torch.testing.assert_close(_latent(comfy_inprocess, core), _latent(comfy_inprocess, ours), atol=1e-4, rtol=0)

    basic = copy.deepcopy(core)
    basic["15"] = {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["3", 0]}}
    latent = _latent(comfy_inprocess, basic)
    assert latent.shape == (1, 4, 8, 8) and torch.isfinite(latent).all()


@pytest.mark.parametrize("patch", [
    {"class_type": "RenormCFG", "inputs": {"cfg_trunc": 100.0, "renorm_cfg": 1.0}},
    {"class_type": "CFGZeroStar", "inputs": {}},
    {"class_type": "CFGNorm", "inputs": {"strength": 1.0}},
], ids=lambda p: p["class_type"])
def test_v3_schema_core_nodes_patch_a_lumina_model(release, comfy_inprocess, tiny_assets, unique_prefix, patch):
    """Core V3 nodes that patch a MODEL's guidance take the Lumina MODEL into KSampler and change
    its result (RenormCFG is core's own Lumina 2 guidance rescale)."""
    info = comfy_inprocess.object_info(patch["class_type"])
    assert info and info["input"]["required"]["model"][0] == "MODEL"
    plain = t2i_graph(tiny_assets, unique_prefix, steps=3)
    plain["5"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "seed": 3, "steps": 3, "cfg": 6.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["4", 0], "denoise": 1.0}}
    patched = copy.deepcopy(plain)
    patched["20"] = {"class_type": patch["class_type"], "inputs": {"model": ["1", 0], **patch["inputs"]}}
    patched["5"]["inputs"]["model"] = ["20", 0]
    a, b = _latent(comfy_inprocess, plain), _latent(comfy_inprocess, patched)
    assert torch.isfinite(b).all() and b.shape == a.shape
    assert (a - b).abs().max() > 1e-5, f"{patch['class_type']} did not change the sampling"


def test_workflows_are_served_as_templates_with_thumbnails(release, comfy_server):
    """ComfyUI lists a pack's workflows/*.json as templates and serves them (and a <name>.jpg
    thumbnail each, what the frontend shows) under /api/workflow_templates/<pack folder>/."""
    module = comfy_server.workspace.pack_link.name
    listed = comfy_server.get("/workflow_templates")
    expected = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    assert sorted(listed.get(module, [])) == expected
    for name in expected:
        assert comfy_server.get(f"/api/workflow_templates/{module}/{name}.json") == json.loads((WORKFLOWS / f"{name}.json").read_text())
        with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/{module}/{name}.jpg", timeout=30) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg", name
            assert resp.read(3) == b"\xff\xd8\xff", name  # a JPEG
