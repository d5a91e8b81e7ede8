"""Smoke tests of the e2e harness itself: a real ComfyUI boots, loads this pack, runs core graphs.

None of them needs our nodes; they pin down how the harness (and that ComfyUI) behaves so node
tests can rely on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tools.comfyui import PACK_NAME, ComfyExecutionError, ComfyValidationError, execution_error, node_defaults

CHECKS = Path(__file__).with_name("comfy_checks.py")  # helpers run inside ComfyUI (call_in_comfy)
CORE_NODES = ("KSampler", "VAELoader", "VAEDecode", "SaveImage", "EmptyLatentImage", "SamplerCustom")


def decode_graph(vae_name: str, prefix: str, size: int = 64) -> dict:
    """EmptyLatentImage -> VAEDecode (TAESD-XL) -> SaveImage: needs no diffusion model."""
    return {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


# -- the HTTP server -------------------------------------------------------------------------------------

def test_server_boots(comfy_server):
    stats = comfy_server.system_stats()
    assert stats["devices"][0]["type"] == "cpu"
    assert comfy_server.boot_seconds is not None
    print(f"ComfyUI boot: {comfy_server.boot_seconds:.2f} s (overlapped with the asset build)")


def test_object_info_lists_core_nodes(comfy_server, tiny_assets):
    info = comfy_server.object_info()
    missing = [n for n in CORE_NODES if n not in info]
    assert not missing, f"core nodes missing from /object_info: {missing}"
    vae_names = comfy_server.object_info("VAELoader")["input"]["required"]["vae_name"][0]
    assert tiny_assets.vae_name in vae_names  # vae_approx/ is wired and both TAESD-XL halves are seen
    assert comfy_server.object_info("NoSuchNode") == {}
    defaults = node_defaults(info["KSampler"])
    assert defaults["steps"] == 20 and defaults["cfg"] == 8.0 and "model" not in defaults


def test_pack_loaded_without_import_errors(comfy_server):
    line = comfy_server.pack_import_line()
    assert line is not None, f"{PACK_NAME} never appeared in the custom-node import list"
    assert "IMPORT FAILED" not in line
    comfy_server.assert_pack_loaded()
    assert "Cannot import" not in comfy_server.log_text()


def test_core_graph_writes_png(comfy_server, tiny_assets, unique_prefix):
    entry = comfy_server.run(decode_graph(tiny_assets.vae_name, unique_prefix))
    assert entry["status"]["status_str"] == "success"
    files = comfy_server.output_files(entry, node_id="4")
    assert len(files) == 1 and files[0].parent == comfy_server.workspace.output_dir
    assert files[0].name.startswith(unique_prefix) and files[0].suffix == ".png"
    with Image.open(files[0]) as img:
        assert img.size == (64, 64) and img.mode == "RGB"
    assert "Missing VAE keys" not in comfy_server.log_text()  # the TAESD-XL files match comfy's TAESD


def test_invalid_graph_returns_node_errors(comfy_server, tiny_assets, unique_prefix):
    graph = decode_graph("no_such_vae.safetensors", unique_prefix)
    graph["1"]["inputs"]["width"] = 3  # below EmptyLatentImage's minimum (16)
    with pytest.raises(ComfyValidationError) as info:
        comfy_server.queue(graph)
    err = info.value
    assert err.status == 400 and err.error["type"] == "prompt_outputs_failed_validation"
    assert set(err.node_errors) == {"1", "2"}  # keyed by our ids even though it ran under fresh ids
    assert err.node_errors["2"]["class_type"] == "VAELoader"
    assert err.node_errors["2"]["errors"][0]["type"] == "value_not_in_list"
    assert err.node_errors["1"]["errors"][0]["type"] == "value_smaller_than_min"

    # raw access: the same 400 payload, unrenamed
    status, payload = comfy_server.submit(graph)
    assert status == 400 and set(payload["node_errors"]) == {"1", "2"}


def test_unknown_node_type_is_rejected(comfy_server, comfyui):
    """The vendored ComfyUI indexes NODE_CLASS_MAPPINGS before validating: a misspelled class_type
    is an HTTP 500 (aiohttp's error page). 0.3.64 checks it first: a 400 naming the node."""
    graph = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    with pytest.raises(ComfyValidationError) as info:
        comfy_server.queue(graph)
    if comfyui.is_release:
        assert info.value.status == 400 and info.value.error["type"] == "invalid_prompt"
        assert "NoSuchNode does not exist" in info.value.error["message"]
    else:
        assert info.value.status == 500


def test_execution_error_is_reported(comfy_server, tiny_assets, unique_prefix):
    graph = {  # a 16-channel Stable Cascade latent into a 4-channel VAE: fails inside VAEDecode
        "1": {"class_type": "StableCascade_EmptyLatentImage",
              "inputs": {"width": 256, "height": 256, "compression": 32, "batch_size": 1}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": tiny_assets.vae_name}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": unique_prefix}},
    }
    with pytest.raises(ComfyExecutionError) as info:
        comfy_server.run(graph)
    assert info.value.error["node_type"] == "VAEDecode"
    assert "channels" in info.value.error["exception_message"]

    entry = comfy_server.run(graph, check=False)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert execution_error(entry)["node_id"] == "3"  # our id, although it ran under a fresh one
    assert "3" not in entry["prompt"][2] and "3" in entry["queued_ids"].values()


def test_cache_and_fresh_ids(comfy_server, comfyui, tiny_assets, unique_prefix):
    """The vendored ComfyUI reuses outputs of nodes whose id and inputs are unchanged, so
    fresh=True (the default) runs every node under new ids. 0.3.64 keys its cache on the inputs
    alone: an unchanged graph is served from the cache whatever its ids, and a changed input runs
    that node and what follows it."""
    graph = decode_graph(tiny_assets.vae_name, unique_prefix)

    def cached(entry):
        return next(m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached")

    comfy_server.run(graph, fresh=False)
    again = comfy_server.run(graph, fresh=False)
    assert sorted(cached(again)) == ["1", "2", "3", "4"]  # nothing ran; no new file was written
    if comfyui.is_release:
        assert sorted(cached(comfy_server.run(graph))) == ["1", "2", "3", "4"]
        graph["4"]["inputs"]["filename_prefix"] = unique_prefix + "_b"
        assert sorted(cached(comfy_server.run(graph))) == ["1", "2", "3"]
        assert len(list(comfy_server.workspace.output_dir.glob(unique_prefix + "_b_*.png"))) == 1
    else:
        assert cached(comfy_server.run(graph)) == []
    assert len(list(comfy_server.workspace.output_dir.glob(unique_prefix + "_0*.png"))) == (1 if comfyui.is_release else 2)


# -- the in-process runner ------------------------------------------------------------------------------

def test_inprocess_runs_core_graph_with_probes(comfy_inprocess, tiny_assets, unique_prefix):
    assert comfy_inprocess.pack_loaded is True
    entry = comfy_inprocess.run(decode_graph(tiny_assets.vae_name, unique_prefix), probe=True, dump=["3"])
    assert entry["status"]["status_str"] == "success"
    latent = entry["probe"]["1"][0][0]["samples"]  # output slot 0, first (only) list item, LATENT dict
    assert latent["shape"] == [1, 4, 8, 8] and latent["max"] == 0.0
    image = entry["probe"]["3"][0][0]
    assert image["shape"] == [1, 64, 64, 3] and image["finite"] and 0.0 <= image["min"] <= image["max"] <= 1.0
    order = [e[1]["node"] for e in entry["events"] if e[0] == "executing" and e[1]["node"]]
    assert sorted(order[:2]) == ["1", "2"] and order[2:] == ["3", "4"]  # 0.3.64 may load the VAE first
    [png] = comfy_inprocess.output_files(entry, node_id="4")
    with Image.open(png) as img:
        assert img.size == (64, 64)

    from safetensors.torch import load_file

    dumped = load_file(entry["dumps"]["3"])
    assert list(dumped["0"].shape) == [1, 64, 64, 3]


def test_inprocess_validation_and_models(comfy_inprocess, tiny_assets, unique_prefix):
    graph = decode_graph("no_such_vae.safetensors", unique_prefix)
    with pytest.raises(ComfyValidationError) as info:
        comfy_inprocess.run(graph)
    assert info.value.node_errors["2"]["errors"][0]["type"] == "value_not_in_list"
    assert comfy_inprocess.validate({"1": {"class_type": "NoSuchNode", "inputs": {}}})["valid"] is False

    assert tiny_assets.name(tiny_assets.next_dit) == "tiny_next_dit.safetensors"
    assert tiny_assets.name(tiny_assets.gemma) == "tiny_gemma"
    lumina = comfy_inprocess.list_models("lumina")["files"]
    assert {"tiny_next_dit.safetensors", "tiny_flag_dit.safetensors", "not_lumina.safetensors",
            "tiny_next_dit_diffusers/diffusion_pytorch_model.safetensors"} <= set(lumina)
    for name in ("diffusion_models", "unet"):
        assert "tiny_next_dit.safetensors" in comfy_inprocess.list_models(name)["files"]
    for name in ("text_encoders", "LLM"):
        assert "tiny_gemma/model.safetensors" in comfy_inprocess.list_models(name)["files"]
    custom_nodes = comfy_inprocess.list_models("custom_nodes", files=False)["paths"]
    assert str(comfy_inprocess.workspace.custom_nodes_dir) in custom_nodes
    assert "SaveImage" in comfy_inprocess.object_info() and comfy_inprocess.object_info("VAEDecode")["output"] == ["IMAGE"]


# -- the ComfyUI process' import environment --------------------------------------------------------

def test_comfy_process_environment(comfy_inprocess, tiny_assets):
    """Inside ComfyUI (torchvision stand-in on PYTHONPATH, offline, repo root off sys.path) the pack
    module is loaded, `lumina` is not a top-level module, and transformers loads and runs both tiny
    encoders offline (transformers imports torchvision names once it sees the stand-in)."""
    env = comfy_inprocess.call_in_comfy(CHECKS, "environment")
    assert env["torchvision_stub"] and env["pack_module"]
    assert env["top_level_lumina"] is False, "the repository root leaked onto ComfyUI's sys.path"
    assert env["comfy_nodes_module"].endswith("nodes.py")  # ComfyUI's nodes.py, not our nodes/

    folders = [str(tiny_assets.gemma), str(tiny_assets.llama)]
    result = comfy_inprocess.call_in_comfy(CHECKS, "run_text_encoders", folders=folders,
                                           prompts=["a red circle at the top left", ""])
    gemma, llama = result[folders[0]], result[folders[1]]
    assert gemma["shape"][-1] == 64 and llama["shape"][-1] == 96 and gemma["finite"] and llama["finite"]
    assert gemma["first_ids"] == [2, 2] and gemma["tokens"] == [8, 1]  # <bos> first; "" keeps <bos>


@pytest.mark.skipif(not os.environ.get("LUMINA_E2E_SDXL_VAE"),
                    reason="set LUMINA_E2E_SDXL_VAE=1: builds/uses a 160 MB random SDXL VAE (cached)")
def test_sdxl_vae_decodes(comfy_server, sdxl_vae, unique_prefix):
    entry = comfy_server.run(decode_graph(sdxl_vae, unique_prefix), timeout=300)
    [png] = comfy_server.output_files(entry)
    with Image.open(png) as img:
        assert img.size == (64, 64)
    assert "Missing VAE keys" not in comfy_server.log_text()
