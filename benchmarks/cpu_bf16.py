"""bf16 on a CPU with native bf16 (avx512_bf16 / AMX): speed, and what it does to sampling.

    python benchmarks/cpu_bf16.py [--prompts 147] [--repeats 5]

1. Speed: one CFG forward (batch 2) of a random Next-DiT (dim 768, 8 layers, 1024 tokens) in fp32 and
   bf16, alternating rounds; prints medians and bf16/fp32.
2. The demo model: held-out accuracy (train.shapes.score) sampled in fp32 and in bf16, same seed,
   and the bf16 images' PSNR against the fp32 ones.
3. A released-model width: the 2B Next-DiT's layer shape (dim 2304, 32 heads, 8 K/V heads, Gemma-2B
   captions) with 2 random layers at 512² (1024 tokens), 10 Euler steps with CFG: PSNR of the bf16
   final latent against the fp32 one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lumina  # noqa: E402
from lumina.config import LuminaConfig  # noqa: E402


def random_model(dtype: torch.dtype, **kwargs) -> lumina.LuminaDiT:
    torch.manual_seed(0)
    model = lumina.build_model(LuminaConfig("next_dit", multiple_of=256, **kwargs))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.to(dtype).eval()


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak**2 / mse)).item()


@torch.inference_mode()
def speed(repeats: int) -> None:
    shape = dict(dim=768, n_layers=8, n_heads=12, n_kv_heads=4, cap_feat_dim=2048)
    models = {dt: random_model(dt, **shape) for dt in (torch.float32, torch.bfloat16)}
    g = torch.Generator().manual_seed(0)
    x, feats = torch.randn(2, 4, 64, 64, generator=g), torch.randn(2, 64, 2048, generator=g)
    mask, t = torch.ones(2, 64, dtype=torch.bool), torch.tensor([0.3, 0.3])
    calls = {dt: (lambda m=m: m(x, t, feats, mask)) for dt, m in models.items()}
    for fn in calls.values():
        fn()
    times = {dt: [] for dt in calls}
    for _ in range(repeats):
        for dt, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[dt].append(time.perf_counter() - start)
    f32, b16 = (statistics.median(times[dt]) for dt in (torch.float32, torch.bfloat16))
    out32, out16 = (calls[dt]().float() for dt in (torch.float32, torch.bfloat16))
    rel = ((out16 - out32).abs().max() / out32.abs().max()).item()
    print(f"[bf16 speed] Next-DiT dim 768, 8 layers, 1024 tokens, batch 2, CPU ({torch.get_num_threads()} threads, "
          f"avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, AMX {torch.cpu._is_amx_tile_supported()}): "
          f"fp32 {f32 * 1000:.0f} ms, bf16 {b16 * 1000:.0f} ms, bf16/fp32 = {b16 / f32:.2f}; "
          f"max |bf16 − fp32| / max |fp32| = {rel:.4f}")


@torch.inference_mode()
def demo(prompts: int) -> None:
    from lumina.text_encoders import load_text_encoder
    from train.evaluate import SAMPLER, prompt_set
    from train.shapes import score

    demo_dir = ROOT / "assets" / "demo"
    specs = prompt_set("held_out")[:prompts]
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        model = lumina.load_model(demo_dir / "lumina_shapes", dtype=dt)
        encoder = load_text_encoder(demo_dir / "shapes_text_encoder", dtype=dt)
        side = model.config.base_image_size // model.config.vae_downsample
        images = []
        for start in range(0, len(specs), 64):
            chunk = specs[start : start + 64]
            cond, negative = encoder.encode([s.caption() for s in chunk]), encoder.encode([""])
            images.append(lumina.sample(model, cond, negative, (len(chunk), model.config.in_channels, side, side),
                                        seed=start, **SAMPLER).clamp(-1, 1))
        out[dt] = torch.cat(images)
        print(f"[bf16 demo] {str(dt)[6:]}: " + ", ".join(f"{k} {v:.3f}" for k, v in score(out[dt], specs).items()))
    print(f"[bf16 demo] {len(specs)} held-out prompts: PSNR bf16 vs fp32 images {psnr(out[torch.bfloat16], out[torch.float32], 2.0):.1f} dB")


@torch.inference_mode()
def released_width() -> None:
    shape = dict(dim=2304, n_layers=2, n_heads=32, n_kv_heads=8, cap_feat_dim=2048)
    g = torch.Generator().manual_seed(0)
    cond = lumina.Conditioning(torch.randn(1, 48, 2048, generator=g), torch.ones(1, 48, dtype=torch.bool))
    uncond = lumina.Conditioning(torch.randn(1, 8, 2048, generator=g), torch.ones(1, 8, dtype=torch.bool))
    finals = {}
    for dt in (torch.float32, torch.bfloat16):
        model = random_model(dt, **shape)
        finals[dt] = lumina.sample(model, cond, uncond, (1, 4, 64, 64), seed=1, steps=10, solver="euler", cfg=4.0)
    ref = finals[torch.float32]
    peak = float(ref.max() - ref.min())
    print(f"[bf16 2B width] dim 2304, 2 random layers, 1024 tokens, 10 Euler steps, CFG 4: PSNR of the bf16 final latent "
          f"against fp32 {psnr(finals[torch.bfloat16], ref, peak):.1f} dB (peak = the fp32 latent's range)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=147)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    speed(args.repeats)
    demo(args.prompts)
    released_width()


if __name__ == "__main__":
    main()
