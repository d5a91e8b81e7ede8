"""The model's one seam for features: per-call hooks at fixed points of the forward.

The model names no feature. A feature (regional prompts, style-shared attention, region-adaptive
sampling, …, all in `lumina.features`) is an object passed per call in `ForwardOptions.features`:
- `select_tokens(info)` may narrow the forward to some sequence slots per row (the others are not
  computed and come back as zeros);
- `begin(info)` returns a `ForwardHook`, the feature's state for this one forward (or None);
- the hook's methods are called by every attention layer, in the order the features were given.
State that outlives a forward (a key/value cache across sampling steps) belongs to the run that
created the feature object, never to the model or to the options.

`BatchRows` says which user item and which guidance half each row of the model batch is, so a
feature written per item works the same under `lumina.sample`'s CFG batch and ComfyUI's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor

from ..errors import LuminaInputError
from ..tokens import TokenLayout
from .rope import RopeScaling

if TYPE_CHECKING:  # annotations only: dit.py imports this module
    from .attention import LuminaAttention
    from .dit import LuminaDiT


@dataclass(frozen=True)
class BatchRows:
    """items[r]: the user item of model row r; conditional[r]: whether row r carries the positive
    caption (False for the unconditional half under CFG)."""

    items: tuple[int, ...]
    conditional: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.items) != len(self.conditional):
            raise ValueError("BatchRows needs one item index and one conditional flag per row")

    @property
    def size(self) -> int:
        return len(self.items)

    @property
    def item_count(self) -> int:
        return max(self.items) + 1

    def conditional_rows(self) -> tuple[int, ...]:
        return tuple(r for r, c in enumerate(self.conditional) if c)

    def row_of(self, item: int, like_row: int) -> int:
        """The row holding `item` in the same guidance half as `like_row` (halves are consecutive
        runs of items 0 … n − 1, as `batch_rows` lays them out)."""
        row = like_row - self.items[like_row] + item
        if not (0 <= row < self.size and self.items[row] == item and self.conditional[row] == self.conditional[like_row]):
            raise LuminaInputError(f"model row {like_row}'s half has no item {item} (rows {self})")
        return row


def batch_rows(items: int, halves: Sequence[bool] = (True,)) -> BatchRows:
    """The model batch made of `items` latents once per guidance half, in order.

    halves[g] is True for a conditional half: `lumina.sample` under CFG passes (True, False) (its
    batch is [conditional rows; unconditional rows]); the ComfyUI bridge passes the halves in the
    order ComfyUI's `cond_or_uncond` lists them."""
    if items < 1 or not halves:
        raise ValueError(f"a model batch needs at least one item and one half, got {items} items, halves {tuple(halves)}")
    return BatchRows(
        items=tuple(i for _ in halves for i in range(items)),
        conditional=tuple(bool(c) for c in halves for _ in range(items)),
    )


def single_rows(batch: int) -> BatchRows:
    """Each row its own conditional item: a plain model call."""
    return batch_rows(batch)


@dataclass(frozen=True)
class ForwardInfo:
    """What a feature sees when a forward begins.

    layout: the token layout of the batch (all rows one latent size; None for a padded list of
    different sizes). active: (B, n) sequence slots computed in this forward (None = all), set
    once a feature has selected tokens. t: the (B,) times of the call (t = 0 is noise), for
    time-aware features. row_layouts: each row's layout (a padded list's items differ), None
    where the model has no token layout (Lumina-Video)."""

    model: "LuminaDiT"
    layout: TokenLayout | None
    rows: BatchRows
    rope_scaling: RopeScaling
    dtype: torch.dtype
    device: torch.device
    active: Tensor | None = None
    t: Tensor | None = None
    row_layouts: tuple[TokenLayout, ...] | None = None

    def require_layout(self, feature: str) -> TokenLayout:
        if self.layout is None:
            raise LuminaInputError(f"{feature} works with one latent size per batch, not a list of different sizes")
        return self.layout


@dataclass(frozen=True)
class AttentionSite:
    """Where a hook is being called: the layer, its attention module (for `cross_attention`), the
    block's caption norm, and the self-attention softmax scale (None = 1/sqrt(head_dim))."""

    layer: int
    attention: "LuminaAttention"
    caption_norm: Callable[[Tensor], Tensor]
    self_scale: float | None


@dataclass(frozen=True)
class SelfAttentionKeys:
    """What self-attention attends over: rotated keys and values (B, Lk, KV, d), the key mask
    (B, Lk) bool (None = all keys real) and the softmax scale (None = 1/sqrt(head_dim)). A hook may
    change all four together (Context Drop pools the keys, so their mask and scale change too); a
    hook that replaces k sets k_unrotated to what k came from, or None."""

    k: Tensor
    v: Tensor
    key_mask: Tensor | None
    scale: float | None
    k_unrotated: Tensor | None = None  # the keys before RoPE, (B, Lk, KV, d), when k is the layer's own


class ForwardHook:
    """One feature's state for one forward. Every method returns its input unchanged by default."""

    def before_block(self, layer: int) -> None:
        """Called before each transformer block runs (a place to stop a long forward)."""

    def self_attention_keys(self, site: AttentionSite, keys: SelfAttentionKeys) -> SelfAttentionKeys:
        """The keys, values, key mask and scale of self-attention, before it runs."""
        return keys

    def after_self_attention(
        self, site: AttentionSite, q: Tensor, k: Tensor, k_unrotated: Tensor, v: Tensor, out: Tensor
    ) -> Tensor:
        """The self-attention output (B, L, H, d), given its rotated queries and keys."""
        return out

    def cross_attention_heads(self, site: AttentionSite) -> Tensor | None:
        """(H,) bool: the heads whose caption cross-attention runs in this layer (None = all; the
        hooks' answers are combined with AND; no head left skips the cross-attention)."""
        return None

    def after_cross_attention(self, site: AttentionSite, q: Tensor, out: Tensor) -> Tensor:
        """The caption cross-attention output (B, L, H, d), before its tanh gate."""
        return out


class ForwardFeature:
    """Base of the per-call feature objects in `ForwardOptions.features`."""

    def select_tokens(self, info: ForwardInfo) -> Tensor | None:
        """(B, n) sequence slots to compute, ascending per row; None = every slot."""
        return None

    def begin(self, info: ForwardInfo) -> ForwardHook | None:
        return None


__all__ = [
    "BatchRows", "batch_rows", "single_rows", "ForwardInfo", "AttentionSite", "SelfAttentionKeys", "ForwardHook",
    "ForwardFeature",
]
