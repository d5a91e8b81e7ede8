"""Empty latents at sizes Lumina can take, with the official aspect-ratio buckets as presets."""

from __future__ import annotations

import torch

from ..lumina.buckets import official_buckets
from ..lumina.video_vae import latent_frames_for, official_latent_frames
from . import bridge
from .loaders import CATEGORY

SIDE_MULTIPLE = 16  # VAE factor 8 × patch size 2
MAX_SIDE = 8192
_RATIOS = [(1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9), (9, 16), (2, 1), (1, 2), (21, 9), (9, 21), (3, 1), (1, 3)]


def presets() -> dict[str, tuple[int, int]]:
    """For each common aspect ratio, the official 1024-px training bucket closest to it."""
    buckets = official_buckets(1024)
    out = {}
    for rw, rh in _RATIOS:
        w, h = min(buckets, key=lambda b: abs(b[0] / b[1] - rw / rh))
        out[f"{w}x{h} ({rw}:{rh})"] = (w, h)
    return out


def check_size(width: int, height: int, multiple: int = SIDE_MULTIPLE) -> None:
    for name, side in (("width", width), ("height", height)):
        if side % multiple or not multiple <= side <= MAX_SIDE:
            raise ValueError(
                f"{name} {side} px does not fit this model: use a multiple of {multiple} between {multiple} and "
                f"{MAX_SIDE} (VAE factor × patch size), e.g. {max(multiple, round(side / multiple) * multiple)}"
            )


class LuminaEmptyLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (["custom"] + list(presets()), {"default": "custom"}),
                "width": ("INT", {"default": 1024, "min": SIDE_MULTIPLE, "max": MAX_SIDE, "step": SIDE_MULTIPLE}),
                "height": ("INT", {"default": 1024, "min": SIDE_MULTIPLE, "max": MAX_SIDE, "step": SIDE_MULTIPLE}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": "size the latent for this model's space (needed for pixel-space models)"}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(self, preset: str, width: int, height: int, batch_size: int, model=None):
        if preset != "custom":
            width, height = presets()[preset]
        channels, factor, unit = 4, 8, SIDE_MULTIPLE  # the SDXL VAE's latent space, patch size 2
        if model is not None:
            config = bridge.lumina_model_of(model).config
            channels, factor, unit = config.in_channels, config.vae_downsample, config.pixel_unit
        check_size(width, height, unit)
        return ({"samples": torch.zeros(batch_size, channels, height // factor, width // factor)},)


# How pixel frames map to latent frames. "causal" (CogVideoX, Lumina-Video's VAE): the first frame
# alone, then 4 frames per latent frame, so 4k + 1 frames → k + 1 latent frames (what VAE Encode
# makes and Decode gives back). "floor": Lumina-Video's generate.py, frames // 4 latent frames
# (96 → 24, which decode to 93 frames). "one": a model without a temporal VAE (images encoded one
# by one, multi-view sets): one latent frame per frame.
FRAME_MAPPINGS = {
    "1:1 (per-frame VAE, multi-view)": "one",
    "CogVideoX VAE (4k + 1 frames → k + 1)": "causal",
    "Lumina-Video official (frames ÷ 4)": "floor",
}
MAX_FRAMES = 1024
# generate.py's sizes (per frame): the README's 1248x704 for f24R960, its default 672x384 for f16R512
VIDEO_PRESETS = {"1248x704 (Lumina-Video R960)": (1248, 704), "672x384 (Lumina-Video R512)": (672, 384)}


def latent_frames(frames: int, mapping: str) -> int:
    """Latent frames for `frames` pixel frames under a FRAME_MAPPINGS rule."""
    if frames < 1:
        raise ValueError(f"frames {frames}: a video latent needs at least 1 frame (an image is 1 frame); set frames ≥ 1")
    return {"one": int, "causal": latent_frames_for, "floor": official_latent_frames}[mapping](frames)


class LuminaEmptyVideoLatent:
    """An empty (batch, C, frames, h, w) LATENT for the Lumina Flow Sampler: video, or multi-view
    sets with the views as frames."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (["custom"] + list(VIDEO_PRESETS) + list(presets()), {"default": "custom",
                           "tooltip": "Lumina-Video's generate.py sizes, or the official 1024-px image buckets (per frame)"}),
                "width": ("INT", {"default": 512, "min": SIDE_MULTIPLE, "max": MAX_SIDE, "step": SIDE_MULTIPLE}),
                "height": ("INT", {"default": 512, "min": SIDE_MULTIPLE, "max": MAX_SIDE, "step": SIDE_MULTIPLE}),
                "frames": ("INT", {"default": 9, "min": 1, "max": MAX_FRAMES,
                           "tooltip": "video frames, or the views of a multi-view set (views are frames); "
                                      "1 frame samples exactly like an image"}),
                "frame_mapping": (list(FRAME_MAPPINGS), {"default": list(FRAME_MAPPINGS)[0],
                                  "tooltip": "how pixel frames become latent frames: 1:1 for a model without a "
                                             "temporal VAE; CogVideoX: 4k + 1 frames → k + 1 latent frames; "
                                             "Lumina-Video official: frames ÷ 4 (96 → 24, decoded to 93 frames)"}),
                "fps": ("INT", {"default": 24, "min": 1, "max": 240,
                        "tooltip": "stored on the LATENT (key 'fps') for decoding and saving; sampling does not use it"}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": "size the latent for this model's space, and check it can take frames"}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(self, preset: str, width: int, height: int, frames: int, frame_mapping: str, fps: int,
                 batch_size: int, model=None):
        if preset != "custom":
            width, height = VIDEO_PRESETS.get(preset) or presets()[preset]
        if frame_mapping not in FRAME_MAPPINGS:
            raise ValueError(f"unknown frame_mapping {frame_mapping!r}; pick one of {', '.join(FRAME_MAPPINGS)}")
        count = latent_frames(frames, FRAME_MAPPINGS[frame_mapping])
        channels, factor, unit = 4, 8, SIDE_MULTIPLE  # the SDXL VAE's latent space, patch size 2
        if model is not None:
            config = bridge.any_lumina_model_of(model).config
            channels, factor, unit = config.in_channels, config.vae_downsample, config.pixel_unit
            config.check_frames(f"a {frames}-frame video ({count} latent frames)", count)
        check_size(width, height, unit)
        samples = torch.zeros(batch_size, channels, count, height // factor, width // factor)
        return ({"samples": samples, "fps": fps},)
