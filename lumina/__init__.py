"""Lumina-T2X in pure PyTorch: Flag-DiT and Next-DiT, checkpoints, and (soon) sampling.

Importable without ComfyUI. Time convention everywhere: t=0 is noise, t=1 is data, and the
model predicts the velocity data − noise.
"""

from .checkpoints import load_model, read_state_dict, save_diffusers, save_official, to_official
from .config import PRESETS, LuminaConfig, infer_config
from .errors import LuminaCheckpointError, LuminaError, LuminaInputError
from .model import FlagDiT, ForwardOptions, LuminaDiT, NextDiT, build_model

__all__ = [
    "load_model", "save_official", "save_diffusers", "read_state_dict", "to_official",
    "LuminaConfig", "PRESETS", "infer_config", "build_model", "LuminaDiT", "FlagDiT", "NextDiT",
    "ForwardOptions", "LuminaError", "LuminaCheckpointError", "LuminaInputError",
]
