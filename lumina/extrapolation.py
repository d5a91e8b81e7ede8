"""Resolution extrapolation settings, per call: what the official demos use for a target size."""

from __future__ import annotations

import math

from .config import LuminaConfig
from .model.options import ForwardOptions

EXTRAPOLATION_MODES = ("auto", "off")


def ntk_area_factor(config: LuminaConfig, width: int, height: int) -> float:
    """Flag-DiT's NTK factor: the token-area ratio to the training resolution (1.0 at 1024²)."""
    unit = config.vae_downsample * config.patch_size
    return (width // unit) * (height // unit) / (config.base_image_size // unit) ** 2


def time_aware_factor(config: LuminaConfig, width: int, height: int) -> float:
    """Next-DiT's RoPE scale: the side-length ratio sqrt(w·h) / training size."""
    return math.sqrt(width * height) / config.base_image_size


def extrapolation_options(
    config: LuminaConfig, width: int, height: int, mode: str = "auto", *,
    proportional_attention: bool = True, watershed: float = 0.3,
) -> ForwardOptions:
    """The official demos' settings for an image of width × height pixels.

    Flag-DiT (lumina_t2i/demo.py): NTK by the area ratio, always on, plus proportional attention.
    Next-DiT (lumina_next_t2i/demo.py): proportional attention, and time-aware scaled RoPE
    (watershed 0.3) only when the image is larger than the training resolution.
    mode "off" gives plain RoPE and softmax scale.
    """
    if mode == "off":
        return ForwardOptions()
    if mode != "auto":
        raise ValueError(f"unknown extrapolation mode {mode!r}; choose one of {EXTRAPOLATION_MODES}")
    if config.family == "flag_dit":
        return ForwardOptions(rope_ntk=ntk_area_factor(config, width, height), proportional_attention=proportional_attention)
    scale = time_aware_factor(config, width, height)
    return ForwardOptions(
        time_aware_scale=scale if scale > 1.0 else None, time_aware_watershed=watershed,
        proportional_attention=proportional_attention,
    )
