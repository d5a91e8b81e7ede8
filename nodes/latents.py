"""Empty latents at sizes Lumina can take, with the official aspect-ratio buckets as presets."""

from __future__ import annotations

import torch

from ..lumina.buckets import official_buckets
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
