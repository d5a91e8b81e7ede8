"""Make the registry icon `assets/icon.png`: four pictures the embedded demo model draws (a 2×2
grid of 32×32 samples, each shown at 128×128 with nearest-neighbour upscaling), so the icon shows
what the pack really makes. Deterministic:

    .venv/bin/python tools/make_icon.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lumina  # noqa: E402
from lumina.pixels import to_unit  # noqa: E402
from lumina.text_encoders import load_text_encoder  # noqa: E402

PROMPTS = (
    "a large red circle at the center on a white background",
    "a large blue square at the center on a black background",
    "a large yellow triangle at the center on a gray background",
    "a large green circle at the center on a black background",
)
TILE = 128


@torch.inference_mode()
def main(out: Path = REPO / "assets" / "icon.png") -> Path:
    demo = REPO / "assets" / "demo"
    model = lumina.load_model(demo / "lumina_shapes", dtype=torch.float32)
    encoder = load_text_encoder(demo / "shapes_text_encoder", dtype=torch.float32)
    side = model.config.base_image_size // model.config.vae_downsample
    images = lumina.sample(model, encoder.encode(list(PROMPTS)), encoder.encode([""]), (len(PROMPTS), 3, side, side),
                           seed=1, steps=20, step_convention="model_steps", solver="euler", shift=1.0, cfg=3.0,
                           cfg_mode="standard")
    pixels = (to_unit(images.clamp(-1, 1)) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    icon = Image.new("RGB", (2 * TILE, 2 * TILE))
    for i, tile in enumerate(pixels):
        icon.paste(Image.fromarray(tile).resize((TILE, TILE), Image.NEAREST), ((i % 2) * TILE, (i // 2) * TILE))
    icon.save(out, optimize=True)
    return out


if __name__ == "__main__":
    print(main())
