"""Pixel-space models (the identity "latent space" the paper uses for spectrograms, and the
embedded demo model): a VAE stand-in that core VAEDecode / VAEEncode accept."""

from __future__ import annotations

import torch

from ..lumina.pixels import from_unit, to_unit
from .loaders import CATEGORY


class PixelSpaceVAE:
    """decode: (B, 3, H, W) in [-1, 1] → (B, H, W, 3) in [0, 1], and a pixel-space video
    (B, 3, F, H, W) → its B·F frames in order (what core Save Animated WEBP / PNG take); encode:
    images back."""

    downscale_ratio = 1
    upscale_ratio = 1
    latent_channels = 3

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        if samples.ndim not in (4, 5) or samples.shape[1] != 3:
            raise ValueError(
                f"the pixel-space VAE decodes (batch, 3, h, w) images or (batch, 3, frames, h, w) videos, got "
                f"{tuple(samples.shape)}; decode latent models' images with the SDXL VAE, Lumina-Video latents with "
                "Lumina Video VAE Decode"
            )
        if samples.ndim == 5:  # frames of item 0, then of item 1, …
            samples = samples.movedim(2, 1).flatten(0, 1)
        return to_unit(samples).permute(0, 2, 3, 1).cpu()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return from_unit(pixels[..., :3]).permute(0, 3, 1, 2).contiguous()


class LuminaPixelSpaceVAE:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self):
        return (PixelSpaceVAE(),)
