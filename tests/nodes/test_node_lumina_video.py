"""Lumina-Video through the nodes: the released folder form in the Lumina Model Loader, Lumina Empty
Video Latent sized for it, the Lumina Flow Sampler's Lumina-Video path with Lumina-Video Settings
(equal to `lumina.sample_video`), progress and cancel, and the clear errors of the wrong pairings.

The model is the tiny assets' `tiny_lumina_video` (16 channels, patch entries 1x2 2x2 2x4, saved as
consolidated.00-of-01.pth with torch.compile key segments beside a pickled model_args.pth)."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.memory import estimate_sampling_memory
from lumina.sampling_settings import SamplingSettings
from lumina.text_encoders import load_text_encoder
from lumina.video_sampling import scaled_cfg, video_sample_settings
from lumina.video_vae import LUMINA_VIDEO_VAE_SCALE
from nodes_support import assert_untouched, defaults, empty_latent, encode, flow_sample, snapshot

PROMPT, NEGATIVE = "a red circle moving to the right", "blurry"
OFFICIAL_FRAMES = "Lumina-Video official (frames ÷ 4)"


@pytest.fixture(scope="module")
def video_ckpt(tiny) -> str:
    return tiny.name(tiny.lumina_video)


@pytest.fixture(scope="module")
def video_model(comfyui, video_ckpt):
    (model,) = comfyui.run_node("LuminaModelLoader", ckpt_name=video_ckpt, weight_dtype="fp32")
    return model


@pytest.fixture(scope="module")
def captions(comfyui, gemma):
    return encode(comfyui, gemma, PROMPT, NEGATIVE)


def video_latent(comfyui, model=None, width=64, height=32, frames=8, **changes) -> dict:
    inputs = {**defaults(comfyui, "LuminaEmptyVideoLatent"), "width": width, "height": height, "frames": frames,
              "frame_mapping": OFFICIAL_FRAMES, **changes}
    (latent,) = comfyui.run_node("LuminaEmptyVideoLatent", model=model, **inputs)
    return latent


def settings_node(comfyui, **changes):
    (settings,) = comfyui.run_node("LuminaVideoSettings", **{**defaults(comfyui, "LuminaVideoSettings"), **changes})
    return settings


def test_loader_lists_the_weights_not_model_args_and_makes_a_video_model(comfyui, video_ckpt, video_model, tiny):
    names = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaModelLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert video_ckpt in names and not any(n.endswith("model_args.pth") for n in names)
    inner = video_model.model.diffusion_model
    assert type(inner).__name__ == "LuminaVideo"  # the pack imports its own copy of lumina
    assert inner.config.patches == ((2, 1), (2, 2), (4, 2))
    fmt = video_model.model.latent_format
    assert fmt.scale_factor == LUMINA_VIDEO_VAE_SCALE and fmt.latent_channels == 16 and fmt.latent_dimensions == 3
    estimate = estimate_sampling_memory(lumina.load_model(tiny.lumina_video), (1, 16, 2, 4, 8), cfg_batch=True,
                                        count_weights=False, device="cpu")
    assert video_model.model.memory_required((1, 16, 2, 4, 8)) == estimate.run_bytes  # what ComfyUI frees for a call


def test_empty_video_latent_for_the_model(comfyui, video_model):
    assert video_latent(comfyui, video_model)["samples"].shape == (1, 16, 2, 4, 8)  # 8 frames ÷ 4 = 2 latent frames
    assert video_latent(comfyui, video_model, frames=1, frame_mapping="1:1 (per-frame VAE, multi-view)")["samples"].shape[2] == 1
    preset = video_latent(comfyui, preset="1248x704 (Lumina-Video R960)", frames=96)["samples"]
    assert preset.shape == (1, 4, 24, 88, 156)  # generate.py's README run: 96 frames → 24 latent frames
    with pytest.raises(ValueError, match=r"width 48 px does not fit this model: use a multiple of 32"):
        video_latent(comfyui, video_model, width=48)
    with pytest.raises(ValueError, match=r"3 latent frames; .* temporal patch size 2 needs 1 or a multiple of 2"):
        video_latent(comfyui, video_model, frames=12)
    with pytest.raises(ValueError, match=r"10 frames: the official mapping takes frames ÷ 4 .* use a multiple of 4 \(8 or 12\)"):
        video_latent(comfyui, frames=10)


@pytest.mark.parametrize("preset", ["f24F96R960-MultiScale", "custom"])
def test_flow_sampler_equals_sample_video(comfyui, video_model, captions, tiny, preset):
    changes = {"patch_schedule": "2x2; 0.5: 1x2", "motion_score": 3.0, "cfg_until": 0.6, "renorm": 1.5} if preset == "custom" else {}
    node_settings = settings_node(comfyui, preset=preset, **changes)
    latent = video_latent(comfyui, video_model)
    out = flow_sample(comfyui, video_model, *captions, latent, seed=5, steps=4, shift=24.0, cfg=7.0, solver="euler",
                      video_settings=node_settings)
    model = lumina.load_model(tiny.lumina_video, dtype=torch.float32)
    both = load_text_encoder(tiny.gemma, dtype=torch.float32).encode([PROMPT, NEGATIVE])
    cond = lumina.Conditioning(both.cap_feats[:1], both.cap_mask[:1])
    uncond = lumina.Conditioning(both.cap_feats[1:], both.cap_mask[1:])
    if preset == "custom":
        expected = video_sample_settings("f24F96R960", patch_comb=("2x2", (0.5, "1x2")), motion=3.0,
                                         neg_motion=(2.0, (0.05, 3.0)), cfg=(7.0, (0.6, 0.0)), renorm=1.5)
    else:
        expected = video_sample_settings(preset, cfg=scaled_cfg(video_sample_settings(preset).cfg, 7.0))
    grid = SamplingSettings(steps=4, shift=24.0).time_grid()
    lib = lumina.sample_video(model, cond, uncond, (1, 16, 2, 4, 8), expected.with_(steps=4, time_shift=24.0), seed=5)
    assert torch.equal(grid, lumina.video_sampling.time_grid(4, 24.0))  # the Flow Sampler's grid is the official one
    assert out.shape == (1, 16, 2, 4, 8)
    torch.testing.assert_close(out, lib / LUMINA_VIDEO_VAE_SCALE, atol=1e-5, rtol=0)


def test_without_settings_the_f24_values_apply_and_settings_change_the_result(comfyui, video_model, captions):
    latent = video_latent(comfyui, video_model)
    plain = flow_sample(comfyui, video_model, *captions, latent, seed=1, solver="euler")
    same = flow_sample(comfyui, video_model, *captions, latent, seed=1, solver="euler",
                       video_settings=settings_node(comfyui, preset="f24F96R960"))
    other = flow_sample(comfyui, video_model, *captions, latent, seed=1, solver="euler",
                        video_settings=settings_node(comfyui, preset="custom", motion_score=0.0))
    assert torch.equal(plain, same) and not torch.equal(plain, other)


def test_video_to_video_and_progress_and_cancel(comfyui, video_model, captions):
    import comfy.model_management
    import comfy.utils

    start = {"samples": torch.randn(1, 16, 2, 4, 8, generator=torch.Generator().manual_seed(0))}
    kept = flow_sample(comfyui, video_model, *captions, start, start_time=1.0)
    torch.testing.assert_close(kept, start["samples"], atol=1e-6, rtol=0)
    seen = []

    def hook(value, total, preview):
        seen.append((value, total))
        if len(seen) == 2 and cancel:
            comfy.model_management.interrupt_current_processing(True)

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        cancel = False
        flow_sample(comfyui, video_model, *captions, video_latent(comfyui, video_model), steps=5, solver="euler")
        assert seen == [(i, 4) for i in range(1, 5)]
        seen.clear()
        cancel = True
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            flow_sample(comfyui, video_model, *captions, video_latent(comfyui, video_model), steps=30, solver="euler")
        assert len(seen) == 2
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(previous)


def test_wrong_pairings_are_clear_errors(comfyui, video_model, next_dit, captions):
    latent = video_latent(comfyui, video_model)
    with pytest.raises(ValueError, match=r"samples video latents \(batch, 16, frames, h, w\), got shape \(1, 4, 4, 4\)"):
        flow_sample(comfyui, video_model, *captions, empty_latent(comfyui, 32, 32))
    with pytest.raises(ValueError, match=r"has 4 channels but this Lumina-Video model takes 16-channel latents"):
        flow_sample(comfyui, video_model, *captions, {"samples": torch.zeros(1, 4, 2, 4, 8)})
    with pytest.raises(ValueError, match=r"latent size 4×6 is not a positive multiple of the largest patch size 4"):
        flow_sample(comfyui, video_model, *captions, {"samples": torch.zeros(1, 16, 2, 4, 6)})
    with pytest.raises(ValueError, match="cfg_mode 'standard' is for Lumina-T2I / Lumina-Next"):
        flow_sample(comfyui, video_model, *captions, latent, cfg_mode="standard")
    with pytest.raises(ValueError, match=r"no patch entry 1x8 .* it has 1x2, 2x2, 2x4"):
        flow_sample(comfyui, video_model, *captions, latent, video_settings=settings_node(comfyui, preset="custom", patch_schedule="1x8"))
    with pytest.raises(ValueError, match=r"schedule '2x4; 0.5 2x2' cannot be read"):
        settings_node(comfyui, preset="custom", patch_schedule="2x4; 0.5 2x2")
    with pytest.raises(ValueError, match="Lumina-Video Settings apply to Lumina-Video models only"):
        flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 32, 32), video_settings=settings_node(comfyui))
    before = snapshot(video_model)
    with pytest.raises(ValueError, match="works with Lumina-T2I / Lumina-Next models; a Lumina-Video MODEL goes straight"):
        comfyui.run_node("LuminaStyleShared", model=video_model, **defaults(comfyui, "LuminaStyleShared"))
    assert_untouched(video_model, before)
    inputs = {**defaults(comfyui, "KSampler"), "seed": 1, "steps": 2}
    with pytest.raises(ValueError, match="a Lumina-Video MODEL samples with the Lumina Flow Sampler"):
        comfyui.run_node("KSampler", model=video_model, positive=captions[0], negative=captions[1], latent_image=latent, **inputs)
