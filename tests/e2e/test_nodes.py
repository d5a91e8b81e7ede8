"""Our nodes in a real ComfyUI: every workflow runs, bad inputs are node errors, and the node path
gives the library's latents."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from safetensors.torch import load_file

from tools.comfyui import ComfyExecutionError, ComfyValidationError
from tools.comfyui.assets import substitute_tiny as tiny
from workflow_format import ui_to_api

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
API_WORKFLOWS = sorted((WORKFLOWS / "api").glob("*.json"))
SDXL_SCALE = 0.13025
OUR_NODES = {
    "LuminaModelLoader": {"ckpt_name", "weight_dtype", "ema", "sampling_shift", "compile"},
    "LuminaTextEncoderLoader": {"text_encoder", "dtype", "convention", "device"},
    "LuminaTextEncode": {"text_encoder", "prompt", "negative_prompt"},
    "LuminaEmptyLatent": {"preset", "width", "height", "batch_size", "model"},
    "LuminaEmptyVideoLatent": {"preset", "width", "height", "frames", "frame_mapping", "fps", "batch_size", "model"},
    "LuminaVideoVAELoader": {"vae_name", "dtype", "tiling"},
    "LuminaVideoVAEDecode": {"samples", "vae"},
    "LuminaVideoVAEEncode": {"pixels", "vae", "fps"},
    "LuminaPixelSpaceVAE": set(),
    "LuminaFlowSampler": {"model", "positive", "negative", "latent_image", "seed", "steps", "step_convention", "solver",
                          "schedule", "shift", "cfg", "cfg_mode", "extrapolation", "denoise", "start_time", "normalize_latent",
                          "sigmoid_scale", "video_settings"},
    "LuminaContextDrop": {"model", "ratio", "end_time"},
    "LuminaGateSparsity": {"model", "threshold"},
    "LuminaVideoSettings": {"preset", "patch_schedule", "motion_score", "negative_motion", "negative_motion_until",
                            "cfg_until", "renorm"},
    "LuminaScheduler": {"steps", "step_convention", "schedule", "shift", "denoise", "sigmoid_scale"},
    "LuminaMidpointSampler": set(),
    "LuminaOfficialCFG": {"model"},
    "LuminaBatchTextEncode": {"text_encoder", "prompts", "negative_prompt"},
    "LuminaRegionalPrompts": {"text_encoder", "region_prompts", "rows", "cols", "global_prompt", "negative_prompt"},
    "LuminaStyleShared": {"model", "reference_index", "strength", "start_layer", "end_layer", "items"},
    "LuminaExtrapolation": {"model", "width", "height", "mode", "proportional_attention", "watershed", "base_shift"},
    "LuminaRegionAdaptive": {"model", "sample_ratio", "start_step", "reset_steps", "end_step", "metric", "high_ratio",
                             "starvation_scale", "skip_ramp", "skip_ramp_every"},
}


def t2i_graph(assets, prefix: str, *, ckpt=None, encoder=None, size=64, **sampler) -> dict:
    graph = tiny(json.loads((WORKFLOWS / "api" / "lumina_next_sft_t2i.json").read_text()), assets, prefix)
    graph["4"]["inputs"].update(width=size, height=size)
    if ckpt:
        graph["1"]["inputs"]["ckpt_name"] = ckpt
    if encoder:
        graph["2"]["inputs"]["text_encoder"] = encoder
    graph["1"]["inputs"]["weight_dtype"] = "fp32"
    graph["2"]["inputs"]["dtype"] = "fp32"  # auto is bf16 on CPUs with native bf16; the library comparisons run fp32
    graph["5"]["inputs"].update(sampler)
    return graph


# -- discovery ----------------------------------------------------------------------------------------------

def test_object_info_lists_every_node_with_its_inputs(comfy_server, tiny_assets):
    info = comfy_server.object_info()
    for node, expected in OUR_NODES.items():
        assert node in info, f"{node} missing from /object_info"
        given = set(info[node]["input"].get("required", {})) | set(info[node]["input"].get("optional", {}))
        assert given == expected, node
    loader = info["LuminaModelLoader"]["input"]["required"]["ckpt_name"][0]
    assert {"tiny_next_dit.safetensors", "tiny_flag_dit.safetensors",
            "tiny_next_dit_diffusers/diffusion_pytorch_model.safetensors"} <= set(loader)
    assert {"tiny_gemma", "tiny_llama"} <= set(info["LuminaTextEncoderLoader"]["input"]["required"]["text_encoder"][0])
    assert info["LuminaModelLoader"]["output"] == ["MODEL"]
    assert info["LuminaTextEncode"]["output"] == ["CONDITIONING", "CONDITIONING"]


# -- workflows ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("api_file", API_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_agrees_with_its_api_twin(comfy_server, api_file):
    ui = json.loads((WORKFLOWS / api_file.name).read_text())
    assert any(n["type"] == "Note" for n in ui["nodes"]), "each UI workflow explains where its files go"
    assert ui_to_api(ui, comfy_server.object_info()) == json.loads(api_file.read_text())


@pytest.mark.parametrize("api_file", API_WORKFLOWS, ids=lambda p: p.stem)
def test_every_workflow_runs(comfy_server, tiny_assets, example_image, demo_files, unique_prefix, api_file):
    original = json.loads(api_file.read_text())
    if api_file.stem.startswith("demo_"):  # the embedded demo model runs as it is
        if not demo_files:
            pytest.skip("the demo model is not in assets/demo yet")
        graph = original
        graph["8"]["inputs"]["filename_prefix"] = unique_prefix
        entry = comfy_server.run(graph, timeout=300)
        assert comfy_server.output_files(entry)
        video = [n["inputs"] for n in graph.values() if n["class_type"] == "LuminaEmptyVideoLatent"]
        if video:  # the demo video: one animated WEBP with a frame per latent frame (pixel space), moving as asked
            [webp] = comfy_server.output_files(entry)
            with Image.open(webp) as img:
                frames = [np.asarray(frame.convert("RGB").resize((32, 32), Image.BOX)) for frame in ImageSequence.Iterator(img)]
            assert len(frames) == video[0]["frames"]
            from train.clip_measure import direction

            assert direction(frames) == graph["3"]["inputs"]["prompt"].split(" moving ")[1].split()[0]
        return
    areas = any(n["class_type"] == "ConditioningSetArea" for n in original.values())
    graph = tiny(original, tiny_assets, unique_prefix, side_divisor=8 if areas else 16)  # core areas: ≥ 64 px
    entry = comfy_server.run(graph, timeout=300)
    if any(n["class_type"] == "LuminaEmptyAudioLatent" for n in graph.values()):  # audio: tests/e2e/test_audio.py
        from test_audio import check_saved_audio

        check_saved_audio(comfy_server, entry, graph)
        return
    video = [n["inputs"] for n in graph.values() if n["class_type"] == "LuminaEmptyVideoLatent"]
    if video:  # an animation: the asked size, and the frames the CogVideoX VAE decodes (4·(latent frames − 1) + 1)
        [webp] = comfy_server.output_files(entry)
        latent_frames = video[0]["frames"] // 4  # the official frames ÷ 4 mapping of these workflows
        with Image.open(webp) as img:
            assert (img.n_frames, img.size) == (4 * (latent_frames - 1) + 1, (video[0]["width"], video[0]["height"]))
        return
    empty = [n["inputs"] for n in graph.values() if n["class_type"] == "LuminaEmptyLatent"]
    size, batch = ((empty[0]["width"], empty[0]["height"]), empty[0]["batch_size"]) if empty else ((64, 64), 1)
    pngs = comfy_server.output_files(entry)
    assert len(pngs) == batch
    for png in pngs:
        with Image.open(png) as img:
            assert img.size == size


def test_flag_dit_and_diffusers_checkpoints_sample(comfy_server, tiny_assets, unique_prefix):
    for ckpt, encoder in ((tiny_assets.name(tiny_assets.flag_dit), tiny_assets.name(tiny_assets.llama)),
                          (tiny_assets.name(tiny_assets.next_dit_diffusers / "diffusion_pytorch_model.safetensors"),
                           tiny_assets.name(tiny_assets.gemma))):
        entry = comfy_server.run(t2i_graph(tiny_assets, unique_prefix, ckpt=ckpt, encoder=encoder, solver="euler"))
        [png] = comfy_server.output_files(entry)
        with Image.open(png) as img:
            assert img.size == (64, 64)


# -- bad inputs never take the server down -------------------------------------------------------------------

def _expect_node_error(server, graph, node_type: str, *needles: str) -> None:
    with pytest.raises(ComfyExecutionError) as info:
        server.run(graph)
    assert info.value.error["node_type"] == node_type
    message = info.value.error["exception_message"]
    for needle in needles:
        assert needle in message, message


def test_bad_inputs_are_node_errors_and_the_server_goes_on(comfy_server, tiny_assets, unique_prefix):
    bad = t2i_graph(tiny_assets, unique_prefix, ckpt="no_such_model.safetensors")
    with pytest.raises(ComfyValidationError) as info:
        comfy_server.run(bad)
    assert "no_such_model.safetensors" in json.dumps(info.value.node_errors)

    _expect_node_error(comfy_server, t2i_graph(tiny_assets, unique_prefix, ckpt=tiny_assets.name(tiny_assets.not_lumina)),
                       "LuminaModelLoader", "not_lumina.safetensors", "no Lumina model found")

    odd = t2i_graph(tiny_assets, unique_prefix)
    odd["4"]["inputs"]["width"] = 72  # not a multiple of 16
    _expect_node_error(comfy_server, odd, "LuminaEmptyLatent", "width 72", "multiple of 16")

    mismatch = t2i_graph(tiny_assets, unique_prefix, encoder=tiny_assets.name(tiny_assets.llama))  # 96-wide into a 64-wide model
    _expect_node_error(comfy_server, mismatch, "LuminaFlowSampler", "96", "64", "text encoder")

    entry = comfy_server.run(t2i_graph(tiny_assets, unique_prefix))  # the same server runs the next good prompt
    assert entry["status"]["status_str"] == "success"


# -- the node path is the library path ----------------------------------------------------------------------

def library_latent(assets, prompt: str, negative: str, **kwargs) -> torch.Tensor:
    sys.path.insert(0, str(REPO))
    import lumina
    from lumina.text_encoders import load_text_encoder

    model = lumina.load_model(assets.next_dit, dtype=torch.float32)
    both = load_text_encoder(assets.gemma, dtype=torch.float32).encode([prompt, negative])
    cond = lumina.Conditioning(both.cap_feats[:1], both.cap_mask[:1])
    uncond = lumina.Conditioning(both.cap_feats[1:], both.cap_mask[1:])
    options = lumina.extrapolation_options(model.config, 64, 64, "auto")
    out = lumina.sample(model, cond, uncond, (1, 4, 8, 8), options=options, **kwargs)
    return out / SDXL_SCALE  # ComfyUI's LATENT is in VAE space (latent_format.process_out)


def _sampler_latent(runner, graph, node="5") -> torch.Tensor:
    entry = runner.run(graph, dump=[node])
    return load_file(entry["dumps"][node])["0.samples"]


def test_node_path_equals_library_path(comfy_inprocess, tiny_assets, unique_prefix):
    graph = t2i_graph(tiny_assets, unique_prefix, seed=7, steps=4, solver="midpoint", cfg=3.0)
    graph["2"]["inputs"]["device"] = "cpu"  # the optional device input
    prompt, negative = graph["3"]["inputs"]["prompt"], graph["3"]["inputs"]["negative_prompt"]
    node = _sampler_latent(comfy_inprocess, graph)
    lib = library_latent(tiny_assets, prompt, negative, seed=7, steps=4, solver="midpoint", cfg=3.0, shift=4.0)
    torch.testing.assert_close(node, lib, atol=1e-5, rtol=0)


def test_sigmoid_scale_reaches_the_library(comfy_inprocess, tiny_assets, unique_prefix):
    graph = t2i_graph(tiny_assets, unique_prefix, seed=2, steps=5, solver="euler", schedule="sigmoid", sigmoid_scale=6.0)
    prompt, negative = graph["3"]["inputs"]["prompt"], graph["3"]["inputs"]["negative_prompt"]
    node = _sampler_latent(comfy_inprocess, graph)
    common = dict(seed=2, steps=5, solver="euler", cfg=4.0, schedule="sigmoid")
    torch.testing.assert_close(node, library_latent(tiny_assets, prompt, negative, sigmoid_scale=6.0, **common), atol=1e-5, rtol=0)
    assert (node - library_latent(tiny_assets, prompt, negative, **common)).abs().max() > 1e-4


def test_core_sampler_custom_reproduces_the_official_euler(comfy_inprocess, tiny_assets, unique_prefix):
    """SamplerCustom + Lumina Scheduler (official grid) + core euler + Lumina Official CFG
    = our Flow Sampler with euler: the documented exact core path."""
    ours = t2i_graph(tiny_assets, unique_prefix, seed=3, steps=5, solver="euler")
    core = copy.deepcopy(ours)
    del core["5"]
    core.update({
        "11": {"class_type": "LuminaOfficialCFG", "inputs": {"model": ["1", 0]}},
        "12": {"class_type": "LuminaScheduler", "inputs": {"steps": 5, "step_convention": "grid points (official)",
                                                          "schedule": "shift", "shift": 4.0, "denoise": 1.0}},
        "13": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "5": {"class_type": "SamplerCustom", "inputs": {
            "model": ["11", 0], "add_noise": True, "noise_seed": 3, "cfg": 4.0, "positive": ["3", 0], "negative": ["3", 1],
            "sampler": ["13", 0], "sigmas": ["12", 0], "latent_image": ["4", 0]}},
    })
    torch.testing.assert_close(_sampler_latent(comfy_inprocess, core), _sampler_latent(comfy_inprocess, ours), atol=1e-4, rtol=0)


def test_core_midpoint_sampler_and_ksampler_run(comfy_inprocess, tiny_assets, unique_prefix):
    ours = t2i_graph(tiny_assets, unique_prefix, seed=3, steps=4, solver="midpoint")
    custom = copy.deepcopy(ours)
    custom.update({
        "11": {"class_type": "LuminaOfficialCFG", "inputs": {"model": ["1", 0]}},
        "12": {"class_type": "LuminaScheduler", "inputs": {"steps": 4, "step_convention": "grid points (official)",
                                                          "schedule": "shift", "shift": 4.0, "denoise": 1.0}},
        "13": {"class_type": "LuminaMidpointSampler", "inputs": {}},
        "5": {"class_type": "SamplerCustom", "inputs": {
            "model": ["11", 0], "add_noise": True, "noise_seed": 3, "cfg": 4.0, "positive": ["3", 0], "negative": ["3", 1],
            "sampler": ["13", 0], "sigmas": ["12", 0], "latent_image": ["4", 0]}},
    })
    torch.testing.assert_close(_sampler_latent(comfy_inprocess, custom), _sampler_latent(comfy_inprocess, ours), atol=1e-4, rtol=0)

    ksampler = copy.deepcopy(ours)
    ksampler["5"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "seed": 3, "steps": 4, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["4", 0], "denoise": 1.0}}
    latent = _sampler_latent(comfy_inprocess, ksampler)
    assert latent.shape == (1, 4, 8, 8) and torch.isfinite(latent).all()

    ras = copy.deepcopy(ksampler)  # core samplers run dense under a Region-Adaptive model (with a warning)
    ras["9"] = {"class_type": "LuminaRegionAdaptive", "inputs": {
        "model": ["1", 0], "sample_ratio": 0.5, "start_step": 1, "reset_steps": "", "end_step": -1, "metric": "std",
        "high_ratio": 1.0, "starvation_scale": 0.1, "skip_ramp": 0, "skip_ramp_every": 0}}
    ras["5"]["inputs"]["model"] = ["9", 0]
    torch.testing.assert_close(_sampler_latent(comfy_inprocess, ras), latent, atol=0, rtol=0)


def test_progress_and_interrupt(comfy_inprocess, tiny_assets, unique_prefix):
    graph = t2i_graph(tiny_assets, unique_prefix, steps=6, solver="euler")
    entry = comfy_inprocess.run(graph)
    progress = [e[1] for e in entry["events"] if e[0] == "progress"]
    assert [p["value"] for p in progress][-5:] == [1, 2, 3, 4, 5] and progress[-1]["max"] == 5

    stopped = comfy_inprocess.run(t2i_graph(tiny_assets, unique_prefix, steps=30, solver="euler"),
                                  interrupt_after_progress=2, check=False)
    assert stopped["status"]["status_str"] != "success"
    assert sum(1 for e in stopped["events"] if e[0] == "progress") < 29
    assert comfy_inprocess.run(graph)["status"]["status_str"] == "success"
