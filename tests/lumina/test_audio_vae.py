"""The 1-D mel autoencoder (lumina.audio_vae) against the official Lumina-T2Music goldens
(tests/fixtures/golden/lumina_music_tiny: `cfm.decode_first_stage`, `cfm.encode_first_stage`,
`get_first_stage_encoding` run by the official code on seeded random weights), and its loaders."""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lumina.audio_vae import AudioVAEConfig, audio_vae_from_state_dict, infer_audio_vae_config, load_audio_vae
from lumina.errors import LuminaCheckpointError, LuminaInputError

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "lumina_music_tiny"
TOL = 1e-5


@lru_cache(maxsize=None)
def _golden() -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return (json.loads((GOLDEN / "manifest.json").read_text()), load_file(str(GOLDEN / "cfm.safetensors")),
            load_file(str(GOLDEN / "tensors.safetensors")))


def _vae():
    return audio_vae_from_state_dict(_golden()[1])


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def test_config_inferred_from_shapes_equals_the_official_ddconfig():
    manifest, sd, _ = _golden()
    dd = manifest["set_config"]["ae"]["ddconfig"]
    vae = _vae()
    c = vae.config
    assert (c.mel_bins, c.out_mel_bins, c.z_channels, c.ch, list(c.ch_mult), c.num_res_blocks, c.kernel_size) == (
        dd["in_channels"], dd["out_ch"], dd["z_channels"], dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["kernel_size"])
    assert c.embed_dim == manifest["set_config"]["ae"]["embed_dim"]
    assert list(c.down_layers) == dd["down_layers"]
    # attn_layers [3] names no level of a 2-level model: attention only in the mid blocks
    assert c.encoder_attn_levels == () and c.decoder_attn_levels == ()
    assert c.decoder_kernel_size == 3  # the official decoder never passes kernel_size to its res-blocks
    assert vae.scale_factor == pytest.approx(float(sd["scale_factor"]))
    assert vae.scale_factor == pytest.approx(manifest["set_config"]["scale_factor"], rel=1e-6)


def test_decode_reproduces_the_official_decode_first_stage_and_its_stages():
    _, _, t = _golden()
    vae = _vae()
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in vae.named_modules():
        key = f"ae.decode.{name}.out"
        if key in t:
            hooks.append(module.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o.clone())))
    with torch.no_grad():
        mel = vae.decode(t["in.ae_z"])
    assert _maxdiff(mel, t["ae.decode.out"]) <= TOL
    expected = {k for k in t if k.startswith("ae.decode.") and k.endswith(".out") and k != "ae.decode.out"}
    assert set(seen) == expected  # every recorded stage exists here under the official name
    for key in sorted(expected):
        assert _maxdiff(seen[key], t[key]) <= TOL, key
    # the post_quant_conv input is the latent divided by scale_factor
    assert _maxdiff(t["in.ae_z"] / vae.scale_factor, t["ae.decode.post_quant_conv.in"]) <= TOL


def test_encode_reproduces_the_official_posterior_and_scaled_latent():
    _, _, t = _golden()
    vae = _vae()
    seen: dict[str, torch.Tensor] = {}
    for name, module in vae.named_modules():
        key = f"ae.encode.{name}.out"
        if key in t:
            module.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o.clone()))
    with torch.no_grad():
        post = vae.encode_posterior(t["in.ae_mel"])
        z = vae.encode(t["in.ae_mel"], noise=t["ae.encode.eps"])
        mode = vae.encode(t["in.ae_mel"], sample=False)
        torch.manual_seed(14)  # the official posterior.sample() draws torch.randn(mean.shape) after this seed
        z_seeded = vae.encode(t["in.ae_mel"])
    assert _maxdiff(post.mean, t["ae.encode.mean"]) <= TOL
    assert _maxdiff(post.logvar, t["ae.encode.logvar"]) <= TOL
    assert _maxdiff(torch.cat([post.mean, t["ae.encode.moments"][:, 20:]], 1), t["ae.encode.moments"]) <= TOL
    assert _maxdiff(z, t["ae.encode.z_scaled"]) <= TOL
    assert _maxdiff(z_seeded, t["ae.encode.z_scaled"]) <= TOL
    assert _maxdiff(mode, vae.scale_factor * t["ae.encode.mean"]) <= TOL
    assert {k for k in t if k.startswith("ae.encode.") and k.endswith(".out")} <= set(seen) | {"ae.encode.encoder.out"}
    for key in seen:
        assert _maxdiff(seen[key], t[key]) <= TOL, key


def test_logvar_is_clamped_like_the_official_distribution():
    vae = _vae()
    with torch.no_grad():
        vae.quant_conv.bias[20:] = 1e4  # pushes the log-variance far above 20
        post = vae.encode_posterior(torch.randn(1, 16, 8))
    assert post.logvar.max().item() == 20.0


def test_sampled_latent_decodes_to_the_official_mel():
    _, _, t = _golden()
    with torch.no_grad():
        mel = _vae().decode(t["sample.final"])
    assert _maxdiff(mel, t["sample.mel"]) <= TOL


def _lightning_checkpoint(path: Path, state_dict: dict) -> Path:
    # what a Lightning checkpoint pickles besides the weights (an inert Namespace, loop counters)
    torch.save({"epoch": 3, "global_step": 1234, "state_dict": state_dict,
                "hyper_parameters": argparse.Namespace(lr=3e-6), "optimizer_states": []}, path)
    return path


def test_loads_the_cfm_checkpoint_and_a_standalone_maa2_ckpt(tmp_path: Path):
    _, sd, t = _golden()
    cfm = _lightning_checkpoint(tmp_path / "119.ckpt", dict(sd))
    from_cfm = load_audio_vae(cfm)
    bare = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    # maa2.ckpt: bare keys plus its training loss (discriminator) weights, no scale_factor
    bare["loss.discriminator.main.0.weight"] = torch.zeros(4, 1, 3)
    maa2 = _lightning_checkpoint(tmp_path / "maa2.ckpt", bare)
    with pytest.raises(LuminaCheckpointError, match="scale_factor"):
        load_audio_vae(maa2)
    standalone = load_audio_vae(maa2, scale_factor=float(sd["scale_factor"]))
    st = tmp_path / "vae.safetensors"
    save_file(dict(sd), str(st))
    from_st = load_audio_vae(st)
    with torch.no_grad():
        for vae in (from_cfm, standalone, from_st):
            assert _maxdiff(vae.decode(t["in.ae_z"]), t["ae.decode.out"]) <= TOL


def test_a_checkpoint_without_the_autoencoder_is_refused_clearly():
    _, sd, _ = _golden()
    dit_only = {k: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    with pytest.raises(LuminaCheckpointError, match="Make-An-Audio 2 mel autoencoder"):
        audio_vae_from_state_dict(dit_only, scale_factor=1.0)
    broken = dict(sd)
    broken["first_stage_model.decoder.conv_out.weight"] = torch.zeros(16, 32, 3)  # kernel 3, conv_in says 5
    with pytest.raises(LuminaCheckpointError, match="do not match"):
        audio_vae_from_state_dict(broken)
    with pytest.raises(LuminaCheckpointError, match="positive finite"):
        audio_vae_from_state_dict(sd, scale_factor=0.0)


def test_bad_shapes_are_clear():
    vae = _vae()
    with pytest.raises(LuminaInputError, match=r"\(batch, 20, frames\)"):
        vae.decode(torch.zeros(1, 8, 12))
    with pytest.raises(LuminaInputError, match=r"\(batch, 16, frames\)"):
        vae.encode(torch.zeros(16, 12))


def test_released_sizes_are_inferred_from_shapes():
    # the released maa2 ddconfig: mel 80, ch 384, ch_mult [1, 2, 4], 2 res-blocks, kernel 5, down_layers [0]
    config = AudioVAEConfig(mel_bins=80, out_mel_bins=80, z_channels=20, embed_dim=20, ch=384, ch_mult=(1, 2, 4),
                            num_res_blocks=2, kernel_size=5, down_layers=(0,))
    from lumina.audio_vae import AudioVAE

    with torch.device("meta"):
        sd = AudioVAE(config).state_dict()
    assert infer_audio_vae_config(sd) == config
    assert config.time_downsample == 2  # 624 mel frames <-> 312 latent frames
