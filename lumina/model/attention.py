"""Lumina attention: KQ-norm, RoPE, self-attention plus zero-init tanh-gated cross-attention to text.

The backend is a plain function: flash-attn (varlen for padded batches) on CUDA in half
precision when it is installed, torch SDPA otherwise. A mask is passed only when some sequence
is really padded, so SDPA keeps its fast kernels, and grouped K/V heads are never repeated in
memory (the query heads sharing a K/V head are folded into the sequence axis instead).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hooks import AttentionSite, ForwardHook, SelfAttentionKeys
from .rope import apply_rope


@functools.lru_cache(maxsize=None)
def flash_available() -> bool:
    """Whether flash-attn's two kernels can be imported, without importing it yet.

    Another package may have put a stand-in `flash_attn` module into sys.modules (shims that
    let the official code import on machines without it do this); `find_spec` raises ValueError
    for such a module, so one already imported is judged by what it actually offers."""
    module = sys.modules.get("flash_attn")
    if module is not None:
        return all(callable(getattr(module, name, None)) for name in ("flash_attn_func", "flash_attn_varlen_func"))
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class LayerContext:
    """Everything a block needs besides its input, computed once per forward."""

    adaln_input: Tensor  # (B, adaln_dim)
    cap_feats: Tensor  # (B, Lc, cap_feat_dim), raw text-encoder features
    cap_mask: Tensor | None  # (B, Lc) bool, None when no caption is padded
    rotations: Tensor  # (B or 1, L, head_dim/2) complex64
    x_mask: Tensor | None  # (B, L) bool, None when no image sequence is padded
    self_scale: float | None  # None: 1/sqrt(head_dim)
    hooks: tuple[ForwardHook, ...] = ()  # the call's features (lumina.model.hooks)


def _use_flash(q: Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_available()


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


_SUFFIX_LENGTHS: dict[int, tuple[weakref.ref, list[int] | None]] = {}  # id(mask) → (the mask, its lengths)


@torch.compiler.disable  # compiled blocks (lumina.compile) call it eager: traced, its id() lookup would recompile per mask
def _suffix_lengths(mask: Tensor) -> list[int] | None:
    """Per-row counts of a bool mask whose padding is a suffix (True then False), else None. A
    forward hands every layer the same mask tensors, so each is read (and synced) once; an entry
    leaves when its mask is freed."""
    if mask.dtype != torch.bool:
        return None
    entry = _SUFFIX_LENGTHS.get(id(mask))
    if entry is not None and entry[0]() is mask:
        return entry[1]
    lengths = mask.sum(dim=1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
    result = lengths.tolist() if bool(torch.equal(prefix, mask)) else None
    key = id(mask)
    _SUFFIX_LENGTHS[key] = (weakref.ref(mask, lambda _, key=key: _SUFFIX_LENGTHS.pop(key, None)), result)
    return result


def _sdpa_per_row(q: Tensor, k: Tensor, v: Tensor, q_lengths: list[int], k_lengths: list[int], scale: float | None) -> Tensor:
    """Each row over its own real keys only (the varlen layout): no mask for SDPA to apply and
    no padded query computed. Padded query slots come back as zeros."""
    out = q.new_zeros(q.shape)
    for i, (lq, lk) in enumerate(zip(q_lengths, k_lengths)):
        if lq and lk:
            out[i, :lq] = _sdpa(q[i : i + 1, :lq], k[i : i + 1, :lk], v[i : i + 1, :lk], None, scale)[0]
    return out


def attend(
    q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None,
    query_mask: Tensor | None = None, scale: float | None = None,
) -> Tensor:
    """(B, Lq, H, d) queries over (B, Lk, KV, d) keys/values → (B, Lq, H, d); H must be a multiple of KV.
    key_mask: (B, Lk) bool (True = attend) or float (added to the logits). A batch with padded
    queries whose masks are suffix padding runs row by row over the real tokens on SDPA (a masked
    SDPA call would compute every padded query); padded keys alone go to one masked call."""
    if _use_flash(q) and (key_mask is None or key_mask.dtype == torch.bool):  # float = logit bias: SDPA
        return _flash(q, k, v, key_mask, query_mask, scale)
    if key_mask is not None and q.shape[0] > 1:
        if query_mask is None and torch.compiler.is_compiling() and not torch.is_grad_enabled():
            return _masked_keys_traced(q, k, v, key_mask, scale)
        by_rows = _attend_by_rows(q, k, v, key_mask, query_mask, scale)
        if by_rows is not None:
            return by_rows
    return _sdpa(q, k, v, key_mask, scale)


def _masked_keys_traced(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, scale: float | None) -> Tensor:
    """Padded keys alone (a shorter negative caption) inside compiled inference code: the one masked
    call `_attend_by_rows` would choose, and a row with no key at all zeroed (the masked call gives
    it NaN; the row-by-row path gives it zeros), decided in the graph instead of eagerly. The eager
    decision splits a compiled block's graph at every masked call; in training it stays, so
    compiled training runs keep their bits (tests/train: the demos' retraces)."""
    out = _sdpa(q, k, v, key_mask, scale)
    if key_mask.dtype != torch.bool:  # a logit bias masks no row out entirely
        return out
    return torch.where(key_mask.any(dim=1)[:, None, None, None], out, torch.zeros((), dtype=out.dtype, device=out.device))


@torch.compiler.disable  # the row lengths are host ints: traced, every new caption length would recompile the block
def _attend_by_rows(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, query_mask: Tensor | None, scale: float | None
) -> Tensor | None:
    """attend's row-by-row result where that pays, else None (one masked call is better).

    Row by row only for padded queries (a list of sizes), whose wasted work the masked call
    cannot skip, or a row with no key at all (the masked call would give NaN). Padded keys alone
    (captions) cost the fused masked kernel little, and a loop of small calls costs 2-3x in a
    forward and ~10x in a backward (benchmarks/attention_padding.py)."""
    k_lengths = _suffix_lengths(key_mask)
    q_lengths = [q.shape[1]] * q.shape[0] if query_mask is None else _suffix_lengths(query_mask)
    if k_lengths is not None and q_lengths is not None and (query_mask is not None or min(k_lengths) == 0):
        return _sdpa_per_row(q, k, v, q_lengths, k_lengths, scale)
    return None


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

    def forward(self, x: Tensor, cap_y: Tensor, ctx: LayerContext, layer: int = 0,
                caption_norm: nn.Module | None = None) -> Tensor:
        """x (B, L, dim) image tokens, cap_y (B, Lc, cap_feat_dim) normed caption features;
        layer and caption_norm (the block's caption RMSNorm) tell the features' hooks where they are."""
        q, k_unrotated, v = self.self_projections(x)
        q, k = apply_rope(q, ctx.rotations), apply_rope(k_unrotated, ctx.rotations)
        site = AttentionSite(layer, self, caption_norm or nn.Identity(), ctx.self_scale) if ctx.hooks else None
        keys = SelfAttentionKeys(k, v, ctx.x_mask, ctx.self_scale, k_unrotated)
        for hook in ctx.hooks:
            keys = hook.self_attention_keys(site, keys)
        k, v = keys.k, keys.v
        out = attend(q, k, v, key_mask=keys.key_mask, query_mask=ctx.x_mask, scale=keys.scale)
        for hook in ctx.hooks:
            out = hook.after_self_attention(site, q, k, k_unrotated, v, out)

        keep = None  # heads whose cross-attention runs (None = all)
        for hook in ctx.hooks:
            heads = hook.cross_attention_heads(site)
            if heads is not None:
                keep = heads if keep is None else keep & heads
        if keep is not None and not bool(keep.any()):  # every head's gate is skipped: no cross-attention
            return self.wo(out.flatten(2))
        # Cross-attention reuses the normed, rotated queries; caption keys carry no positions.
        groups = None if keep is None else keep.view(self.n_kv_heads, -1).any(dim=1)
        out_y = self.cross_attention(q, cap_y, ctx.cap_mask, ctx.x_mask, None if groups is None or bool(groups.all()) else groups)
        for hook in ctx.hooks:
            out_y = hook.after_cross_attention(site, q, out_y)
        gate = self.gate.tanh() if keep is None else self.gate.tanh() * keep.to(self.gate.device)
        out = out + out_y * gate.to(out_y.dtype).view(1, 1, -1, 1)
        return self.wo(out.flatten(2))

    def self_projections(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(queries, keys before RoPE, values) of tokens x (B, L, dim): (B, L, H, d), (B, L, KV, d) ×2, normed."""
        b, n, _ = x.shape
        q = self.q_norm(self.wq(x)).view(b, n, self.n_heads, self.head_dim)
        k = self.k_norm(self.wk(x)).view(b, n, self.n_kv_heads, self.head_dim)
        return q, k, self.wv(x).view(b, n, self.n_kv_heads, self.head_dim)

    def cross_attention(
        self, q: Tensor, cap_y: Tensor, cap_mask: Tensor | None, x_mask: Tensor | None, groups: Tensor | None = None
    ) -> Tensor:
        """Rotated queries (B, L, H, d) over normed caption features (B, Lc, cap_feat_dim).
        groups: (KV,) bool, the K/V head groups to compute (None = all); the others' heads are zero."""
        b, lc = cap_y.shape[:2]
        ky = self.ky_norm(self.wk_y(cap_y)).view(b, lc, self.n_kv_heads, self.head_dim)
        vy = self.wv_y(cap_y).view(b, lc, self.n_kv_heads, self.head_dim)
        if groups is None:
            return attend(q, ky, vy, key_mask=cap_mask, query_mask=x_mask)
        rep = self.n_heads // self.n_kv_heads
        qg = q.view(*q.shape[:2], self.n_kv_heads, rep, self.head_dim)
        part = attend(qg[:, :, groups].flatten(2, 3), ky[:, :, groups], vy[:, :, groups], key_mask=cap_mask, query_mask=x_mask)
        out = q.new_zeros(qg.shape)
        out[:, :, groups] = part.view(*q.shape[:2], -1, rep, self.head_dim)
        return out.flatten(2, 3)
