"""fp8 weight storage: the blocks' linear weights in float8, the rest in the compute dtype; the
forward stays close to bf16 (bound stated below); keys and shapes unchanged; bad inputs refused."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.errors import LuminaInputError
from lumina.fp8 import CastLinear, store_fp8, weight_bytes


def tiny(dtype=torch.float32) -> lumina.LuminaDiT:
    config = lumina.LuminaConfig("next_dit", dim=128, n_layers=2, n_heads=4, n_kv_heads=2, cap_feat_dim=32, multiple_of=32)
    torch.manual_seed(0)
    model = lumina.build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.to(dtype).eval()


def forward(model):
    g = torch.Generator().manual_seed(0)
    x, feats = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 8, 32, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([0.3, 0.8]), feats).float()


def test_blocks_store_fp8_and_the_rest_keeps_the_compute_dtype():
    model = store_fp8(tiny(), torch.bfloat16)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["layers.0.attention.wq.weight"] == torch.float8_e4m3fn
    assert dtypes["layers.1.feed_forward.w2.weight"] == torch.float8_e4m3fn
    assert dtypes["x_embedder.weight"] == torch.bfloat16 and dtypes["layers.0.attention_norm1.weight"] == torch.bfloat16
    assert isinstance(model.layers[0].attention.wq, CastLinear)
    assert set(model.state_dict()) == set(tiny().state_dict())  # same keys: checkpoints and LoRA patches still apply


def test_fp8_forward_is_within_the_stated_bound_of_bf16():
    """Stated bound: the velocity's largest error ≤ 5 % of its largest value (e4m3fn keeps 3 mantissa bits)."""
    reference = forward(tiny(torch.bfloat16))
    out = forward(store_fp8(tiny(), torch.bfloat16))
    assert torch.isfinite(out).all()
    assert (out - reference).abs().max() <= 0.05 * reference.abs().max()
    assert not torch.equal(out, reference)


def test_fp8_halves_the_block_weights():
    bf16, fp8 = tiny(torch.bfloat16), store_fp8(tiny(), torch.bfloat16)
    assert weight_bytes(fp8) < 0.6 * weight_bytes(bf16)


def test_overflowing_weights_and_unknown_formats_are_refused():
    model = tiny()
    with torch.no_grad():
        model.layers[0].attention.wq.weight[0, 0] = 1000.0
    with pytest.raises(LuminaInputError, match=r"layers.0.attention.wq.weight reaches 1e\+03, beyond fp8_e4m3fn's ±448"):
        store_fp8(model)
    with pytest.raises(LuminaInputError, match="unknown fp8 format"):
        store_fp8(tiny(), fp8="fp8_e3m4")


def test_load_model_reads_block_weights_straight_into_fp8(tmp_path):
    path = lumina.save_official(tiny(), tmp_path / "m.safetensors")
    direct = lumina.load_model(path, dtype=torch.bfloat16, fp8="fp8_e4m3fn")
    after = store_fp8(lumina.load_model(path), torch.bfloat16)  # the stored fp32 weights cast once, like the direct read
    for (name, a), (_, b) in zip(direct.state_dict().items(), after.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a.float(), b.float()), name
    torch.testing.assert_close(forward(direct), forward(after), atol=0, rtol=0)
    with pytest.raises(LuminaInputError, match="needs one of fp8_e4m3fn, fp8_e5m2 and a compute dtype"):
        lumina.load_model(path, fp8="fp8_e4m3fn")
