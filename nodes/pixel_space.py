"""Pixel-space models (the identity "latent space" the paper uses for spectrograms, and the
embedded demo model): a VAE stand-in that core VAEDecode / VAEEncode accept."""

from __future__ import annotations

import torch

from ..lumina.pixels import from_unit, to_unit
from .loaders import CATEGORY


class PixelSpaceVAE:
    """decode: (B, 3, H, W) in [-1, 1] → (B, H, W, 3) in [0, 1]; encode: the inverse."""

    downscale_ratio = 1
    upscale_ratio = 1
    latent_channels = 3

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        if samples.ndim != 4 or samples.shape[1] != 3:
            raise ValueError(
                f"the pixel-space VAE decodes (batch, 3, h, w) images, got {tuple(samples.shape)}; "
                "use the SDXL VAE for latent models"
            )
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
