"""Model modules: one family per file, shared layers, attention and RoPE."""

from __future__ import annotations


from ..config import LuminaConfig
from .dit import LuminaDiT
from .flag_dit import FlagDiT
from .lumina_video import LuminaVideo
from .next_dit import NextDiT
from .options import ForwardOptions

MODEL_CLASSES: dict[str, type[LuminaDiT]] = {"flag_dit": FlagDiT, "next_dit": NextDiT}
MODEL_CLASSES["lumina_video"] = LuminaVideo  # type: ignore[assignment]  # takes a LuminaVideoConfig


def build_model(config: LuminaConfig) -> LuminaDiT:
    """An uninitialised model of the config's family (build under `torch.device('meta')` to skip allocation)."""
    return MODEL_CLASSES[config.family](config)


__all__ = ["build_model", "LuminaDiT", "FlagDiT", "NextDiT", "ForwardOptions", "MODEL_CLASSES", "LuminaVideo"]
