"""Lumina Video VAE Loader / Decode / Encode on a tiny random AutoencoderKLCogVideoX (16 latent
channels, 8× spatial, 4× temporal) saved into the workspace's models/vae, and core Save Animated
WEBP writing the decoded frames. LATENTs hold the unscaled VAE space (ComfyUI's convention):
Decode = VideoVAE.decode(samples · scale), Encode = VideoVAE.encode(frames) / scale."""

from __future__ import annotations

import pytest
import torch

from lumina.video_vae import LUMINA_VIDEO_VAE_SCALE, frames_from_comfy, frames_to_comfy, load_video_vae
from tools.comfyui.assets import COGVIDEOX_VAE_NAME as VAE_NAME, tiny_cogvideox

PIPELINE_NAME = "tiny_cogvideox_pipeline"  # a pipeline folder: the VAE in its vae/
H, W = 2, 3  # latent size → 16 × 24 pixels


@pytest.fixture(scope="module")
def vae_dir(comfyui):
    root = comfyui.workspace.models_dir / "vae"
    folder = root / VAE_NAME  # the tiny assets' VAE when they were built first
    for path in (folder, root / PIPELINE_NAME / "vae"):
        if not path.exists():
            tiny_cogvideox().save_pretrained(path)
    if not (root / "not_a_video_vae").exists():
        (root / "not_a_video_vae").mkdir()
        (root / "not_a_video_vae" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    return folder


@pytest.fixture(scope="module")
def video_vae(comfyui, vae_dir):
    (vae,) = comfyui.run_node("LuminaVideoVAELoader", vae_name=VAE_NAME, dtype="fp32", tiling=False)
    return vae


def latent(frames: int = 3, channels: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, channels, frames, H, W, generator=torch.Generator().manual_seed(seed))


def test_loader_lists_and_loads_local_folders(comfyui, vae_dir, video_vae):
    names = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaVideoVAELoader"].INPUT_TYPES()["required"]["vae_name"][0]
    assert VAE_NAME in names and PIPELINE_NAME in names and "not_a_video_vae" not in names
    assert video_vae.latent_channels == 16 and video_vae.dtype == torch.float32 and not video_vae.vae.use_tiling
    assert video_vae.scaling_factor == LUMINA_VIDEO_VAE_SCALE
    (piped,) = comfyui.run_node("LuminaVideoVAELoader", vae_name=PIPELINE_NAME, dtype="bf16", tiling=True)
    assert piped.dtype == torch.bfloat16 and piped.vae.use_tiling and piped.source.endswith("vae")
    (auto,) = comfyui.run_node("LuminaVideoVAELoader", vae_name=VAE_NAME, dtype="auto", tiling=True)
    import comfy.model_management as mm

    assert auto.dtype == (torch.float32 if mm.vae_device().type == "cpu" else torch.bfloat16)
    with pytest.raises(FileNotFoundError, match=r"'missing' not found .* models/vae/<name>/"):
        comfyui.run_node("LuminaVideoVAELoader", vae_name="missing", dtype="fp32", tiling=True)
    with pytest.raises(ValueError, match="fp16 is not offered"):
        comfyui.run_node("LuminaVideoVAELoader", vae_name=VAE_NAME, dtype="fp16", tiling=True)


def test_decode_equals_the_library_call(comfyui, vae_dir, video_vae):
    z = latent()
    images, fps = comfyui.run_node("LuminaVideoVAEDecode", samples={"samples": z, "fps": 8}, vae=video_vae)
    assert images.shape == (9, 8 * H, 8 * W, 3) and fps == 8.0
    assert images.min() >= 0 and images.max() <= 1 and images.device.type == "cpu"
    reference = load_video_vae(vae_dir, dtype=torch.float32, tiling=False)
    expected = frames_to_comfy(reference.decode(z * LUMINA_VIDEO_VAE_SCALE))  # the scaled (model-space) latent
    torch.testing.assert_close(images, expected, atol=1e-6, rtol=0)
    raw = frames_to_comfy(reference.vae.decode(z).sample.clamp(-1, 1))  # i.e. the VAE on the LATENT itself
    torch.testing.assert_close(images, raw, atol=1e-5, rtol=0)
    (batch, default_fps) = comfyui.run_node("LuminaVideoVAEDecode", samples={"samples": torch.cat([z, z])}, vae=video_vae)
    assert batch.shape == (18, 8 * H, 8 * W, 3) and default_fps == 24.0  # B·F frames


def test_encode_gives_the_video_latent(comfyui, vae_dir, video_vae):
    frames = torch.rand(9, 8 * H, 8 * W, 3, generator=torch.Generator().manual_seed(2))
    (out,) = comfyui.run_node("LuminaVideoVAEEncode", pixels=frames, vae=video_vae, fps=12)
    assert out["samples"].shape == (1, 16, 3, H, W) and out["fps"] == 12
    reference = load_video_vae(vae_dir, dtype=torch.float32, tiling=False)
    expected = reference.encode(frames_from_comfy(frames)) / LUMINA_VIDEO_VAE_SCALE
    torch.testing.assert_close(out["samples"], expected, atol=1e-6, rtol=1e-6)
    images, _ = comfyui.run_node("LuminaVideoVAEDecode", samples=out, vae=video_vae)
    assert images.shape == frames.shape


def _save_animated_webp(comfyui):
    node = comfyui.nodes.NODE_CLASS_MAPPINGS.get("SaveAnimatedWEBP")
    if node is None:
        from comfy_extras.nodes_images import SaveAnimatedWEBP as node
    return node


def test_core_save_animated_webp_writes_every_frame(comfyui, video_vae):
    from PIL import Image

    images, fps = comfyui.run_node("LuminaVideoVAEDecode", samples={"samples": latent(), "fps": 8}, vae=video_vae)
    saver = _save_animated_webp(comfyui)()
    result = saver.save_images(images=images, fps=fps, filename_prefix="lumina_video_vae", lossless=True,
                               quality=80, method="default")
    (saved,) = result["ui"]["images"]
    assert result["ui"]["animated"] == (True,)
    path = comfyui.workspace.output_dir / saved["subfolder"] / saved["filename"]
    with Image.open(path) as img:
        assert img.n_frames == 9 and img.size == (8 * W, 8 * H)


def test_bad_inputs(comfyui, video_vae):
    decode = lambda samples, vae=video_vae: comfyui.run_node("LuminaVideoVAEDecode", samples=samples, vae=vae)  # noqa: E731
    with pytest.raises(ValueError, match=r"4-D \(batch, C, h, w\) image latent; decode image latents with core VAE Decode"):
        decode({"samples": torch.zeros(1, 4, H, W)})
    with pytest.raises(ValueError, match=r"has 4 channels but this CogVideoX VAE decodes 16-channel latents"):
        decode({"samples": latent(channels=4)})
    with pytest.raises(ValueError, match=r"expected a 5-D"):
        decode({"samples": torch.zeros(1, 16, 3, H, W, 1)})
    with pytest.raises(ValueError, match="must come from Lumina Video VAE Loader"):
        decode({"samples": latent()}, vae="not a vae")
    encode = lambda pixels: comfyui.run_node("LuminaVideoVAEEncode", pixels=pixels, vae=video_vae)  # noqa: E731
    with pytest.raises(ValueError, match=r"10 frames: the CogVideoX VAE takes 4k \+ 1 frames .* to 9 or 13 frames"):
        encode(torch.rand(10, 16, 24, 3))
    with pytest.raises(ValueError, match=r"frame size 20x16: .* divisible by 8"):
        encode(torch.rand(5, 16, 20, 3))
    with pytest.raises(ValueError, match=r"expected IMAGE frames \(frames, H, W, 3\)"):
        encode(torch.rand(16, 24, 3))
