"""Our Flag-DiT / Next-DiT against tensors produced by the official code (fp32 and bf16)."""

from __future__ import annotations

import pytest
import torch

from lumina.model.layers import timestep_sinusoid
from lumina.model.rope import RopeScaling, rope_angles, rope_table, time_aware_scaling
from lumina.tokens import TokenLayout

FP32_ATOL = 1e-5


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != golden {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()


_OUTPUT_CACHE: dict[str, dict[str, torch.Tensor]] = {}


def golden_forward(golden) -> dict[str, torch.Tensor]:
    """Run every forward the golden set records, named like its `fwd.*` tensors."""
    if golden.name in _OUTPUT_CACHE:
        return _OUTPUT_CACHE[golden.name]
    g, m = golden.tensors, golden.model()
    t, cap, mask = g["in.t"], g["in.cap_feats"], g["in.cap_mask"]
    hooked: dict[str, torch.Tensor] = {}

    def hook(name):
        return lambda module, args, output: hooked.__setitem__(f"fwd.sq.{name}_out", output.detach().clone())

    handles = [getattr(m, n).register_forward_hook(hook(n)) for n in ("x_embedder", "t_embedder", "cap_embedder", "final_layer")]
    handles += [layer.register_forward_hook(hook(f"layer{i}")) for i, layer in enumerate(m.layers)]
    with torch.no_grad():
        out = {"fwd.sq.out": m(g["in.x_sq"], t, cap, mask)}
        for h in handles:
            h.remove()
        out.update(hooked)
        out["fwd.ns.out"] = m(g["in.x_ns"], t, cap, mask)
        out0, out1 = m([g["in.x_sq"][0], g["in.x_ns"][1]], t, cap, mask)
        out["fwd.list.out0"], out["fwd.list.out1"] = out0, out1
    _OUTPUT_CACHE[golden.name] = out
    return out


def test_fwd_tensor(golden, fwd_key):
    """Every fwd.* golden (sq/ns outputs, each hooked intermediate, list outputs) to 1e-5 in fp32."""
    ours = golden_forward(golden)
    assert fwd_key in ours, f"{fwd_key} is in the manifest but this test does not produce it"
    assert max_diff(ours[fwd_key], golden.tensors[fwd_key]) <= FP32_ATOL


def test_golden_covers_every_layer(golden):
    n_layers = golden.manifest["config"]["n_layers"]
    assert {f"fwd.sq.layer{i}_out" for i in range(n_layers)} <= set(golden.keys("fwd.sq."))


# --- RoPE tables --------------------------------------------------------------------------
# name → (scaling, table shape builder). Next-DiT tables are (H, W, hd/2) over (row, col);
# Flag-DiT tables are (pos, hd/2) over the flattened sequence with positions divided (PI).
ROPE_CASES = {
    "rope.freqs_cis_default_16x16": RopeScaling(),
    "rope.freqs_cis_timeaware_s2_t0.3_16x16": time_aware_scaling(2.0, 0.5, 0.3),
    "rope.freqs_cis_timeaware_s2_t0.8_16x16": time_aware_scaling(2.0, 0.5, 0.8),
    "rope.freqs_cis_default_first128": RopeScaling(),
    "rope.freqs_cis_ntk2_first128": RopeScaling(ntk=2.0),
    "rope.freqs_cis_pi2_first128": RopeScaling(linear=2.0),
}


def test_time_aware_branches():
    assert time_aware_scaling(2.0, 0.5, 0.3) == RopeScaling(linear=2.0, ntk=1.0)
    assert time_aware_scaling(2.0, 0.5, 0.8) == RopeScaling(linear=1.0, ntk=2.0)


def test_rope_table(golden, rope_key):
    assert rope_key in ROPE_CASES, f"no parameters known for golden {rope_key}"
    expected = golden.tensors[rope_key]
    head_dim = golden.manifest["config"]["dim"] // golden.manifest["config"]["n_heads"]
    if golden.family == "next_dit":
        h, w = expected.shape[:2]
        pos = TokenLayout(1, h, w).grid_positions()[:, 1:]
        angles = rope_angles(pos, head_dim, scaling=ROPE_CASES[rope_key])
    else:
        pos = torch.arange(expected.shape[0])[:, None]
        angles = rope_angles(pos, head_dim, scaling=ROPE_CASES[rope_key], interpolate_positions=True)
    ours = torch.view_as_real(rope_table(angles)).reshape(expected.shape)
    assert max_diff(ours, expected) <= FP32_ATOL


def test_timestep_sinusoid(golden, emb_key):
    assert emb_key == "emb.timestep_freq_t", f"no test for golden {emb_key}"
    g = golden.tensors
    assert max_diff(timestep_sinusoid(g["in.t"], 256), g[emb_key]) <= FP32_ATOL


# --- bf16 -----------------------------------------------------------------------------------
# Tolerances, relative to the output's scale s = golden.abs().max() (≈1.5–1.7 here):
# bf16 keeps 8 significant bits, so each rounding is off by up to 2^-9 ≈ 0.002 relative. The
# weights and inputs are rounded once, and each of the ~2 blocks adds ~10 rounded ops (linears,
# norms, modulation, residual adds); errors partly cancel (roughly sqrt growth) but the residual
# stream carries them through to the head. Measured on both goldens (CPU, torch 2.13, model,
# x, t and cap_feats all bf16):
#   max|err|/s  = 0.0070 (next sq), 0.0079 (next ns), 0.0059 (flag sq), 0.0062 (flag ns), ≈ 3-4·2^-9;
#   mean|err|/s = 0.0014–0.0016.
# Bounds: max ≤ 0.025·s (≈ 13·2^-9, 3× the worst measurement) and mean ≤ 0.004·s (2·2^-9).
# A real bug (wrong sign, order or missing term) gives errors of order s, far above both.
BF16_MAX_REL = 0.025
BF16_MEAN_REL = 0.004


@pytest.mark.parametrize("case", ["sq", "ns"])
def test_bf16_close_to_fp32_golden(golden, case):
    g = golden.tensors
    m = golden.model(torch.bfloat16)
    x, t, cap = (g[k].to(torch.bfloat16) for k in (f"in.x_{case}", "in.t", "in.cap_feats"))
    with torch.no_grad():
        out = m(x, t, cap, g["in.cap_mask"])
    assert out.dtype == torch.bfloat16
    expected = g[f"fwd.{case}.out"]
    err = (out.float() - expected).abs()
    scale = expected.abs().max().item()
    assert torch.isfinite(out).all()
    assert err.max().item() <= BF16_MAX_REL * scale, f"max err {err.max().item():.4g}, scale {scale:.4g}"
    assert err.mean().item() <= BF16_MEAN_REL * scale, f"mean err {err.mean().item():.4g}, scale {scale:.4g}"
