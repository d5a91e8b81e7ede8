"""Video VAE nodes: Lumina-Video's CogVideoX VAE (a local diffusers folder in models/vae; nothing is
ever downloaded) between 5-D video LATENTs and ComfyUI IMAGE frames, so that core savers (Save
Animated WEBP / PNG) write the animation.

Latent scaling. A ComfyUI LATENT holds the VAE's own (unscaled) latent space: a model's
`latent_format.process_in` scales it into the model's space before sampling and `process_out`
undoes that after (see the Lumina Flow Sampler), and core VAE Decode takes the unscaled latent.
Lumina-Video's model space is the official `mode · 1.15258426` (`VideoVAE.encode`'s output, which
`VideoVAE.decode` takes, like the official `vae.decode(latent / 1.15258426)`). So these nodes use
LATENT = model-space latent / scaling_factor: Decode calls `VideoVAE.decode(samples · scale)` and
Encode returns `VideoVAE.encode(frames) / scale`; a Lumina-Video MODEL's latent format has
scale_factor 1.15258426 and shift 0 (ComfyUI's own CogVideoX latent format uses the same)."""

from __future__ import annotations

import json
import os

import torch

from ..lumina.video_vae import VideoVAE, frames_from_comfy, frames_to_comfy, load_video_vae
from . import bridge, paths
from .loaders import CATEGORY

VAE_FOLDER = "vae"  # ComfyUI's models/vae (and extra_model_paths.yaml entries for it)
COGVIDEOX_CLASS = "AutoencoderKLCogVideoX"
DTYPES = ["auto", "fp32", "bf16"]  # auto: the official bf16 on GPUs, fp32 on CPUs; never fp16
DEFAULT_FPS = 24  # Lumina Empty Video Latent's default; a LATENT's own "fps" wins


def is_cogvideox_folder(path: str) -> bool:
    """A diffusers AutoencoderKLCogVideoX folder, or a pipeline folder whose vae/ is one."""
    for candidate in (path, os.path.join(path, "vae")):
        config = os.path.join(candidate, "config.json")
        if os.path.isfile(config):
            try:
                with open(config, encoding="utf-8") as f:
                    if json.load(f).get("_class_name") == COGVIDEOX_CLASS:
                        return True
            except (OSError, ValueError, AttributeError):
                pass
    return False


def video_vae_names() -> list[str]:
    """CogVideoX VAE folders (one or two levels deep) in models/vae."""
    found: set[str] = set()
    for root in paths.folders(VAE_FOLDER):
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            if not os.path.isdir(path):
                continue
            if is_cogvideox_folder(path):
                found.add(entry)
            else:
                found.update(f"{entry}/{sub}" for sub in os.listdir(path) if is_cogvideox_folder(os.path.join(path, sub)))
    return sorted(found)


def video_vae_path(name: str) -> str:
    for root in paths.folders(VAE_FOLDER):
        path = os.path.join(root, name)
        if is_cogvideox_folder(path):
            return path
    raise FileNotFoundError(
        f"CogVideoX VAE folder {name!r} not found in {paths.folders(VAE_FOLDER)}; put the vae/ folder of "
        "THUDM/CogVideoX-2b (config.json + weights) in models/vae/<name>/"
    )


def _to_device(video_vae: VideoVAE) -> None:
    """Let ComfyUI's memory manager place the VAE (its patcher is made once per VideoVAE)."""
    if getattr(video_vae, "comfy_patcher", None) is None:
        video_vae.comfy_patcher = bridge.vae_patcher(video_vae.vae)
    bridge.load_to_device(video_vae.comfy_patcher)


def _check_video_vae(vae: object, node: str) -> VideoVAE:
    if not isinstance(vae, VideoVAE):
        raise ValueError(f"{node}: vae must come from Lumina Video VAE Loader (got {type(vae).__name__})")
    return vae


class LuminaVideoVAELoader:
    """Lumina-Video's VAE: CogVideoX-2b's AutoencoderKLCogVideoX from a local folder in models/vae."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_name": (video_vae_names(), {"tooltip": "a folder in models/vae holding a CogVideoX VAE "
                             "(config.json + weights, e.g. THUDM/CogVideoX-2b's vae/) or a pipeline folder with vae/"}),
                "dtype": (DTYPES, {"default": "auto", "tooltip": "auto: bf16 on GPUs (the official), fp32 on CPUs"}),
                "tiling": ("BOOLEAN", {"default": True, "tooltip": "decode in spatial tiles: less memory for large "
                           "frames (seams blended; results differ slightly)"}),
            },
        }

    RETURN_TYPES = ("LUMINA_VIDEO_VAE",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, vae_name: str, dtype: str = "auto", tiling: bool = True):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)} (fp16 is not offered)")
        path = video_vae_path(vae_name)
        chosen = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(dtype)
        load_device, offload_device = bridge.vae_devices()
        if chosen is None:
            chosen = torch.float32 if load_device.type == "cpu" else torch.bfloat16
        video_vae = load_video_vae(path, dtype=chosen, device=offload_device, tiling=tiling)
        video_vae.comfy_patcher = bridge.vae_patcher(video_vae.vae)
        print(f"[Lumina] loaded the CogVideoX VAE from {video_vae.source} ({chosen}, tiling {'on' if tiling else 'off'})")
        return (video_vae,)


class LuminaVideoVAEDecode:
    """A 5-D video LATENT (B, C, F, h, w) → IMAGE frames (B·F, 8h, 8w, 3) for core Save Animated
    WEBP / PNG; also returns the LATENT's fps."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "a video latent (batch, 16, frames, h, w), e.g. from Lumina Empty "
                            "Video Latent + Lumina Flow Sampler; n latent frames → 4(n − 1) + 1 frames (odd n)"}),
                "vae": ("LUMINA_VIDEO_VAE",),
            },
        }

    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("IMAGE", "fps")
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, samples: dict, vae: VideoVAE):
        vae = _check_video_vae(vae, "Lumina Video VAE Decode")
        latent = samples["samples"] if isinstance(samples, dict) else samples
        if not isinstance(latent, torch.Tensor):
            raise ValueError(f"Lumina Video VAE Decode: samples must be a LATENT, got {type(latent).__name__}")
        if latent.dim() == 4:
            raise ValueError(
                f"Lumina Video VAE Decode: this LATENT {tuple(latent.shape)} is a 4-D (batch, C, h, w) image latent; "
                "decode image latents with core VAE Decode (and the model's image VAE); this node decodes 5-D "
                "(batch, C, frames, h, w) video latents from Lumina Empty Video Latent"
            )
        if latent.dim() != 5:
            raise ValueError(f"Lumina Video VAE Decode: LATENT of shape {tuple(latent.shape)}; expected a 5-D "
                             "(batch, C, frames, h, w) video latent")
        if latent.shape[1] != vae.latent_channels:
            raise ValueError(
                f"Lumina Video VAE Decode: the LATENT has {latent.shape[1]} channels but this CogVideoX VAE decodes "
                f"{vae.latent_channels}-channel latents (Lumina-Video's); a 4-channel video latent belongs to an "
                "image model (SDXL VAE space), not to this VAE"
            )
        _to_device(vae)
        video = vae.decode(latent.float() * vae.scaling_factor)  # VideoVAE.decode takes the model-space latent
        fps = float(samples.get("fps", DEFAULT_FPS)) if isinstance(samples, dict) else float(DEFAULT_FPS)
        return (frames_to_comfy(video).cpu(), fps)


class LuminaVideoVAEEncode:
    """IMAGE frames (F, H, W, 3), F = 4k + 1, H and W multiples of 8 → a video LATENT (1, 16, k + 1,
    H/8, W/8) for video-to-video (Lumina Flow Sampler with denoise < 1)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pixels": ("IMAGE", {"tooltip": "the frames of one video: 4k + 1 frames (1, 5, 9, ..., 49)"}),
                "vae": ("LUMINA_VIDEO_VAE",),
            },
            "optional": {
                "fps": ("INT", {"default": DEFAULT_FPS, "min": 1, "max": 240,
                        "tooltip": "stored on the LATENT (key 'fps') for decoding and saving"}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, pixels: torch.Tensor, vae: VideoVAE, fps: int = DEFAULT_FPS):
        vae = _check_video_vae(vae, "Lumina Video VAE Encode")
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or pixels.shape[-1] < 3:
            shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ValueError(f"Lumina Video VAE Encode: pixels of shape {shape}; expected IMAGE frames (frames, H, W, 3)")
        _to_device(vae)
        latent = vae.encode(frames_from_comfy(pixels[..., :3]))  # raises the library's 4k + 1 frames message
        return ({"samples": (latent / vae.scaling_factor).cpu(), "fps": int(fps)},)
