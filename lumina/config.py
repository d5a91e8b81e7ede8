"""Model configurations: one dataclass for both families, presets, and inference from weights.

A state dict alone determines every field that changes tensor shapes; the few that do not
(RoPE theta, base resolution, norm eps) take the official values.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping

from .errors import LuminaCheckpointError, LuminaInputError
from .families import FAMILIES, FAMILY_NAMES
from .widths import AttentionWidths, ffn_hidden_dim
from .video_config import LuminaVideoConfig, infer_video_config, is_video_state_dict

Family = Literal["flag_dit", "next_dit"]


@dataclass(frozen=True)
class LuminaConfig(AttentionWidths):
    """Everything needed to build a Flag-DiT or Next-DiT module."""

    family: Family
    dim: int
    n_layers: int
    n_heads: int
    cap_feat_dim: int
    n_kv_heads: int | None = None  # None means multi-head attention (= n_heads)
    ffn_hidden: int | None = None  # None: derived from multiple_of like the official code
    multiple_of: int = 256
    patch_size: int = 2
    in_channels: int = 4
    learn_sigma: bool = True
    qk_norm: bool = True
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    base_image_size: int = 1024  # training resolution in pixels; extrapolation is relative to it
    vae_downsample: int = 8
    # Flag-DiT's learned [nextframe] token (`nextframe_token`), which closes every frame of a video
    # latent. None: created for new Flag-DiT models, absent for Next-DiT (its 3-D RoPE carries the
    # frames). Released Lumina-T2I checkpoints have none: `infer_config` reads it off the state
    # dict, and such a model refuses latents with more than one frame.
    nextframe_token: bool | None = None

    def __post_init__(self) -> None:
        if self.nextframe_token is None:  # frozen: resolve the family default in place
            object.__setattr__(self, "nextframe_token", self.family == "flag_dit")
        if self.nextframe_token and self.family != "flag_dit":
            raise ValueError(
                "nextframe_token is Flag-DiT's [nextframe] token; Next-DiT carries frames by 3-D RoPE and has none"
            )
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        self.check_heads()
        axes = 2 if self.family == "next_dit" else 1
        if self.head_dim % (2 * axes):
            raise ValueError(f"head_dim {self.head_dim} must be divisible by {2 * axes} for {axes}-D RoPE")

    @property
    def hidden_dim(self) -> int:
        return self.ffn_hidden or ffn_hidden_dim(self.dim, self.multiple_of)

    @property
    def adaln_dim(self) -> int:
        return min(self.dim, 1024)

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def patch_features(self) -> int:
        return self.patch_size * self.patch_size * self.in_channels

    @property
    def base_latent_tokens(self) -> tuple[int, int]:
        side = self.base_image_size // (self.vae_downsample * self.patch_size)
        return side, side

    @property
    def base_seqlen(self) -> int:
        """Token count at the training resolution, the official proportional-attention base."""
        rows, cols = self.base_latent_tokens
        # Flag-DiT's official base counts two extra tokens per row (its [nextline] plus one more)
        return rows * cols + 2 * rows if self.family == "flag_dit" else rows * cols

    @property
    def pixel_unit(self) -> int:
        """Image pixels per token side: patch size × VAE downsampling."""
        return self.patch_size * self.vae_downsample

    def check_latent(self, where: str, channels: int, height: int, width: int) -> None:
        """Raise a LuminaInputError naming `where` unless a (channels, height, width) latent fits."""
        from_family = FAMILY_NAMES[self.family]
        if channels != self.in_channels:
            raise LuminaInputError(
                f"{where} has {channels} channels but this {from_family} model takes {self.in_channels}-channel "
                f"latents; encode images with the matching VAE"
            )
        p = self.patch_size
        if height % p or width % p or height <= 0 or width <= 0:
            raise LuminaInputError(
                f"{where}: latent size {height}×{width} is not a positive multiple of the patch size {p}; "
                f"use an image size that is a multiple of {self.pixel_unit} pixels"
            )

    def check_frames(self, where: str, frames: int) -> None:
        """Raise a LuminaInputError naming `where` unless this model can take `frames` frames."""
        if frames < 1:
            raise LuminaInputError(
                f"{where} has {frames} frames; a (batch, {self.in_channels}, frames, height, width) latent needs at "
                "least one frame (an image is one frame)"
            )
        if frames == 1:
            return
        if self.family == "flag_dit" and not self.nextframe_token:
            raise LuminaInputError(
                f"{where} has {frames} frames but this Flag-DiT (Lumina-T2I) model has no learned [nextframe] token "
                "(no released checkpoint has one), so it cannot lay out more than one frame; fine-tune a [nextframe] "
                "token (a model built with nextframe_token=True, e.g. from this one's weights), or use a Next-DiT "
                "model, whose 3-D RoPE carries the frames"
            )
        if self.family == "next_dit" and self.head_dim % 6:
            raise LuminaInputError(
                f"{where} has {frames} frames but this Next-DiT model's head_dim {self.head_dim} cannot carry 3-D "
                "(frame, row, col) RoPE, which needs a head_dim divisible by 6; sample images (one frame) with it, or "
                "use a model whose head_dim is a multiple of 6"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LuminaConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> "LuminaConfig":
        return replace(self, **changes)


PRESETS: dict[str, LuminaConfig] = {
    # lumina_t2i/models/model.py: DiT_Llama_5B_patch2, LLaMA-2-7B captions
    "lumina-t2i-5b": LuminaConfig("flag_dit", dim=3072, n_layers=32, n_heads=32, cap_feat_dim=4096, nextframe_token=False),
    # lumina_next_t2i*/models: NextDiT_2B_GQA_patch2, Gemma-2B captions
    "lumina-next-2b": LuminaConfig("next_dit", dim=2304, n_layers=24, n_heads=32, n_kv_heads=8, cap_feat_dim=2048),
}

_LAYER_KEY = re.compile(r"^layers\.(\d+)\.")


def guess_family(keys: Any) -> Family | None:
    """Family from official key names, or None when neither family's markers are present."""
    keys = set(keys)
    if is_video_state_dict(keys):  # Lumina-Video: multi-scale patch entries (its blocks look like Next-DiT's)
        return "lumina_video"  # type: ignore[return-value]
    if "eol_token" in keys or "layers.0.attention_norm.weight" in keys:
        return "flag_dit"
    if "layers.0.attention_norm1.weight" in keys:
        return "next_dit"
    return None


def layer_count(keys: Any) -> int:
    """How many blocks `layers.<i>.*` keys describe: up to the last index holding more than half
    as many tensors as the fullest block.

    1 + the highest index would turn one stray key (`layers.7.foo` beside 7 complete blocks) into
    an 8th block with every other tensor missing; counted this way it stays one unexpected key,
    while a real block that lacks a tensor or two still counts (and its gaps are reported as
    missing). 0 when there are no layer keys."""
    per_layer = Counter(int(m.group(1)) for k in keys if (m := _LAYER_KEY.match(k)))
    if not per_layer:
        return 0
    fullest = max(per_layer.values())
    return 1 + max(i for i, n in per_layer.items() if 2 * n > fullest)


def _shape(state_dict: Mapping[str, Any], key: str, source: str, family: str | None) -> tuple[int, ...]:
    if key not in state_dict:
        raise LuminaCheckpointError(
            f"missing key {key!r}", source=source, family=family, keys=[key],
            hint="the file is not a complete Lumina checkpoint",
        )
    return tuple(state_dict[key].shape)


def _infer_channels(patch_features: int, out_features: int, in_channels: int | None = None) -> tuple[int, int, bool]:
    """(patch_size, in_channels, learn_sigma) from x_embedder's and final_layer's widths.

    The width is p²·C, so 64 could be p=2 with 16 channels or p=4 with 4; without a hint the
    released models' 4-channel SDXL latents win."""
    learn_sigma = out_features == 2 * patch_features
    for channels in (in_channels,) if in_channels else (4, 16, 8, 3, 1, 2):
        if patch_features % channels:
            continue
        patch = math.isqrt(patch_features // channels)
        if patch * patch * channels == patch_features:
            return patch, channels, learn_sigma
    raise ValueError(f"cannot split x_embedder width {patch_features} into patch² × channels")


def infer_config(state_dict: Mapping[str, Any], source: str = "state dict", in_channels: int | None = None) -> LuminaConfig:
    """Read a LuminaConfig off official-named weights (shapes only, values are never touched).
    `in_channels` settles the patch-size/channel ambiguity when known (e.g. from a config.json)."""
    family = guess_family(state_dict.keys())
    if family is None:
        raise LuminaCheckpointError(
            "no Lumina model found: neither Flag-DiT keys (eol_token, layers.0.attention_norm.weight) "
            "nor Next-DiT keys (layers.0.attention_norm1.weight) are present",
            source=source, keys=sorted(state_dict.keys())[:5],
            hint="pick a Lumina-T2I, Lumina-Next-T2I or Lumina-Next-SFT checkpoint",
        )
    if family == "lumina_video":
        return infer_video_config(state_dict, source)  # type: ignore[return-value]  # a LuminaVideoConfig
    dim, patch_features = _shape(state_dict, "x_embedder.weight", source, family)
    out_features = _shape(state_dict, "final_layer.linear.weight", source, family)[0]
    n_heads = _shape(state_dict, "layers.0.attention.gate", source, family)[0]
    kv_width = _shape(state_dict, "layers.0.attention.wk.weight", source, family)[0]
    cap_feat_dim = _shape(state_dict, "layers.0.attention_y_norm.weight", source, family)[0]
    ffn_hidden = _shape(state_dict, "layers.0.feed_forward.w1.weight", source, family)[0]
    n_layers = layer_count(state_dict.keys())
    try:
        patch, channels, learn_sigma = _infer_channels(patch_features, out_features, in_channels)
    except ValueError as err:
        raise LuminaCheckpointError(str(err), source=source, family=family, keys=["x_embedder.weight"]) from None
    head_dim = dim // n_heads
    n_kv_heads = kv_width // head_dim
    return LuminaConfig(
        family=family, dim=dim, n_layers=n_layers, n_heads=n_heads,
        n_kv_heads=None if n_kv_heads == n_heads else n_kv_heads,
        cap_feat_dim=cap_feat_dim, ffn_hidden=ffn_hidden, patch_size=patch, in_channels=channels,
        learn_sigma=learn_sigma, qk_norm="layers.0.attention.q_norm.weight" in state_dict,
        nextframe_token="nextframe_token" in state_dict,
    )


__all__ = [
    "LuminaConfig", "PRESETS", "FAMILIES", "FAMILY_NAMES", "infer_config", "guess_family", "ffn_hidden_dim",
    "layer_count", "LuminaVideoConfig", "infer_video_config",
]
