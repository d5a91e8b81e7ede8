"""Lumina-T2Music / Lumina-T2Audio in a real ComfyUI (both: see conftest.py), over HTTP: the tiny
released-layout stacks of the tiny assets (tools/comfyui/audio_assets.py: a Lightning-pickled CFM
checkpoint with tiny tensors under the real keys, maa2, a BigVGAN folder, FLAN-T5 / T5 / BERT
folders built by transformers) write audio files of the asked length and sample rate through
Lumina Save Audio; bad input is a node error and the next prompt still succeeds.

`check_saved_audio` is also what tests/e2e/test_nodes.py's every-workflow test runs for the audio
workflows."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import pytest

from tools.comfyui import ComfyExecutionError
from tools.comfyui.assets import substitute_tiny as tiny

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
SAMPLE_RATE, SAMPLES_PER_FRAME = 16000, 512  # the released rate and latent frame (autoencoder ÷ 2 × hop 256)
NODES = {
    "LuminaAudioModelLoader": ({"model_folder", "model_type", "t5_encoder", "bert_encoder", "weight_dtype", "compile"},
                               ["MODEL", "LUMINA_AUDIO_TEXT_ENCODER", "LUMINA_AUDIO_DECODER"]),
    "LuminaAudioTextEncode": ({"text_encoder", "prompt", "structured_caption", "negative_prompt"},
                              ["CONDITIONING", "CONDITIONING"]),
    "LuminaEmptyAudioLatent": ({"model", "seconds", "batch_size"}, ["LATENT"]),
    "LuminaAudioDecode": ({"samples", "decoder"}, ["AUDIO"]),
    "LuminaSaveAudio": ({"audio", "filename_prefix", "format"}, []),
}


def expected_samples(seconds: float) -> int:
    """Whole latent frames (rounded down, 10 s → 312), each SAMPLES_PER_FRAME samples."""
    return int(seconds * SAMPLE_RATE / SAMPLES_PER_FRAME + 1e-6) * SAMPLES_PER_FRAME


def check_saved_audio(server, entry: dict, graph: dict) -> list[Path]:
    """The files Lumina Save Audio listed: one per batch item, mono 16-bit WAV of the asked length."""
    [latent] = [n["inputs"] for n in graph.values() if n["class_type"] == "LuminaEmptyAudioLatent"]
    files = server.output_files(entry, key="audio")
    assert len(files) == latent["batch_size"], files
    for path in files:
        assert path.suffix == ".wav" and path.is_file(), path
        with wave.open(str(path), "rb") as f:
            assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (SAMPLE_RATE, 1, 2)
            assert f.getnframes() == expected_samples(latent["seconds"])
    return files


def audio_graph(assets, prefix: str, kind: str = "music", **latent) -> dict:
    graph = tiny(json.loads((WORKFLOWS / "api" / f"lumina_t2{kind}.json").read_text()), assets, prefix)
    graph["1"]["inputs"]["weight_dtype"] = "fp32"
    graph["3"]["inputs"].update(latent)
    return graph


def _expect_node_error(server, graph: dict, node_type: str, *needles: str) -> None:
    with pytest.raises(ComfyExecutionError) as info:
        server.run(graph)
    assert info.value.error["node_type"] == node_type
    message = info.value.error["exception_message"]
    for needle in needles:
        assert needle in message, message


def test_object_info_lists_the_audio_nodes(comfy_server, tiny_assets):
    info = comfy_server.object_info()
    for node, (inputs, outputs) in NODES.items():
        assert node in info, f"{node} missing from /object_info"
        given = set(info[node]["input"].get("required", {})) | set(info[node]["input"].get("optional", {}))
        assert given == inputs, node
        assert info[node]["output"] == outputs, node
    assert info["LuminaSaveAudio"]["output_node"] is True
    audio = tiny_assets.extra["audio"]
    folders = info["LuminaAudioModelLoader"]["input"]["required"]["model_folder"][0]
    assert {tiny_assets.name(audio["music"]), tiny_assets.name(audio["audio"])} <= set(folders)
    assert not [n for n in info["LuminaModelLoader"]["input"]["required"]["ckpt_name"][0] if "tiny_lumina_t2" in n]


@pytest.mark.parametrize("kind", ["music", "audio"])
def test_tiny_stack_writes_audio_of_the_asked_length_and_rate(comfy_server, tiny_assets, unique_prefix, kind):
    graph = audio_graph(tiny_assets, unique_prefix, kind, seconds=2.5, batch_size=2)
    entry = comfy_server.run(graph, timeout=300)
    files = check_saved_audio(comfy_server, entry, graph)
    assert len(files) == 2 and expected_samples(2.5) == 78 * SAMPLES_PER_FRAME
    with wave.open(str(files[0]), "rb") as a, wave.open(str(files[1]), "rb") as b:
        first, second = a.readframes(a.getnframes()), b.readframes(b.getnframes())
    assert first != second and len(set(first)) > 16  # two different, non-silent clips


def test_bad_input_is_a_node_error_and_the_next_prompt_runs(comfy_server, tiny_assets, unique_prefix):
    good = audio_graph(tiny_assets, unique_prefix, seconds=1.0)
    _expect_node_error(comfy_server, audio_graph(tiny_assets, unique_prefix, seconds=0.0), "LuminaEmptyAudioLatent",
                       "must be a positive number of seconds")
    _expect_node_error(comfy_server, audio_graph(tiny_assets, unique_prefix, seconds=40.0), "LuminaEmptyAudioLatent",
                       "positions stop at 1000", "at most 32.00 s")
    as_audio = audio_graph(tiny_assets, unique_prefix, seconds=1.0)
    as_audio["1"]["inputs"].update(model_type="Lumina-T2Audio")
    _expect_node_error(comfy_server, as_audio, "LuminaAudioModelLoader", "this is a Lumina-T2Music folder")

    music = tiny_assets.extra["audio"]["music"]
    broken = music.parent / "tiny_music_no_vocoder"
    if not broken.exists():
        shutil.copytree(music, broken)
        shutil.rmtree(broken / "bigvnat")
    no_vocoder = audio_graph(tiny_assets, unique_prefix, seconds=1.0)
    no_vocoder["1"]["inputs"]["model_folder"] = tiny_assets.name(broken)
    _expect_node_error(comfy_server, no_vocoder, "LuminaAudioModelLoader", "bigvnat/args.yml and bigvnat/best_netG.pt",
                       "BigVGAN vocoder")
    check_saved_audio(comfy_server, comfy_server.run(good, timeout=300), good)


def test_core_save_audio_takes_the_same_audio_where_it_exists(comfy_server, tiny_assets, unique_prefix):
    """Core Save Audio writes the same AUDIO as FLAC. Its module imports torchaudio (no wheel beside CPU torch):
    0.3.64 here imports it through the harness's import-only stand-in (tools/comfyui/stubs/torchaudio), and FLAC
    at 16 kHz calls nothing of torchaudio; the vendored 2024 ComfyUI has no audio nodes."""
    if "SaveAudio" not in comfy_server.object_info():
        pytest.skip("this ComfyUI has no core Save Audio (its audio nodes need torchaudio)")
    graph = audio_graph(tiny_assets, unique_prefix, seconds=1.0)
    graph["6"] = {"class_type": "SaveAudio", "inputs": {"audio": ["5", 0], "filename_prefix": unique_prefix}}
    [flac] = comfy_server.output_files(comfy_server.run(graph, timeout=300), key="audio")
    av = pytest.importorskip("av")
    with av.open(str(flac)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
    assert (stream.rate, samples) == (SAMPLE_RATE, expected_samples(1.0))
