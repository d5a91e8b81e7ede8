"""Context Drop (Lumina-Next): self-attention keys and values of the image tokens are average-pooled
over r × r patches, while every query stays; attention then costs L · L/r² instead of L².

- The merge ratio r: given, or automatic from the token count, round(sqrt(L / base tokens)), which is
  1 (dense) at the trained size and 2 at twice the trained side, where the paper uses it.
- Pooling is 2-D over each frame's patch grid (frames are never mixed); a partial window at the
  right or bottom edge averages the patches it covers. [nextline] / [nextframe] tokens are kept
  unpooled beside the pooled patches. Keys are pooled before RoPE and rotated at the window's
  mean position (pooling rotated keys would blur their highest frequencies; `rotate_pooled=False`
  does that instead); values are pooled as they are.
- Padded list batches: each row is pooled with its own item's layout, the pooled rows are padded
  to one length, and the key mask marks each row's pooled keys (a [PAD] token is never averaged in).
- Proportional attention (when the call uses it) is rescaled to the pooled key count: its softmax
  scale sqrt(log_base(L)/d) becomes sqrt(log_base(L')/d), so at twice the trained side, with 4×
  fewer keys, attention sees exactly the trained number of keys and the plain scale.
- Time-aware: pooling runs while t < end_time (t = 0 is noise); near the data end the call is dense.

The official repository's only code for it is disabled and does not run; this follows the paper's
description. A per-call feature (`ForwardOptions.features`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import LuminaInputError
from ..model.hooks import AttentionSite, ForwardFeature, ForwardHook, ForwardInfo, SelfAttentionKeys
from ..model.rope import apply_rope, rope_angles, rope_table
from ..tokens import TokenLayout


def auto_ratio(tokens: int, base_tokens: int) -> int:
    """round(sqrt(tokens / base_tokens)), at least 1."""
    return max(1, round(math.sqrt(tokens / base_tokens)))


def pooled_length(layout: TokenLayout, ratio: int) -> int:
    """Keys left for one item: the pooled patches of every frame plus its special tokens."""
    rows, cols = -(-layout.rows // ratio), -(-layout.cols // ratio)
    return layout.frames * rows * cols + (layout.length - layout.frames * layout.rows * layout.cols)


def pool_item(x: Tensor, layout: TokenLayout, ratio: int) -> Tensor:
    """(b, ≥layout.length, KV, d) keys or values of rows with this layout → (b, pooled_length, KV, d):
    each frame's patch grid averaged over ratio × ratio windows, then the special tokens."""
    b, _, kv, d = x.shape
    patches = layout.frames * layout.rows * layout.cols
    if layout.nextline or layout.nextframe:
        grid = x[:, layout.patch_slots().to(x.device)]
    else:  # the sequence is the patch grid itself: no gather
        grid = x[:, :patches]
    grid = grid.reshape(b, layout.frames, layout.rows, layout.cols, kv * d)
    grid = grid.permute(0, 1, 4, 2, 3).reshape(b * layout.frames, kv * d, layout.rows, layout.cols)
    pooled = F.avg_pool2d(grid, ratio, stride=ratio, ceil_mode=True)  # edge windows: the mean of what they cover
    pooled = pooled.reshape(b, layout.frames, kv, d, -1).permute(0, 1, 4, 2, 3).reshape(b, -1, kv, d)
    specials = layout.special_slots().to(x.device)
    return torch.cat([pooled, x[:, specials]], dim=1) if specials.numel() else pooled


@dataclass(frozen=True)
class ContextDrop(ForwardFeature):
    """ratio: the merge ratio r (r × r patches per pooled key); None = automatic from the token
    count (`auto_ratio` against the model's trained token count, or `base_tokens`); 1 = dense.
    end_time: pool while t < end_time (1 = every call). rotate_pooled: rotate pooled keys at their
    window's mean position (True) or pool the rotated keys (False)."""

    ratio: int | None = None
    end_time: float = 1.0
    base_tokens: int | None = None
    rotate_pooled: bool = True

    def __post_init__(self) -> None:
        if self.ratio is not None and (int(self.ratio) != self.ratio or self.ratio < 1):
            raise LuminaInputError(f"Context Drop ratio={self.ratio} must be a whole number ≥ 1 (1 = dense), or None (auto)")
        if not 0.0 <= self.end_time <= 1.0:
            raise LuminaInputError(f"Context Drop end_time={self.end_time} must lie in [0, 1] (t = 0 is noise)")
        if self.base_tokens is not None and self.base_tokens < 1:
            raise LuminaInputError(f"Context Drop base_tokens={self.base_tokens} must be ≥ 1")

    def merge_ratio(self, info: ForwardInfo) -> int:
        if self.ratio is not None:
            return int(self.ratio)
        layouts = info.row_layouts or ()
        tokens = max(lay.frames * lay.rows * lay.cols for lay in layouts) // max(1, max(lay.frames for lay in layouts))
        config = info.model.config
        base = self.base_tokens or (config.base_image_size // (config.vae_downsample * config.patch_size)) ** 2
        return auto_ratio(tokens, base)

    def begin(self, info: ForwardInfo) -> "ContextDropHook | None":
        if info.row_layouts is None:
            raise LuminaInputError("Context Drop pools image tokens by their layout; this model (Lumina-Video) has none")
        if info.t is not None and float(info.t.max()) >= self.end_time:
            return None  # near the data end: dense
        ratio = self.merge_ratio(info)
        if ratio == 1:
            return None
        if info.active is not None:
            raise LuminaInputError(
                "Context Drop needs every token's keys; it cannot be combined with region-adaptive sampling in one call"
            )
        rotate = None
        if self.rotate_pooled:
            model, scaling = info.model, info.rope_scaling

            def rotate(layout: TokenLayout, pooled_unrotated: Tensor) -> Tensor:
                pos = model.positions(layout).to(pooled_unrotated.device)[None, :, None]  # (1, L, 1, A)
                centres = pool_item(pos, layout, ratio)[0, :, 0]  # the mean position of each window
                angles = rope_angles(centres, model.config.head_dim, model.config.rope_theta, scaling,
                                     interpolate_positions=model.interpolate_positions)
                return apply_rope(pooled_unrotated.contiguous(), rope_table(angles)[None])

        return ContextDropHook(info.row_layouts, ratio, rotate)


class ContextDropHook(ForwardHook):
    """Pools the self-attention keys and values of one forward (same plan in every layer)."""

    def __init__(self, layouts: tuple[TokenLayout, ...], ratio: int, rotate=None) -> None:
        self.ratio = ratio
        self.rotate = rotate
        self.groups: dict[TokenLayout, list[int]] = {}
        for row, layout in enumerate(layouts):
            self.groups.setdefault(layout, []).append(row)
        self.lengths = [pooled_length(layout, ratio) for layout in layouts]
        self.key_mask: Tensor | None = None  # built on the first layer's device

    def _pool_keys(self, keys: SelfAttentionKeys, layout: TokenLayout, rows: Tensor | None) -> Tensor:
        """Pooled rotated keys: with the layer's own unrotated keys, those pooled and then rotated
        at each window's mean position; otherwise (another hook replaced k) the rotated keys pooled."""
        if self.rotate is None or keys.k_unrotated is None:
            return pool_item(keys.k if rows is None else keys.k[rows], layout, self.ratio)
        unrotated = keys.k_unrotated if rows is None else keys.k_unrotated[rows]
        return self.rotate(layout, pool_item(unrotated, layout, self.ratio))

    def self_attention_keys(self, site: AttentionSite, keys: SelfAttentionKeys) -> SelfAttentionKeys:
        k, v = keys.k, keys.v
        if len(self.groups) == 1:  # one latent size: a plain batch, no mask needed
            (layout,) = self.groups
            pk, pv, mask = self._pool_keys(keys, layout, None), pool_item(v, layout, self.ratio), None
        else:
            longest = max(self.lengths)
            pk = k.new_zeros(k.shape[0], longest, *k.shape[2:])
            pv = v.new_zeros(v.shape[0], longest, *v.shape[2:])
            for layout, rows in self.groups.items():
                index = torch.tensor(rows, device=k.device)
                n = pooled_length(layout, self.ratio)
                pk[index, :n] = self._pool_keys(keys, layout, index)
                pv[index, :n] = pool_item(v[index], layout, self.ratio)
            if self.key_mask is None:
                lengths = torch.tensor(self.lengths, device=k.device)
                self.key_mask = torch.arange(longest, device=k.device)[None] < lengths[:, None]
            mask = self.key_mask
        scale = keys.scale
        if scale is not None and pk.shape[1] > 1:  # proportional attention: its entropy rule at the pooled key count
            scale = scale * math.sqrt(math.log(pk.shape[1]) / math.log(k.shape[1]))
        return SelfAttentionKeys(pk, pv, mask, scale, None)


__all__ = ["ContextDrop", "ContextDropHook", "auto_ratio", "pool_item", "pooled_length"]
