"""Compiled vs eager vs diffusers: our Next-DiT forward with `lumina.compile_model` (inductor), the same
model eager, and diffusers' LuminaNextDiT2DModel, same weights and inputs, interleaved rounds.

    python benchmarks/compile.py                 # CPU fp32 at the issue's shape (dim 768, 8 layers, 1024 tokens, batch 2)
    python benchmarks/compile.py --device cuda --dtype bf16

Prints the compile time (the first compiled call, and lumina.compile_stats), each median, the
ratios compiled/diffusers, eager/diffusers and compiled/eager, how far the outputs are apart,
and the load average before and after (the CPU may be shared). The RoPE table diffusers needs is
built once outside the timed region, as in benchmarks/nextdit_vs_diffusers.py; ours builds its
rotations inside every forward.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lumina  # noqa: E402
from lumina.config import LuminaConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--latent", type=int, default=64, help="latent side; tokens = (latent/2)^2")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--caption-tokens", type=int, default=64)
    parser.add_argument("--cap-dim", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--mode", default="default", choices=list(lumina.compile.COMPILE_MODES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each times all three once)")
    parser.add_argument("--padded-caption", action="store_true", help="mask out the caption's last quarter")
    args = parser.parse_args()

    from diffusers import LuminaNextDiT2DModel
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    load_before = os.getloadavg()
    torch.manual_seed(0)
    config = LuminaConfig(
        "next_dit", dim=args.dim, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.kv_heads,
        cap_feat_dim=args.cap_dim,
    )
    eager = lumina.build_model(config)
    with torch.no_grad():
        for p in eager.parameters():
            p.normal_(0, 0.02)
    with tempfile.TemporaryDirectory() as tmp:
        lumina.save_diffusers(eager, tmp)
        theirs = LuminaNextDiT2DModel.from_pretrained(tmp)
    eager, theirs = eager.to(device, dtype).eval(), theirs.to(device, dtype).eval()
    compiled = lumina.compile_model(eager, mode=args.mode)

    b, side = args.batch, args.latent
    with torch.inference_mode():  # inference tensors, as lumina.sample and ComfyUI make them
        x = torch.randn(b, 4, side, side, device=device, dtype=dtype)
        t = torch.rand(b, device=device)
        cap = torch.randn(b, args.caption_tokens, args.cap_dim, device=device, dtype=dtype)
        mask = torch.ones(b, args.caption_tokens, dtype=torch.bool, device=device)
        if args.padded_caption:
            mask[:, -args.caption_tokens // 4 :] = False
        rope = get_2d_rotary_pos_embed_lumina(config.head_dim, 384, 384).to(device)

    runs = {
        "eager": lambda: eager(x, t, cap, mask),
        "compiled": lambda: compiled(x, t, cap, mask),
        "diffusers": lambda: theirs(x, t, cap, mask, rope, cross_attention_kwargs={}, return_dict=False)[0][:, :4],
    }

    def timed(name: str) -> tuple[float, torch.Tensor]:
        sync()
        start = time.perf_counter()
        out = runs[name]()
        sync()
        return time.perf_counter() - start, out

    with torch.inference_mode():
        first_call, out_compiled = timed("compiled")  # compiles
        stats = lumina.compile_stats(compiled)
        _, out_eager = timed("eager")
        _, out_theirs = timed("diffusers")  # warm-up of the other two
        samples: dict[str, list[float]] = {name: [] for name in runs}
        order = list(runs)
        for r in range(args.rounds):  # interleaved, rotating who goes first, so drifting load hits all alike
            for name in order[r % 3 :] + order[: r % 3]:
                samples[name].append(timed(name)[0])
        recompiles = lumina.compile_stats(compiled).compiles - stats.compiles

    scale = out_eager.float().abs().max().item()
    median = {name: statistics.median(s) for name, s in samples.items()}
    tokens = (side // 2) ** 2
    print(f"config: dim {args.dim}, {args.layers} layers, {args.heads} heads / {args.kv_heads} kv, {tokens} tokens, batch {b}, "
          f"caption {args.caption_tokens}{' (last quarter padded)' if args.padded_caption else ''}, {args.dtype} on {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, compile mode {args.mode}")
    print(f"compile: first compiled call {first_call:.1f} s ({stats.compiles} compiling block call(s), "
          f"{stats.compile_seconds:.1f} s); recompiles while timing: {recompiles}")
    print(f"max |compiled - eager| / max |eager| = {(out_compiled.float() - out_eager.float()).abs().max().item() / scale:.2e}, "
          f"max |eager - diffusers| / max |eager| = {(out_eager.float() - out_theirs.float()).abs().max().item() / scale:.2e}")
    for name in runs:
        spread = ", ".join(f"{s * 1000:.0f}" for s in samples[name])
        print(f"{name:9s} {median[name] * 1000:9.1f} ms  (median of {args.rounds}: {spread})")
    print(f"ratio compiled/diffusers = {median['compiled'] / median['diffusers']:.3f}  (target <= 0.65)")
    print(f"ratio eager/diffusers    = {median['eager'] / median['diffusers']:.3f}")
    print(f"ratio compiled/eager     = {median['compiled'] / median['eager']:.3f}")
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
