"""Does `data.sources` keep what the demo model knew? Teach it "on a blue background" (a background
it never saw, in words it knows) with train/configs/demo_lora.yaml, once from the concept folder
alone and once mixed with the shapes as the config mixes them, then score both against the base
model (README "Fine-tune" has the table and the sweep behind the config's values):

    .venv/bin/python -m train.prior_preservation --out runs/prior_preservation
    .venv/bin/python -m train.prior_preservation --only mixed --prior-weight 1 --set model.lora_rank=8   # one sweep row
    .venv/bin/python -m train.prior_preservation --only mixed --no-score \
        --lora-out assets/demo/loras/blue_background.safetensors                                    # the demo LoRA

held_out_all: train.evaluate's held-out accuracy (all four attributes right) on the original
prompts (white, black and gray backgrounds; sampling seed 0); blue / white / gray: of 24 prompts
per background, how many images show it in all four corners (each channel within 60/255). Prints
one JSON object per model. Every setting not given (--steps, --lr, --prior-weight, --set) is
demo_lora.yaml's, so its values are this script's defaults.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

import lumina
from lumina.text_encoders import load_text_encoder

from . import shapes
from .evaluate import SAMPLER, generate
from .evaluate import prompt_set as evaluate_prompts
from .shapes import score

REPO = Path(__file__).resolve().parents[1]
ENCODER = REPO / "assets" / "demo" / "shapes_text_encoder"
BASE = REPO / "assets" / "demo" / "lumina_shapes" / "consolidated_ema.00-of-01.safetensors"
CONFIG = REPO / "train" / "configs" / "demo_lora.yaml"
CONCEPT = "blue"
COLOURS = [c for c in shapes.COLOURS if c != CONCEPT]  # a blue shape on blue would not show


@contextmanager
def concept_background():
    """The new background known to train.shapes (Spec, render) inside the block only: held-out
    accuracy is measured on the original prompts, whose backgrounds are white, black and gray (with
    blue added, the held-out set would also ask for blue backgrounds, blue shapes on them included)."""
    added = CONCEPT not in shapes.BACKGROUNDS
    shapes.BACKGROUNDS[CONCEPT] = shapes.COLOURS[CONCEPT]
    try:
        yield
    finally:
        if added:
            del shapes.BACKGROUNDS[CONCEPT]


def write_concept(folder: Path, count: int = 64, seed: int = 0) -> Path:
    """`count` shapes on a blue background with their captions (img.png + img.txt)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with concept_background():
        for i in range(count):
            spec = shapes.Spec(rng.choice(COLOURS), rng.choice(shapes.SHAPES), rng.choice(shapes.SIZES),
                               rng.choice(shapes.POSITIONS), CONCEPT)
            Image.fromarray(shapes.render(spec, 32, rng)).save(folder / f"{i:03d}.png")
            (folder / f"{i:03d}.txt").write_text(spec.caption())
    return folder


def load_with_lora(lora: Path, base: Path = BASE, strength: float = 1.0) -> lumina.LuminaDiT:
    """The base model with a kohya LoRA file (train.lora's format) added into its weights, as core
    LoraLoaderModelOnly applies it: W += strength · alpha/rank · up @ down."""
    model = lumina.load_model(base, dtype=torch.float32)
    tensors = load_file(str(lora))
    modules = {"lora_unet_" + name.replace(".", "_"): module for name, module in model.named_modules()}
    keys = sorted({k.rsplit(".", 2)[0] for k in tensors})
    with torch.no_grad():
        for key in keys:
            if key not in modules:
                raise ValueError(f"{lora}: {key} names no module of {base}; is it a LoRA of this model?")
            down, up = tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"]
            modules[key].weight += strength * float(tensors[f"{key}.alpha"]) / down.shape[0] * (up @ down)
    return model


def _model(checkpoint: Path | lumina.LuminaDiT) -> lumina.LuminaDiT:
    return checkpoint if isinstance(checkpoint, torch.nn.Module) else lumina.load_model(checkpoint, dtype=torch.float32)


@torch.inference_mode()
def held_out(checkpoint: Path | lumina.LuminaDiT) -> float:
    """train.evaluate's held-out accuracy (all four attributes right) on the original prompts."""
    specs = evaluate_prompts("held_out")
    return score(generate(_model(checkpoint), load_text_encoder(ENCODER, dtype=torch.float32), specs), specs)["all"]


@torch.inference_mode()
def background_right(checkpoint: Path | lumina.LuminaDiT, background: str, count: int = 24) -> int:
    """How many of `count` prompts "... on a <background> background" show it in all four corners."""
    model = _model(checkpoint)
    encoder = load_text_encoder(ENCODER, dtype=torch.float32)
    rng = np.random.default_rng(1)
    with concept_background():
        specs = [shapes.Spec(rng.choice(COLOURS), rng.choice(shapes.SHAPES), "small", rng.choice(shapes.POSITIONS), background)
                 for _ in range(count)]
        colour = np.asarray(shapes.BACKGROUNDS[background])
    out = lumina.sample(model, encoder.encode([s.caption() for s in specs]), encoder.encode([""]), (count, 3, 32, 32),
                        seed=0, **SAMPLER)
    px = ((out.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    corners = np.stack([px[:, :3, :3], px[:, :3, -3:], px[:, -3:, :3], px[:, -3:, -3:]], 1).reshape(count, -1, 3).mean(1)
    return int((np.abs(corners - colour).max(1) < 60).sum())


def scores(checkpoint: Path | lumina.LuminaDiT) -> dict[str, float]:
    model = _model(checkpoint)
    return {"held_out_all": round(held_out(model), 3), **{bg: background_right(model, bg) for bg in (CONCEPT, "white", "gray")}}


def mixed_sources(folder: Path, prior_weight: float | None = None) -> list[dict[str, Any]]:
    """demo_lora.yaml's data.sources with its folder pointed at `folder` (and the shapes' weight
    replaced by `prior_weight` when given)."""
    sources = yaml.safe_load(CONFIG.read_text())["data"]["sources"]
    for source in sources:
        if source["kind"] == "folder":
            source["path"] = str(folder)
        elif source["kind"] == "shapes" and prior_weight is not None:
            source["weight"] = prior_weight
    return sources


def flow(sources: list[dict[str, Any]]) -> str:
    """A sources list as one YAML flow-style override value."""
    return yaml.safe_dump(sources, default_flow_style=True, width=10_000).strip()


def train(run: Path, sources: list[dict[str, Any]], overrides: list[str]) -> float:
    """One `python -m train fit` of demo_lora.yaml with `sources` and `overrides`; its seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "train", "fit", "--config", str(CONFIG), f"data.sources={flow(sources)}",
                           f"run.out_dir={run}", "run.progress=false", "run.resume=false", *overrides],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"train fit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/prior_preservation", help="working folder (concept images, runs)")
    parser.add_argument("--only", action="append", choices=("base", "folder", "mixed"),
                        help="score only these rows (repeatable; default all three)")
    parser.add_argument("--steps", type=int, help="optim.steps (default: demo_lora.yaml's)")
    parser.add_argument("--lr", type=float, help="optim.lr (default: demo_lora.yaml's)")
    parser.add_argument("--prior-weight", type=float, help="the shapes source's weight, the folder's being 1 (default: the yaml's)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="more config overrides")
    parser.add_argument("--name", default="", help="a label for this row and its run folder")
    parser.add_argument("--lora-out", type=Path, help="copy the mixed run's LoRA here (its EMA when kept, as `train export`)")
    parser.add_argument("--no-score", action="store_true", help="train only")
    args = parser.parse_args()
    rows = args.only or ["base", "folder", "mixed"]
    out = Path(args.out).resolve()
    folder = write_concept(out / "blue_background")
    overrides = [f"optim.steps={args.steps}"] * (args.steps is not None) + [f"optim.lr={args.lr}"] * (args.lr is not None)
    overrides += args.set
    settings = " ".join(overrides + ([f"prior_weight={args.prior_weight}"] if args.prior_weight is not None else []))
    if "base" in rows and not args.no_score:
        print(json.dumps({"model": "base", **scores(BASE)}), flush=True)
    mixes = {"folder only": [{"kind": "folder", "path": str(folder)}],
             "folder + shapes": mixed_sources(folder, args.prior_weight)}
    for name, sources in mixes.items():
        if ("folder" if name == "folder only" else "mixed") not in rows:
            continue
        run = out / ((args.name + "_") * bool(args.name) + name.replace(" ", "_").replace("+", "and"))
        seconds = train(run, sources, overrides + ["run.save_every=1000000"])
        latest = run / "checkpoints" / "latest"  # the adapters' EMA merged when the run kept one (as sample/export)
        if args.lora_out and name != "folder only":
            args.lora_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(next(p for p in (latest / "lora_ema.safetensors", latest / "lora.safetensors") if p.is_file()),
                            args.lora_out)
            print(f"wrote {args.lora_out}", flush=True)
        if args.no_score:
            continue
        merged = next(p for p in (latest / "consolidated_ema.00-of-01.safetensors", latest / "consolidated.00-of-01.safetensors")
                      if p.is_file())
        print(json.dumps({"model": f"LoRA, {name}", "name": args.name, "settings": settings, "train_seconds": round(seconds),
                          **scores(merged)}), flush=True)


if __name__ == "__main__":
    main()
