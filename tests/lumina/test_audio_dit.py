"""The 1-D Flag-DiT and the CFM sampler of Lumina-T2Music against the official code's golden
tensors (tests/fixtures/golden/lumina_music_tiny; its manifest lists every quirk reproduced)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumina.audio_checkpoints import load_audio_model
from lumina.audio_sampling import (
    AUDIO_SAMPLE_DEFAULTS, audio_velocity, cfm_interpolate, cfm_loss, cfm_time_grid, latent_frames_for_seconds,
    sample_audio,
)
from lumina.errors import LuminaCheckpointError, LuminaInputError
from lumina.model.audio_dit import AudioDiT, AudioDiTConfig, PackedSwiGLU, _adjacent, flow_steps, infer_audio_dit_config
from lumina.model.attention import LuminaAttention
from lumina.model.hooks import ForwardFeature, ForwardHook
from lumina.model.options import ForwardOptions
from lumina.model.rope import apply_rope
from lumina.solvers import SamplingInterrupted

ROOT = Path(__file__).parents[1] / "fixtures" / "golden" / "lumina_music_tiny"
PREFIX = "model.diffusion_model."
FWD_TOL = 1e-5
TRAJ_TOL = 1e-4


@lru_cache(maxsize=1)
def _golden() -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    manifest = json.loads((ROOT / "manifest.json").read_text())
    return manifest, load_file(str(ROOT / "cfm.safetensors")), load_file(str(ROOT / "tensors.safetensors"))


def _t(name: str) -> torch.Tensor:
    return _golden()[2][name]


def _max_len() -> int:
    return _golden()[0]["set_config"]["dit"]["max_len"]


@pytest.fixture(scope="module")
def adit() -> AudioDiT:
    model, _ = load_audio_model(_golden()[1], max_len=_max_len())
    return model


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


def test_config_is_read_off_the_shapes():
    sd = {k[len(PREFIX):]: v for k, v in _golden()[1].items() if k.startswith(PREFIX)}
    cfg = infer_audio_dit_config(sd, max_len=64)
    want = _golden()[0]["set_config"]["dit"]
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.in_channels, cfg.cap_feat_dim, cfg.max_len) == (
        want["hidden_size"], want["depth"], want["num_heads"], want["in_channels"], want["context_dim"], want["max_len"]
    )
    assert cfg.hidden_dim == 256  # 256·ceil(int(2·4·64/3)/256)
    # the released shapes: 32 heads read off the per-head gate, head_dim 24
    released = AudioDiTConfig()
    assert (released.dim, released.n_heads, released.head_dim, released.n_layers, released.max_len) == (768, 32, 24, 16, 1000)
    assert released.hidden_dim == 2048
    with pytest.raises(LuminaCheckpointError, match="n_heads=8 was given but the weights have 4"):
        infer_audio_dit_config(sd, n_heads=8)
    assert infer_audio_dit_config(sd, n_heads=4).n_heads == 4
    with pytest.raises(LuminaCheckpointError, match=r"blocks \[0\] are incomplete"):
        infer_audio_dit_config({k: v for k, v in sd.items() if k != "blocks.0.attention.gate"})


def test_rope_table_matches_official(adit):
    ours = torch.view_as_real(adit.rope(_max_len(), torch.device("cpu")))
    assert _diff(ours, _t("dit.rope.freqs_cis")) <= 1e-5
    assert _diff(torch.view_as_real(adit.rope(16, torch.device("cpu"))), _t("dit.block0.freqs_cis")) <= 1e-5


@pytest.mark.parametrize("context,out", [("in.context", "dit.out"), ("in.context_padzeroed", "dit.out_padzeroed")])
def test_forward_matches_official(adit, context, out):
    with torch.no_grad():
        got = adit(_t("in.x"), _t("in.t"), _t(context))
    assert _diff(got, _t(out)) <= FWD_TOL
    # padding rows are not masked (the official model builds all-ones masks): they change the output
    assert _diff(_t("dit.out"), _t("dit.out_padzeroed")) > 1e-2


def test_float_time_is_truncated_like_the_official_wrapper(adit):
    t = torch.tensor([0.037, 0.812])
    steps = flow_steps(t)
    with torch.no_grad():
        by_float = adit(_t("in.x"), t, _t("in.context"))
        by_int = adit(_t("in.x"), steps, _t("in.context"))
    assert torch.equal(by_float, by_int)
    assert int(flow_steps(cfm_time_grid(26)[5:6])) == 199  # t = 0.2 in float32 is 0.19999999: truncated, not rounded
    assert flow_steps(torch.linspace(0, 1, 6)[1:2]).item() == 200
    assert flow_steps(torch.tensor([1 / 6])).item() == 166


def test_intermediates_match_official(adit):
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def keep(module, name, use_input=False, index=0):
        def hook(mod, args, output):
            seen[name] = (args[index] if use_input else output).detach().clone()
        handles.append(module.register_forward_hook(hook))

    keep(adit.t_embedder, "dit.t_emb")
    keep(adit.cap_embedder, "dit.cap_pool", use_input=True)
    keep(adit.cap_embedder, "dit.cap_emb")
    keep(adit.proj_in, "dit.proj_in_out")
    keep(adit.final_layer, "dit.final_layer_out")
    keep(adit.final_layer, "dit.block0.adaln_input", use_input=True, index=1)
    for i, block in enumerate(adit.blocks):
        keep(block, f"dit.block{i}.in", use_input=True)
        keep(block, f"dit.block{i}.out")
    b0 = adit.blocks[0]
    keep(b0.attention, "dit.block0.attention.in_x", use_input=True)
    keep(b0.attention, "dit.block0.attention.in_y", use_input=True, index=1)
    keep(b0.attention, "dit.block0.attention.out")
    keep(b0.feed_forward, "dit.block0.feed_forward.in", use_input=True)
    keep(b0.feed_forward, "dit.block0.feed_forward.out")
    projections = b0.attention.self_projections  # the packed [wq; wk; wv] GEMM: no wq / wk module call to hook

    def keep_projections(x):
        q, k, v = projections(x)
        seen["dit.block0.q_pre_rope"], seen["dit.block0.k_pre_rope"] = q.clone(), k.clone()
        return q, k, v

    b0.attention.self_projections = keep_projections
    try:
        with torch.no_grad():
            adit(_t("in.x"), _t("in.t"), _t("in.context"))
    finally:
        for h in handles:
            h.remove()
        del b0.attention.self_projections
    n = _t("in.x").shape[2]
    rot = adit.rope(n, torch.device("cpu"))[None]
    seen["dit.block0.q_rope"] = apply_rope(seen["dit.block0.q_pre_rope"], rot)
    seen["dit.block0.k_rope"] = apply_rope(seen["dit.block0.k_pre_rope"], rot)
    seen["dit.block1.adaln_input"] = seen["dit.block0.adaln_input"]
    names = [k for k in _golden()[0]["tensors"] if k.startswith("dit.") and k in seen]
    assert len(names) >= 20
    for name in names:
        assert _diff(seen[name], _t(name)) <= FWD_TOL, name
    # the sinusoid of the integer step: cos/sin of arguments up to t radians, where one float32 ulp of
    # the argument (exp's last bit differs between CPU kernels) moves the value by up to t·2⁻²³
    from lumina.model.layers import timestep_sinusoid

    ours, theirs = timestep_sinusoid(_t("in.t").float()), _t("dit.t_freq")
    for row, t in enumerate(_t("in.t").tolist()):
        assert _diff(ours[row], theirs[row]) <= 1e-6 + 4 * t * 2**-23


def test_cfg_call_matches_official(adit):
    v = audio_velocity(adit, _t("in.cond"), _t("in.uncond"), 5.0)
    with torch.no_grad():
        got = v(_t("in.cfg_x"), _t("cfg.t"))
        raw = adit(_t("cfg.x_in"), _t("cfg.t_in"), _t("cfg.c_in"))
    assert _diff(got, _t("cfg.out")) <= FWD_TOL
    assert _diff(raw, _t("cfg.raw_out")) <= FWD_TOL
    assert torch.equal(flow_steps(_t("cfg.t")).expand(2), _t("cfg.t_in"))


@pytest.mark.parametrize("steps,key", [(40, "schedule.steps40"), (11, "schedule.steps11"), (7, "sample.step")])
def test_time_grid_reproduces_torchdyn_accumulation(steps, key):
    grid = cfm_time_grid(steps)
    assert len(grid) == steps and float(grid[0]) == 0.0 and abs(float(grid[-1]) - 1.0) < 1e-6
    t_key, i_key = (f"{key}.t", f"{key}.t_int") if key != "sample.step" else ("sample.step_t", "sample.step_t_int")
    assert torch.equal(grid[:-1], _t(t_key))
    assert torch.equal(flow_steps(grid[:-1]), _t(i_key))
    if steps == 11:  # float32 product: linspace(0, 1, 11)[7] · 1000 → 700, where float64 truncates to 699
        assert int(flow_steps(grid[7:8])) == 700


def test_trajectory_matches_official(adit):
    traj = sample_audio(adit, _t("in.cond"), _t("in.uncond"), steps=7, cfg=5.0, noise=_t("in.sample_x0"), trajectory=True)
    assert _diff(traj, _t("sample.traj")) <= TRAJ_TOL
    final = sample_audio(adit, _t("in.cond"), _t("in.uncond"), steps=7, cfg=5.0, noise=_t("in.sample_x0"))
    assert _diff(final, _t("sample.final")) <= TRAJ_TOL


def test_unguided_trajectory_matches_official(adit):
    traj = sample_audio(adit, _t("in.cond"), None, steps=4, cfg=5.0, noise=_t("in.nocfg_x0"), trajectory=True)
    assert _diff(traj, _t("sample_nocfg.traj")) <= TRAJ_TOL
    same = sample_audio(adit, _t("in.cond"), _t("in.uncond"), steps=4, cfg=1.0, noise=_t("in.nocfg_x0"), trajectory=True)
    assert torch.equal(traj, same)


def test_demo_cfg_bug_is_a_no_op_and_ours_is_not(adit):
    """The official demo passes the prompt as its own unconditional: guidance then changes nothing."""
    x0 = _t("in.nocfg_x0")
    plain = sample_audio(adit, _t("in.cond"), None, steps=4, noise=x0)
    demo = sample_audio(adit, _t("in.cond"), _t("in.cond"), steps=4, cfg=5.0, noise=x0)
    real = sample_audio(adit, _t("in.cond"), _t("in.uncond"), steps=4, cfg=5.0, noise=x0)
    assert _diff(demo, plain) <= 1e-5
    assert _diff(real, plain) > 1e-2


def test_training_loss_matches_official(adit):
    t = _t("in.loss_t")
    x_t = cfm_interpolate(_t("in.loss_noise"), _t("in.loss_x1"), t.float() / 1000)
    assert _diff(x_t, _t("loss.x_noisy")) <= 1e-6
    with torch.no_grad():
        loss = cfm_loss(adit, _t("in.loss_x1"), _t("in.loss_noise"), t, _t("in.context"))
        out = adit(x_t, t, _t("in.context"))
    assert _diff(out, _t("loss.model_out")) <= FWD_TOL
    assert abs(float(loss) - float(_t("loss.loss"))) <= 1e-5 * max(1.0, float(_t("loss.loss")))


def test_seeded_noise_callback_and_interrupt(adit):
    steps_seen = []
    out = sample_audio(adit, _t("in.cond"), _t("in.uncond"), frames=12, steps=5, seed=3,
                       callback=lambda info: steps_seen.append((info.step, info.total)))
    again = sample_audio(adit, _t("in.cond"), _t("in.uncond"), frames=12, steps=5, seed=3)
    assert torch.equal(out, again) and out.shape == (1, 20, 12)
    assert steps_seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(SamplingInterrupted):
        sample_audio(adit, _t("in.cond"), None, frames=12, steps=5, callback=lambda info: info.step == 2)
    # another solver runs too and lands near the same place as Euler with many steps
    heun = sample_audio(adit, _t("in.cond"), _t("in.uncond"), frames=12, steps=5, seed=3, solver="heun")
    assert heun.shape == out.shape and bool(torch.isfinite(heun).all())
    assert AUDIO_SAMPLE_DEFAULTS["music"].steps == 40 and AUDIO_SAMPLE_DEFAULTS["audio"].cfg == 3.0


def test_features_see_every_block_and_the_cfg_rows(adit):
    calls = []

    class Probe(ForwardFeature):
        def begin(self, info):
            calls.append(info.rows)

            class H(ForwardHook):
                def before_block(self, layer):
                    calls.append(layer)
            return H()

    sample_audio(adit, _t("in.cond"), _t("in.uncond"), frames=8, steps=2, options=ForwardOptions(features=(Probe(),)))
    rows, *layers = calls
    assert rows.conditional == (False, True) and layers == [0, 1]


def test_bad_lengths_and_inputs_are_named(adit):
    cond = _t("in.cond")
    with pytest.raises(LuminaInputError, match="positions stop at 64"):
        sample_audio(adit, cond, None, frames=65, steps=2)
    with pytest.raises(LuminaInputError, match="must be positive"):
        sample_audio(adit, cond, None, frames=0, steps=2)
    with pytest.raises(LuminaInputError, match="seconds=0.*positive"):
        sample_audio(adit, cond, None, seconds=0, steps=2)
    with pytest.raises(LuminaInputError, match="seconds=-3.*positive"):
        latent_frames_for_seconds(-3)
    with pytest.raises(LuminaInputError, match="positions stop at 64"):
        sample_audio(adit, cond, None, seconds=10.0, steps=2)
    with pytest.raises(LuminaInputError, match="positions stop at 1000"):
        latent_frames_for_seconds(40.0, max_len=1000)
    assert latent_frames_for_seconds(10.0) == 312 and latent_frames_for_seconds(10.0, max_len=1000) == 312
    assert sample_audio(adit, cond, None, seconds=1.0, steps=2).shape == (1, 20, 31)
    with pytest.raises(LuminaInputError, match="steps=1 is too few"):
        sample_audio(adit, cond, None, frames=8, steps=1)
    with pytest.raises(LuminaInputError, match="caption width 32"):
        sample_audio(adit, torch.zeros(1, 8, 16), None, frames=8, steps=2)
    with pytest.raises(LuminaInputError, match="20-channel"):
        adit(torch.zeros(1, 16, 8), 0.5, cond)
    with pytest.raises(LuminaInputError, match="positions stop at 64"):
        adit(torch.zeros(1, 20, 65), 0.5, cond)
    with pytest.raises(LuminaInputError, match="unknown solver"):
        sample_audio(adit, cond, None, frames=8, steps=2, solver="rk45")
    with pytest.raises(LuminaInputError, match="NaN"):
        sample_audio(adit, cond, None, noise=torch.full((1, 20, 8), float("nan")), steps=2)


def test_packed_projections_equal_separate_gemms_and_keep_gradients(adit):
    ff = adit.blocks[0].feed_forward
    assert isinstance(ff, PackedSwiGLU) and _adjacent(ff.w1.weight, ff.w3.weight)
    x = torch.randn(2, 5, adit.config.dim)
    with torch.no_grad():
        packed = ff(x)
        plain = ff.w2(torch.nn.functional.silu(ff.w1(x)) * ff.w3(x))
    assert _diff(packed, plain) <= 1e-5
    attention = adit.blocks[0].attention  # [wq; wk; wv]: one GEMM, the same projections
    with torch.no_grad():
        fused = attention.self_projections(x)
        separate = LuminaAttention.self_projections(attention, x)
    assert all(_diff(a, b) <= 1e-5 for a, b in zip(fused, separate))
    # a copy converted to another dtype is laid out again; a state dict round trip keeps the keys
    other = AudioDiT(adit.config).double()
    other.load_state_dict(adit.state_dict())
    assert all(_adjacent(b.feed_forward.w1.weight, b.feed_forward.w3.weight) for b in other.blocks)
    assert all(_adjacent(b.attention.wk_y.weight, b.attention.wv_y.weight) for b in other.blocks)
    assert all(_adjacent(b.attention.wq.weight, b.attention.wk.weight, b.attention.wv.weight) for b in other.blocks)
    assert set(other.state_dict()) == set(adit.state_dict())
    # training: the two-GEMM path runs, so both w1 and w3 get gradients
    train = AudioDiT(adit.config)
    train.load_state_dict(adit.state_dict())
    out = train(_t("in.x"), _t("in.t"), _t("in.context"))
    out.square().mean().backward()
    for b in train.blocks:
        assert b.feed_forward.w1.weight.grad is not None and b.feed_forward.w3.weight.grad is not None
        assert float(b.feed_forward.w3.weight.grad.abs().sum()) > 0
        assert float(b.attention.wv_y.weight.grad.abs().sum()) > 0
        assert all(float(w.weight.grad.abs().sum()) > 0 for w in (b.attention.wq, b.attention.wk, b.attention.wv))
    assert _diff(out.detach(), _t("dit.out")) <= FWD_TOL
