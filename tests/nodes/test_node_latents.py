"""Lumina Empty Latent and Lumina Pixel Space VAE."""

from __future__ import annotations

import pytest
import torch

from nodes_support import defaults


def generate(comfyui, **inputs):
    (latent,) = comfyui.run_node("LuminaEmptyLatent", **{**defaults(comfyui, "LuminaEmptyLatent"), **inputs})
    return latent["samples"]


@pytest.mark.parametrize("width, height, batch", [(64, 48, 2), (16, 16, 1), (1024, 576, 1), (8192, 16, 3)])
def test_custom_sizes_give_zero_sdxl_latents(comfyui, width, height, batch):
    samples = generate(comfyui, preset="custom", width=width, height=height, batch_size=batch)
    assert samples.shape == (batch, 4, height // 8, width // 8)
    assert samples.dtype == torch.float32 and not samples.any()


def test_presets_are_1024px_buckets_of_their_aspect_ratio_and_override_the_size(comfyui):
    presets = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaEmptyLatent"].INPUT_TYPES()["required"]["preset"][0]
    assert presets[0] == "custom" and len(presets) > 10
    for preset in presets[1:]:
        size, ratio = preset.split(" ")  # "1024x1024 (1:1)"
        w, h = (int(v) for v in size.split("x"))
        rw, rh = (int(v) for v in ratio.strip("()").split(":"))
        assert w % 16 == 0 and h % 16 == 0
        assert 0.95 < w * h / 1024**2 <= 1.0  # an official 1024-px training bucket (at most 1024² px)
        assert abs(w / h - rw / rh) / (rw / rh) < 0.02  # of that aspect ratio
        assert generate(comfyui, preset=preset, width=64, height=64, batch_size=1).shape == (1, 4, h // 8, w // 8)
    assert "1024x1024 (1:1)" in presets


@pytest.mark.parametrize("width, height, needle", [(72, 64, "width 72 px"), (64, 40, "height 40 px"), (8208, 64, "width 8208 px")])
def test_sizes_that_do_not_fit_are_clear_errors(comfyui, width, height, needle):
    with pytest.raises(ValueError, match="multiple of 16") as info:
        generate(comfyui, preset="custom", width=width, height=height, batch_size=1)
    assert needle in str(info.value)


def test_a_model_input_sizes_the_latent_for_that_model(comfyui, next_dit, demo_model):
    assert generate(comfyui, preset="custom", width=64, height=32, batch_size=1, model=next_dit).shape == (1, 4, 4, 8)
    pixels = generate(comfyui, preset="custom", width=36, height=32, batch_size=2, model=demo_model)
    assert pixels.shape == (2, 3, 32, 36)  # pixel space: 3 channels, one latent pixel per pixel
    with pytest.raises(ValueError, match="width 30 px .* multiple of 4"):  # its patch size
        generate(comfyui, preset="custom", width=30, height=32, batch_size=1, model=demo_model)


def test_pixel_space_vae_decodes_and_encodes_pixels(comfyui):
    (vae,) = comfyui.run_node("LuminaPixelSpaceVAE")
    samples = torch.linspace(-1, 1, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    image = vae.decode(samples)
    assert image.shape == (2, 4, 5, 3) and image.min() >= 0 and image.max() <= 1
    torch.testing.assert_close(vae.encode(image), samples)
    with pytest.raises(ValueError, match="decodes \\(batch, 3, h, w\\) images"):
        vae.decode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="Lumina-Video latents with Lumina Video VAE Decode"):
        vae.decode(torch.zeros(1, 16, 2, 8, 8))


def test_pixel_space_vae_decodes_a_video_into_its_frames(comfyui):
    (vae,) = comfyui.run_node("LuminaPixelSpaceVAE")
    video = torch.linspace(-1, 1, 2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)  # 2 items of 4 frames
    frames = vae.decode(video)
    assert frames.shape == (8, 5, 6, 3)
    torch.testing.assert_close(frames[5], vae.decode(video[1:, :, 1])[0])  # item 1, frame 1
