"""The embedded demo's LoRAs (assets/demo/loras/*.safetensors) where core LoraLoaderModelOnly looks:
models/loras/ of a workspace. Used by scripts/demo, the thumbnails and the e2e and browser tests
(the demo_shapes_lora workflow loads blue_background.safetensors from there)."""

from __future__ import annotations

from pathlib import Path

from .workspace import REPO_ROOT

DEMO_LORAS = REPO_ROOT / "assets" / "demo" / "loras"


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
