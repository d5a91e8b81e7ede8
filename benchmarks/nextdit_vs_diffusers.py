"""Time our Next-DiT forward against diffusers' LuminaNextDiT2DModel, same weights and inputs, one run.

    python benchmarks/nextdit_vs_diffusers.py            # CPU fp32 mid-size config (the issue's)
    python benchmarks/nextdit_vs_diffusers.py --device cuda --dtype bf16

Prints each median time and ours/diffusers; also checks the two outputs agree.
The RoPE table diffusers needs is built once outside the timed region (its pipeline does the
same once per image); ours builds its rotations inside every forward, so the ratio is fair to it.
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
from lumina.config import LuminaConfig  # noqa: E402


def timed(fn, warmup: int, repeats: int, sync) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


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
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--padded-caption", action="store_true", help="mask out the caption's last quarter")
    args = parser.parse_args()

    from diffusers import LuminaNextDiT2DModel
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    config = LuminaConfig(
        "next_dit", dim=args.dim, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.kv_heads,
        cap_feat_dim=args.cap_dim,
    )
    ours = lumina.build_model(config)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.02)
    with tempfile.TemporaryDirectory() as tmp:
        lumina.save_diffusers(ours, tmp)
        theirs = LuminaNextDiT2DModel.from_pretrained(tmp)
    ours, theirs = ours.to(device, dtype).eval(), theirs.to(device, dtype).eval()

    b, side = args.batch, args.latent
    x = torch.randn(b, 4, side, side, device=device, dtype=dtype)
    t = torch.rand(b, device=device)
    cap = torch.randn(b, args.caption_tokens, args.cap_dim, device=device, dtype=dtype)
    mask = torch.ones(b, args.caption_tokens, dtype=torch.bool, device=device)
    if args.padded_caption:
        mask[:, -args.caption_tokens // 4 :] = False
    rope = get_2d_rotary_pos_embed_lumina(config.head_dim, 384, 384).to(device)

    def run_ours():
        return ours(x, t, cap, mask)

    def run_theirs():
        return theirs(x, t, cap, mask, rope, cross_attention_kwargs={}, return_dict=False)[0][:, :4]

    with torch.inference_mode():
        diff = (run_ours().float() - run_theirs().float()).abs().max().item()
        t_ours = t_theirs = None
        # interleave the two so drifting machine load hits both alike
        samples_ours, samples_theirs = [], []
        for _ in range(args.repeats):
            samples_ours += timed(run_ours, args.warmup if not samples_ours else 0, 1, sync)
            samples_theirs += timed(run_theirs, args.warmup if not samples_theirs else 0, 1, sync)
        t_ours, t_theirs = statistics.median(samples_ours), statistics.median(samples_theirs)

    tokens = (side // 2) ** 2
    print(f"config: dim {args.dim}, {args.layers} layers, {args.heads} heads / {args.kv_heads} kv, "
          f"{tokens} tokens, batch {b}, {args.dtype} on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"max |ours - diffusers| = {diff:.2e}")
    print(f"ours      {t_ours * 1000:9.1f} ms  (median of {args.repeats})")
    print(f"diffusers {t_theirs * 1000:9.1f} ms")
    print(f"ratio ours/diffusers = {t_ours / t_theirs:.3f}")


if __name__ == "__main__":
    main()
