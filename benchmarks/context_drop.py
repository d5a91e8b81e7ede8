"""Context Drop (Lumina-Next): speed against the dense forward, and what it costs.

    python benchmarks/context_drop.py              # speed at 1K and 4K tokens (CPU, fp32) + quality
    python benchmarks/context_drop.py --no-quality
    python benchmarks/context_drop.py --quality-only --prompts 40

Speed: one CFG forward (batch 2) of the same random Next-DiT, dense and with Context Drop at
ratio 2 (keys and values pooled over 2×2 patches), timed in alternating rounds (dense, dropped,
dense, …) so both see the same machine load; prints medians and dense/dropped.
Quality: the committed demo model at twice its trained side (64 px, where the paper applies it,
with the official extrapolation settings), held-out prompts, the same seed: the dropped images'
PSNR / SSIM against the dense ones (kornia.metrics) and both runs' accuracy (train.shapes.score).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lumina  # noqa: E402
from lumina.config import LuminaConfig  # noqa: E402
from lumina.features import ContextDrop  # noqa: E402


def random_model(dim: int, layers: int, heads: int, kv_heads: int, cap_dim: int) -> lumina.LuminaDiT:
    torch.manual_seed(0)
    model = lumina.build_model(LuminaConfig("next_dit", dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads,
                                            cap_feat_dim=cap_dim, multiple_of=256))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


@torch.inference_mode()
def speed(args: argparse.Namespace) -> None:
    model = random_model(args.dim, args.layers, args.heads, args.kv_heads, args.cap_dim)
    g = torch.Generator().manual_seed(0)
    feats, mask = torch.randn(2, 64, args.cap_dim, generator=g), torch.ones(2, 64, dtype=torch.bool)
    t = torch.tensor([0.3, 0.3])
    dropped = lumina.ForwardOptions(features=(ContextDrop(ratio=2),))
    print(f"[Context Drop] Next-DiT dim {args.dim}, {args.layers} layers, {args.heads} heads ({args.kv_heads} K/V), "
          f"batch 2 (CFG), fp32, CPU ({torch.get_num_threads()} threads); ratio 2 = 1/4 of the keys")
    for tokens in args.tokens:
        side = int(round(tokens ** 0.5)) * 2  # latent side: tokens = (side / 2)²
        x = torch.randn(2, 4, side, side, generator=g)
        dense_fn = lambda: model(x, t, feats, mask)  # noqa: E731
        drop_fn = lambda: model(x, t, feats, mask, dropped)  # noqa: E731
        dense_fn(), drop_fn()  # warm-up
        dense_times, drop_times = [], []
        for _ in range(args.repeats):  # alternating rounds: both sides see the same load
            for fn, times in ((dense_fn, dense_times), (drop_fn, drop_times)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        d, c = statistics.median(dense_times), statistics.median(drop_times)
        print(f"{(side // 2) ** 2} tokens: dense {d * 1000:.0f} ms, Context Drop {c * 1000:.0f} ms: "
              f"speed-up dense/dropped = {d / c:.2f}x")


@torch.inference_mode()
def quality(prompts: int, end_time: float = 1.0) -> None:
    from kornia.metrics import psnr, ssim

    from lumina.extrapolation import extrapolation_options
    from lumina.text_encoders import load_text_encoder
    from train.evaluate import SAMPLER, prompt_set
    from train.shapes import score

    demo = ROOT / "assets" / "demo"
    model = lumina.load_model(demo / "lumina_shapes", dtype=torch.float32)
    encoder = load_text_encoder(demo / "shapes_text_encoder", dtype=torch.float32)
    specs = prompt_set("held_out")[:prompts]
    trained = model.config.base_image_size // model.config.vae_downsample
    side = 2 * trained
    options = extrapolation_options(model.config, side * model.config.vae_downsample, side * model.config.vae_downsample, "auto")
    cond, negative = encoder.encode([s.caption() for s in specs]), encoder.encode([""])
    shape = (len(specs), model.config.in_channels, side, side)

    def run(opts: lumina.ForwardOptions) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        out = lumina.sample(model, cond, negative, shape, seed=0, options=opts, **SAMPLER)
        return out.clamp(-1, 1), time.perf_counter() - start

    dense, t_dense = run(options)
    dropped, t_drop = run(replace(options, features=(ContextDrop(end_time=end_time),)))  # auto ratio: 2 here
    to01 = lambda im: (im + 1) / 2  # noqa: E731
    p = psnr(to01(dropped), to01(dense), 1.0).item()
    s = ssim(to01(dropped), to01(dense), 7).mean().item()
    print(f"[Context Drop quality] demo model at {side}×{side} px (trained {trained}), {len(specs)} held-out prompts, "
          f"{SAMPLER['steps']} Euler steps, extrapolation auto; Context Drop while t < {end_time}")
    print(f"dropped vs dense: PSNR {p:.1f} dB, SSIM {s:.3f}; time dense {t_dense:.1f} s, dropped {t_drop:.1f} s")
    for name, images in (("dense", dense), ("Context Drop", dropped)):
        acc = score(images, specs)
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--cap-dim", type=int, default=2048)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--end-time", type=float, default=1.0, help="Context Drop runs while t < end_time")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--quality-only", action="store_true")
    args = parser.parse_args()
    if not args.quality_only:
        speed(args)
    if not args.no_quality:
        quality(args.prompts, args.end_time)


if __name__ == "__main__":
    main()
