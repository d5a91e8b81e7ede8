"""Score a shapes model: sample a fixed prompt set and read colour, position, size and shape back
from the images by simple statistics (train.shapes.measure).

    python -m train.evaluate runs/shapes_demo/checkpoints/latest --encoder assets/demo/shapes_text_encoder
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

import lumina
from lumina.text_encoders import load_text_encoder

from .shapes import Spec, score, split

SAMPLER = dict(steps=20, step_convention="model_steps", solver="euler", schedule="shift", shift=1.0, cfg=3.0, cfg_mode="standard")


def prompt_set(which: str, seed: int = 0, count: int | None = None) -> list[Spec]:
    """The held-out combinations (every background), or a fixed sample of seen ones."""
    train_specs, held_out = split(seed=seed)
    specs = held_out if which == "held_out" else train_specs
    if count is not None and count < len(specs):
        specs = random.Random(1234).sample(specs, count)
    return specs


@torch.inference_mode()
def generate(model: lumina.LuminaDiT, encoder, specs: list[Spec], seed: int = 0, batch: int = 64) -> torch.Tensor:
    """(N, 3, H, W) images in [-1, 1], one per spec, sampled with SAMPLER settings."""
    side = model.config.base_image_size // model.config.vae_downsample
    negative = encoder.encode([""])
    out = []
    for start in range(0, len(specs), batch):
        chunk = specs[start : start + batch]
        cond = encoder.encode([s.caption() for s in chunk])
        out.append(lumina.sample(model, cond, negative, (len(chunk), model.config.in_channels, side, side),
                                 seed=seed + start, **SAMPLER))
    return torch.cat(out).clamp(-1, 1).cpu()


def evaluate(checkpoint: str | Path, encoder_folder: str | Path, which: str = "held_out", count: int | None = None) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = lumina.load_model(checkpoint, dtype=torch.float32, device=device)
    encoder = load_text_encoder(encoder_folder, dtype=torch.float32, device=device)
    specs = prompt_set(which, count=count)
    return {"prompts": len(specs), **score(generate(model, encoder, specs), specs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--seen", type=int, default=150, help="how many seen combinations to score too")
    args = parser.parse_args()
    print(json.dumps({"held_out": evaluate(args.checkpoint, args.encoder, "held_out"),
                      "seen": evaluate(args.checkpoint, args.encoder, "seen", args.seen)}, indent=1))


if __name__ == "__main__":
    main()
