"""Sampler overhead and end-to-end sampling speed against diffusers' LuminaPipeline (formerly LuminaText2ImgPipeline).

    python benchmarks/sampler.py

1. Overhead: a full `lumina.sample` run on a tiny model, minus the time spent inside model
   calls, as a fraction of the total (target ≤ 3 %).
2. The same weights, latent, captions, step count and solver (Euler, CFG 4) through diffusers'
   pipeline loop (prompt embeddings given, latent output, so neither runs a text encoder or VAE)
   and through `lumina.sample`; prints ours/diffusers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lumina  # noqa: E402
import lumina.flow  # noqa: E402
from lumina.config import LuminaConfig  # noqa: E402


def random_model(dim: int, layers: int, heads: int, kv_heads: int, cap_dim: int) -> lumina.LuminaDiT:
    torch.manual_seed(0)
    model = lumina.build_model(
        LuminaConfig("next_dit", dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads, cap_feat_dim=cap_dim, multiple_of=32)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def overhead(model: lumina.LuminaDiT, cond, uncond, shape, steps: int, repeats: int) -> tuple[float, float]:
    """(median total seconds, median fraction of it spent outside model calls)."""
    inside = 0.0
    forward = model.forward

    def timed_forward(*args, **kwargs):
        nonlocal inside
        start = time.perf_counter()
        out = forward(*args, **kwargs)
        inside += time.perf_counter() - start
        return out

    model.forward = timed_forward  # instance attribute, removed below: the class stays untouched
    totals, fractions = [], []
    try:
        for _ in range(repeats + 1):
            inside = 0.0
            start = time.perf_counter()
            lumina.sample(model, cond, uncond, shape, steps=steps, step_convention="model_steps", seed=1)
            total = time.perf_counter() - start
            totals.append(total)
            fractions.append((total - inside) / total)
    finally:
        del model.forward
    return statistics.median(totals[1:]), statistics.median(fractions[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    # 1. overhead on a tiny model (the golden sets' size), 32×32 latent
    tiny = random_model(128, 2, 4, 2, 48)
    g = torch.Generator().manual_seed(0)
    cond = lumina.Conditioning(torch.randn(1, 12, 48, generator=g), torch.ones(1, 12, dtype=torch.bool))
    uncond = lumina.Conditioning(torch.randn(1, 3, 48, generator=g), torch.ones(1, 3, dtype=torch.bool))
    total, frac = overhead(tiny, cond, uncond, (1, 4, 32, 32), args.steps, args.repeats)
    print(f"[overhead] tiny Next-DiT (dim 128, 2 layers), 32x32 latent, {args.steps} Euler steps, CFG: "
          f"total {total * 1000:.1f} ms, outside the model {frac * 100:.2f} % (target <= 3 %)")

    # 2. against diffusers' pipeline loop
    from diffusers import FlowMatchEulerDiscreteScheduler, LuminaNextDiT2DModel, LuminaPipeline

    model = random_model(384, 4, 6, 2, 256)
    with tempfile.TemporaryDirectory() as tmp:
        lumina.save_diffusers(model, tmp)
        transformer = LuminaNextDiT2DModel.from_pretrained(tmp).eval()
    pipe = LuminaPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None
    )
    pipe.set_progress_bar_config(disable=True)
    side = 48  # latent side → 384 px, 576 tokens
    pipe.default_image_size = side * 8  # diffusers scales RoPE by size / default size: keep it at 1
    cap = torch.randn(1, 16, 256, generator=g)
    neg = torch.randn(1, 16, 256, generator=g)
    mask = torch.ones(1, 16, dtype=torch.long)
    latent = torch.randn(1, 4, side, side, generator=g)

    def run_diffusers():
        return pipe(
            prompt_embeds=cap, prompt_attention_mask=mask, negative_prompt_embeds=neg, negative_prompt_attention_mask=mask,
            latents=latent.clone(), height=side * 8, width=side * 8, num_inference_steps=args.steps,
            guidance_scale=4.0, output_type="latent", scaling_watershed=1.0, proportional_attn=False,
            sigmas=[float(lumina.flow.sigma_from_t(t)) for t in grid[:-1]],  # the scheduler appends sigma 0
        ).images

    c, u = lumina.Conditioning(cap, mask), lumina.Conditioning(neg, mask)
    grid = lumina.flow.time_grid(args.steps, "uniform", convention="model_steps")

    def run_ours():
        return lumina.sample(model, c, u, latent.shape, noise=latent, steps=args.steps, step_convention="model_steps",
                             solver="euler", schedule="uniform", cfg=4.0)

    agreement = (run_ours() - run_diffusers()).abs().max().item()
    ours, theirs = [], []
    for i in range(args.repeats + 1):
        for fn, bucket in ((run_ours, ours), (run_diffusers, theirs)):
            start = time.perf_counter()
            fn()
            if i:  # the first round warms up
                bucket.append(time.perf_counter() - start)
    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"[vs diffusers] Next-DiT dim 384, 4 layers, {side * side // 4} tokens, {args.steps} Euler steps, CFG 4, fp32 CPU, "
          f"{torch.get_num_threads()} threads")
    print(f"same grid (t = k/{args.steps}), same final latent: max |ours - diffusers| = {agreement:.2e}")
    print(f"ours {t_ours * 1000:.0f} ms, diffusers LuminaPipeline {t_theirs * 1000:.0f} ms, "
          f"ratio ours/diffusers = {t_ours / t_theirs:.3f}")


if __name__ == "__main__":
    main()
