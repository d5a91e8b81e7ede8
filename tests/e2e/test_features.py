"""Training-free features through the nodes in a real ComfyUI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tools.comfyui.assets import substitute_tiny

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"


def workflow(name: str, assets, prefix: str, divisor: int = 16) -> dict:
    return substitute_tiny(json.loads((WORKFLOWS / f"{name}.json").read_text()), assets, prefix, side_divisor=divisor)


def sampled(runner, graph: dict, node: str = "5") -> torch.Tensor:
    entry = runner.run(graph, dump=[node])
    return load_file(entry["dumps"][node])["0.samples"]


def test_core_area_regions_equal_the_regional_prompts_node(comfy_inprocess, tiny_assets, unique_prefix):
    """A 1×2 grid from our node and the same halves from core ConditioningSetArea + Combine."""
    ours = workflow("lumina_next_regional_2x2", tiny_assets, unique_prefix)
    ours["4"]["inputs"].update(width=128, height=64)
    ours["3"]["inputs"].update(region_prompts="a red circle\na blue square", rows=1, cols=2, global_prompt="a red circle and a blue square")
    core = workflow("lumina_next_regional_core_areas", tiny_assets, unique_prefix)
    core["4"]["inputs"].update(width=128, height=64)
    core["3"]["inputs"]["prompt"] = "a red circle and a blue square"
    core["20"]["inputs"]["prompt"], core["21"]["inputs"]["prompt"] = "a red circle", "a blue square"
    core["22"]["inputs"].update(width=64, height=64, x=0, y=0)
    core["23"]["inputs"].update(width=64, height=64, x=64, y=0)
    a, b = sampled(comfy_inprocess, ours), sampled(comfy_inprocess, core)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)

    plain = copy.deepcopy(core)
    plain["5"]["inputs"]["positive"] = ["3", 0]  # the global prompt alone
    assert (sampled(comfy_inprocess, plain) - a).abs().max() > 1e-3  # the regions do something


def test_regions_work_at_batch_two_on_a_2x2_grid(comfy_inprocess, tiny_assets, unique_prefix):
    graph = workflow("lumina_next_regional_2x2", tiny_assets, unique_prefix)
    graph["4"]["inputs"]["batch_size"] = 2
    latent = sampled(comfy_inprocess, graph)
    assert latent.shape == (2, 4, 8, 8) and torch.isfinite(latent).all()
    single = copy.deepcopy(graph)
    single["4"]["inputs"]["batch_size"] = 1
    torch.testing.assert_close(sampled(comfy_inprocess, single)[0], latent[0], atol=1e-4, rtol=0)

    wide_grid = copy.deepcopy(single)  # a 1×3 layout on a square image: grids stretch to any image
    wide_grid["3"]["inputs"].update(region_prompts="a red circle\na blue square\na green triangle", rows=1, cols=3)
    assert torch.isfinite(sampled(comfy_inprocess, wide_grid)).all()


def test_style_shared_reference_item_equals_its_solo_run(comfy_inprocess, tiny_assets, unique_prefix):
    graph = workflow("lumina_next_style_aligned_batch", tiny_assets, unique_prefix)
    graph["3"]["inputs"]["prompts"] = "a red circle\na blue square\na green triangle"
    graph["4"]["inputs"]["batch_size"] = 3
    shared = sampled(comfy_inprocess, graph)

    solo = copy.deepcopy(graph)
    solo["3"]["inputs"]["prompts"] = "a red circle"
    solo["4"]["inputs"]["batch_size"] = 1
    torch.testing.assert_close(sampled(comfy_inprocess, solo)[0], shared[0], atol=1e-4, rtol=0)

    independent = copy.deepcopy(graph)
    independent["5"]["inputs"]["model"] = ["1", 0]  # no sharing
    plain = sampled(comfy_inprocess, independent)
    torch.testing.assert_close(plain[0], shared[0], atol=1e-4, rtol=0)
    assert (plain[1:] - shared[1:]).abs().max() > 1e-3  # the other items did look at the reference


def test_edit_from_start_time_one_returns_the_image_latent(comfy_inprocess, tiny_assets, example_image, unique_prefix):
    graph = workflow("lumina_next_style_edit", tiny_assets, unique_prefix)
    graph["5"]["inputs"].update(start_time=1.0, normalize_latent=False)
    encoded = comfy_inprocess.run(graph, dump=["10", "5"])
    latent_in = load_file(encoded["dumps"]["10"])["0.samples"]
    latent_out = load_file(encoded["dumps"]["5"])["0.samples"]
    torch.testing.assert_close(latent_out, latent_in, atol=1e-6, rtol=1e-6)


def test_extrapolation_node_patches_a_clone_and_sets_the_shift(comfy_inprocess, tiny_assets, unique_prefix):
    graph = workflow("lumina_next_2k_preset", tiny_assets, unique_prefix)
    entry = comfy_inprocess.run(graph, probe=["31"])
    assert abs(entry["probe"]["31"][1][0] - 4.0 * 128 / 1024) < 1e-9  # base shift × side / 1024
    plain = copy.deepcopy(graph)
    plain["5"]["inputs"]["model"] = ["1", 0]
    plain["5"]["inputs"]["shift"] = 4.0 * 128 / 1024
    plain["5"]["inputs"]["extrapolation"] = "auto"
    # at 128 px (< the 1024 px base) auto means proportional attention only: the same as the node's
    torch.testing.assert_close(sampled(comfy_inprocess, graph), sampled(comfy_inprocess, plain), atol=1e-5, rtol=0)


def test_region_adaptive_node_equals_the_library_and_reuses_patches(comfy_inprocess, tiny_assets, unique_prefix):
    import sys

    from test_nodes import REPO, library_latent

    graph = workflow("lumina_next_sft_ras", tiny_assets, unique_prefix)
    graph["4"]["inputs"].update(width=64, height=64)
    graph["1"]["inputs"]["weight_dtype"] = "fp32"
    graph["2"]["inputs"]["dtype"] = "fp32"  # the library side encodes in fp32 (auto may pick bf16 on this CPU)
    graph["5"]["inputs"].update(steps=8, seed=3)
    graph["9"]["inputs"].update(start_step=2, reset_steps="5")
    ras = sampled(comfy_inprocess, graph)

    sys.path.insert(0, str(REPO))
    from lumina.features.region_adaptive import RegionAdaptive

    prompt, negative = graph["3"]["inputs"]["prompt"], graph["3"]["inputs"]["negative_prompt"]
    settings = dict(steps=8, step_convention="model_steps", solver="euler", seed=3, cfg=4.0, shift=4.0)
    lib = library_latent(tiny_assets, prompt, negative, wrappers=[RegionAdaptive(0.5, start_step=2, reset_steps=(5,))], **settings)
    torch.testing.assert_close(ras, lib, atol=1e-5, rtol=0)
    dense = library_latent(tiny_assets, prompt, negative, **settings)
    assert (ras - dense).abs().max() > 1e-4  # patches were reused

    plain = copy.deepcopy(graph)
    plain["5"]["inputs"]["model"] = ["1", 0]  # the loader's MODEL is untouched by the node
    torch.testing.assert_close(sampled(comfy_inprocess, plain), dense, atol=1e-5, rtol=0)

    flag = copy.deepcopy(graph)  # Flag-DiT too: its [nextline] tokens run at every step
    flag["1"]["inputs"]["ckpt_name"] = tiny_assets.name(tiny_assets.flag_dit)
    flag["2"]["inputs"]["text_encoder"] = tiny_assets.name(tiny_assets.llama)
    latent = sampled(comfy_inprocess, flag)
    assert latent.shape == (1, 4, 8, 8) and torch.isfinite(latent).all()


def _node_error(runner, graph: dict) -> dict:
    entry = runner.run(graph, check=False)
    assert entry["status"]["status_str"] == "error"
    return next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")


def test_feature_bad_inputs_are_clear_node_errors(comfy_inprocess, tiny_assets, unique_prefix):
    outside = workflow("lumina_next_regional_core_areas", tiny_assets, unique_prefix, divisor=8)  # 128 px image
    outside["23"]["inputs"].update(x=512, y=0)
    error = _node_error(comfy_inprocess, outside)
    assert error["node_type"] == "LuminaFlowSampler" and "outside the 128×128 px image" in error["exception_message"]

    empty = workflow("lumina_next_regional_2x2", tiny_assets, unique_prefix)
    empty["3"]["inputs"]["region_prompts"] = "\n \n"
    error = _node_error(comfy_inprocess, empty)
    assert error["node_type"] == "LuminaRegionalPrompts" and "0 regional prompt line(s) for a 2×2 grid" in error["exception_message"]

    wrong_mask = workflow("lumina_next_regional_core_areas", tiny_assets, unique_prefix, divisor=8)
    wrong_mask["40"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 128, "height": 32}}
    wrong_mask["23"] = {"class_type": "ConditioningSetMask", "inputs": {
        "conditioning": ["21", 0], "mask": ["40", 0], "strength": 1.0, "set_cond_area": "default"}}
    error = _node_error(comfy_inprocess, wrong_mask)
    assert "mask of 128×32 px does not fit the 128×128 px image" in error["exception_message"]

    reference = workflow("lumina_next_style_aligned_batch", tiny_assets, unique_prefix)
    reference["30"]["inputs"]["reference_index"] = 7
    error = _node_error(comfy_inprocess, reference)
    assert "reference item 7 is outside the batch of 4" in error["exception_message"]

    bad_steps = workflow("lumina_next_sft_ras", tiny_assets, unique_prefix)
    bad_steps["9"]["inputs"]["reset_steps"] = "12;22"
    error = _node_error(comfy_inprocess, bad_steps)
    assert error["node_type"] == "LuminaRegionAdaptive" and "reset_steps '12;22' must be comma-separated" in error["exception_message"]

    good = workflow("lumina_next_regional_2x2", tiny_assets, unique_prefix)
    assert comfy_inprocess.run(good)["status"]["status_str"] == "success"
