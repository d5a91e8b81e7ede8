"""Gate sparsity (Lumina-T2X): the text cross-attention of every head enters through a zero-initialised
tanh gate, and after training many gates stay near zero; their heads' cross-attention can be skipped.

A head is skipped when |tanh(gate)| < threshold. A layer whose heads are all skipped does not run its
cross-attention at all; otherwise the K/V head groups (grouped-query attention) whose heads are all
skipped are not computed, and the remaining skipped heads are computed and dropped. Threshold 0
skips nothing: the forward is exactly the dense one.
A per-call feature (`ForwardOptions.features`); `gate_report` says what a threshold skips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import LuminaInputError
from ..model.hooks import AttentionSite, ForwardFeature, ForwardHook, ForwardInfo


def skipped_heads(model: torch.nn.Module, threshold: float) -> list[Tensor]:
    """Per layer, a (heads,) bool: True where |tanh(gate)| < threshold."""
    return [layer.attention.gate.detach().float().tanh().abs() < threshold for layer in model.layers]


def gate_report(model: torch.nn.Module, threshold: float, tokens: int, caption_tokens: int) -> dict[str, float]:
    """What `threshold` skips: heads, K/V head groups, whole layers, and the FLOPs saved (a skipped
    layer's whole cross-attention; a skipped group's share of the score and value products) as a
    share of the cross-attention's and of the whole forward's FLOPs at this token count (matmuls)."""
    skips = skipped_heads(model, threshold)
    c = model.config
    d, kv, rep = c.head_dim, c.kv_heads, c.n_heads // c.kv_heads
    projections = 2 * caption_tokens * c.cap_feat_dim * 2 * kv * d  # caption keys and values
    products = 2 * 2 * tokens * caption_tokens * c.n_heads * d  # scores and their values
    cross = projections + products
    self_attn = 2 * tokens * c.dim * (c.n_heads + 2 * kv) * d + 2 * 2 * tokens * tokens * c.n_heads * d + 2 * tokens * c.dim * c.dim
    ffn = 2 * tokens * 3 * c.dim * c.hidden_dim
    skipped_groups = [int(s.view(kv, rep).all(dim=1).sum()) for s in skips]
    # a whole layer skips everything; skipped groups of a running layer skip their products only
    saved = sum(cross if g == kv else products * g / kv for g in skipped_groups)
    return {
        "heads_skipped": float(sum(int(s.sum()) for s in skips)), "heads": float(sum(len(s) for s in skips)),
        "layers_skipped": float(sum(g == kv for g in skipped_groups)), "layers": float(len(skips)),
        "groups_skipped": float(sum(skipped_groups)), "groups": float(kv * len(skips)),
        "cross_attention_flops_saved": saved / (cross * len(skips)),
        "forward_flops_saved": saved / ((cross + self_attn + ffn) * len(skips)),
    }


@dataclass(frozen=True)
class GateSparsity(ForwardFeature):
    """Skip the text cross-attention of heads whose |tanh(gate)| < threshold."""

    threshold: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise LuminaInputError(f"gate threshold={self.threshold} must lie in [0, 1] (|tanh(gate)| ≤ 1; 0 = skip nothing)")

    def begin(self, info: ForwardInfo) -> "GateSparsityHook | None":
        layers = getattr(info.model, "layers", None)
        if layers is None or not all(hasattr(layer, "attention") for layer in layers):
            raise LuminaInputError("gate sparsity needs a model whose blocks have gated cross-attention")
        skips = skipped_heads(info.model, self.threshold)
        return GateSparsityHook(skips) if any(bool(s.any()) for s in skips) else None


class GateSparsityHook(ForwardHook):
    def __init__(self, skips: list[Tensor]) -> None:
        self.skips = skips

    def cross_attention_heads(self, site: AttentionSite) -> Tensor | None:
        skip = self.skips[site.layer]
        return ~skip if bool(skip.any()) else None


__all__ = ["GateSparsity", "GateSparsityHook", "gate_report", "skipped_heads"]
