"""Attention backends: GQA without repeated K/V, masks only when padded, the flash-attn varlen path."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

import lumina
from lumina.config import LuminaConfig
from lumina.model import attention


def reference_attention(q, k, v, key_mask=None, scale=None):
    """Materialised repeat of K/V heads, like the official SDPA branch."""
    rep = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("masked", [False, True])
def test_grouped_query_attention_matches_repeated_kv(heads, kv_heads, masked):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 10, heads, 8, generator=g)
    k = torch.randn(2, 7, kv_heads, 8, generator=g)
    v = torch.randn(2, 7, kv_heads, 8, generator=g)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool) if masked else None
    ours = attention.attend(q, k, v, key_mask=mask, scale=0.3)
    torch.testing.assert_close(ours, reference_attention(q, k, v, mask, 0.3), atol=1e-6, rtol=0)


def _tiny_model() -> lumina.LuminaDiT:
    torch.manual_seed(0)
    model = lumina.build_model(LuminaConfig("next_dit", dim=64, n_layers=1, n_heads=4, n_kv_heads=2, cap_feat_dim=16, multiple_of=16))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def test_unpadded_batch_passes_no_mask(monkeypatch):
    """SDPA's fast kernels need attn_mask=None; a batch with full captions and one size has nothing to mask."""
    masks = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        masks.append(kwargs.get("attn_mask"))
        return real(*args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    model = _tiny_model()
    with torch.no_grad():
        model(torch.randn(2, 4, 8, 8), torch.rand(2), torch.randn(2, 5, 16), torch.ones(2, 5))
        assert masks and all(m is None for m in masks)
        masks.clear()
        padded_caption = torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
        model(torch.randn(2, 4, 8, 8), torch.rand(2), torch.randn(2, 5, 16), padded_caption)
        # self-attention unmasked; padded captions alone: cross-attention in one masked call
        assert len(masks) == 2 and masks[0] is None and masks[1] is not None


def test_padded_keys_alone_take_one_masked_call_and_an_empty_row_gives_zeros(monkeypatch):
    """A loop of per-row calls costs 2-3x a masked call in a forward and ~10x in a backward when
    only the keys are padded; a row without any key still comes back as zeros, not NaN."""
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 7, 4, 8, generator=g), torch.randn(3, 5, 2, 8, generator=g), torch.randn(3, 5, 2, 8, generator=g)
    km = torch.arange(5)[None] < torch.tensor([5, 2, 3])[:, None]
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(a[0].shape[0]) or real(*a, **kw))
    out = attention.attend(q, k, v, key_mask=km, scale=0.3)
    assert calls == [3]
    for i, lk in enumerate((5, 2, 3)):
        torch.testing.assert_close(out[i], reference_attention(q[i:i + 1], k[i:i + 1, :lk], v[i:i + 1, :lk], None, 0.3)[0],
                                   atol=1e-6, rtol=0)
    empty = km.clone()
    empty[1] = False
    calls.clear()
    out = attention.attend(q, k, v, key_mask=empty, scale=0.3)
    assert calls == [1, 1] and out.isfinite().all() and not out[1].any()


@pytest.mark.parametrize("q_lengths,k_lengths", [((7, 7, 7), (5, 3, 6)), ((7, 4, 2), (7, 4, 2)), ((6, 0, 3), (6, 2, 3))])
def test_suffix_padded_rows_run_alone_and_equal_the_masked_call(q_lengths, k_lengths):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 7, 4, 8, generator=g), torch.randn(3, 7, 2, 8, generator=g), torch.randn(3, 7, 2, 8, generator=g)
    qm = torch.arange(7)[None] < torch.tensor(q_lengths)[:, None]
    km = torch.arange(7)[None] < torch.tensor(k_lengths)[:, None]
    out = attention.attend(q, k, v, key_mask=km, query_mask=qm, scale=0.3)
    masked = attention._sdpa(q, k, v, km, 0.3)  # the one masked call it replaces
    for i, (lq, lk) in enumerate(zip(q_lengths, k_lengths)):
        if lk:
            torch.testing.assert_close(out[i, :lq], masked[i, :lq], atol=1e-6, rtol=0)
        assert not out[i, lq:].any()
    not_suffix = km.clone()
    not_suffix[0, 0] = False  # a hole: the masked call remains
    torch.testing.assert_close(attention.attend(q, k, v, key_mask=not_suffix, scale=0.3),
                               attention._sdpa(q, k, v, not_suffix, 0.3), atol=0, rtol=0)


def _fake_flash_module() -> types.ModuleType:
    """A stand-in for flash_attn computing each (unpadded) sequence with SDPA, to test our packing."""

    def flash_attn_func(q, k, v, softmax_scale=None):
        return reference_attention(q, k, v, None, softmax_scale)

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None):
        outs = []
        for i in range(len(cu_q) - 1):
            qi = q[cu_q[i] : cu_q[i + 1]][None]
            ki, vi = k[cu_k[i] : cu_k[i + 1]][None], v[cu_k[i] : cu_k[i + 1]][None]
            assert qi.shape[1] <= max_q and ki.shape[1] <= max_k
            outs.append(reference_attention(qi, ki, vi, None, softmax_scale)[0])
        return torch.cat(outs)

    module = types.ModuleType("flash_attn")
    module.flash_attn_func, module.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    return module


def test_flash_varlen_path_matches_sdpa_on_real_tokens(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", _fake_flash_module())
    model = _tiny_model()
    x = [torch.randn(4, 8, 8), torch.randn(4, 4, 10)]
    cap = torch.randn(2, 5, 16)
    cap_mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        expected = model(x, t, cap, cap_mask)
        monkeypatch.setattr(attention, "_use_flash", lambda q: True)
        got = model(x, t, cap, cap_mask)
    for e, o in zip(expected, got):
        torch.testing.assert_close(o, e, atol=1e-5, rtol=0)


# -- detecting flash-attn ------------------------------------------------------------------------

@pytest.fixture
def fresh_flash_check(monkeypatch):
    """flash_available() re-evaluated, with sys.modules restored afterwards."""
    attention.flash_available.cache_clear()
    yield monkeypatch
    attention.flash_available.cache_clear()


def test_a_stand_in_flash_attn_module_does_not_break_detection(fresh_flash_check):
    """Another package's stand-in (no __spec__, no kernels) makes find_spec raise ValueError;
    we must neither raise nor pick it as a backend."""
    import importlib.util

    stand_in = types.ModuleType("flash_attn")
    stand_in.__spec__ = None
    fresh_flash_check.setitem(sys.modules, "flash_attn", stand_in)
    with pytest.raises(ValueError):
        importlib.util.find_spec("flash_attn")  # what a plain check would run into
    assert attention.flash_available() is False
    q = torch.randn(1, 4, 2, 8)
    out = attention.attend(q, q, q)  # CPU: SDPA, and no exception on the way
    assert out.shape == q.shape


def test_a_stand_in_with_both_kernels_counts_as_available(fresh_flash_check):
    stand_in = types.ModuleType("flash_attn")
    stand_in.__spec__ = None
    stand_in.flash_attn_func = stand_in.flash_attn_varlen_func = lambda *a, **k: None
    fresh_flash_check.setitem(sys.modules, "flash_attn", stand_in)
    assert attention.flash_available() is True
    # on the CPU and in fp32 the kernels are never chosen anyway
    assert attention._use_flash(torch.randn(1, 4, 2, 8)) is False


def test_no_flash_attn_installed_is_detected(fresh_flash_check):
    fresh_flash_check.delitem(sys.modules, "flash_attn", raising=False)
    fresh_flash_check.setattr(attention.importlib.util, "find_spec", lambda name: None)
    assert attention.flash_available() is False
