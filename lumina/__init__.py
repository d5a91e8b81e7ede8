"""Lumina-T2X in pure PyTorch: Flag-DiT, Next-DiT and Lumina-Video, checkpoints, and flow-ODE sampling.

Importable without ComfyUI. Time convention everywhere: t=0 is noise, t=1 is data, and the
model predicts the velocity data − noise.
"""

from .audio_text import AudioTextEncoder, MusicTextEncoder, load_audio_text_encoder, load_music_text_encoder
from .audio_vae import AudioVAE, audio_vae_from_state_dict, load_audio_vae
from .vocoder import AudioDecoder, BigVGAN, latent_to_waveform, load_audio_decoder, load_vocoder, mel_to_waveform
from .audio_checkpoints import AudioCheckpoint, find_audio_release, load_audio_model, read_audio_checkpoint
from .audio_sampling import AUDIO_SAMPLE_DEFAULTS, audio_velocity, latent_frames_for_seconds, sample_audio
from .model.audio_dit import AudioDiT, AudioDiTConfig
from .safe_pickle import UnsafeCheckpointError, load_tensors
from .checkpoints import load_model, read_state_dict, save_diffusers, save_official, to_official
from .compile import compile_model, compile_stats
from .prepack import is_prepacked, prepack_available, prepack_model, prepacked_bytes
from .conditioning import Conditioning
from .editing import ImageStart
from .config import PRESETS, LuminaConfig, infer_config
from .errors import LuminaCheckpointError, LuminaError, LuminaInputError, LuminaNumericError
from .extrapolation import extrapolation_options
from .model import FlagDiT, ForwardOptions, LuminaDiT, NextDiT, build_model
from .memory import MemoryEstimate, check_sampling_fits, estimate_sampling_memory
from .model.hooks import BatchRows, batch_rows
from .sampling import sample, seeded_noise
from .sampling_settings import SamplingSettings
from .solvers import SamplingInterrupted, StepInfo
from .video_checkpoints import load_video_model
from .video_config import LuminaVideoConfig
from .model.lumina_video import LuminaVideo
from .video_sampling import SAMPLE_CONFIGS, VideoSampleSettings, sample_video, video_sample_settings

__all__ = [
    "load_model", "compile_model", "compile_stats", "prepack_model", "prepack_available", "is_prepacked", "prepacked_bytes", "save_official", "save_diffusers", "read_state_dict", "to_official",
    "LuminaConfig", "PRESETS", "infer_config", "build_model", "LuminaDiT", "FlagDiT", "NextDiT",
    "ForwardOptions", "BatchRows", "batch_rows", "Conditioning", "ImageStart", "SamplingSettings", "sample", "seeded_noise",
    "MemoryEstimate", "estimate_sampling_memory", "check_sampling_fits", "extrapolation_options", "StepInfo",
    "SamplingInterrupted", "LuminaVideo", "LuminaVideoConfig", "load_video_model", "sample_video",
    "video_sample_settings", "VideoSampleSettings", "SAMPLE_CONFIGS", "LuminaError", "LuminaCheckpointError", "LuminaInputError", "LuminaNumericError",
    "AudioVAE", "load_audio_vae", "audio_vae_from_state_dict", "BigVGAN", "load_vocoder", "AudioDecoder",
    "latent_to_waveform", "mel_to_waveform", "load_audio_decoder", "MusicTextEncoder", "AudioTextEncoder", "load_music_text_encoder",
    "load_audio_text_encoder",
    "AudioDiT", "AudioDiTConfig", "AudioCheckpoint", "load_audio_model", "read_audio_checkpoint", "find_audio_release",
    "sample_audio", "audio_velocity", "latent_frames_for_seconds", "AUDIO_SAMPLE_DEFAULTS", "load_tensors",
    "UnsafeCheckpointError",
]
