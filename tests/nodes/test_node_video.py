"""Lumina Empty Video Latent and the Lumina Flow Sampler with (batch, C, frames, h, w) latents:
the same as `lumina.sample`, frames interact, progress / previews / cancel, and clear errors.

The frames model is a tiny Next-DiT with head_dim 24 (3-D RoPE needs a multiple of 6), saved with
lumina.save_official into the workspace's models folder and loaded by the Lumina Model Loader;
the tiny Next-DiT of the shared fixtures (head_dim 16) takes images only."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.text_encoders import load_text_encoder
from nodes_support import defaults, empty_latent, encode, flow_sample

PROMPT, NEGATIVE = "a small red circle moving to the right", "blurry"
FRAMES_CKPT = "tiny_next_dit_frames.safetensors"
COGVIDEOX = "CogVideoX VAE (4k + 1 frames → k + 1)"


@pytest.fixture(scope="module")
def frames_path(comfyui, tiny):
    from tools.comfyui.assets import NEXT_DIT_KWARGS, init_small_normal

    config = lumina.LuminaConfig("next_dit", **{**NEXT_DIT_KWARGS, "dim": 96})  # 4 heads of 24
    assert config.head_dim % 6 == 0
    model = init_small_normal(lumina.build_model(config), seed_offset=11).eval()
    return lumina.save_official(model, comfyui.workspace.models_dir / "lumina" / FRAMES_CKPT)


@pytest.fixture(scope="module")
def video_model(comfyui, frames_path):
    (model,) = comfyui.run_node("LuminaModelLoader", ckpt_name=FRAMES_CKPT, weight_dtype="fp32")
    return model


@pytest.fixture(scope="module")
def captions(comfyui, gemma):
    return encode(comfyui, gemma, PROMPT, NEGATIVE)


def video_latent(comfyui, width=32, height=32, frames=3, **changes) -> dict:
    inputs = {**defaults(comfyui, "LuminaEmptyVideoLatent"), "width": width, "height": height, "frames": frames, **changes}
    (latent,) = comfyui.run_node("LuminaEmptyVideoLatent", **inputs)
    return latent


# -- Lumina Empty Video Latent -----------------------------------------------------------------------------
def test_empty_video_latent_shapes(comfyui, video_model):
    latent = video_latent(comfyui, 64, 48, frames=3, batch_size=2, fps=8)
    assert latent["samples"].shape == (2, 4, 3, 6, 8) and not latent["samples"].any() and latent["fps"] == 8
    assert video_latent(comfyui, frames=9, frame_mapping=COGVIDEOX)["samples"].shape == (1, 4, 3, 4, 4)  # 4·2 + 1 → 3
    assert video_latent(comfyui, frames=1, frame_mapping=COGVIDEOX)["samples"].shape == (1, 4, 1, 4, 4)
    assert video_latent(comfyui, frames=3, model=video_model)["samples"].shape == (1, 4, 3, 4, 4)
    presets = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaEmptyVideoLatent"].INPUT_TYPES()["required"]["preset"][0]
    preset = presets[1]  # the first official bucket, e.g. "1024x1024 (1:1)"
    width, height = (int(v) for v in preset.split(" ")[0].split("x"))
    assert video_latent(comfyui, preset=preset, frames=2)["samples"].shape == (1, 4, 2, height // 8, width // 8)


def test_empty_video_latent_bad_inputs(comfyui, next_dit, video_model):
    with pytest.raises(ValueError, match=r"frames 0: .* set frames ≥ 1"):
        video_latent(comfyui, frames=0)
    with pytest.raises(ValueError, match=r"10 frames: the CogVideoX VAE takes 4k \+ 1 frames .* to 9 or 13 frames"):
        video_latent(comfyui, frames=10, frame_mapping=COGVIDEOX)
    with pytest.raises(ValueError, match=r"width 40 px does not fit this model: use a multiple of 16"):
        video_latent(comfyui, width=40, model=video_model)
    with pytest.raises(ValueError, match=r"head_dim 16 cannot carry 3-D .* divisible by 6"):  # the image-only tiny model
        video_latent(comfyui, frames=3, model=next_dit)
    assert video_latent(comfyui, frames=1, model=next_dit)["samples"].shape == (1, 4, 1, 4, 4)  # one frame is an image
    with pytest.raises(ValueError, match="unknown frame_mapping"):
        video_latent(comfyui, frame_mapping="3:1")


# -- Lumina Flow Sampler with frames -----------------------------------------------------------------------
def test_flow_sampler_video_equals_the_library_call(comfyui, video_model, captions, frames_path, tiny):
    node = flow_sample(comfyui, video_model, *captions, video_latent(comfyui, frames=3), seed=7, steps=4,
                       solver="midpoint", cfg=3.0, extrapolation="off")
    model = lumina.load_model(frames_path, dtype=torch.float32)
    both = load_text_encoder(tiny.gemma, dtype=torch.float32).encode([PROMPT, NEGATIVE])
    cond = lumina.Conditioning(both.cap_feats[:1], both.cap_mask[:1])
    uncond = lumina.Conditioning(both.cap_feats[1:], both.cap_mask[1:])
    lib = lumina.sample(model, cond, uncond, (1, 4, 3, 4, 4), steps=4, solver="midpoint", cfg=3.0, seed=7)
    assert node.shape == (1, 4, 3, 4, 4) and node.dtype == torch.float32
    torch.testing.assert_close(node, video_model.model.latent_format.process_out(lib), atol=1e-5, rtol=0)


def test_video_frames_interact_and_the_input_is_kept(comfyui, video_model, captions):
    """Image-to-video editing (denoise < 1) from two latents that differ in frame 0 only: frame 1 differs too."""
    start = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    changed = start.clone()
    changed[:, :, 0] += 1.0
    a = flow_sample(comfyui, video_model, *captions, {"samples": start}, seed=2, steps=4, denoise=0.5)
    b = flow_sample(comfyui, video_model, *captions, {"samples": changed}, seed=2, steps=4, denoise=0.5)
    assert a.shape == (1, 4, 3, 4, 4)
    assert (a[:, :, 1] - b[:, :, 1]).abs().max() > 1e-4 and (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-4
    assert (a - start).abs().max() > 1e-3 and start.shape == (1, 4, 3, 4, 4)


def test_one_frame_video_is_the_image(comfyui, video_model, captions):
    image = flow_sample(comfyui, video_model, *captions, empty_latent(comfyui, 32, 32), seed=3)
    video = flow_sample(comfyui, video_model, *captions, video_latent(comfyui, frames=1), seed=3)
    assert video.shape == (1, 4, 1, 4, 4)
    torch.testing.assert_close(video[:, :, 0], image, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["Latent2RGB", "TAESD"])
def test_video_progress_previews_and_cancel(comfyui, video_model, captions, method):
    import comfy.model_management
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    seen, previews = [], []

    def hook(value, total, preview):
        seen.append((value, total))
        previews.append(preview)
        if len(seen) == 2 and cancel:
            comfy.model_management.interrupt_current_processing(True)  # what the UI's Cancel does

    previous, previous_method = comfy.utils.PROGRESS_BAR_HOOK, args.preview_method
    comfy.utils.set_progress_bar_global_hook(hook)
    args.preview_method = getattr(LatentPreviewMethod, method)
    try:
        cancel = False
        flow_sample(comfyui, video_model, *captions, video_latent(comfyui, frames=3), steps=6, solver="euler")
        assert seen == [(i, 5) for i in range(1, 6)]  # 6 grid points = 5 steps
        for preview in previews:  # ("JPEG", PIL image, max size): one frame, at the latent's (or TAESD's) size
            assert preview is not None and preview[1].size[0] == preview[1].size[1] in (4, 32)
        seen.clear()
        cancel = True
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            flow_sample(comfyui, video_model, *captions, video_latent(comfyui, frames=3), steps=30, solver="euler")
        assert len(seen) == 2
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(previous)
        args.preview_method = previous_method


def test_preview_callback_shows_the_middle_frame(comfyui, video_model, monkeypatch):
    import sys

    import latent_preview
    from lumina.solvers import StepInfo

    bridge = sys.modules[f"{comfyui.pack.__name__}.nodes.bridge"]
    video = torch.randn(2, 4, 5, 4, 4)
    assert torch.equal(bridge.preview_frame(video), video[:, :, 2])
    image = torch.randn(2, 4, 4, 4)
    assert bridge.preview_frame(image) is image
    shown = []
    monkeypatch.setattr(latent_preview, "prepare_callback",
                        lambda model, steps: lambda step, x0, x, total: shown.append((step, x0, x, total)))
    denoised = torch.randn(2, 4, 5, 4, 4)
    bridge.preview_callback(video_model, 3)(StepInfo(1, 3, 0.5, video, denoised))
    bridge.preview_callback(video_model, 3)(StepInfo(2, 3, 0.7, video, None))
    (step, x0, x, total), (_, x0_none, _, _) = shown
    assert (step, total) == (0, 3) and torch.equal(x0, denoised[:, :, 2]) and torch.equal(x, video[:, :, 2])
    assert torch.equal(x0_none, video[:, :, 2])


def test_video_bad_inputs_are_clear_errors(comfyui, next_dit, video_model, captions):
    positive, negative = captions
    with pytest.raises(ValueError, match=r"is not an image latent .* or a video latent"):
        flow_sample(comfyui, video_model, positive, negative, {"samples": torch.zeros(1, 4, 1, 3, 4, 4)})
    with pytest.raises(ValueError, match=r"has 0 frames"):
        flow_sample(comfyui, video_model, positive, negative, {"samples": torch.zeros(1, 4, 0, 4, 4)})
    with pytest.raises(ValueError, match=r"head_dim 16 cannot carry 3-D .* divisible by 6"):
        flow_sample(comfyui, next_dit, positive, negative, video_latent(comfyui, frames=2))
    (adaptive,) = comfyui.run_node("LuminaRegionAdaptive", model=video_model,
                                   **{k: v for k, v in defaults(comfyui, "LuminaRegionAdaptive").items() if k != "model"})
    with pytest.raises(ValueError, match=r"Region-Adaptive Sampling runs on image latents only.*bypass"):
        flow_sample(comfyui, adaptive, positive, negative, video_latent(comfyui, frames=3))


def test_core_samplers_refuse_video_latents(comfyui, video_model, captions):
    from comfy_extras.nodes_custom_sampler import KSamplerSelect, SamplerCustom

    (official,) = comfyui.run_node("LuminaOfficialCFG", model=video_model)
    (sigmas,) = comfyui.run_node("LuminaScheduler", steps=3, step_convention="grid points (official)",
                                 schedule="shift", shift=4.0, denoise=1.0)
    (euler,) = KSamplerSelect().get_sampler("euler")
    with pytest.raises(ValueError, match=r"core samplers .* take image latents .* Lumina Flow Sampler"):
        with torch.inference_mode():
            SamplerCustom().sample(official, True, 1, 4.0, *captions, euler, sigmas, video_latent(comfyui, frames=3))
