"""Lumina-T2Music / Lumina-T2Audio through the nodes: the released folders in the Lumina Audio Model
Loader, Lumina Audio Text Encode, Lumina Empty Audio Latent, the Lumina Flow Sampler's audio path
(equal to `lumina.sample_audio` for the same seed), Lumina Audio Decode (equal to the library's
decoder) → core AUDIO, Lumina Save Audio (WAV re-read with `wave`), progress and cancel, and the
clear errors of the wrong pairings.

The models are the tiny assets' released-layout folders (tools/comfyui/audio_assets.py)."""

from __future__ import annotations

import shutil
import wave

import numpy as np
import pytest
import torch

from lumina.audio_checkpoints import find_audio_release, load_audio_model
from lumina.audio_sampling import latent_frames_for_seconds, sample_audio
from lumina.audio_text import load_audio_text_encoder, load_music_text_encoder
from lumina.vocoder import load_audio_decoder
from nodes_support import empty_latent, encode, flow_sample

PROMPT = "an upbeat jazz piano melody with soft drums"
CAPTION, STRUCTURED = "a dog barks in the distance", "<dog barks& all>"
SAMPLES_PER_FRAME = 512  # the tiny assets' autoencoder (time ÷ 2) × vocoder hop 256, as released
TOL = 1e-5


@pytest.fixture(scope="module")
def files(tiny) -> dict:
    return tiny.extra["audio"]


def load_node(comfyui, tiny, files, kind: str, **changes):
    inputs = {"model_folder": tiny.name(files[kind]), "model_type": "auto",
              "t5_encoder": tiny.name(files["flan_t5" if kind == "music" else "t5_v1_1"]),
              "bert_encoder": "none" if kind == "music" else tiny.name(files["bert"]), "weight_dtype": "fp32", **changes}
    return comfyui.run_node("LuminaAudioModelLoader", **inputs)


@pytest.fixture(scope="module")
def music(comfyui, tiny, files):
    return load_node(comfyui, tiny, files, "music")


@pytest.fixture(scope="module")
def audio(comfyui, tiny, files):
    return load_node(comfyui, tiny, files, "audio")


def audio_encode(comfyui, handle, prompt: str, structured: str = "") -> tuple[list, list]:
    return comfyui.run_node("LuminaAudioTextEncode", text_encoder=handle, prompt=prompt, structured_caption=structured)


def audio_latent(comfyui, model, seconds: float = 1.0, batch_size: int = 1) -> dict:
    (latent,) = comfyui.run_node("LuminaEmptyAudioLatent", model=model, seconds=seconds, batch_size=batch_size)
    return latent


def audio_sample(comfyui, model, positive, negative, latent, **settings) -> torch.Tensor:
    return flow_sample(comfyui, model, positive, negative, latent, **{"solver": "euler", "schedule": "uniform", **settings})


def library(files, kind: str):
    """The same release through the library alone: (dit, text encoder, decoder), fp32."""
    release = find_audio_release(files[kind])
    dit, ckpt = load_audio_model(release.dit, kind=kind, dtype=torch.float32)
    if kind == "music":
        text = load_music_text_encoder(files["flan_t5"], checkpoint=ckpt, dtype=torch.float32)
    else:
        text = load_audio_text_encoder(files["bert"], files["t5_v1_1"], release.clap, checkpoint=ckpt, dtype=torch.float32)
    return dit, text, load_audio_decoder(ckpt, release.vocoder_dir, release.vae)


def test_loader_lists_only_real_candidates(comfyui, tiny, files, music):
    required = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaAudioModelLoader"].INPUT_TYPES()["required"]
    assert set(required["model_folder"][0]) == {tiny.name(files["music"]), tiny.name(files["audio"])}
    assert set(required["t5_encoder"][0]) == {tiny.name(files["flan_t5"]), tiny.name(files["t5_v1_1"])}
    assert required["bert_encoder"][0] == ["none", tiny.name(files["bert"])]
    image_names = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaModelLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert not [n for n in image_names if "tiny_lumina_t2" in n]  # the releases' files are not image checkpoints
    model, handle, decoder = music
    assert type(model.model.diffusion_model).__name__ == "AudioDiT" and model.model.audio_kind == "music"
    assert (model.model.sample_rate, model.model.samples_per_latent_frame) == (16000, SAMPLES_PER_FRAME)
    assert handle.kind == "music" and decoder.sample_rate == 16000
    fmt = model.model.latent_format
    assert fmt.scale_factor == 1.0 and fmt.latent_channels == 20


@pytest.mark.parametrize("kind", ["music", "audio"])
def test_node_path_equals_the_library(comfyui, files, music, audio, kind):
    model, handle, decoder = music if kind == "music" else audio
    structured = "" if kind == "music" else STRUCTURED
    prompt = PROMPT if kind == "music" else CAPTION
    positive, negative = audio_encode(comfyui, handle, prompt, structured)
    latent = audio_latent(comfyui, model, seconds=1.0, batch_size=2)
    frames = latent_frames_for_seconds(1.0)
    assert latent["samples"].shape == (2, 20, frames) == (2, 20, 31)
    cfg = 5.0 if kind == "music" else 3.0
    ours = audio_sample(comfyui, model, positive, negative, latent, steps=6, cfg=cfg, seed=11)

    dit, text, lib_decoder = library(files, kind)
    if kind == "music":
        cond, uncond = text.encode([prompt]), text.encode([""])
    else:
        cond, uncond = text.encode([prompt], [structured]), text.encode([""], [""])
    torch.testing.assert_close(positive[0][0], cond.cap_feats, atol=TOL, rtol=0)
    torch.testing.assert_close(negative[0][0], uncond.cap_feats, atol=TOL, rtol=0)
    expected = sample_audio(dit, cond, uncond, frames=frames, batch=2, steps=6, cfg=cfg, seed=11)
    assert float((ours - expected).abs().max()) <= TOL

    (sound,) = comfyui.run_node("LuminaAudioDecode", samples={"samples": ours}, decoder=decoder)
    assert set(sound) == {"waveform", "sample_rate"} and sound["sample_rate"] == 16000
    assert sound["waveform"].shape == (2, 1, frames * SAMPLES_PER_FRAME) and sound["waveform"].dtype == torch.float32
    assert float((sound["waveform"] - lib_decoder(expected)).abs().max()) <= TOL
    # the unconditional really guides: cfg 1 (no guidance) gives another latent
    assert (audio_sample(comfyui, model, positive, negative, latent, steps=6, cfg=1.0, seed=11) - ours).abs().max() > 1e-4


def test_compile_blocks_samples_like_eager(comfyui, tiny, files, music, monkeypatch):
    """compile "blocks" holds lumina.compile_model's clone (traced with the "eager" backend here:
    wiring only; inductor's numbers are tests/lumina/test_compile.py's)."""
    import functools
    import sys

    from lumina.compile import compile_stats, is_compiled

    loaders = sys.modules[comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaModelLoader"].__module__]  # speed_up's module
    monkeypatch.setattr(loaders, "compile_model", functools.partial(loaders.compile_model, backend="eager"))
    optional = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaAudioModelLoader"].INPUT_TYPES()["optional"]
    assert optional["compile"][0] == ["off", "blocks", "cpu prepack", "blocks + cpu prepack"]
    assert optional["compile"][1]["default"] == "off"
    assert not is_compiled(music[0].model.diffusion_model)
    compiled, handle, _ = load_node(comfyui, tiny, files, "music", compile="blocks")
    inner = compiled.model.diffusion_model
    assert is_compiled(inner) and list(inner.state_dict()) == list(music[0].model.diffusion_model.state_dict())
    captions = audio_encode(comfyui, handle, PROMPT)
    latent = audio_latent(comfyui, compiled, seconds=0.5)
    out = audio_sample(comfyui, compiled, *captions, latent, steps=3, cfg=5.0, seed=4)
    expected = audio_sample(comfyui, music[0], *captions, latent, steps=3, cfg=5.0, seed=4)
    assert float((out - expected).abs().max()) <= TOL
    stats = compile_stats(inner)
    assert stats.compiled_calls > 0 and stats.eager_calls == 0
    with pytest.raises(ValueError, match="compile 'all': choose one of off, blocks, cpu prepack, blocks \\+ cpu prepack"):
        load_node(comfyui, tiny, files, "music", compile="all")


def test_cpu_prepack_samples_like_plain(comfyui, tiny, files, music):
    """compile "cpu prepack" holds lumina.prepack_model's clone: the same sampling within float
    rounding, packed weights held after it; weights it cannot pack are refused before loading."""
    from lumina.prepack import is_prepacked, prepack_available, prepacked_bytes

    if not prepack_available():
        pytest.skip("this torch build has no MKL packed GEMM")
    packed, handle, _ = load_node(comfyui, tiny, files, "music", compile="cpu prepack")
    inner = packed.model.diffusion_model
    assert is_prepacked(inner) and not is_prepacked(music[0].model.diffusion_model)
    captions = audio_encode(comfyui, handle, PROMPT)
    latent = audio_latent(comfyui, packed, seconds=0.5)
    out = audio_sample(comfyui, packed, *captions, latent, steps=3, cfg=5.0, seed=4)
    expected = audio_sample(comfyui, music[0], *captions, latent, steps=3, cfg=5.0, seed=4)
    assert float((out - expected).abs().max()) <= TOL and prepacked_bytes(inner) > 0
    with pytest.raises(ValueError, match="'cpu prepack' packs fp32 weights: set weight_dtype to fp32 .this load gives bfloat16"):
        load_node(comfyui, tiny, files, "music", compile="cpu prepack", weight_dtype="bf16")


def test_progress_and_cancel(comfyui, music):
    import comfy.model_management
    import comfy.utils

    model, handle, _ = music
    captions = audio_encode(comfyui, handle, PROMPT)
    seen = []

    def hook(value, total, preview):
        seen.append((value, total))
        if len(seen) == 2 and cancel:
            comfy.model_management.interrupt_current_processing(True)

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        cancel = False
        audio_sample(comfyui, model, *captions, audio_latent(comfyui, model), steps=5)
        assert seen == [(i, 4) for i in range(1, 5)]
        seen.clear()
        cancel = True
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            audio_sample(comfyui, model, *captions, audio_latent(comfyui, model), steps=40)
        assert len(seen) == 2
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(previous)


def test_other_solvers_and_schedules_run(comfyui, music):
    model, handle, _ = music
    captions = audio_encode(comfyui, handle, PROMPT)
    latent = audio_latent(comfyui, model, seconds=0.5)
    euler = audio_sample(comfyui, model, *captions, latent, steps=4)
    for changes in ({"solver": "midpoint"}, {"schedule": "shift", "shift": 3.0}):
        other = audio_sample(comfyui, model, *captions, latent, steps=4, **changes)
        assert other.shape == euler.shape and torch.isfinite(other).all() and not torch.equal(other, euler)


def test_wrong_pairings_are_clear_errors(comfyui, music, audio, next_dit, gemma):
    model, handle, decoder = music
    captions = audio_encode(comfyui, handle, PROMPT)
    latent = audio_latent(comfyui, model)
    with pytest.raises(ValueError, match=r"samples audio latents \(batch, 20, frames\), got shape \(1, 4, 4, 4\)"):
        audio_sample(comfyui, model, *captions, empty_latent(comfyui, 32, 32))
    image_captions = encode(comfyui, gemma, "a cat")
    with pytest.raises(ValueError, match="it is an audio latent; sample it with a Lumina Audio Model Loader MODEL"):
        flow_sample(comfyui, next_dit, *image_captions, latent)
    with pytest.raises(ValueError, match="not made by Lumina Audio Text Encode"):
        audio_sample(comfyui, model, *image_captions, latent)
    audio_model, audio_handle, _ = audio
    with pytest.raises(ValueError, match="comes from the Lumina-T2Audio text encoder but the MODEL is Lumina-T2Music"):
        audio_sample(comfyui, model, *audio_encode(comfyui, audio_handle, CAPTION, STRUCTURED), latent)
    with pytest.raises(ValueError, match="structured_caption is for Lumina-T2Audio"):
        audio_encode(comfyui, handle, PROMPT, STRUCTURED)
    with pytest.raises(ValueError, match="starts from noise"):
        audio_sample(comfyui, model, *captions, latent, denoise=0.5)
    with pytest.raises(ValueError, match="Lumina Audio Model Loader"):
        audio_latent(comfyui, next_dit)
    with pytest.raises(ValueError, match="Lumina-T2Music / T2Audio MODEL .* Lumina Empty Audio Latent"):
        comfyui.run_node("LuminaEmptyLatent", preset="custom", width=64, height=64, batch_size=1, model=model)
    with pytest.raises(ValueError, match=r"shape \(1, 4, 4, 4\) \(an image latent\)"):
        comfyui.run_node("LuminaAudioDecode", samples=empty_latent(comfyui, 32, 32), decoder=decoder)
    with pytest.raises(ValueError, match="cannot drive"):
        model.model.apply_model(torch.zeros(1, 20, 8), torch.ones(1))


def test_seconds_are_checked_against_the_model(comfyui, music):
    model = music[0]
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        audio_latent(comfyui, model, seconds=0.0)
    with pytest.raises(ValueError, match=r"positions stop at 1000 \(about 32\.0 s\); ask for at most 32\.00 s"):
        audio_latent(comfyui, model, seconds=40.0)
    assert audio_latent(comfyui, model, seconds=32.0)["samples"].shape == (1, 20, 1000)
    assert audio_latent(comfyui, model, seconds=10.0)["samples"].shape == (1, 20, 312)  # the official 10 s


def test_loader_refuses_the_wrong_folder_and_missing_parts(comfyui, tiny, files):
    with pytest.raises(ValueError, match="this is a Lumina-T2Music folder"):
        load_node(comfyui, tiny, files, "music", model_type="Lumina-T2Audio")
    with pytest.raises(ValueError, match="set it to none for Lumina-T2Music"):
        load_node(comfyui, tiny, files, "music", bert_encoder=tiny.name(files["bert"]))
    with pytest.raises(ValueError, match="Lumina-T2Audio needs bert_encoder"):
        load_node(comfyui, tiny, files, "audio", bert_encoder="none")
    broken = files["music"].parent / "tiny_music_without_vocoder"
    if not broken.exists():
        shutil.copytree(files["music"], broken)
        shutil.rmtree(broken / "bigvnat")
    with pytest.raises(ValueError, match=r"bigvnat/args\.yml and bigvnat/best_netG\.pt"):
        load_node(comfyui, tiny, {**files, "music": broken}, "music")


def test_save_audio_writes_wav_that_reads_back(comfyui, tmp_path):
    import folder_paths

    t = torch.linspace(0, 1, 16000)
    waveform = torch.stack([0.5 * torch.sin(2 * torch.pi * 440 * t), torch.linspace(-1.2, 1.2, 16000)])[None]  # 2 channels
    waveform = torch.cat([waveform, -waveform])  # batch 2
    result = comfyui.run_node("LuminaSaveAudio", audio={"waveform": waveform, "sample_rate": 16000},
                              filename_prefix="audio/node_test", format="wav")
    entries = result["ui"]["audio"]
    assert [e["subfolder"] for e in entries] == ["audio", "audio"] and all(e["type"] == "output" for e in entries)
    assert entries[0]["filename"].startswith("node_test_") and entries[0]["filename"] != entries[1]["filename"]
    for i, entry in enumerate(entries):
        path = f"{folder_paths.get_output_directory()}/{entry['subfolder']}/{entry['filename']}"
        with wave.open(path, "rb") as f:
            assert (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (2, 2, 16000, 16000)
            data = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").reshape(-1, 2).T
        expected = waveform[i].clamp(-1, 1).numpy() * 32767
        assert np.abs(data - expected).max() <= 0.5 + 1e-3  # rounded to 16 bits, clipped to [-1, 1]
    again = comfyui.run_node("LuminaSaveAudio", audio={"waveform": waveform[:1], "sample_rate": 16000},
                             filename_prefix="audio/node_test", format="wav")
    assert again["ui"]["audio"][0]["filename"] not in {e["filename"] for e in entries}  # the counter moved on
    with pytest.raises(ValueError, match="expected \\(batch, channels, samples\\)"):
        comfyui.run_node("LuminaSaveAudio", audio={"waveform": waveform[0], "sample_rate": 16000}, filename_prefix="x")


def test_save_audio_flac_reads_back_with_pyav(comfyui):
    av = pytest.importorskip("av")
    import folder_paths

    waveform = 0.25 * torch.sin(torch.linspace(0, 200, 8000))[None, None]
    [entry] = comfyui.run_node("LuminaSaveAudio", audio={"waveform": waveform, "sample_rate": 16000},
                               filename_prefix="audio/node_flac", format="flac")["ui"]["audio"]
    assert entry["filename"].endswith(".flac")
    with av.open(f"{folder_paths.get_output_directory()}/{entry['subfolder']}/{entry['filename']}") as container:
        stream = container.streams.audio[0]
        assert stream.rate == 16000 and stream.channels == 1
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    assert decoded.shape == (8000,)
    assert np.abs(decoded.astype(np.float64) - np.round(waveform[0, 0].numpy() * 32767)).max() <= 1
