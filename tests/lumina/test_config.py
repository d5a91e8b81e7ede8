"""LuminaConfig: inference from official weights, presets, serialisation, proportional-attention base."""

from __future__ import annotations

import json

import pytest
import torch

import lumina
from lumina import PRESETS, LuminaCheckpointError, LuminaConfig, build_model, infer_config


def test_infer_config_matches_manifest(golden):
    want = golden.manifest["config"]
    cfg = infer_config(golden.state_dict)
    assert cfg.family == golden.family
    for field in ("dim", "n_layers", "n_heads", "n_kv_heads", "cap_feat_dim", "patch_size", "in_channels", "qk_norm", "learn_sigma"):
        assert getattr(cfg, field) == want[field], field
    assert cfg.hidden_dim == golden.state_dict["layers.0.feed_forward.w1.weight"].shape[0]
    assert cfg.norm_eps == want["norm_eps"]


def test_built_model_has_official_keys_and_shapes(golden):
    """Every official key with its shape, nothing more (checkpoints load strictly, unrenamed)."""
    ours = {k: list(v.shape) for k, v in build_model(infer_config(golden.state_dict)).state_dict().items()}
    assert ours == golden.manifest["state_dict"]


def test_infer_config_rejects_non_lumina_weights():
    with pytest.raises(LuminaCheckpointError, match="no Lumina model found"):
        infer_config({"foo.weight": torch.zeros(2, 2)})


def test_infer_config_reports_missing_key(golden):
    sd = {k: v for k, v in golden.state_dict.items() if k != "x_embedder.weight"}
    with pytest.raises(LuminaCheckpointError, match="x_embedder.weight"):
        infer_config(sd)


# --- presets -------------------------------------------------------------------------------
def official_param_count(c: LuminaConfig) -> int:
    """Sum of the official state-dict shapes (reference facts §1), independent of our modules."""
    a, dim, cap, kv = c.adaln_dim, c.dim, c.cap_feat_dim, c.kv_heads * c.head_dim
    out = c.patch_size**2 * c.out_channels
    flag = c.family == "flag_dit"
    total = dim * c.patch_features + dim  # x_embedder
    total += a * 256 + a + a * a + a  # t_embedder.mlp.0 / .2
    total += 2 * cap + a * cap + a  # cap_embedder LayerNorm + Linear
    total += dim * (2 if flag else 1)  # pad_token (+ eol_token)
    layer = c.n_heads + 2 * dim * dim + 2 * kv * dim + 2 * kv * cap  # gate, wq, wo, wk/wv, wk_y/wv_y
    layer += (2 * dim + 4 * kv) if c.qk_norm else 0  # q_norm, k_norm, ky_norm (weight + bias)
    layer += 3 * dim * c.hidden_dim + cap  # SwiGLU, attention_y_norm
    layer += (2 if flag else 4) * dim  # block RMSNorms
    k = 6 if flag else 4
    layer += a * k * dim + k * dim  # adaLN_modulation.1
    m = 2 if flag else 1
    total += c.n_layers * layer + out * dim + out + a * m * dim + m * dim  # final layer
    return total


def meta_param_count(cfg: LuminaConfig) -> int:
    with torch.device("meta"):
        model = build_model(cfg)
    assert all(p.is_meta for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_on_meta_with_official_shapes(name):
    cfg = PRESETS[name]
    assert meta_param_count(cfg) == official_param_count(cfg)


def test_flag_dit_5b_size():
    cfg = PRESETS["lumina-t2i-5b"]
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.hidden_dim) == (3072, 32, 32, 32, 8192)
    assert meta_param_count(cfg) == pytest.approx(5.0e9, rel=0.02)  # 5.047e9


def test_next_dit_2b_size():
    """NextDiT_2B_GQA_patch2 (the released Lumina-Next weights) has 1.63e9 parameters; the "2B"
    name is that of NextDiT_2B_patch2, the same model with full K/V heads (1.99e9)."""
    cfg = PRESETS["lumina-next-2b"]
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.hidden_dim) == (2304, 24, 32, 8, 6144)
    assert meta_param_count(cfg) == pytest.approx(1.63e9, rel=0.01)  # 1.627e9
    assert meta_param_count(cfg.with_(n_kv_heads=None)) == pytest.approx(2.0e9, rel=0.02)  # 1.989e9


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_infer_config_round_trips_presets(name):
    cfg = PRESETS[name]
    with torch.device("meta"):
        sd = build_model(cfg).state_dict()
    assert infer_config(sd) == cfg.with_(ffn_hidden=cfg.hidden_dim)


# --- serialisation and derived values ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_to_dict_from_dict_round_trip(name):
    cfg = PRESETS[name]
    assert LuminaConfig.from_dict(cfg.to_dict()) == cfg
    assert LuminaConfig.from_dict({**cfg.to_dict(), "unknown_field": 1}) == cfg
    assert LuminaConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_inferred_config_round_trip(golden):
    cfg = infer_config(golden.state_dict)
    assert LuminaConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name,expected", [("lumina-next-2b", 4096), ("lumina-t2i-5b", 4224)])
def test_base_seqlen_1024px(name, expected):
    """Official proportional-attention bases: (1024//16)^2, plus 2·(1024//16) for Flag-DiT."""
    cfg = PRESETS[name]
    assert cfg.base_image_size == 1024
    assert cfg.base_seqlen == expected


def test_invalid_configs_rejected():
    with pytest.raises(ValueError):
        LuminaConfig("next_dit", dim=100, n_layers=1, n_heads=3, cap_feat_dim=8)  # dim % heads
    with pytest.raises(ValueError):
        LuminaConfig("next_dit", dim=96, n_layers=1, n_heads=4, n_kv_heads=3, cap_feat_dim=8)  # heads % kv
    with pytest.raises(ValueError):
        LuminaConfig("other", dim=64, n_layers=1, n_heads=2, cap_feat_dim=8)  # type: ignore[arg-type]


def test_public_api_exports():
    for name in ("infer_config", "build_model", "LuminaInputError", "LuminaCheckpointError", "PRESETS"):
        assert hasattr(lumina, name)
    assert issubclass(lumina.LuminaInputError, lumina.LuminaError)
