"""Lumina Save Audio: writes core AUDIO into ComfyUI's output folder without torchaudio.

ComfyUI's own Save Audio / Preview Audio import torchaudio, which has no wheel beside some torch
builds (CPU torch here), so they are missing from such ComfyUIs; this node needs only the standard
library (`wave`, 16-bit PCM WAV) and, for FLAC, PyAV (a ComfyUI dependency, optional here). Files
are named like core's: `<prefix>_<counter:05>_.<ext>` with the usual counter, and the UI dict
lists them, so the history and the queue show them like core's saved audio.
"""

from __future__ import annotations

import os
import wave

import numpy as np
import torch

import folder_paths

from .loaders import CATEGORY

FORMATS = ("wav", "flac")


def pcm16(waveform: torch.Tensor) -> np.ndarray:
    """(channels, samples) float in [-1, 1] → interleaved int16 (samples, channels); clipped, rounded."""
    x = waveform.detach().float().cpu().clamp(-1.0, 1.0)
    return torch.round(x * 32767.0).to(torch.int16).T.contiguous().numpy()


def write_wav(path: str, waveform: torch.Tensor, sample_rate: int) -> None:
    data = pcm16(waveform)
    with wave.open(path, "wb") as f:
        f.setnchannels(int(data.shape[1]))
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(data.tobytes())


def write_flac(path: str, waveform: torch.Tensor, sample_rate: int) -> None:
    try:
        import av
    except ImportError:
        raise ValueError("format flac needs PyAV (pip install av); choose wav, which needs nothing") from None
    data = pcm16(waveform)
    layout = "mono" if data.shape[1] == 1 else "stereo"
    if data.shape[1] > 2:
        raise ValueError(f"flac here writes mono or stereo, this audio has {data.shape[1]} channels; choose wav")
    with av.open(path, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=int(sample_rate), layout=layout)
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = int(sample_rate)
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def check_audio(audio) -> tuple[torch.Tensor, int]:
    """(waveform (batch, channels, samples), sample rate) of a core AUDIO, or a clear error."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("Lumina Save Audio: audio must be an AUDIO ({'waveform', 'sample_rate'}), e.g. from Lumina "
                         "Audio Decode")
    waveform, rate = audio["waveform"], audio["sample_rate"]
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or waveform.shape[-1] == 0:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"Lumina Save Audio: the waveform has shape {shape}; expected (batch, channels, samples)")
    if not bool(torch.isfinite(waveform).all()):
        raise ValueError("Lumina Save Audio: the waveform contains NaN or infinite values")
    if int(rate) <= 0:
        raise ValueError(f"Lumina Save Audio: sample_rate {rate} must be positive")
    return waveform, int(rate)


class LuminaSaveAudio:
    """AUDIO → WAV (16-bit PCM, standard library) or FLAC (PyAV) files in ComfyUI's output folder."""

    def __init__(self) -> None:
        self.output_dir = folder_paths.get_output_directory()
        self.type = "output"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO",),
                "filename_prefix": ("STRING", {"default": "audio/Lumina", "tooltip": "output/<prefix>_00001_.wav; "
                                    "%batch_num% is replaced by the batch index"}),
                "format": (list(FORMATS), {"default": "wav", "tooltip": "wav: 16-bit PCM, needs nothing; flac: "
                           "lossless, needs PyAV (installed with ComfyUI)"}),
            },
        }

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    def save(self, audio, filename_prefix: str = "audio/Lumina", format: str = "wav"):
        if format not in FORMATS:
            raise ValueError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
        waveform, rate = check_audio(audio)
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, self.output_dir)
        os.makedirs(folder, exist_ok=True)
        write = write_wav if format == "wav" else write_flac
        results = []
        for index, item in enumerate(waveform):
            name = f"{filename.replace('%batch_num%', str(index))}_{counter:05}_.{format}"
            write(os.path.join(folder, name), item, rate)
            results.append({"filename": name, "subfolder": subfolder, "type": self.type})
            counter += 1
        return {"ui": {"audio": results}}
