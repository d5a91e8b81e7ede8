"""Helper functions run *inside* the ComfyUI process by `InProcessComfy.call_in_comfy` (never
imported by pytest: ComfyUI's modules only exist there). Each returns something JSON-able."""

from __future__ import annotations

import importlib.util
import sys


def environment() -> dict:
    """What the ComfyUI process sees: the torchvision stand-in, the pack module, sys.path hygiene."""
    import torchvision

    return {
        "torchvision_stub": bool(getattr(torchvision, "IS_STUB", False)),
        # the vendored ComfyUI names the module after the folder, 0.3.64 after its whole path
        "pack_module": any(name.replace("_x_", ".").rsplit("/", 1)[-1] == "comfyui_lumina_t2x" for name in sys.modules),
        "top_level_lumina": importlib.util.find_spec("lumina") is not None,
        "comfy_nodes_module": getattr(sys.modules.get("nodes"), "__file__", None),
    }


def run_text_encoders(folders: list[str], prompts: list[str]) -> dict:
    """Load transformers folders offline and return second-to-last hidden-state facts per folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    out = {}
    for folder in folders:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
        batch = tok(prompts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            h = model(**batch, output_hidden_states=True).hidden_states[-2]
        out[folder] = {"shape": list(h.shape), "finite": bool(torch.isfinite(h).all()),
                       "first_ids": batch["input_ids"][:, 0].tolist(),
                       "tokens": batch["attention_mask"].sum(1).tolist()}
    return out
