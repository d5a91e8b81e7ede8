"""The pixel-value convention of pixel-space models (the one place it is written down).

A pixel-space model (the embedded demo, or the paper's identity "latent space") sees RGB values
in [-1, 1], the official training normalisation (torchvision `Normalize(0.5, 0.5)` on [0, 1]):

- uint8 u ∈ {0, …, 255} ↔ x = u / 127.5 − 1, so 0 ↔ −1.0, 255 ↔ +1.0 (127.5 is exact in
  float32, and the division is one correctly rounded float32 operation);
- back to uint8: round((clamp(x, −1, 1) + 1) · 127.5), rounding half to even (torch.round). Every
  uint8 survives the round trip unchanged, which the training cache relies on to store pixels as
  uint8;
- ComfyUI's IMAGE range [0, 1] ↔ x = 2·y − 1; towards [0, 1] the result is clamped, since a
  sampler may overshoot [−1, 1] and ComfyUI expects [0, 1].

Every function is elementwise: layouts (HWC, CHW, batches) are the caller's business. Results
are float32, whatever the input precision, so a bf16 sample is not quantised twice.
"""

from __future__ import annotations

import torch

UINT8_HALF_RANGE = 127.5  # 255 / 2: maps {0, …, 255} onto [0, 2]


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels {0, …, 255} → float32 in [-1, 1] (u / 127.5 − 1); any shape."""
    # A float tensor here is almost always an image already in [0, 1] or [-1, 1]; dividing it by
    # 127.5 would silently give a black picture, so the dtype is checked rather than assumed.
    if pixels.dtype != torch.uint8:
        raise TypeError(f"from_uint8 expects uint8 pixels, got {pixels.dtype}; "
                        "use from_unit for float images in [0, 1]")
    return pixels.float().div_(UINT8_HALF_RANGE).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] → uint8: round((clamp(x, −1, 1) + 1) · 127.5), half to even;
    computed in float32; any shape, same device."""
    return images.float().clamp(-1.0, 1.0).add_(1.0).mul_(UINT8_HALF_RANGE).round_().to(torch.uint8)


def from_unit(images: torch.Tensor) -> torch.Tensor:
    """float images in [0, 1] (ComfyUI's IMAGE range) → float32 in [-1, 1] (2·y − 1, not clamped)."""
    return images.float() * 2 - 1


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] → float32 in [0, 1] ((x + 1) / 2, clamped)."""
    return ((images.float() + 1) / 2).clamp(0, 1)


__all__ = ["UINT8_HALF_RANGE", "from_uint8", "from_unit", "to_uint8", "to_unit"]
