"""Lumina-Video (official `models/model.py: MultiScaleNextDiT`) configuration, read off weights.

Kept apart from `lumina.config` (whose `LuminaConfig` describes the one-patch-size image families)
and importing nothing of the library but its errors, so `lumina.config.infer_config` can hand a
Lumina-Video state dict over to `infer_video_config` without an import loop.

The state dict determines every shape: the patch entries come from the `all_x_embedder.<p>-<pF>`
keys (spatial patch p, temporal patch pF), the channels from an entry's width pF·p·p·C. RoPE theta,
t_scale and motion_scale change no shape; they take the values of the released training runs
(256, 1000, 20), and `model_args.pth` is never unpickled to find them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Mapping

from .errors import LuminaCheckpointError, LuminaInputError
from .widths import AttentionWidths, ffn_hidden_dim

VIDEO_FAMILY = "lumina_video"
_ENTRY_KEY = re.compile(r"^all_x_embedder\.(\d+)-(\d+)\.weight$")
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.")


@dataclass(frozen=True)
class LuminaVideoConfig(AttentionWidths):
    """Everything needed to build a Lumina-Video MultiScaleNextDiT.

    patches: the (patch_size, f_patch_size) entries in state-dict order, e.g. ((2, 1), (2, 2), (4, 2))
    (ModuleDict keys '2-1', '2-2', '4-2'; the sample configs call them '1x2', '2x2', '2x4')."""

    family: ClassVar[str] = VIDEO_FAMILY
    dim: int
    n_layers: int
    n_heads: int
    cap_feat_dim: int
    n_kv_heads: int | None = None
    ffn_hidden: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    patches: tuple[tuple[int, int], ...] = ((2, 2),)
    in_channels: int = 16  # CogVideoX VAE latents
    qk_norm: bool = True
    norm_eps: float = 1e-5
    rope_theta: float = 256.0
    t_scale: float = 1000.0
    motion_scale: float = 20.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "patches", tuple((int(p), int(f)) for p, f in self.patches))
        if not self.patches:
            raise ValueError("a Lumina-Video config needs at least one (patch_size, f_patch_size) entry")
        if len(set(self.patches)) != len(self.patches):
            raise ValueError(f"duplicate patch entries {self.patches}")
        self.check_heads()
        if self.head_dim % 16:
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 16 for Lumina-Video's 3-axis RoPE")

    # the attributes the shared Next-DiT block reads
    @property
    def hidden_dim(self) -> int:
        return self.ffn_hidden or ffn_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    @property
    def adaln_dim(self) -> int:
        return min(self.dim, 1024)

    @property
    def out_channels(self) -> int:
        return self.in_channels

    @property
    def rope_axis_dims(self) -> tuple[int, int, int]:
        """Head-dim split of the (frame, row, col) RoPE blocks, concatenated in that order."""
        d = self.head_dim
        return d // 8 * 2, d // 8 * 3, d // 8 * 3

    def entry_key(self, patch_size: int, f_patch_size: int) -> str:
        """ModuleDict key of a patch entry; raises LuminaInputError when the model has no such entry."""
        if (patch_size, f_patch_size) not in self.patches:
            have = ", ".join(f"{f}x{p}" for p, f in self.patches)
            raise LuminaInputError(
                f"this Lumina-Video model has no patch entry {f_patch_size}x{patch_size} "
                f"(temporal x spatial); it has {have}"
            )
        return f"{patch_size}-{f_patch_size}"

    # the latent checks of `LuminaConfig`, for every patch entry (a multi-scale schedule may use each)
    vae_downsample: ClassVar[int] = 8  # CogVideoX: 8× spatial (its 4× temporal is the VAE's business)

    @property
    def pixel_unit(self) -> int:
        """Pixels per token side at the largest spatial patch: sizes that every patch entry can cut."""
        return max(p for p, _ in self.patches) * self.vae_downsample

    def check_latent(self, where: str, channels: int, height: int, width: int) -> None:
        """Raise a LuminaInputError naming `where` unless every patch entry can cut this latent."""
        if channels != self.in_channels:
            raise LuminaInputError(
                f"{where} has {channels} channels but this Lumina-Video model takes {self.in_channels}-channel "
                "latents (CogVideoX VAE); make the latent with Lumina Empty Video Latent (model connected) or "
                "Lumina Video VAE Encode"
            )
        p = max(p for p, _ in self.patches)
        if height <= 0 or width <= 0 or height % p or width % p:
            raise LuminaInputError(
                f"{where}: latent size {height}×{width} is not a positive multiple of the largest patch size {p}; "
                f"use a video size that is a multiple of {self.pixel_unit} pixels"
            )

    def check_frames(self, where: str, frames: int) -> None:
        """Raise a LuminaInputError naming `where` unless every patch entry can cut `frames` latent frames."""
        f = max(f for _, f in self.patches)
        if frames < 1 or (frames != 1 and frames % f):
            cogvideox = ", ".join(str(4 * (f * m - 1) + 1) for m in (1, 2, 3))  # 4k + 1 frames → k + 1 latent frames
            raise LuminaInputError(
                f"{where} has {frames} latent frames; this Lumina-Video model's temporal patch size {f} needs 1 or a "
                f"multiple of {f} latent frames: with the CogVideoX mapping {cogvideox}, … video frames, with the "
                f"official frames ÷ 4 mapping a multiple of {4 * f}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["family"] = self.family
        data["patches"] = [list(p) for p in self.patches]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LuminaVideoConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> "LuminaVideoConfig":
        return replace(self, **changes)


# official models/model.py presets (in_channels 16, Gemma-2-2B captions, qk_norm on)
VIDEO_PRESETS: dict[str, LuminaVideoConfig] = {
    "lumina-video-2b": LuminaVideoConfig(dim=2304, n_layers=24, n_heads=16, cap_feat_dim=2304),
    "lumina-video-2b-gqa": LuminaVideoConfig(dim=2304, n_layers=24, n_heads=16, n_kv_heads=8, cap_feat_dim=2304),
    "lumina-video-4b-gqa": LuminaVideoConfig(dim=3072, n_layers=32, n_heads=24, n_kv_heads=8, cap_feat_dim=2304),
}


def is_video_state_dict(keys: Any) -> bool:
    """Lumina-Video's markers: multi-scale patch entries (`all_x_embedder.<p>-<pF>.*`)."""
    return any(_ENTRY_KEY.match(k) for k in keys)


def strip_compile_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the `_orig_mod.` segments torch.compile puts into keys (the official loader does too)."""
    return {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}


def _shape(sd: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    if key not in sd:
        raise LuminaCheckpointError(
            f"missing key {key!r}", source=source, family=VIDEO_FAMILY, keys=[key],
            hint="the file is not a complete Lumina-Video checkpoint",
        )
    return tuple(sd[key].shape)


def infer_video_config(state_dict: Mapping[str, Any], source: str = "state dict", **overrides: Any) -> LuminaVideoConfig:
    """A LuminaVideoConfig from official-named weights (shapes only; values are never read).
    `overrides` set the shape-free fields (rope_theta, t_scale, motion_scale, norm_eps)."""
    sd = strip_compile_prefix(state_dict)
    entries = [(int(m.group(1)), int(m.group(2)), k) for k in sd if (m := _ENTRY_KEY.match(k))]
    if not entries:
        raise LuminaCheckpointError(
            "no Lumina-Video patch entries (all_x_embedder.<patch>-<f_patch>.weight)", source=source,
            family=VIDEO_FAMILY, keys=sorted(sd)[:5], hint="pick a Lumina-Video checkpoint",
        )
    dim, width = _shape(sd, entries[0][2], source)
    p, f = entries[0][:2]
    if width % (f * p * p):
        raise LuminaCheckpointError(
            f"patch entry {p}-{f} has width {width}, not a multiple of {f}·{p}·{p}", source=source,
            family=VIDEO_FAMILY, keys=[entries[0][2]],
        )
    channels = width // (f * p * p)
    for p, f, key in entries:
        if _shape(sd, key, source) != (dim, f * p * p * channels):
            raise LuminaCheckpointError(
                f"patch entry {p}-{f} does not fit {channels}-channel latents of width {dim}", source=source,
                family=VIDEO_FAMILY, keys=[key],
            )
    n_heads = _shape(sd, "layers.0.attention.gate", source)[0]
    kv_width = _shape(sd, "layers.0.attention.wk.weight", source)[0]
    cap_feat_dim = _shape(sd, "layers.0.attention_y_norm.weight", source)[0]
    ffn_hidden = _shape(sd, "layers.0.feed_forward.w1.weight", source)[0]
    per_layer = Counter(int(m.group(1)) for k in sd if (m := _LAYER_KEY.match(k)))
    fullest = max(per_layer.values())
    n_layers = 1 + max(i for i, n in per_layer.items() if 2 * n > fullest)
    head_dim = dim // n_heads
    n_kv = kv_width // head_dim
    return LuminaVideoConfig(
        dim=dim, n_layers=n_layers, n_heads=n_heads, cap_feat_dim=cap_feat_dim,
        n_kv_heads=None if n_kv == n_heads else n_kv, ffn_hidden=ffn_hidden,
        patches=tuple((p, f) for p, f, _ in entries), in_channels=channels,
        qk_norm="layers.0.attention.q_norm.weight" in sd, **overrides,
    )


__all__ = [
    "LuminaVideoConfig", "VIDEO_FAMILY", "VIDEO_PRESETS", "infer_video_config", "is_video_state_dict",
    "strip_compile_prefix",
]
