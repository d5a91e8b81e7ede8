"""Thumbnails for the templates browser: workflows/<name>.jpg beside each workflows/<name>.json
(ComfyUI 0.3.64 serves a pack's workflows/ under /api/workflow_templates/<pack>/ and its
frontend shows <name>.jpg for each template).

    .venv/bin/python -m tools.comfyui.thumbnails

- demo_shapes_*: a real output of that workflow, run in the vendored ComfyUI on the embedded demo
  model (a batch, or an animation's frames, as a 2×2 grid);
- released-model workflows: a placeholder saying so and naming the files the workflow loads.
256×256 JPEG, a few KB each.
"""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageSequence

from . import ComfyServer, Workspace, find_comfyui
from .demo_files import link_demo_files
from .workspace import REPO_ROOT

WORKFLOWS = REPO_ROOT / "workflows"
SIDE = 256
FILE_INPUTS = ("ckpt_name", "text_encoder", "vae_name", "image", "model_folder", "t5_encoder", "bert_encoder")
NOT_FILES = {"none"}  # a loader input left empty (Lumina Audio Model Loader's bert_encoder for music)


def needed_files(api: dict) -> list[str]:
    """The model files and input images a workflow loads, in graph order, once each."""
    seen: list[str] = []
    for node in api.values():
        for key in FILE_INPUTS:
            value = node["inputs"].get(key)
            if isinstance(value, str) and value not in seen and value not in NOT_FILES:
                seen.append(value)
    return seen


def placeholder(name: str, files: list[str]) -> Image.Image:
    img = Image.new("RGB", (SIDE, SIDE), (32, 36, 44))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)
    y = 12
    for line in textwrap.wrap(name.replace("_", " "), 30):
        draw.text((12, y), line, fill=(235, 235, 235), font=font)
        y += 17
    y += 8
    draw.text((12, y), "needs these files (not in the repo):", fill=(250, 200, 90), font=small)
    y += 16
    for f in files:
        for i, line in enumerate(textwrap.wrap(f, 36)):
            draw.text((12, y), ("- " if i == 0 else "  ") + line, fill=(200, 205, 215), font=small)
            y += 14
    draw.text((12, SIDE - 22), "no preview: not run in this repository", fill=(140, 145, 155), font=small)
    return img


def grid(paths: list[Path]) -> Image.Image:
    """One picture as it is; a batch, or the frames of an animation, as a 2×2 grid (first four)."""
    images = []
    for path in paths:
        with Image.open(path) as img:
            images += [frame.convert("RGB") for frame in ImageSequence.Iterator(img)]
    if len(images) == 1:
        return images[0].resize((SIDE, SIDE), Image.NEAREST)
    cols = 2
    cell = SIDE // cols
    out = Image.new("RGB", (SIDE, SIDE), (0, 0, 0))
    for i, img in enumerate(images[:4]):
        out.paste(img.resize((cell, cell), Image.NEAREST), ((i % cols) * cell, (i // cols) * cell))
    return out


def run_demos(names: list[str]) -> dict[str, Image.Image]:
    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit("the demo thumbnails need the vendored ComfyUI: bash .ci/venv")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create(tmp)
        link_demo_files(ws.models_dir, ws.input_dir)
        server = ComfyServer(ws, comfyui, name="thumbnails").start()
        try:
            for name in names:
                entry = server.run(json.loads((WORKFLOWS / "api" / f"{name}.json").read_text()), timeout=300)
                out[name] = grid(server.output_files(entry))
        finally:
            server.stop()
    return out


def main() -> None:
    names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    demos = run_demos([n for n in names if n.startswith("demo_")])
    for name in names:
        image = demos.get(name) or placeholder(name, needed_files(json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())))
        path = WORKFLOWS / f"{name}.jpg"
        image.save(path, "JPEG", quality=85, optimize=True)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    sys.exit(main())
