"""Region-Adaptive Sampling: speed against dense sampling (ours and diffusers'), and what it costs.

    python benchmarks/region_adaptive.py                 # CPU: a mid-size random Next-DiT, 1024 tokens
    python benchmarks/region_adaptive.py --shape 2b      # GPU: the 2B shape at 1024² (4096 tokens), bf16
    python benchmarks/region_adaptive.py --quality       # the demo model: error and shape accuracy

Speed: the same random weights, latent, captions and 30 Euler steps with CFG 4 through
`lumina.sample` dense, `lumina.sample` with RAS (the reference code's defaults: ratio 0.5,
dense calls 0–3, 12 and 22), and diffusers' LuminaPipeline loop (dense, prompt embeddings given,
latent output); prints the ratios. Quality (--quality): the committed demo model on held-out
prompts; each run's distance to a 100-step dense reference and its shape accuracy, for dense 30
steps, RAS, and dense sampling with the step count that costs what RAS costs.
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
import lumina.flow  # noqa: E402
from lumina.config import LuminaConfig  # noqa: E402
from lumina.features.region_adaptive import RegionAdaptive  # noqa: E402
from nextdit_vs_diffusers import timed  # noqa: E402  (this folder is on sys.path when run as a script)
from peers import diffusers_sampler  # noqa: E402

SHAPES = {  # name: (dim, layers, heads, kv heads, caption width, latent side)
    "cpu": (384, 4, 6, 2, 256, 64),
    "2b": (2304, 24, 32, 8, 2048, 128),
}
RAS = RegionAdaptive(0.5, start_step=4, reset_steps=(12, 22))
STEPS = 30


def random_model(dim: int, layers: int, heads: int, kv_heads: int, cap_dim: int, device: str, dtype: torch.dtype):
    torch.manual_seed(0)
    with torch.device(device):
        model = lumina.build_model(LuminaConfig(
            "next_dit", dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads, cap_feat_dim=cap_dim, multiple_of=256,
        ))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.to(dtype).eval()


def speed(shape: str, repeats: int, with_diffusers: bool) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dim, layers, heads, kv, cap_dim, side = SHAPES[shape]
    model = random_model(dim, layers, heads, kv, cap_dim, device, dtype)
    g = torch.Generator().manual_seed(0)
    cap, neg = torch.randn(1, 32, cap_dim, generator=g), torch.randn(1, 32, cap_dim, generator=g)
    mask = torch.ones(1, 32, dtype=torch.long)
    latent = torch.randn(1, 4, side, side, generator=g)
    c, u = lumina.Conditioning(cap, mask), lumina.Conditioning(neg, mask)
    common = dict(noise=latent, steps=STEPS, step_convention="model_steps", solver="euler", schedule="uniform", cfg=4.0)

    def ours(ras=None):
        return lambda: lumina.sample(model, c, u, latent.shape, wrappers=[ras] if ras else [], **common)

    calls = STEPS
    dense_calls = sum(1 for i in range(calls) if not RAS.is_sparse(i))
    computed = (dense_calls + (calls - dense_calls) * RAS.sample_ratio) / calls
    print(f"[RAS] Next-DiT dim {dim}, {layers} layers, {side * side // 4} tokens, {STEPS} Euler steps, CFG 4, "
          f"{dtype} on {torch.cuda.get_device_name() if device == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'}")
    print(f"RAS ratio {RAS.sample_ratio}, dense calls {[i for i in range(calls) if not RAS.is_sparse(i)]}: "
          f"{computed * 100:.0f} % of the patch evaluations of dense sampling")
    t_dense = statistics.median(timed(ours(), 1, repeats, sync))
    t_ras = statistics.median(timed(ours(RAS), 1, repeats, sync))
    dense, sparse = ours()(), ours(RAS)()
    drift = ((sparse - dense).norm() / dense.norm()).item()
    print(f"ours dense {t_dense * 1000:.0f} ms, ours RAS {t_ras * 1000:.0f} ms: speed-up dense/RAS = {t_dense / t_ras:.2f}x "
          f"(relative distance of the RAS latent from the dense one: {drift:.3f}, random weights)")
    if not with_diffusers:
        return
    run_diffusers = diffusers_sampler(model, side, dtype, device)

    def theirs():
        return run_diffusers(cap, mask, neg, mask, latent, STEPS, 4.0)

    t_theirs = statistics.median(timed(theirs, 1, repeats, sync))
    print(f"diffusers LuminaPipeline dense {t_theirs * 1000:.0f} ms: ratio ours RAS/diffusers = {t_ras / t_theirs:.3f}, "
          f"ours dense/diffusers = {t_dense / t_theirs:.3f}")


@torch.inference_mode()
def quality(prompts: int) -> None:
    from lumina.text_encoders import load_text_encoder
    from train.evaluate import prompt_set
    from train.shapes import score

    demo = ROOT / "assets" / "demo"
    model = lumina.load_model(demo / "lumina_shapes" / "consolidated_ema.00-of-01.safetensors", dtype=torch.float32)
    encoder = load_text_encoder(demo / "shapes_text_encoder", dtype=torch.float32)
    specs = prompt_set("held_out")[:prompts]
    side = model.config.base_image_size // model.config.vae_downsample
    cond, negative = encoder.encode([s.caption() for s in specs]), encoder.encode([""])
    shape = (len(specs), model.config.in_channels, side, side)
    settings = dict(step_convention="model_steps", solver="euler", shift=1.0, cfg=3.0, cfg_mode="standard", seed=0)

    def run(steps: int, ras: RegionAdaptive | None = None) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        out = lumina.sample(model, cond, negative, shape, steps=steps, wrappers=[ras] if ras else [], **settings)
        return out, time.perf_counter() - start

    reference, _ = run(100)
    dense_calls = sum(1 for i in range(STEPS) if not RAS.is_sparse(i))
    equal_cost = round(dense_calls + (STEPS - dense_calls) * RAS.sample_ratio)
    print(f"[RAS quality] demo model ({side // model.config.patch_size}² patches), {len(specs)} held-out prompts, "
          f"distance to 100 dense steps and shape accuracy")
    rows = [("dense", STEPS, None), ("RAS 0.5", STEPS, RAS), (f"dense, RAS's cost", equal_cost, None),
            ("RAS 0.5, skip lowest", STEPS, RegionAdaptive(0.5, high_ratio=0.0))]
    for name, steps, ras in rows:
        out, seconds = run(steps, ras)
        distance = ((out - reference).norm() / reference.norm()).item()
        shapes = score(out.clamp(-1, 1).cpu(), specs)["shape"]
        print(f"  {name:22s} {steps:3d} steps  {seconds:5.1f} s  distance {distance:.4f}  shape accuracy {shapes:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-diffusers", action="store_true", help="skip the diffusers peer (it needs the train extra)")
    parser.add_argument("--quality", action="store_true", help="also score the demo model")
    parser.add_argument("--prompts", type=int, default=48)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    speed(args.shape, args.repeats, not args.no_diffusers)
    if args.quality:
        quality(args.prompts)


if __name__ == "__main__":
    main()
