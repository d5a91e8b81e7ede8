"""fp8 weight storage against bf16, for the DiT and the text encoder: the weights held, peak memory,
and the output difference.

    python benchmarks/fp8_weights.py [--model dit|text-encoder|both] [--layers 24] [--side 64] [--malloc fixed|default]

Text encoder: a random Gemma at Gemma-2B's shape (bf16 folder, as released) loaded as the Lumina Text
Encoder Loader does for bf16 and for fp8_e4m3fn (`load_text_encoder` in bf16, then
`lumina.fp8.store_fp8`: the decoder layers' linear weights in fp8, the embedding stays bf16), then
two prompts encoded; the real tokens' features are compared. Its bf16 weights stay mapped from the
file and only the pages the encoding touches become resident, so its peaks are printed but not
compared.

DiT: a random Next-DiT at the 2B model's width (dim 2304, 32 heads, 8 K/V heads, Gemma-2B captions) with
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

from lumina.fp8 import weight_bytes  # noqa: E402


GEMMA_2B = dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
                num_key_value_heads=1, head_dim=256, vocab_size=256000, hidden_act="gelu_pytorch_tanh")
PROMPTS = ["a red circle at the top left on a white background", "a small blue square"]


def run_dit(path: str, mode: str, side: int):
    import torch

    import lumina

    model = lumina.load_model(path, dtype=torch.bfloat16, fp8="fp8_e4m3fn" if mode == "fp8" else None)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, side, side, generator=g)
    feats, mask = torch.randn(2, 64, 2048, generator=g), torch.ones(2, 64, dtype=torch.bool)
    return model(x, torch.tensor([0.3, 0.3]), feats, mask).float(), weight_bytes(model)


def run_text_encoder(path: str, mode: str, side: int):
    """What the Lumina Text Encoder Loader does for bf16 / fp8_e4m3fn, then one encode."""
    import torch

    from lumina.fp8 import store_fp8
    from lumina.text_encoders import load_text_encoder

    encoder = load_text_encoder(path, dtype=torch.bfloat16)
    if mode == "fp8":
        store_fp8(encoder.model, torch.bfloat16, "fp8_e4m3fn")
    cond = encoder.encode(PROMPTS)
    return (cond.cap_feats * cond.cap_mask[..., None]).float(), weight_bytes(encoder.model)  # the real tokens' features


def child(kind: str, path: str, mode: str, side: int, out: str) -> None:
    import torch

    base, reset = rss(), reset_peak()
    with torch.inference_mode():
        result, weights = {"dit": run_dit, "text-encoder": run_text_encoder}[kind](path, mode, side)
    peak_mib = (peak_rss(reset) - base) / 2**20
    torch.save(result, out)
    print(json.dumps({"peak_mib": peak_mib, "weights_mib": weights / 2**20}))


def write_dit(folder: Path, layers: int) -> tuple[str, str]:
    import torch

    import lumina

    torch.manual_seed(0)
    config = lumina.LuminaConfig("next_dit", dim=2304, n_layers=layers, n_heads=32, n_kv_heads=8, cap_feat_dim=2048)
    model = lumina.build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    path = lumina.save_official(model, folder / "model.safetensors")
    params = sum(p.numel() for p in model.parameters())
    return str(path), f"Next-DiT at the 2B width, {layers} layers ({params / 1e6:.0f} M parameters), fp32 file"


def write_text_encoder(folder: Path, layers: int) -> tuple[str, str]:
    """A random Gemma-2B (its shape, `layers` of its 18 blocks; bf16 as released) with the demo
    encoder's tokenizer files (its ids are few, all inside Gemma's vocabulary)."""
    import shutil

    import torch
    from transformers import GemmaConfig, GemmaModel

    torch.manual_seed(0)
    config = GemmaConfig(**{**GEMMA_2B, "num_hidden_layers": min(layers, GEMMA_2B["num_hidden_layers"])})
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: no fp32 copy of 2.5 B parameters first
    try:
        model = GemmaModel(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder / "gemma")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "assets" / "demo" / "shapes_text_encoder" / name, folder / "gemma" / name)
    params = sum(p.numel() for p in model.parameters())
    return str(folder / "gemma"), (f"Gemma at the 2B shape, {config.num_hidden_layers} layers ({params / 1e6:.0f} M "
                                   f"parameters, {model.embed_tokens.weight.numel() / 1e6:.0f} M of them the embedding), bf16 folder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["dit", "text-encoder", "both"], default="both")
    parser.add_argument("--layers", type=int, default=24, help="24 = the released 2B DiT (the text encoder: at most 18)")
    parser.add_argument("--side", type=int, default=64, help="latent side (tokens = (side/2)²)")
    parser.add_argument("--malloc", choices=["fixed", "default"], default="fixed",
                        help="glibc's mmap threshold: fixed at 128 KiB for both runs, or its dynamic default")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path, mode, side, out = args.child
        child(kind, path, mode, int(side), out)
        return
    import torch

    kinds = ["dit", "text-encoder"] if args.model == "both" else [args.model]
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            path, what = {"dit": write_dit, "text-encoder": write_text_encoder}[kind](Path(tmp), args.layers)
            results = {}
            for mode in ("bf16", "fp8"):
                out = str(Path(tmp) / f"{mode}.pt")
                env = {k: v for k, v in os.environ.items() if k not in NO_RETENTION}
                env.update(NO_RETENTION if args.malloc == "fixed" else {})
                proc = subprocess.run([sys.executable, __file__, "--child", kind, path, mode, str(args.side), out],
                                      capture_output=True, text=True, env=env)
                if proc.returncode:
                    raise SystemExit(f"the {kind} {mode} run failed:\n{proc.stderr[-3000:]}")
                results[mode] = (json.loads(proc.stdout.strip().splitlines()[-1]), torch.load(out))
        (b, b_out), (f, f_out) = results["bf16"], results["fp8"]
        rel = float((f_out - b_out).abs().max() / b_out.abs().max())
        task = (f"load + one CFG forward at {(args.side // 2) ** 2} tokens" if kind == "dit"
                else f"load + encoding {len(PROMPTS)} prompts")
        print(f"[fp8 weights] {what}; {task}; CPU, glibc mmap threshold {args.malloc}")
        print(f"weights held: bf16 {b['weights_mib']:.0f} MiB, fp8_e4m3fn {f['weights_mib']:.0f} MiB: "
              f"fp8/bf16 = {f['weights_mib'] / b['weights_mib']:.2f}; output max |fp8 − bf16| / max |bf16| = {rel:.4f}")
        if kind == "dit":  # a file cast on load: every weight is read into memory in both modes
            print(f"peak memory: bf16 {b['peak_mib']:.0f} MiB, fp8_e4m3fn {f['peak_mib']:.0f} MiB: "
                  f"fp8/bf16 = {f['peak_mib'] / b['peak_mib']:.2f}")
        else:  # bf16 weights of a bf16 file stay mapped from it and are read only where touched
            print(f"peak resident memory (bf16: only the pages the encoding touched): bf16 {b['peak_mib']:.0f} MiB, "
                  f"fp8_e4m3fn {f['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
