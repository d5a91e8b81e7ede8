"""Gate sparsity: threshold 0 is the dense forward exactly; a skipped layer runs no cross-attention;
partly skipped layers drop exactly the skipped heads; the report counts what is skipped."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.errors import LuminaInputError
from lumina.features import GateSparsity, gate_report
from lumina.model import ForwardOptions


@pytest.fixture(scope="module")
def model() -> lumina.LuminaDiT:
    config = lumina.LuminaConfig("next_dit", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, cap_feat_dim=16, multiple_of=16)
    torch.manual_seed(0)
    m = lumina.build_model(config)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        m.layers[0].attention.gate.copy_(torch.tensor([0.001, -0.002, 0.003, 0.0005]))  # layer 0: all near zero
        m.layers[1].attention.gate.copy_(torch.tensor([0.5, 0.001, -0.8, 0.3]))  # layer 1: head 1 near zero
    return m.eval()


def forward(model, options=None):
    g = torch.Generator().manual_seed(0)
    x, feats = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 6, 16, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([0.2, 0.7]), feats, None, options)


def test_threshold_zero_is_the_dense_forward_exactly(model):
    assert torch.equal(forward(model, ForwardOptions(features=(GateSparsity(0.0),))), forward(model))


def test_skipping_equals_zeroing_those_gates(model):
    out = forward(model, ForwardOptions(features=(GateSparsity(0.01),)))
    zeroed = type(model)(model.config)
    zeroed.load_state_dict(model.state_dict())
    with torch.no_grad():
        zeroed.layers[0].attention.gate.zero_()
        zeroed.layers[1].attention.gate[1] = 0.0
    torch.testing.assert_close(out, forward(zeroed.eval()), atol=1e-6, rtol=0)
    assert (out - forward(model)).abs().max() < 0.05  # near-zero gates: a small change


def test_a_fully_skipped_layer_runs_no_cross_attention(model, monkeypatch):
    calls = []
    for i, layer in enumerate(model.layers):
        original = layer.attention.cross_attention
        monkeypatch.setattr(layer.attention, "cross_attention", lambda *a, i=i, f=original: calls.append(i) or f(*a))
    forward(model, ForwardOptions(features=(GateSparsity(0.01),)))
    assert calls == [1]


def test_report_counts_heads_layers_and_flops(model):
    report = gate_report(model, 0.01, tokens=16, caption_tokens=6)
    assert report["heads_skipped"] == 5 and report["heads"] == 8
    assert report["layers_skipped"] == 1 and report["cross_attention_flops_saved"] == pytest.approx(0.5)
    assert 0 < report["forward_flops_saved"] < 0.5
    assert gate_report(model, 0.0, tokens=16, caption_tokens=6)["heads_skipped"] == 0


def test_bad_threshold():
    with pytest.raises(LuminaInputError, match=r"must lie in \[0, 1\]"):
        GateSparsity(1.5)


def test_skipped_head_groups_are_not_computed(model):
    grouped = type(model)(model.config)
    grouped.load_state_dict(model.state_dict())
    with torch.no_grad():
        grouped.layers[1].attention.gate.copy_(torch.tensor([0.001, -0.002, -0.8, 0.3]))  # group 0 (heads 0, 1) skipped
    grouped.eval()
    out = forward(grouped, ForwardOptions(features=(GateSparsity(0.01),)))
    zeroed = type(model)(model.config)
    zeroed.load_state_dict(grouped.state_dict())
    with torch.no_grad():
        zeroed.layers[0].attention.gate.zero_()
        zeroed.layers[1].attention.gate[:2] = 0.0
    torch.testing.assert_close(out, forward(zeroed.eval()), atol=1e-6, rtol=0)
    report = gate_report(grouped, 0.01, tokens=16, caption_tokens=6)
    assert report["groups_skipped"] == 3 and report["layers_skipped"] == 1
    assert 0.5 < report["cross_attention_flops_saved"] < 0.75
