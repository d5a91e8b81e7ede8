"""Model folders the pack reads, registered with ComfyUI's folder_paths (never downloads)."""

from __future__ import annotations

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
                         if os.path.splitext(f)[1].lower() in WEIGHT_EXTENSIONS and os.path.basename(f) not in NOT_WEIGHTS)
    return sorted(names)


def checkpoint_path(name: str) -> str:
    for folder in CHECKPOINT_FOLDERS:
        path = folder_paths.get_full_path(folder, name) if folder in folder_paths.folder_names_and_paths else None
        if path:
            return path
    searched = [p for f in CHECKPOINT_FOLDERS for p in folders(f)]
    raise FileNotFoundError(f"Lumina checkpoint {name!r} not found in {searched}; put it in models/lumina")


def text_encoder_names() -> list[str]:
    """Folders (one or two levels deep) holding a transformers config and tokenizer."""
    found: set[str] = set()
    for name in TEXT_ENCODER_FOLDERS:
        for root in folders(name):
            if not os.path.isdir(root):
                continue
            for entry in sorted(os.listdir(root)):
                path = os.path.join(root, entry)
                if is_text_encoder_folder(path):
                    found.add(entry)
                elif os.path.isdir(path):
                    found.update(f"{entry}/{sub}" for sub in os.listdir(path) if is_text_encoder_folder(os.path.join(path, sub)))
    return sorted(found)


def text_encoder_path(name: str) -> str:
    for folder in TEXT_ENCODER_FOLDERS:
        for root in folders(folder):
            path = os.path.join(root, name)
            if is_text_encoder_folder(path):
                return path
    searched = [p for f in TEXT_ENCODER_FOLDERS for p in folders(f)]
    raise FileNotFoundError(
        f"text encoder folder {name!r} not found in {searched}; put the Gemma-2B / LLaMA-2-7B folder in models/text_encoders"
    )
