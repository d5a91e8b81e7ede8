"""Context Drop: ratio 1 is the dense forward exactly, pooled keys/values equal a direct window
average (edges, frames, special tokens), padded list batches pool each item by its own layout
with a consistent key mask, proportional attention is rescaled, and the time switch."""

from __future__ import annotations

import math

import pytest
import torch

import lumina
from lumina.errors import LuminaInputError
from lumina.features import ContextDrop, RegionAdaptive
from lumina.features.context_drop import ContextDropHook, auto_ratio, pool_item, pooled_length
from lumina.model import ForwardOptions
from lumina.model.hooks import AttentionSite, SelfAttentionKeys
from lumina.tokens import TokenLayout


def tiny(family: str, **changes) -> lumina.LuminaDiT:
    config = lumina.LuminaConfig(family, dim=48 if family == "next_dit" else 64, n_layers=2, n_heads=4 if family == "flag_dit" else 2,
                                 cap_feat_dim=16, multiple_of=16, **changes)
    torch.manual_seed(0)
    model = lumina.build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model.eval()


def call(model, x, options=None, t=0.3):
    feats = torch.randn(x.shape[0] if torch.is_tensor(x) else len(x), 5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x, torch.full((feats.shape[0],), t), feats, None, options)


def reference_pool(x: torch.Tensor, layout: TokenLayout, r: int) -> torch.Tensor:
    """Window by window, in frame / row / col order, then the special tokens."""
    slots = layout.patch_slots().reshape(layout.frames, layout.rows, layout.cols)
    out = []
    for f in range(layout.frames):
        for i in range(0, layout.rows, r):
            for j in range(0, layout.cols, r):
                window = slots[f, i:i + r, j:j + r].flatten()
                out.append(x[:, window].mean(dim=1))
    out = torch.stack(out, dim=1)
    specials = layout.special_slots()
    return torch.cat([out, x[:, specials]], dim=1) if specials.numel() else out


@pytest.mark.parametrize("family", ["next_dit", "flag_dit"])
def test_ratio_one_is_the_dense_forward_exactly(family):
    model = tiny(family)
    x = torch.randn(2, 4, 8, 8)
    dense = call(model, x)
    assert torch.equal(call(model, x, ForwardOptions(features=(ContextDrop(ratio=1),))), dense)
    assert not torch.equal(call(model, x, ForwardOptions(features=(ContextDrop(ratio=2),))), dense)


@pytest.mark.parametrize("layout", [
    TokenLayout(1, 5, 7),  # odd sides: partial windows at the right and bottom
    TokenLayout(3, 4, 6),  # frames are pooled one by one
    TokenLayout(2, 3, 5, nextline=True, nextframe=True),  # Flag-DiT's special tokens stay
])
@pytest.mark.parametrize("ratio", [2, 3])
def test_pooled_keys_equal_a_direct_window_average(layout, ratio):
    x = torch.randn(2, layout.length, 3, 4)
    pooled = pool_item(x, layout, ratio)
    assert pooled.shape[1] == pooled_length(layout, ratio)
    torch.testing.assert_close(pooled, reference_pool(x, layout, ratio), atol=1e-6, rtol=0)


def test_padded_list_pools_each_item_with_its_own_layout_and_masks_the_rest():
    layouts = (TokenLayout(1, 4, 4), TokenLayout(1, 2, 6))
    longest = max(lay.length for lay in layouts)
    k = torch.randn(2, longest, 1, 4)
    k[1, layouts[1].length:] = 1e6  # [PAD] slots: must never reach a pooled key
    hook = ContextDropHook(layouts, 2)
    site = AttentionSite(0, None, lambda y: y, None)
    out = hook.self_attention_keys(site, SelfAttentionKeys(k, k.clone(), None, None))
    n0, n1 = pooled_length(layouts[0], 2), pooled_length(layouts[1], 2)
    assert out.k.shape[1] == max(n0, n1) and out.key_mask.tolist() == [[True] * n0, [True] * n1 + [False] * (n0 - n1)]
    torch.testing.assert_close(out.k[0], pool_item(k[:1], layouts[0], 2)[0])
    torch.testing.assert_close(out.k[1, :n1], pool_item(k[1:, : layouts[1].length], layouts[1], 2)[0])
    assert out.k[out.key_mask].abs().max() < 100


def test_a_padded_list_forward_equals_each_item_alone():
    model = tiny("next_dit")
    a, b = torch.randn(4, 8, 8), torch.randn(4, 4, 12)
    options = ForwardOptions(features=(ContextDrop(ratio=2),))
    both = call(model, [a, b], options)
    feats = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        second = model(b[None], torch.full((1,), 0.3), feats[1:], None, options)
    torch.testing.assert_close(both[1][None], second, atol=2e-5, rtol=0)


def test_proportional_attention_scale_follows_the_pooled_key_count():
    layouts = (TokenLayout(1, 8, 8),)
    hook = ContextDropHook(layouts, 2)
    k = torch.randn(1, 64, 1, 4)
    scale = math.sqrt(math.log(64, 16) / 4)
    out = hook.self_attention_keys(AttentionSite(0, None, lambda y: y, scale), SelfAttentionKeys(k, k, None, scale))
    assert out.k.shape[1] == 16 and out.scale == pytest.approx(math.sqrt(math.log(16, 16) / 4))


def test_time_switch_and_auto_ratio():
    model = tiny("next_dit")
    x = torch.randn(1, 4, 8, 8)
    late = ForwardOptions(features=(ContextDrop(ratio=2, end_time=0.5),))
    assert torch.equal(call(model, x, late, t=0.7), call(model, x, t=0.7))  # after end_time: dense
    assert not torch.equal(call(model, x, late, t=0.2), call(model, x, t=0.2))
    assert auto_ratio(4096, 4096) == 1 and auto_ratio(4 * 4096, 4096) == 2 and auto_ratio(1000, 4096) == 1
    # the model's trained size: 1024 px / (8 · 2) = 64 patches a side; at 2× the side, ratio 2
    base = lumina.LuminaConfig("next_dit", dim=48, n_layers=1, n_heads=2, cap_feat_dim=16)
    assert (base.base_image_size // 16) ** 2 == 4096


def test_bad_settings_and_combinations_are_clear_errors():
    with pytest.raises(LuminaInputError, match="whole number ≥ 1"):
        ContextDrop(ratio=0)
    with pytest.raises(LuminaInputError, match=r"end_time=1.5 must lie in \[0, 1\]"):
        ContextDrop(end_time=1.5)
    model = tiny("next_dit")
    x = torch.randn(1, 4, 8, 8)
    ras = RegionAdaptive(sample_ratio=0.5)
    with pytest.raises(LuminaInputError, match="cannot be combined with region-adaptive sampling"):
        lumina.sample(model, lumina.Conditioning(torch.randn(1, 5, 16), torch.ones(1, 5, dtype=torch.bool)), None,
                      (1, 4, 8, 8), steps=8, solver="euler", cfg=1.0, wrappers=[ras],
                      options=ForwardOptions(features=(ContextDrop(ratio=2),)))


def test_pooled_keys_are_rotated_at_their_window_centre():
    """A window of equal unrotated keys pools to that key rotated at the window's mean position."""
    from lumina.model.hooks import ForwardInfo, single_rows
    from lumina.model.rope import RopeScaling, apply_rope, rope_angles, rope_table

    model = tiny("next_dit")
    layout = TokenLayout(1, 4, 4)
    info = ForwardInfo(model=model, layout=layout, rows=single_rows(1), rope_scaling=RopeScaling(), dtype=torch.float32,
                       device=torch.device("cpu"), t=torch.tensor([0.2]), row_layouts=(layout,))
    hook = ContextDrop(ratio=2).begin(info)
    d = model.config.head_dim
    base = torch.randn(1, 4, 1, d)  # one key per 2×2 window
    unrotated = base.repeat_interleave(2, 1).reshape(1, 2, 4, 1, d).repeat_interleave(2, 1).reshape(1, 16, 1, d)
    rotated = apply_rope(unrotated, rope_table(rope_angles(model.positions(layout), d, model.config.rope_theta))[None])
    out = hook.self_attention_keys(AttentionSite(0, None, lambda y: y, None),
                                   SelfAttentionKeys(rotated, rotated, None, None, unrotated))
    centres = torch.tensor([[0.5, 0.5], [0.5, 2.5], [2.5, 0.5], [2.5, 2.5]])
    expected = apply_rope(base, rope_table(rope_angles(centres, d, model.config.rope_theta))[None])
    torch.testing.assert_close(out.k, expected, atol=1e-6, rtol=0)
    plain = ContextDrop(ratio=2, rotate_pooled=False).begin(info)  # pooling the rotated keys instead
    pooled = plain.self_attention_keys(AttentionSite(0, None, lambda y: y, None),
                                       SelfAttentionKeys(rotated, rotated, None, None, unrotated))
    torch.testing.assert_close(pooled.k, pool_item(rotated, layout, 2))


def test_frames_are_pooled_within_each_frame():
    model = tiny("next_dit", ffn_hidden=None)  # head_dim 24: 3-D RoPE for frames
    options = ForwardOptions(features=(ContextDrop(ratio=2),))
    video = torch.randn(1, 4, 3, 8, 8)
    out = call(model, video, options)
    assert out.shape == video.shape and not torch.equal(out, call(model, video))
    one = call(model, video[:, :, :1], options)  # one frame is the image path, pooled the same way
    torch.testing.assert_close(one[:, :, 0], call(model, video[:, :, 0], options), atol=1e-6, rtol=0)
