"""fp8 weight storage against bf16: peak memory of loading a checkpoint and running a forward, and
the output difference.

    python benchmarks/fp8_weights.py [--layers 24] [--side 64] [--malloc fixed|default]

A random Next-DiT at the 2B model's width (dim 2304, 32 heads, 8 K/V heads, Gemma-2B captions) with
`--layers` blocks is saved once as an official fp32 safetensors file; then each mode runs in its own
process (so each peak is its own): `lumina.load_model(path, bf16)` or `load_model(path, bf16,
fp8="fp8_e4m3fn")` (block weights read straight into fp8) and one CFG forward at a `--side`² latent.
Peak = the process's resident high-water mark (VmHWM, reset after the imports) above its resident
memory then (benchmarks/resident.py; not ru_maxrss, which a child inherits from this parent's
fp32 model). The loader reads the file through mappings of at most 64 MiB of cast data at a time
(lumina.checkpoints.MAPPED_READ_BYTES), so the file's pages are not in that peak.

--malloc fixed (the default) runs both processes with glibc's mmap threshold fixed at 128 KiB
(MALLOC_MMAP_THRESHOLD_): every block that large is its own mapping, returned when freed, so the peak
is what was allocated. --malloc default keeps glibc's dynamic threshold, under which freed blocks
up to 32 MiB stay in the heap: the peak then includes what the allocator kept, which varies from
run to run (fp8 0.55-0.57 of bf16 here, against 0.53 fixed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from resident import NO_RETENTION, peak_rss, reset_peak, rss  # noqa: E402


def child(path: str, mode: str, side: int, out: str) -> None:
    import torch

    import lumina

    base, reset = rss(), reset_peak()
    with torch.inference_mode():
        model = lumina.load_model(path, dtype=torch.bfloat16, fp8="fp8_e4m3fn" if mode == "fp8" else None)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, side, side, generator=g)
        feats, mask = torch.randn(2, 64, 2048, generator=g), torch.ones(2, 64, dtype=torch.bool)
        velocity = model(x, torch.tensor([0.3, 0.3]), feats, mask).float()
    peak_mib = (peak_rss(reset) - base) / 2**20
    torch.save(velocity, out)
    print(json.dumps({"peak_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24, help="24 = the released 2B model")
    parser.add_argument("--side", type=int, default=64, help="latent side (tokens = (side/2)²)")
    parser.add_argument("--malloc", choices=["fixed", "default"], default="fixed",
                        help="glibc's mmap threshold: fixed at 128 KiB for both runs, or its dynamic default")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return
    import torch

    import lumina

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        config = lumina.LuminaConfig("next_dit", dim=2304, n_layers=args.layers, n_heads=32, n_kv_heads=8, cap_feat_dim=2048)
        model = lumina.build_model(config)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
        path = lumina.save_official(model, Path(tmp) / "model.safetensors")
        params = sum(p.numel() for p in model.parameters())
        del model
        results = {}
        for mode in ("bf16", "fp8"):
            out = str(Path(tmp) / f"{mode}.pt")
            env = {k: v for k, v in os.environ.items() if k not in NO_RETENTION}
            env.update(NO_RETENTION if args.malloc == "fixed" else {})
            proc = subprocess.run([sys.executable, __file__, "--child", str(path), mode, str(args.side), out],
                                  capture_output=True, text=True, check=True, env=env)
            results[mode] = (json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"], torch.load(out))
    (b_peak, b_out), (f_peak, f_out) = results["bf16"], results["fp8"]
    rel = float((f_out - b_out).abs().max() / b_out.abs().max())
    print(f"[fp8 weights] Next-DiT at the 2B width, {args.layers} layers ({params / 1e6:.0f} M parameters), "
          f"{(args.side // 2) ** 2} tokens, CFG batch 2, CPU, glibc mmap threshold {args.malloc}")
    print(f"peak memory: bf16 {b_peak:.0f} MiB, fp8_e4m3fn {f_peak:.0f} MiB: fp8/bf16 = {f_peak / b_peak:.2f}; "
          f"forward max |fp8 − bf16| / max |bf16| = {rel:.4f}")


if __name__ == "__main__":
    main()
