"""Lumina-T2Music end to end against the official goldens: a released-layout folder (Lightning
checkpoint, maa2, bigvnat) → our loaders → CFM sampling with real CFG → autoencoder → vocoder;
the trajectory, the mel and the waveform match the official run (≤ 1e-4)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumina.audio_checkpoints import find_audio_release, load_audio_model
from lumina.audio_sampling import sample_audio
from lumina.audio_vae import audio_vae_from_state_dict
from lumina.vocoder import AudioDecoder, load_vocoder

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "lumina_music_tiny"
TOL = 1e-4


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("Lumina-T2Music")
    cfm = load_file(str(GOLDEN / "cfm.safetensors"))
    (root / "music_generation").mkdir()
    torch.save({"epoch": 119, "state_dict": OrderedDict(cfm), "lr_schedulers": []}, root / "music_generation" / "119.ckpt")
    (root / "maa2").mkdir()
    torch.save({"state_dict": {k[len("first_stage_model."):]: v for k, v in cfm.items() if k.startswith("first_stage_model.")}},
               root / "maa2" / "maa2.ckpt")
    (root / "bigvnat").mkdir()
    (root / "bigvnat" / "args.yml").write_text((GOLDEN / "vocoder_args.yml").read_text())
    torch.save({"generator": load_file(str(GOLDEN / "vocoder.safetensors"))}, root / "bigvnat" / "best_netG.pt")
    return root


def test_sample_to_waveform_matches_official(release):
    t = load_file(str(GOLDEN / "tensors.safetensors"))
    files = find_audio_release(release)
    model, ckpt = load_audio_model(files.dit, kind="music", max_len=64)
    vae = audio_vae_from_state_dict(ckpt.first_stage, scale_factor=ckpt.scale_factor)
    decoder = AudioDecoder(vae, load_vocoder(files.vocoder_dir))
    traj = sample_audio(model, t["in.cond"], t["in.uncond"], steps=7, cfg=5.0, noise=t["in.sample_x0"], trajectory=True)
    assert float((traj - t["sample.traj"]).abs().max()) <= TOL
    mel = decoder.latent_to_mel(traj[-1])
    assert float((mel - t["sample.mel"]).abs().max()) <= TOL
    wav = decoder(traj[-1])
    assert wav.shape == (1, 1, t["sample.wav"].shape[0]) and decoder.sample_rate == 16000
    assert float((wav[0, 0] - t["sample.wav"]).abs().max()) <= TOL
