"""Model folders the pack reads, registered with ComfyUI's folder_paths (never downloads)."""

from __future__ import annotations

import json
import os

import folder_paths

from ..lumina.text_encoders import is_text_encoder_folder

CHECKPOINT_FOLDERS = ("lumina", "diffusion_models", "unet")  # Lumina weights: official or diffusers
TEXT_ENCODER_FOLDERS = ("text_encoders", "LLM")  # transformers folders (Gemma-2B, LLaMA-2-7B)
WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".pt", ".bin", ".ckpt"}
NOT_WEIGHTS = {"model_args.pth"}  # Lumina-Video's pickled training arguments, beside its weights


def register_folders() -> None:
    """Add our folders under ComfyUI's models dir (extra_model_paths.yaml entries are kept)."""
    for name in CHECKPOINT_FOLDERS + TEXT_ENCODER_FOLDERS:
        entry = folder_paths.folder_names_and_paths.get(name)
        if entry is None:
            folder_paths.folder_names_and_paths[name] = ([os.path.join(folder_paths.models_dir, name)], set(WEIGHT_EXTENSIONS))
        elif name in CHECKPOINT_FOLDERS and not entry[1]:  # a yaml-made entry accepts every file
            folder_paths.folder_names_and_paths[name] = (entry[0], set(WEIGHT_EXTENSIONS))


def folders(name: str) -> list[str]:
    """ComfyUI's folders registered under `name` (models/<name> plus extra_model_paths.yaml entries)."""
    return folder_paths.get_folder_paths(name) if name in folder_paths.folder_names_and_paths else []


def checkpoint_names() -> list[str]:
    names: set[str] = set()
    for name in CHECKPOINT_FOLDERS:
        if name in folder_paths.folder_names_and_paths:
            names.update(f for f in folder_paths.get_filename_list(name)
                         if os.path.splitext(f)[1].lower() in WEIGHT_EXTENSIONS and os.path.basename(f) not in NOT_WEIGHTS
                         and not _in_audio_release(name, f))
    return sorted(names)


def _in_audio_release(folder: str, name: str) -> bool:
    """A file of a Lumina-T2Music / T2Audio folder (listed by the Lumina Audio Model Loader instead)."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-2] not in ("music_generation", "audio_generation", "maa2", "bigvnat", "bigvgan", "CLAP"):
        return False
    return any(audio_release_kind(os.path.join(root, *parts[:-2])) for root in folders(folder))


def checkpoint_path(name: str) -> str:
    for folder in CHECKPOINT_FOLDERS:
        path = folder_paths.get_full_path(folder, name) if folder in folder_paths.folder_names_and_paths else None
        if path:
            return path
    searched = [p for f in CHECKPOINT_FOLDERS for p in folders(f)]
    raise FileNotFoundError(f"Lumina checkpoint {name!r} not found in {searched}; put it in models/lumina")


def folder_names(folder_kinds: tuple[str, ...], is_match) -> list[str]:
    """Model folders (one or two levels deep below ComfyUI's `folder_kinds` folders) that `is_match` accepts."""
    found: set[str] = set()
    for kind in folder_kinds:
        for root in folders(kind):
            if not os.path.isdir(root):
                continue
            for entry in sorted(os.listdir(root)):
                path = os.path.join(root, entry)
                if is_match(path):
                    found.add(entry)
                elif os.path.isdir(path):
                    found.update(f"{entry}/{sub}" for sub in os.listdir(path) if is_match(os.path.join(path, sub)))
    return sorted(found)


def folder_path(folder_kinds: tuple[str, ...], is_match, name: str, what: str, fix: str) -> str:
    """The path of model folder `name` (as `folder_names` lists it); FileNotFoundError naming where it looked and `fix`."""
    for kind in folder_kinds:
        for root in folders(kind):
            path = os.path.join(root, name)
            if is_match(path):
                return path
    searched = [p for f in folder_kinds for p in folders(f)]
    raise FileNotFoundError(f"{what} {name!r} not found in {searched}; {fix}")


def text_encoder_names() -> list[str]:
    """Folders (one or two levels deep) holding a transformers config and tokenizer."""
    return folder_names(TEXT_ENCODER_FOLDERS, is_text_encoder_folder)


def text_encoder_path(name: str) -> str:
    return folder_path(TEXT_ENCODER_FOLDERS, is_text_encoder_folder, name, "text encoder folder",
                       "put the Gemma-2B / LLaMA-2-7B folder in models/text_encoders")


# -- Lumina-T2Music / Lumina-T2Audio: the released folders as they are ------------------------------------
AUDIO_RELEASE_DIRS = {"music_generation": "music", "audio_generation": "audio"}  # lumina.audio_checkpoints' layout


def audio_release_kind(path: str) -> str | None:
    """'music' / 'audio' when `path` is a released model folder (music_generation/ or audio_generation/
    holding a .ckpt or .safetensors), else None."""
    if not os.path.isdir(path):
        return None
    for sub, kind in AUDIO_RELEASE_DIRS.items():
        folder = os.path.join(path, sub)
        if os.path.isdir(folder) and any(f.endswith((".ckpt", ".safetensors")) for f in os.listdir(folder)):
            return kind
    return None


def audio_model_names() -> list[str]:
    """Released Lumina-T2Music / T2Audio folders (one or two levels deep) in the checkpoint folders."""
    return folder_names(CHECKPOINT_FOLDERS, audio_release_kind)


def audio_model_path(name: str) -> str:
    return folder_path(
        CHECKPOINT_FOLDERS, audio_release_kind, name, "Lumina audio model folder",
        "put the whole Lumina-T2Music or Lumina-T2Audio folder (music_generation/ or audio_generation/, maa2/, "
        "the vocoder folder) in models/lumina",
    )


def text_encoder_names_of(model_types: tuple[str, ...]) -> list[str]:
    """Text-encoder folders whose config.json has one of these model_type values (t5, bert, ...)."""
    out = []
    for name in text_encoder_names():
        try:
            with open(os.path.join(text_encoder_path(name), "config.json"), encoding="utf-8") as f:
                model_type = json.load(f).get("model_type")
        except (OSError, ValueError, AttributeError):
            continue
        if model_type in model_types:
            out.append(name)
    return out
