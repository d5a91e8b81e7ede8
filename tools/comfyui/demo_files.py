"""The embedded demo (assets/demo) where ComfyUI's loaders look in a workspace: the models
(assets/demo/lumina_shapes*, in models/lumina/), the text encoder (models/text_encoders/), the
LoRAs (models/loras/, for core LoraLoaderModelOnly) and the edit demo's input picture. Used by
scripts/demo, the thumbnails and the e2e and browser tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from .workspace import REPO_ROOT

DEMO = REPO_ROOT / "assets" / "demo"
DEMO_LORAS = DEMO / "loras"
DEMO_INPUT = "demo_shapes_input.png"


def demo_models() -> list[Path]:
    """The committed demo model folders (lumina_shapes: images; lumina_shapes_video: clips)."""
    return sorted(p for p in DEMO.glob("lumina_shapes*") if p.is_dir())


def link_demo_loras(models_dir: Path) -> list[str]:
    """Symlink every demo LoRA into `models_dir`/loras/ (made if missing; a file already there is
    kept); returns the names now present from the demo."""
    loras = Path(models_dir) / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    names = []
    for lora in sorted(DEMO_LORAS.glob("*.safetensors")):
        link = loras / lora.name
        if not link.exists():
            link.symlink_to(lora)
        names.append(lora.name)
    return names


def link_demo_files(models_dir: Path, input_dir: Path) -> bool:
    """Link the demo models, text encoder and LoRAs into `models_dir` (links already there are
    kept) and copy the edit input into `input_dir`; False when the demo is not committed."""
    models = demo_models()
    if not models:
        return False
    links = [(Path(models_dir) / "lumina" / m.name, m) for m in models]
    links.append((Path(models_dir) / "text_encoders" / "shapes_text_encoder", DEMO / "shapes_text_encoder"))
    for link, target in links:
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    shutil.copy(DEMO / DEMO_INPUT, Path(input_dir) / DEMO_INPUT)
    link_demo_loras(models_dir)
    return True
