"""Does `data.sources` keep what the demo model knew? Teach it "on a blue background" (a background
it never saw, in words it knows) with train/configs/demo_lora.yaml, once from the concept folder
alone and once mixed 1:1 with the shapes, then score both against the base model:

    .venv/bin/python -m train.prior_preservation --out runs/prior_preservation [--steps 150]

held_out_all: train.evaluate's held-out accuracy (all four attributes right) on the original
prompts; blue / white / gray: of 24 prompts per background, how many images show it in all four
corners (each channel within 60/255). Prints one JSON object per model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import lumina
from lumina.text_encoders import load_text_encoder

from . import shapes
from .evaluate import SAMPLER, evaluate

REPO = Path(__file__).resolve().parents[1]
ENCODER = REPO / "assets" / "demo" / "shapes_text_encoder"
BASE = REPO / "assets" / "demo" / "lumina_shapes" / "consolidated_ema.00-of-01.safetensors"
CONCEPT = "blue"
COLOURS = [c for c in shapes.COLOURS if c != CONCEPT]  # a blue shape on blue would not show


def write_concept(folder: Path, count: int = 64, seed: int = 0) -> Path:
    """`count` shapes on a blue background with their captions (img.png + img.txt)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        spec = shapes.Spec(rng.choice(COLOURS), rng.choice(shapes.SHAPES), rng.choice(shapes.SIZES),
                           rng.choice(shapes.POSITIONS), CONCEPT)
        Image.fromarray(shapes.render(spec, 32, rng)).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(spec.caption())
    return folder


@torch.inference_mode()
def background_right(checkpoint: Path, background: str, count: int = 24) -> int:
    """How many of `count` prompts "... on a <background> background" show it in all four corners."""
    model = lumina.load_model(checkpoint, dtype=torch.float32)
    encoder = load_text_encoder(ENCODER, dtype=torch.float32)
    rng = np.random.default_rng(1)
    specs = [shapes.Spec(rng.choice(COLOURS), rng.choice(shapes.SHAPES), "small", rng.choice(shapes.POSITIONS), background)
             for _ in range(count)]
    out = lumina.sample(model, encoder.encode([s.caption() for s in specs]), encoder.encode([""]), (count, 3, 32, 32),
                        seed=0, **SAMPLER)
    px = ((out.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    corners = np.stack([px[:, :3, :3], px[:, :3, -3:], px[:, -3:, :3], px[:, -3:, -3:]], 1).reshape(count, -1, 3).mean(1)
    return int((np.abs(corners - np.asarray(shapes.BACKGROUNDS[background])).max(1) < 60).sum())


def scores(checkpoint: Path) -> dict[str, float]:
    return {"held_out_all": round(evaluate(checkpoint, ENCODER, "held_out")["all"], 3),
            **{bg: background_right(checkpoint, bg) for bg in (CONCEPT, "white", "gray")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/prior_preservation", help="working folder (concept images, two runs)")
    parser.add_argument("--steps", type=int, default=150)  # demo_lora.yaml's optim values
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    shapes.BACKGROUNDS[CONCEPT] = shapes.COLOURS[CONCEPT]  # the new background (this process only)
    out = Path(args.out).resolve()
    folder = write_concept(out / "blue_background")
    print(json.dumps({"model": "base", **scores(BASE)}), flush=True)
    mixes = {"folder only": f"[{{kind: folder, path: {folder}}}]",
             "folder + shapes 1:1": f"[{{kind: folder, path: {folder}, weight: 1}}, {{kind: shapes, weight: 1}}]"}
    for name, sources in mixes.items():
        run = out / name.replace(" ", "_").replace(":", "_").replace("+", "and")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "train", "fit", "--config", "train/configs/demo_lora.yaml",
                        f"data.sources={sources}", f"run.out_dir={run}", "run.progress=false", "run.resume=false",
                        f"optim.steps={args.steps}", f"optim.batch_size={args.batch}", f"optim.lr={args.lr}",
                        f"run.save_every={args.steps}"], cwd=REPO, check=True, capture_output=True)
        seconds = round(time.perf_counter() - started)
        merged = run / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors"
        print(json.dumps({"model": f"LoRA, {name}", "train_seconds": seconds, **scores(merged)}), flush=True)


if __name__ == "__main__":
    main()
