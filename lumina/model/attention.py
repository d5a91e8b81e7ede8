"""Lumina attention: KQ-norm, RoPE, self-attention plus zero-init tanh-gated cross-attention to text.

The backend is a plain function: flash-attn (varlen for padded batches) on CUDA in half
precision when it is installed, torch SDPA otherwise. A mask is passed only when some sequence
is really padded, so SDPA keeps its fast kernels, and grouped K/V heads are never repeated in
memory (the query heads sharing a K/V head are folded into the sequence axis instead).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..features.region_adaptive import SparseTokens
from .rope import apply_rope

_HAS_FLASH = importlib.util.find_spec("flash_attn") is not None


@dataclass
class RegionalContext:
    """Compositional generation, prepared once per forward."""

    rows: Tensor  # (n,) batch rows that use the regions
    cap_feats: Tensor  # (R, Lr, cap_feat_dim) raw region captions
    cap_mask: Tensor | None  # (R, Lr) bool
    weights: Tensor  # (R, L) each token's weight per region (summing to ≤ 1); (n, R, L) per row
    global_weight: Tensor  # (L,) weight of the row's own (global) caption: 1 − Σ weights; (n, L) per row


@dataclass
class SharedContext:
    """Style-shared self-attention, prepared once per forward."""

    targets: Tensor  # (n,) rows attending also to a reference
    references: Tensor  # (n,) the reference row of each target
    rotations: Tensor  # (1, L, head_dim/2) RoPE of the appended reference tokens
    logit_bias: float
    layers: tuple[int, int] | None


@dataclass
class LayerContext:
    """Everything a block needs besides its input, computed once per forward."""

    adaln_input: Tensor  # (B, adaln_dim)
    cap_feats: Tensor  # (B, Lc, cap_feat_dim), raw text-encoder features
    cap_mask: Tensor | None  # (B, Lc) bool, None when no caption is padded
    rotations: Tensor  # (B or 1, L, head_dim/2) complex64
    x_mask: Tensor | None  # (B, L) bool, None when no image sequence is padded
    self_scale: float | None  # None: 1/sqrt(head_dim)
    regional: RegionalContext | None = None
    shared: SharedContext | None = None
    sparse: SparseTokens | None = None  # region-adaptive sampling: the run's K/V cache
    active: Tensor | None = None  # (B, n) sequence positions of the queries when only some are computed
    layer: int = 0  # index of the block being run

    def shares_at(self, layer: int) -> bool:
        s = self.shared
        return s is not None and (s.layers is None or s.layers[0] <= layer < s.layers[1])


def _use_flash(q: Tensor) -> bool:
    return _HAS_FLASH and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, scale: float | None) -> Tensor:
    b, lq, h, d = q.shape
    kv = k.shape[2]
    rep = h // kv
    # Query head i reads K/V head i // rep (repeat_interleave order): fold the rep heads of each
    # group into the query axis so SDPA sees plain multi-head attention over unrepeated K/V.
    qf = q.reshape(b, lq, kv, rep, d).permute(0, 2, 3, 1, 4).reshape(b, kv, rep * lq, d)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(qf, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale)
    return out.reshape(b, kv, rep, lq, d).permute(0, 3, 1, 2, 4).reshape(b, lq, h, d)


def _flash(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, query_mask: Tensor | None, scale: float | None
) -> Tensor:
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if key_mask is None and query_mask is None:
        return flash_attn_func(q, k, v, softmax_scale=scale)
    b, lq, h, d = q.shape
    lk = k.shape[1]
    qm = torch.ones(b, lq, dtype=torch.bool, device=q.device) if query_mask is None else query_mask
    km = torch.ones(b, lk, dtype=torch.bool, device=q.device) if key_mask is None else key_mask

    def unpad(mask: Tensor) -> tuple[Tensor, Tensor, int]:
        lens = mask.sum(1, dtype=torch.int32)
        cu = F.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0))
        return mask.flatten().nonzero().flatten(), cu, int(lens.max())

    qi, cu_q, max_q = unpad(qm)
    ki, cu_k, max_k = unpad(km)
    out = flash_attn_varlen_func(
        q.reshape(b * lq, h, d)[qi], k.reshape(b * lk, *k.shape[2:])[ki], v.reshape(b * lk, *v.shape[2:])[ki],
        cu_q, cu_k, max_q, max_k, softmax_scale=scale,
    )
    full = q.new_zeros(b * lq, h, d)
    full[qi] = out
    return full.reshape(b, lq, h, d)


def attend(
    q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None,
    query_mask: Tensor | None = None, scale: float | None = None,
) -> Tensor:
    """(B, Lq, H, d) queries over (B, Lk, KV, d) keys/values → (B, Lq, H, d); H must be a multiple of KV.
    key_mask: (B, Lk) bool (True = attend) or float (added to the logits)."""
    if _use_flash(q) and (key_mask is None or key_mask.dtype == torch.bool):  # float = logit bias: SDPA
        return _flash(q, k, v, key_mask, query_mask, scale)
    return _sdpa(q, k, v, key_mask, scale)


def proportional_scale(seqlen: int, base_seqlen: int, head_dim: int) -> float:
    """Lumina-Next proportional attention: keeps attention entropy steady as token count grows."""
    return math.sqrt(math.log(seqlen, base_seqlen) / head_dim)


class LuminaAttention(nn.Module):
    """Self-attention over image tokens plus gated cross-attention to caption features, one wo."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, cap_feat_dim: int, qk_norm: bool) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        kv_width = n_kv_heads * self.head_dim
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_width, bias=False)
        self.wv = nn.Linear(dim, kv_width, bias=False)
        self.wk_y = nn.Linear(cap_feat_dim, kv_width, bias=False)
        self.wv_y = nn.Linear(cap_feat_dim, kv_width, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.gate = nn.Parameter(torch.zeros(n_heads))  # zero-init: text enters gradually in training
        # Official KQ-norm is a LayerNorm over all heads at once (not per head), before the reshape.
        make_norm = (lambda width: nn.LayerNorm(width, eps=1e-5)) if qk_norm else (lambda width: nn.Identity())
        self.q_norm, self.k_norm, self.ky_norm = make_norm(n_heads * self.head_dim), make_norm(kv_width), make_norm(kv_width)

    def forward(self, x: Tensor, cap_y: Tensor, ctx: LayerContext, region_y: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        q = self.q_norm(self.wq(x)).view(b, n, self.n_heads, self.head_dim)
        k_unrotated = self.k_norm(self.wk(x)).view(b, n, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(b, n, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, ctx.rotations), apply_rope(k_unrotated, ctx.rotations)
        if ctx.sparse is not None:  # keys/values of the positions not computed come from the cache
            k, v = ctx.sparse.exchange(ctx.layer, k, v, ctx.active)
        out = attend(q, k, v, key_mask=ctx.x_mask, query_mask=ctx.x_mask, scale=ctx.self_scale)
        if ctx.shares_at(ctx.layer):
            out = self._shared_self_attention(q, k, k_unrotated, v, out, ctx)

        # Cross-attention reuses the normed, rotated queries; caption keys carry no positions.
        out_y = self._cross_attention(q, cap_y, ctx.cap_mask, ctx.x_mask)
        if region_y is not None:
            out_y = self._regional_cross_attention(q, out_y, region_y, ctx.regional)
        out = out + out_y * self.gate.tanh().to(out_y.dtype).view(1, 1, -1, 1)
        return self.wo(out.flatten(2))

    def _cross_attention(self, q: Tensor, cap_y: Tensor, cap_mask: Tensor | None, x_mask: Tensor | None) -> Tensor:
        b, lc = cap_y.shape[:2]
        ky = self.ky_norm(self.wk_y(cap_y)).view(b, lc, self.n_kv_heads, self.head_dim)
        vy = self.wv_y(cap_y).view(b, lc, self.n_kv_heads, self.head_dim)
        return attend(q, ky, vy, key_mask=cap_mask, query_mask=x_mask)

    def _regional_cross_attention(self, q: Tensor, out_y: Tensor, region_y: Tensor, rg: RegionalContext) -> Tensor:
        """Each regional caption answers only its region's queries; a row's own (global) caption
        answers the rest. One attention call over (rows × regions)."""
        rows = rg.rows
        n, r, length = rows.numel(), region_y.shape[0], q.shape[1]
        q_rows = q[rows].unsqueeze(1).expand(n, r, *q.shape[1:]).reshape(n * r, *q.shape[1:])
        y = region_y.unsqueeze(0).expand(n, *region_y.shape).reshape(n * r, *region_y.shape[1:])
        mask = None if rg.cap_mask is None else rg.cap_mask.unsqueeze(0).expand(n, *rg.cap_mask.shape).reshape(n * r, -1)
        per_region = self._cross_attention(q_rows, y, mask, None).view(n, r, length, self.n_heads, self.head_dim)
        weights, global_weight = rg.weights.to(out_y.dtype), rg.global_weight.to(out_y.dtype)
        if weights.ndim == 2:  # shared by the rows: (R, L), (L,); per row (n, R, L), (n, L)
            weights, global_weight = weights[None], global_weight[None]
        mixed = (per_region * weights[..., None, None]).sum(1) + out_y[rows] * global_weight[..., None, None]
        return out_y.index_copy(0, rows, mixed)

    def _shared_self_attention(self, q: Tensor, k: Tensor, k_unrotated: Tensor, v: Tensor, out: Tensor, ctx: LayerContext) -> Tensor:
        """Targets attend to their own tokens and to the reference's, appended after them (RoPE
        at the appended positions, so no position repeats); other rows keep plain attention."""
        sh = ctx.shared
        tgt, ref = sh.targets, sh.references
        k_ref = apply_rope(k_unrotated[ref], sh.rotations)
        keys = torch.cat([k[tgt], k_ref], dim=1)
        values = torch.cat([v[tgt], v[ref]], dim=1)
        bias = None
        if sh.logit_bias != 0.0:
            length = k.shape[1]
            bias = torch.zeros(tgt.numel(), 2 * length, dtype=q.dtype, device=q.device)
            bias[:, length:] = sh.logit_bias
        shared = attend(q[tgt], keys, values, key_mask=bias, scale=ctx.self_scale)
        return out.index_copy(0, tgt, shared)
