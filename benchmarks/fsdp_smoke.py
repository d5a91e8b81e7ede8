"""FSDP smoke run: a tiny Next-DiT trained 5 steps with `run.distributed=fsdp` (one FSDP unit per
block), on GPUs (NCCL) or CPUs (gloo), compared with the same run in one plain process.

    python benchmarks/fsdp_smoke.py                      # 1 process: 1 GPU, or the CPU
    python benchmarks/fsdp_smoke.py --processes 2        # 2 GPUs (or 2 CPU processes)
    python benchmarks/fsdp_smoke.py --processes 2 --bf16 --lora   # FSDP bf16; LoRA on the trained base (2+ processes)

It launches `python -m torch.distributed.run --standalone --nproc_per_node N -m train fit ...`,
prints (one JSON object) the FSDP units the run logged, whether checkpoints/latest loads with
`lumina.load_model` and runs a forward on the device, and the largest weight difference from the
plain single-process run (fp32: ~1e-7 on CPUs; TF32 or bf16 kernels on GPUs differ more).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from safetensors.torch import load_file

import lumina
from train.tiny_text_encoder import build_text_encoder

TINY = [
    "model.dim=64", "model.n_layers=4", "model.n_heads=4", "model.n_kv_heads=2", "model.patch_size=4",
    "model.multiple_of=16", "model.base_image_size=16", "data.image_size=16", "data.repeats=1",
    "optim.batch_size=8", "optim.lr=2e-3", "optim.warmup_steps=0", "run.log_every=1", "run.ema_decay=0.9",
]


def train(args: list[str], processes: int | None) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [] if processes is None else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd = [sys.executable, *launcher, "-m", "train", "fit", *args]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"training failed ({' '.join(cmd[:8])} ...): exit {done.returncode}")
    return time.perf_counter() - started, done.stderr


def max_difference(a: Path, b: Path) -> float:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys(), sorted(set(x) ^ set(y))
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="run.mixed_precision=bf16 (FSDP: bf16 params, fp32 reduce)")
    parser.add_argument("--lora", action="store_true", help="also LoRA-fine-tune the trained model under FSDP")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "processes": args.processes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = build_text_encoder(tmp / "encoder", seed=0, hidden=32)
        common = [*TINY, f"text.encoder={encoder}", f"optim.steps={args.steps}", f"run.save_every={args.steps}",
                  "run.sample_every=" + str(args.steps), "run.sample_prompts=[a red circle]"]
        if args.bf16:
            common.append("run.mixed_precision=bf16")
        seconds, log = train([*common, f"run.out_dir={tmp / 'fsdp'}", "run.distributed=fsdp"], args.processes)
        units = re.search(r"FSDP units \(root ''\): (\[.*\])", log)
        result["fsdp_units"] = ast.literal_eval(units[1]) if units else None
        result["fsdp_seconds"] = round(seconds, 1)
        _, _ = train([*common, f"run.out_dir={tmp / 'single'}"], None)
        latest = tmp / "fsdp" / "checkpoints" / "latest"
        for name in ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors"):
            result[f"max_diff_vs_single[{name}]"] = max_difference(latest / name, tmp / "single" / "checkpoints" / "latest" / name)
        model = lumina.load_model(latest, dtype=torch.float32, device=device)
        x = torch.randn(2, 3, 16, 16, device=device)
        out = model(x, torch.rand(2, device=device), torch.randn(2, 5, 32, device=device), torch.ones(2, 5, dtype=torch.bool, device=device))
        result["checkpoint_loads"] = bool(torch.isfinite(out).all()) and tuple(out.shape) == (2, 3, 16, 16)
        result["validation_png"] = (tmp / "fsdp" / "samples" / f"step_{args.steps:07d}.png").is_file()
        if args.lora and args.processes < 2:  # train/distributed.py check_fsdp: unsharded units lose frozen weights
            result["lora"] = "skipped: LoRA under FSDP needs 2+ processes (one process shards nothing)"
        elif args.lora:
            base = latest / "consolidated.00-of-01.safetensors"
            lora = [*common, f"model.init_from={base}", "model.lora_rank=4", "run.ema_decay=0"]
            train([*lora, f"run.out_dir={tmp / 'lora_fsdp'}", "run.distributed=fsdp"], args.processes)
            train([*lora, f"run.out_dir={tmp / 'lora_single'}"], None)
            for name in ("lora.safetensors", "consolidated.00-of-01.safetensors"):
                result[f"lora_max_diff_vs_single[{name}]"] = max_difference(
                    tmp / "lora_fsdp" / "checkpoints" / "latest" / name, tmp / "lora_single" / "checkpoints" / "latest" / name)
    result["one_unit_per_block"] = result["fsdp_units"] == ["", *[f"layers.{i}" for i in range(4)]]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
