"""The model families this library builds, by id, with the names users see in messages."""

from __future__ import annotations

FAMILIES: tuple[str, ...] = ("flag_dit", "next_dit")
FAMILY_NAMES = {"flag_dit": "Flag-DiT (Lumina-T2I)", "next_dit": "Next-DiT (Lumina-Next)"}
# Lumina-Video has its own config class (lumina.video_config.LuminaVideoConfig), so it is not in FAMILIES
FAMILY_NAMES["lumina_video"] = "Lumina-Video (multi-scale Next-DiT)"
