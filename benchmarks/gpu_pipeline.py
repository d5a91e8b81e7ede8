"""End to end on a GPU: `lumina.sample` against diffusers' LuminaPipeline at 1024², 30 Euler steps,
CFG 4, the same weights, prompt embeddings and starting latent; time ratio, MFU and PSNR.

    python benchmarks/gpu_pipeline.py                        # the 2B Next-DiT shape, bf16, CUDA
    python benchmarks/gpu_pipeline.py --ckpt models/lumina/Lumina-Next-SFT   # real weights
    python benchmarks/gpu_pipeline.py --device cpu --shape tiny --steps 3    # a smoke run anywhere

Both runs sample the same uniform grid with Euler and the official CFG (channels 0–2 guided) without
resolution extrapolation, so their latents agree up to bf16 rounding; the PSNR says how closely.
MFU = the FLOPs of the model calls (torch's FlopCounterMode on one forward, × calls) per second,
over the GPU's dense bf16 peak (`--peak-tflops`, default the H100/H200 SXM's 989).
Interleaved rounds (benchmarks/rounds.py: the order alternates); medians, ours/diffusers and the
paired ratio (the median of the rounds' own ratios) are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
import lumina  # noqa: E402
from lumina.config import LuminaConfig  # noqa: E402
from peers import diffusers_sampler  # noqa: E402
from rounds import interleaved_rounds, paired_ratio  # noqa: E402

SHAPES = {  # dim, layers, heads, kv heads, caption width, latent side
    "2b": (2304, 24, 32, 8, 2048, 128),
    "tiny": (128, 2, 4, 2, 64, 16),
}


def synced(fn: Callable[[], torch.Tensor], sync: Callable[[], None]) -> Callable[[], torch.Tensor]:
    """fn, returning once the device has finished its work (CUDA runs asynchronously)."""
    def call() -> torch.Tensor:
        out = fn()
        sync()
        return out

    return call


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    peak = float(b.max() - b.min())
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak**2 / mse)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", default="2b", choices=list(SHAPES))
    parser.add_argument("--ckpt", help="a released checkpoint instead of random weights at --shape")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dim, layers, heads, kv, cap_dim, side = SHAPES[args.shape]
    if args.ckpt:
        model = lumina.load_model(args.ckpt, dtype=dtype, device=device)
        cap_dim, side = model.config.cap_feat_dim, 128
    else:
        torch.manual_seed(0)
        with torch.device(device):
            model = lumina.build_model(LuminaConfig("next_dit", dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv,
                                                    cap_feat_dim=cap_dim))
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
        model = model.to(dtype).eval()
    g = torch.Generator().manual_seed(0)
    # a 64-token prompt and a 16-token negative prompt, padded to one length (diffusers needs equal shapes)
    cap = torch.randn(1, 64, cap_dim, generator=g)
    neg = torch.nn.functional.pad(torch.randn(1, 16, cap_dim, generator=g), (0, 0, 0, 48))
    mask = torch.ones(1, 64, dtype=torch.long)
    neg_mask = torch.nn.functional.pad(torch.ones(1, 16, dtype=torch.long), (0, 48))
    latent = torch.randn(1, 4, side, side, generator=g)
    cond, uncond = lumina.Conditioning(cap, mask), lumina.Conditioning(neg, neg_mask)
    theirs = diffusers_sampler(model, side, dtype, device)

    def ours() -> torch.Tensor:
        return lumina.sample(model, cond, uncond, latent.shape, noise=latent, steps=args.steps, step_convention="model_steps",
                             solver="euler", schedule="uniform", cfg=4.0)

    def run_theirs() -> torch.Tensor:
        return theirs(cap, mask, neg, neg_mask, latent, args.steps, 4.0)

    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        x = torch.randn(2, 4, side, side, device=device, dtype=dtype)
        feats, feats_mask = torch.cat([cap, neg]).to(device, dtype), torch.cat([mask, neg_mask]).bool().to(device)
        with FlopCounterMode(display=False) as counter:
            model(x, torch.full((2,), 0.5, device=device), feats, feats_mask)
        flops = counter.get_total_flops() * args.steps  # one CFG-batched call per Euler step
        out_ours, out_theirs = ours(), run_theirs()  # warm-up, and the outputs compared
        sync()
        mine, theirs = interleaved_rounds(synced(ours, sync), synced(run_theirs, sync), args.repeats)
    t_ours, t_theirs = statistics.median(mine), statistics.median(theirs)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"[pipeline] {'checkpoint ' + args.ckpt if args.ckpt else args.shape + ' shape, random weights'}, "
          f"{(side // 2) ** 2} tokens, {args.steps} Euler steps, CFG 4, {str(dtype)[6:]} on {where}")
    print(f"ours {t_ours:.2f} s, diffusers {t_theirs:.2f} s: ours/diffusers = {t_ours / t_theirs:.3f} "
          f"(paired {paired_ratio(mine, theirs):.3f}, {len(mine)} rounds)")
    if device.type == "cuda":
        print(f"MFU: ours {flops / t_ours / (args.peak_tflops * 1e12) * 100:.1f} %, diffusers "
              f"{flops / t_theirs / (args.peak_tflops * 1e12) * 100:.1f} % (model FLOPs {flops / 1e12:.1f} TFLOP)")
    else:
        print(f"model FLOPs {flops / 1e9:.1f} GFLOP: ours {flops / t_ours / 1e9:.1f} GFLOP/s, diffusers {flops / t_theirs / 1e9:.1f}")
    print(f"PSNR of ours against diffusers' final latent: {psnr(out_ours.float().cpu(), out_theirs.float().cpu()):.1f} dB")


if __name__ == "__main__":
    main()
