"""Lumina-Video against tensors made by the official Alpha-VLLM/Lumina-Video code (CPU, fp32, seeded
tiny MultiScaleNextDiT): tests/fixtures/golden/lumina_video_tiny (manifest.json lists every quirk)."""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lumina
from lumina.conditioning import Conditioning
from lumina.config import guess_family, infer_config
from lumina.errors import LuminaCheckpointError, LuminaInputError
from lumina.model import MODEL_CLASSES, build_model
from lumina.model.hooks import ForwardFeature, ForwardHook
from lumina.model.layers import timestep_sinusoid
from lumina.model.lumina_video import (
    LuminaVideo, parse_patch_comb, patchify_video, time_aware_value, unpatchify_video, video_rope_grid,
)
from lumina.model.options import ForwardOptions
from lumina.video_checkpoints import load_video_model
from lumina.video_config import LuminaVideoConfig, infer_video_config
from lumina.video_sampling import SAMPLE_CONFIGS, sample_video, time_grid, video_sample_settings

ROOT = Path(__file__).parents[1] / "fixtures" / "golden" / "lumina_video_tiny"


@lru_cache(maxsize=None)
def _golden():
    return (
        json.loads((ROOT / "manifest.json").read_text()),
        load_file(str(ROOT / "model.safetensors")),
        load_file(str(ROOT / "tensors.safetensors")),
    )


MANIFEST, STATE, T = _golden()
ENTRY = {"p2f1": (2, 1), "p2f2": (2, 2), "p4f2": (4, 2)}


def _keys(prefix: str, suffix: str = "") -> list[str]:
    return sorted(k for k in MANIFEST["tensors"] if k.startswith(prefix) and k.endswith(suffix))


@pytest.fixture(scope="module")
def vmodel() -> LuminaVideo:
    m = build_model(infer_config(STATE))
    m.load_state_dict(STATE, strict=True)
    return m.eval()


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# -- config ------------------------------------------------------------------------------------
def test_config_is_read_off_the_state_dict():
    assert guess_family(STATE.keys()) == "lumina_video"
    c = infer_config(STATE)
    assert isinstance(c, LuminaVideoConfig) and MODEL_CLASSES[c.family] is LuminaVideo
    g = MANIFEST["config"]
    assert c.patches == tuple(zip(g["all_patch_size"], g["all_f_patch_size"]))
    assert (c.dim, c.n_layers, c.n_heads, c.kv_heads, c.cap_feat_dim, c.in_channels, c.qk_norm) == (
        g["dim"], g["n_layers"], g["n_heads"], g["n_kv_heads"], g["cap_feat_dim"], g["in_channels"], g["qk_norm"]
    )
    assert (c.rope_theta, c.t_scale, c.motion_scale, c.norm_eps) == (g["rope_theta"], g["t_scale"], g["motion_scale"], g["norm_eps"])
    assert {k: list(v.shape) for k, v in LuminaVideo(c).state_dict().items()} == MANIFEST["state_dict"]
    assert LuminaVideoConfig.from_dict(c.to_dict()) == c
    assert infer_video_config(STATE, rope_theta=10000.0).rope_theta == 10000.0


def test_image_families_are_still_told_apart():
    assert guess_family(["layers.0.attention_norm1.weight", "x_embedder.weight"]) == "next_dit"
    assert guess_family(["eol_token"]) == "flag_dit"


# -- RoPE and embeddings -----------------------------------------------------------------------
def test_rope_table_matches_official():
    e = MANIFEST["tensors"]["rope.freqs_cis_f4h6w6"]
    table = video_rope_grid(4, 6, 6, e["head_dim"], e["theta"])
    assert _diff(torch.view_as_real(table), T["rope.freqs_cis_f4h6w6"]) <= 1e-5


def test_time_and_motion_frequencies():
    # arguments reach t·1000 = 800 rad, where one fp32 ulp is 6e-5: libm cos/sin may differ by about that
    assert _diff(timestep_sinusoid(T["in.t"] * 1000.0), T["emb.t_freq"]) <= 1e-4
    motion = (T["in.motion_score"] * 20.0).clamp(min=0)
    assert _diff(timestep_sinusoid(motion), T["emb.motion_freq"]) <= 1e-5


def test_patchify_roundtrip_and_order():
    x = T["in.x"][0]
    tokens, grid = patchify_video(x, 4, 2)
    assert grid == (2, 5, 7)
    assert _diff(unpatchify_video(tokens, grid, 4, 2, 4, 4), x) == 0
    img = T["in.x_img"][0]
    tokens, grid = patchify_video(img, 2, 2)  # one frame repeated pF times
    assert grid[0] == 1 and _diff(unpatchify_video(tokens, grid, 2, 2, 4, 1), img) == 0


@pytest.mark.parametrize("key", ["in.x", "in.x_img"])
def test_a_batch_patchified_at_once_equals_each_video_alone(key):
    from lumina.model.lumina_video import patchify_videos, unpatchify_videos

    batch = T[key]
    tokens, grid = patchify_videos(batch, 2, 2)
    alone = [patchify_video(video, 2, 2) for video in batch]
    assert all(g == grid for _, g in alone)
    assert torch.equal(tokens, torch.stack([tk for tk, _ in alone]))
    assert torch.equal(unpatchify_videos(tokens, grid, 2, 2, batch.shape[1], batch.shape[2]), batch)


# -- forward -----------------------------------------------------------------------------------
@pytest.mark.parametrize("video_key", _keys("fwd.", ".out") + _keys("fwd_img.", ".out"))
def test_forward_matches_official(vmodel, video_key):
    name = video_key.split(".")[1]
    p, f = ENTRY[name]
    x = T["in.x_img"] if video_key.startswith("fwd_img") else T["in.x"]
    motion = T["in.motion_score_b"] if "motion_b" in video_key else T["in.motion_score"]
    with torch.no_grad():
        out = vmodel(x, T["in.t"], T["in.cap_feats"], T["in.cap_mask"], motion, p, f)
    assert _diff(out, T[video_key]) <= 1e-5


def test_forward_with_the_ffn_in_row_chunks_matches_official(vmodel, monkeypatch):
    """A long video's SwiGLU runs over row chunks on CPU (layers.CPU_FFN_CHUNK_BYTES); forced here
    at the tiny model's size: 7 rows of activations per chunk, the last chunk shorter."""
    from lumina.model import layers

    hidden = vmodel.layers[0].feed_forward.w1.weight.shape[0]
    monkeypatch.setattr(layers, "CPU_FFN_CHUNK_BYTES", 7 * hidden * 4)
    key = "fwd.p2f2.out"
    p, f = ENTRY[key.split(".")[1]]
    calls = []
    handle = vmodel.layers[0].feed_forward.w1.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            out = vmodel(T["in.x"], T["in.t"], T["in.cap_feats"], T["in.cap_mask"], T["in.motion_score"], p, f)
    finally:
        handle.remove()
    assert len(calls) > 1 and set(calls[:-1]) == {7}
    assert _diff(out, T[key]) <= 1e-5


@pytest.mark.parametrize("entry", ["p2f2", "p4f2"])
def test_list_forward_matches_official(vmodel, entry):
    p, f = ENTRY[entry]
    xs = [T["in.list_x0"], T["in.list_x1"], T["in.list_x2"]]
    with torch.no_grad():
        outs = vmodel(xs, T["in.list_t"], T["in.list_cap_feats"], T["in.list_cap_mask"], T["in.list_motion_score"], p, f)
        solo = vmodel([xs[1]], T["in.list_t"][1:2], T["in.list_cap_feats"][1:2], T["in.list_cap_mask"][1:2],
                      T["in.list_motion_score"][1:2], p, f)[0]
    assert isinstance(outs, list) and len(outs) == 3
    for i, out in enumerate(outs):
        assert _diff(out, T[f"fwd_list.{entry}.out{i}"]) <= 1e-5
    assert _diff(solo, outs[1]) <= 1e-5  # items never see each other


class _Passive(ForwardFeature):
    """A feature that changes nothing: its presence sends a list of sizes down the padded path."""

    def begin(self, info):
        return None


@pytest.mark.parametrize("entry", ["p2f2", "p4f2"])
def test_list_forward_padded_and_grouped_paths_agree(vmodel, entry):
    """Without features a list runs one plain batch per size; with one it is padded and masked.
    Both reproduce the official packed sequence."""
    p, f = ENTRY[entry]
    xs = [T["in.list_x0"], T["in.list_x1"], T["in.list_x2"]]
    args = (T["in.list_t"], T["in.list_cap_feats"], T["in.list_cap_mask"], T["in.list_motion_score"], p, f)
    with torch.no_grad():
        grouped = vmodel(xs, *args)
        padded = vmodel(xs, *args, ForwardOptions(features=(_Passive(),)))
    for i, (a, b) in enumerate(zip(grouped, padded)):
        assert _diff(a, T[f"fwd_list.{entry}.out{i}"]) <= 1e-5
        assert _diff(b, T[f"fwd_list.{entry}.out{i}"]) <= 1e-5


class _Recorder(ForwardFeature):
    """Captures layer 0's attention tensors through the model's hook seam."""

    def __init__(self) -> None:
        self.seen: dict[str, torch.Tensor] = {}

    def begin(self, info):
        seen = self.seen

        class Hook(ForwardHook):
            def after_self_attention(self, site, q, k, k_unrotated, v, out):
                if site.layer == 0:
                    seen.update(q=q, k=k, v=v, out=out, attention=site.attention)
                return out

            def after_cross_attention(self, site, q, out):
                if site.layer == 0:
                    seen["cross_out"] = out
                return out

        return Hook()


def test_intermediates_match_official(vmodel):
    flat = lambda t: t.reshape(-1, *t.shape[-2 if t.ndim == 4 else -1:])  # noqa: E731  (B, L, ...) → packed (B·L, ...)
    got: dict[str, torch.Tensor] = {}

    def keep(name, use_input=False):
        return lambda mod, args, out: got.__setitem__(name, args[0] if use_input else out)

    m = vmodel
    handles = [
        m.all_x_embedder["4-2"].register_forward_hook(keep("patchified_in", True)),
        m.all_x_embedder["4-2"].register_forward_hook(keep("x_embedder_out")),
        m.t_embedder.register_forward_hook(keep("t_embedder_out")),
        m.motion_embedder.register_forward_hook(keep("motion_embedder_out_before_zeroing")),
        m.cap_embedder.register_forward_hook(keep("cap_embedder_out")),
        m.layers[0].attention.register_forward_hook(keep("layer0.attention_out")),
        m.layers[0].feed_forward.register_forward_hook(keep("layer0.feed_forward_out")),
        m.layers[0].register_forward_hook(keep("layer0_out")),
        m.layers[1].register_forward_hook(keep("layer1_out")),
        m.all_final_layer["4-2"].register_forward_hook(keep("final_layer_out")),
        m.all_final_layer["4-2"].register_forward_hook(lambda mod, args, out: got.__setitem__("adaln_input", args[1])),
    ]
    rec = _Recorder()
    try:
        with torch.no_grad():
            m(T["in.x"], T["in.t"], T["in.cap_feats"], T["in.cap_mask"], T["in.motion_score"], 4, 2,
              ForwardOptions(features=(rec,)))
    finally:
        for h in handles:
            h.remove()
    for name in ("x_embedder_out", "layer0.attention_out", "layer0.feed_forward_out", "layer0_out", "layer1_out",
                 "final_layer_out"):
        assert _diff(flat(got[name]), T[f"fwd.p4f2.{name}"]) <= 1e-5, name
    assert _diff(flat(got["patchified_in"]), T["fwd.p4f2.patchified_in"]) == 0
    # the official zeroes dropped motion rows in place, so its capture already shows row 1 (score -1) zeroed
    got["motion_embedder_out_before_zeroing"] = got["motion_embedder_out_before_zeroing"] * torch.tensor([[1.0], [0.0]])
    for name in ("t_embedder_out", "motion_embedder_out_before_zeroing", "cap_embedder_out", "adaln_input"):
        assert _diff(got[name], T[f"fwd.p4f2.{name}"]) <= 1e-5, name
    for name, key in (("q", "self_attn_q"), ("k", "self_attn_k"), ("v", "self_attn_v"), ("out", "self_attn_out"),
                      ("cross_out", "cross_attn_out")):
        assert _diff(flat(rec.seen[name]), T[f"fwd.p4f2.layer0.{key}"]) <= 1e-5, name
    attn, y = rec.seen["attention"], T["fwd.p4f2.cap_packed"]
    with torch.no_grad():
        yn = m.layers[0].attention_y_norm(y)
        assert _diff(attn.ky_norm(attn.wk_y(yn)).view(-1, 2, 16), T["fwd.p4f2.layer0.cross_attn_k"]) <= 1e-5
        assert _diff(attn.wv_y(yn).view(-1, 2, 16), T["fwd.p4f2.layer0.cross_attn_v"]) <= 1e-5
    mask = T["in.cap_mask"].bool()
    assert _diff(T["in.cap_feats"][mask], y) == 0  # the unpadded caption rows are the raw features


def test_official_token_tables():
    """x_src_ids, cu_seqlens and the per-token RoPE factors are those of the packed official call."""
    ids, cu = T["fwd.p4f2.x_src_ids"], T["fwd.p4f2.x_cu_seqlens"]
    assert cu.tolist() == [0, 70, 140] and ids.tolist() == [0] * 70 + [1] * 70
    table = video_rope_grid(2, 5, 7, 16, 256.0).reshape(70, -1)
    assert _diff(torch.view_as_real(torch.cat([table, table])), T["fwd.p4f2.x_freqs_cis"]) <= 1e-5


def test_motion_drop_rule(vmodel):
    with torch.no_grad():
        a = vmodel.conditioning(T["in.t"], T["in.cap_feats"], T["in.cap_mask"].bool(), torch.tensor([6.0, -1.0]))
        b = vmodel.conditioning(T["in.t"], T["in.cap_feats"], T["in.cap_mask"].bool(), torch.tensor([6.0, -7.0]))
        zero = vmodel.conditioning(T["in.t"], T["in.cap_feats"], T["in.cap_mask"].bool(), torch.tensor([6.0, 0.0]))
    assert torch.equal(a, b)  # every negative score is "no motion"
    assert not torch.equal(a[1], zero[1])  # 0 is a real score (its embedding is not zeroed)


def test_bad_inputs_are_named(vmodel):
    x, t, cf, cm, ms = T["in.x"], T["in.t"], T["in.cap_feats"], T["in.cap_mask"], T["in.motion_score"]
    with pytest.raises(LuminaInputError, match="no patch entry 1x4"):
        vmodel(x, t, cf, cm, ms, 4, 1)
    with pytest.raises(LuminaInputError, match="frames"):
        vmodel(x[:, :, :3], t, cf, cm, ms, 2, 2)
    with pytest.raises(LuminaInputError, match="channels"):
        vmodel(x[:, :3], t, cf, cm, ms, 2, 1)
    with pytest.raises(LuminaInputError, match="frames, height, width"):
        vmodel(x[:, :, 0], t, cf, cm, ms, 2, 1)


# -- guided call and sampling ------------------------------------------------------------------
def test_time_aware_values_and_patch_combs():
    comb = ("2x4", (0.03, "2x2"), (0.125, "1x2"))
    assert [time_aware_value(comb, t) for t in (0.0, 0.03, 0.1, 0.125, 0.9)] == ["2x4", "2x2", "2x2", "1x2", "1x2"]
    assert time_aware_value((1.0, (0.5, 2.0), (0.2, 3.0)), 0.3) == 1.0  # stops at the first threshold above t
    assert parse_patch_comb("2x4") == (4, 2) and parse_patch_comb("1x2") == (2, 1)
    with pytest.raises(LuminaInputError):
        parse_patch_comb("2-4")


@pytest.mark.parametrize("video_key", _keys("mcfg."))
def test_guided_call_matches_official(vmodel, video_key):
    e = MANIFEST["tensors"][video_key]
    kwargs = {k: v for k, v in e["kwargs"].items() if k != "print_info"}
    if video_key.startswith("mcfg.pos2"):
        x, cf, cm = torch.cat([T["in.x"]] * 3), T["in.mcfg3_cap_feats"], T["in.mcfg3_cap_mask"]
    else:
        x, cf, cm = T["in.x"], T["in.cfg_cap_feats"], T["in.cfg_cap_mask"]
    with torch.no_grad():
        out = vmodel.forward_with_multi_cfg(x, torch.full((x.shape[0],), e["t_value"]), cf, cm, **kwargs)
    golden = T[video_key]
    assert _diff(out[: golden.shape[0]], golden) <= 1e-4
    assert torch.equal(out[golden.shape[0]:len(golden)], x[golden.shape[0]:len(golden)])


def test_sample_configs_by_name():
    assert set(SAMPLE_CONFIGS) == set(MANIFEST["sample_configs"])
    for name, official in MANIFEST["sample_configs"].items():
        s = video_sample_settings(name)
        as_lists = lambda v: json.loads(json.dumps(v))  # noqa: E731  tuples → lists
        assert as_lists(s.patch_comb) == official["P"] and s.steps == official["step"] and s.time_shift == official["ts"]
        assert s.renorm == official["renorm"] and as_lists(s.cfg) == official["cfg"]
        assert s.motion == official["motion"] and as_lists(s.neg_motion) == official["negMotion"]
    s = video_sample_settings("f16F64R512", cfg=4.0, steps=30, patch_comb="2x2", renorm=1.5, motion=3.0, neg_motion=0.0)
    assert (s.cfg, s.steps, s.patch_comb, s.renorm, s.motion, s.neg_motion) == (4.0, 30, "2x2", 1.5, 3.0, 0.0)
    with pytest.raises(LuminaInputError, match="unknown"):
        video_sample_settings("f8")
    with pytest.raises(LuminaInputError, match="settable"):
        video_sample_settings("f16F64R512", guidance=3)


@pytest.mark.parametrize("name", ["f16F64R512", "f24F96R960-MultiScale"])
def test_time_grid_and_trajectory_match_official(vmodel, name):
    e = MANIFEST["tensors"][f"sample.{name}.traj"]
    settings = video_sample_settings(name, steps=e["num_steps"])
    assert _diff(time_grid(settings.steps, settings.time_shift), T[f"sample.{name}.tgrid"]) == 0
    z = T["in.z_a"] if name == "f16F64R512" else T["in.z_b"]
    with torch.no_grad():
        traj = sample_video(vmodel, Conditioning(T["in.cfg_cap_feats"][:1], T["in.cfg_cap_mask"][:1]),
                            Conditioning(T["in.cfg_cap_feats"][1:], T["in.cfg_cap_mask"][1:]), settings=settings,
                            noise=z, trajectory=True)
    assert _diff(traj, T[f"sample.{name}.traj"]) <= 1e-4


# -- checkpoints -------------------------------------------------------------------------------
def test_released_checkpoint_form_loads_weights_only(tmp_path, vmodel):
    folder = tmp_path / "Lumina-Video-f24R960"
    folder.mkdir()
    torch.save({f"_orig_mod.{k}" if k.startswith("layers.") else k: v for k, v in STATE.items()},
               folder / "consolidated.00-of-01.pth")
    # model_args.pth pickles an argparse Namespace: weights_only loading would refuse it; it is never read
    torch.save(argparse.Namespace(model="MultiScaleNextDiT_2B_GQA", rope_theta=256.0), folder / "model_args.pth")
    loaded = load_video_model(folder)
    assert loaded.config == vmodel.config
    for k, v in vmodel.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        out = loaded(T["in.x"], T["in.t"], T["in.cap_feats"], T["in.cap_mask"], T["in.motion_score"], 2, 1)
    assert _diff(out, T["fwd.p2f1.out"]) <= 1e-5


def test_truncated_checkpoint_is_refused(tmp_path):
    sd = {k: v for k, v in STATE.items() if k != "layers.1.attention.wq.weight"}
    with pytest.raises(LuminaCheckpointError, match="missing"):
        load_video_model(sd)
    with pytest.raises(LuminaCheckpointError, match="patch entries"):
        infer_video_config({"layers.0.attention_norm1.weight": torch.zeros(2)})


def test_the_library_still_exports_the_image_loader():
    assert callable(lumina.load_model)
