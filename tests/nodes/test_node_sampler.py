"""Lumina Flow Sampler (= the library's `lumina.sample`), and the core SamplerCustom path with
Lumina Official CFG, Lumina Scheduler and Lumina Midpoint Sampler."""

from __future__ import annotations


import pytest
import torch

import lumina
from lumina.text_encoders import load_text_encoder
from nodes_support import defaults, empty_latent, encode, flow_sample

PROMPT, NEGATIVE = "a small red circle at the top left", "blurry"


@pytest.fixture(scope="module")
def library(tiny):
    """The tiny Next-DiT and the two captions, loaded by the library itself (not through a node)."""
    model = lumina.load_model(tiny.next_dit, dtype=torch.float32)
    both = load_text_encoder(tiny.gemma, dtype=torch.float32).encode([PROMPT, NEGATIVE])
    cond = lumina.Conditioning(both.cap_feats[:1], both.cap_mask[:1])
    uncond = lumina.Conditioning(both.cap_feats[1:], both.cap_mask[1:])
    return model, cond, uncond


@pytest.fixture(scope="module")
def captions(comfyui, gemma):
    return encode(comfyui, gemma, PROMPT, NEGATIVE)


def as_comfy_latent(model, latent: torch.Tensor) -> torch.Tensor:
    """A library latent in ComfyUI's LATENT space, through the model's latent format (as the node returns it)."""
    return model.model.latent_format.process_out(latent)


def test_flow_sampler_equals_the_library_call(comfyui, next_dit, captions, library):
    lib_model, cond, uncond = library
    node = flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), seed=7, steps=4, solver="midpoint",
                       cfg=3.0, extrapolation="off")
    lib = lumina.sample(lib_model, cond, uncond, (1, 4, 8, 8), steps=4, solver="midpoint", cfg=3.0, seed=7)
    assert node.shape == (1, 4, 8, 8) and node.dtype == torch.float32
    torch.testing.assert_close(node, as_comfy_latent(next_dit, lib), atol=1e-5, rtol=0)


def test_auto_extrapolation_uses_the_official_settings_for_the_size(comfyui, next_dit, captions, library):
    lib_model, cond, uncond = library
    node = flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 48), seed=3, solver="euler", extrapolation="auto")
    options = lumina.extrapolation_options(lib_model.config, 64, 48, "auto")
    lib = lumina.sample(lib_model, cond, uncond, (1, 4, 6, 8), steps=3, solver="euler", seed=3, options=options)
    torch.testing.assert_close(node, as_comfy_latent(next_dit, lib), atol=1e-5, rtol=0)


@pytest.mark.parametrize("settings", [dict(step_convention="model steps", solver="heun", cfg=1.0),
                                      dict(schedule="sigmoid", sigmoid_scale=6.0, cfg_mode="standard", shift=2.0)])
def test_sampler_settings_reach_the_library(comfyui, next_dit, captions, library, settings):
    lib_model, cond, uncond = library
    node = flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), seed=5, extrapolation="off", **settings)
    lib_settings = {**defaults(comfyui, "LuminaFlowSampler"), "steps": 3, **settings}
    lib = lumina.sample(lib_model, cond, uncond, (1, 4, 8, 8), seed=5, steps=3, solver=lib_settings["solver"],
                        schedule=lib_settings["schedule"], shift=lib_settings["shift"], cfg=lib_settings["cfg"],
                        cfg_mode=lib_settings["cfg_mode"], sigmoid_scale=lib_settings["sigmoid_scale"],
                        step_convention=lib_settings["step_convention"].replace(" (official)", "").replace(" ", "_"))
    torch.testing.assert_close(node, as_comfy_latent(next_dit, lib), atol=1e-5, rtol=0)


def test_a_batch_item_is_its_single_run_and_the_seed_matters(comfyui, next_dit, captions):
    batch = flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64, batch_size=2), seed=4)
    single = flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), seed=4)
    torch.testing.assert_close(batch[:1], single, atol=1e-4, rtol=0)  # batched matmuls round differently
    assert (batch[1] - batch[0]).abs().max() > 1e-3
    assert (flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), seed=5) - single).abs().max() > 1e-3


def test_denoise_and_start_time_start_from_the_input_latent(comfyui, next_dit, captions):
    image = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    text_to_image = flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), seed=2)
    torch.testing.assert_close(flow_sample(comfyui, next_dit, *captions, image, seed=2), text_to_image)  # denoise 1 ignores it
    edited = flow_sample(comfyui, next_dit, *captions, image, seed=2, steps=6, denoise=0.5)
    assert (edited - text_to_image).abs().max() > 1e-3
    torch.testing.assert_close(flow_sample(comfyui, next_dit, *captions, image, seed=2, start_time=1.0), image["samples"],
                               atol=1e-6, rtol=1e-6)  # λ = 1: nothing left to solve
    assert image["samples"].shape == (1, 4, 8, 8)  # the input LATENT is not modified in place


def test_progress_bar_and_cancel(comfyui, next_dit, captions):
    import comfy.model_management
    import comfy.utils

    seen = []

    def hook(value, total, preview):
        seen.append((value, total))
        if len(seen) == 2 and cancel:
            comfy.model_management.interrupt_current_processing(True)  # what the UI's Cancel does

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        cancel = False
        flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), steps=6, solver="euler")
        assert seen == [(i, 5) for i in range(1, 6)]  # 6 grid points = 5 steps
        seen.clear()
        cancel = True
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), steps=30, solver="euler")
        assert len(seen) == 2
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(previous)


def test_bad_inputs_are_clear_errors(comfyui, next_dit, captions, tiny):
    positive, negative = captions
    latent = empty_latent(comfyui, 64, 64)
    with pytest.raises(ValueError, match="negative conditioning is empty"):
        flow_sample(comfyui, next_dit, positive, [], latent)
    with pytest.raises(ValueError, match="positive conditioning is empty"):
        flow_sample(comfyui, next_dit, [], negative, latent)
    with pytest.raises(ValueError, match="is not an image latent"):
        flow_sample(comfyui, next_dit, positive, negative, {"samples": torch.zeros(1, 4, 8)})
    (llama,) = comfyui.run_node("LuminaTextEncoderLoader", text_encoder=tiny.name(tiny.llama), dtype="fp32", convention="auto")
    with pytest.raises(ValueError) as info:  # 96-wide captions into a 64-wide model
        flow_sample(comfyui, next_dit, *encode(comfyui, llama, PROMPT), latent)
    assert all(needle in str(info.value) for needle in ("96", "64", "text encoder"))
    from nodes_support import not_lumina_model

    with pytest.raises(ValueError, match="needs a model from the Lumina Model Loader"):
        flow_sample(comfyui, not_lumina_model(), positive, negative, latent)


# -- core SamplerCustom -----------------------------------------------------------------------------------

def custom_sample(comfyui, model, captions, sampler, steps: int, seed: int) -> torch.Tensor:
    from comfy_extras.nodes_custom_sampler import SamplerCustom

    (official,) = comfyui.run_node("LuminaOfficialCFG", model=model)
    (sigmas,) = comfyui.run_node("LuminaScheduler", steps=steps, step_convention="grid points (official)",
                                 schedule="shift", shift=4.0, denoise=1.0)
    with torch.inference_mode():
        out, _ = SamplerCustom().sample(official, True, seed, 4.0, *captions, sampler, sigmas, empty_latent(comfyui, 64, 64))
    return out["samples"]


def test_core_sampler_custom_reproduces_the_official_solvers(comfyui, next_dit, captions):
    from comfy_extras.nodes_custom_sampler import KSamplerSelect

    (euler,) = KSamplerSelect().get_sampler("euler")
    ours = flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), seed=3, steps=5, solver="euler")
    torch.testing.assert_close(custom_sample(comfyui, next_dit, captions, euler, 5, 3), ours, atol=1e-4, rtol=0)

    (midpoint,) = comfyui.run_node("LuminaMidpointSampler")
    ours = flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), seed=3, steps=4, solver="midpoint")
    torch.testing.assert_close(custom_sample(comfyui, next_dit, captions, midpoint, 4, 3), ours, atol=1e-4, rtol=0)


def test_official_cfg_patches_a_clone(comfyui, next_dit):
    from nodes_support import assert_untouched, not_lumina_model, snapshot

    before = snapshot(next_dit)
    (patched,) = comfyui.run_node("LuminaOfficialCFG", model=next_dit)
    assert patched is not next_dit and patched.model is next_dit.model  # a ModelPatcher clone shares the weights
    assert "sampler_cfg_function" in patched.model_options and "sampler_cfg_function" not in next_dit.model_options
    assert_untouched(next_dit, before)
    with pytest.raises(ValueError, match="needs a model from the Lumina Model Loader"):
        comfyui.run_node("LuminaOfficialCFG", model=not_lumina_model())
