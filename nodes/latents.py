"""Empty latents at sizes Lumina can take, with the official aspect-ratio buckets as presets."""

from __future__ import annotations

import torch

from ..lumina.buckets import official_buckets
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


def check_size(width: int, height: int) -> None:
    for name, side in (("width", width), ("height", height)):
        if side % SIDE_MULTIPLE or not SIDE_MULTIPLE <= side <= MAX_SIDE:
            raise ValueError(
                f"{name} {side} px does not fit Lumina: use a multiple of {SIDE_MULTIPLE} between "
                f"{SIDE_MULTIPLE} and {MAX_SIDE} (VAE factor 8 × patch size 2), e.g. {max(SIDE_MULTIPLE, round(side / 16) * 16)}"
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
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(self, preset: str, width: int, height: int, batch_size: int):
        if preset != "custom":
            width, height = presets()[preset]
        check_size(width, height)
        return ({"samples": torch.zeros(batch_size, 4, height // 8, width // 8)},)
