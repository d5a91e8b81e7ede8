"""extrapolation_options: the official demos' per-resolution RoPE and attention settings."""

from __future__ import annotations

import math

import pytest

import lumina
from lumina.model.attention import proportional_scale

FLAG = lumina.PRESETS["lumina-t2i-5b"]
NEXT = lumina.PRESETS["lumina-next-2b"]


@pytest.mark.parametrize(("w", "h", "ntk"), [(1024, 1024, 1.0), (2048, 2048, 4.0), (2048, 1024, 2.0), (512, 512, 0.25)])
def test_flag_dit_ntk_is_the_area_ratio(w, h, ntk):
    opts = lumina.extrapolation_options(FLAG, w, h)
    assert opts.rope_ntk == pytest.approx(ntk)
    assert opts.rope_linear == 1.0 and opts.time_aware_scale is None
    assert opts.proportional_attention


def test_flag_dit_ntk_counts_whole_tokens():
    """Official: (w//16)·(h//16) / (1024//16)²; a side not a multiple of 16 px is floored."""
    assert lumina.extrapolation_options(FLAG, 1030, 1024).rope_ntk == 1.0
    assert lumina.extrapolation_options(FLAG, 1040, 1024).rope_ntk == pytest.approx(65 / 64)


@pytest.mark.parametrize(("w", "h"), [(1024, 1024), (512, 512), (1024, 768)])
def test_next_dit_plain_rope_up_to_training_size(w, h):
    opts = lumina.extrapolation_options(NEXT, w, h)
    assert opts.time_aware_scale is None
    assert opts.rope_ntk == 1.0 and opts.rope_linear == 1.0
    assert opts.proportional_attention


@pytest.mark.parametrize(("w", "h"), [(2048, 2048), (2048, 1024), (1536, 1024)])
def test_next_dit_time_aware_above_training_size(w, h):
    opts = lumina.extrapolation_options(NEXT, w, h)
    assert opts.time_aware_scale == pytest.approx(math.sqrt(w * h) / 1024)
    assert opts.time_aware_watershed == 0.3
    assert opts.proportional_attention


def test_extrapolation_options_keywords():
    opts = lumina.extrapolation_options(NEXT, 2048, 2048, proportional_attention=False, watershed=0.5)
    assert not opts.proportional_attention and opts.time_aware_watershed == 0.5


def test_relative_to_the_configured_training_size():
    small = FLAG.with_(base_image_size=512)
    assert lumina.extrapolation_options(small, 1024, 1024).rope_ntk == pytest.approx(4.0)
    assert lumina.extrapolation_options(NEXT.with_(base_image_size=512), 1024, 1024).time_aware_scale == pytest.approx(2.0)


@pytest.mark.parametrize("config", [FLAG, NEXT], ids=["flag_dit", "next_dit"])
@pytest.mark.parametrize(("w", "h"), [(1024, 1024), (2048, 2048)])
def test_mode_off_is_plain(config, w, h):
    assert lumina.extrapolation_options(config, w, h, "off") == lumina.ForwardOptions()


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"unknown extrapolation mode 'ntk'.*auto.*off"):
        lumina.extrapolation_options(FLAG, 1024, 1024, "ntk")


def test_proportional_base_seqlen():
    """Official bases: Next-DiT (1024/16)² = 4096; Flag-DiT (1024/16)² + 2·(1024/16) = 4224."""
    assert NEXT.base_seqlen == 4096
    assert FLAG.base_seqlen == 4224


def test_flag_dit_proportional_scale_at_training_size():
    """At 1024² Flag-DiT has 64 rows of 64 patches + [nextline] = 4160 tokens but the base is 4224,
    so its proportional scale is slightly below 1/sqrt(head_dim); Next-DiT's is exactly it."""
    small = dict(dim=128, n_heads=4, n_kv_heads=None, n_layers=1, cap_feat_dim=8, multiple_of=32)
    flag, nxt = lumina.build_model(FLAG.with_(**small)), lumina.build_model(NEXT.with_(**small))
    tokens = flag.token_layout(1, 64, 64).length
    assert tokens == 4160
    assert nxt.token_layout(1, 64, 64).length == 4096
    hd = FLAG.head_dim
    scale = proportional_scale(tokens, FLAG.base_seqlen, hd)
    assert scale * math.sqrt(hd) == pytest.approx(math.sqrt(math.log(4160) / math.log(4224)), rel=1e-12)
    assert 0.998 < scale * math.sqrt(hd) < 0.9995
    assert proportional_scale(64 * 64, NEXT.base_seqlen, NEXT.head_dim) == pytest.approx(1 / math.sqrt(NEXT.head_dim))
