"""Gate sparsity on the committed demo model: what each threshold skips and what it changes.

    python benchmarks/gate_sparsity.py [--prompts 40] [--thresholds 0.02 0.05 0.1]

For each threshold: heads and whole layers whose |tanh(gate)| is below it, the cross-attention and
forward FLOPs saved at the demo's size, and the sampled images' PSNR against dense sampling (same
held-out prompts and seed) with both runs' accuracy (train.shapes.score).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lumina  # noqa: E402
from lumina.features import GateSparsity, gate_report  # noqa: E402


@torch.inference_mode()
def main() -> None:
    from kornia.metrics import psnr

    from lumina.text_encoders import load_text_encoder
    from train.evaluate import SAMPLER, prompt_set
    from train.shapes import score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    args = parser.parse_args()
    demo = ROOT / "assets" / "demo"
    model = lumina.load_model(demo / "lumina_shapes", dtype=torch.float32)
    encoder = load_text_encoder(demo / "shapes_text_encoder", dtype=torch.float32)
    specs = prompt_set("held_out")[: args.prompts]
    side = model.config.base_image_size // model.config.vae_downsample
    cond, negative = encoder.encode([s.caption() for s in specs]), encoder.encode([""])
    shape = (len(specs), model.config.in_channels, side, side)
    tokens = (side // model.config.patch_size) ** 2

    def run(features=()) -> torch.Tensor:
        return lumina.sample(model, cond, negative, shape, seed=0, options=lumina.ForwardOptions(features=features),
                             **SAMPLER).clamp(-1, 1)

    dense = run()
    print(f"[gate sparsity] demo model, {len(specs)} held-out prompts, {tokens} tokens, caption {cond.length} tokens")
    print("dense: " + ", ".join(f"{k} {v:.2f}" for k, v in score(dense, specs).items()))
    for threshold in args.thresholds:
        report = gate_report(model, threshold, tokens, cond.length)
        images = run((GateSparsity(threshold),))
        p = psnr((images + 1) / 2, (dense + 1) / 2, 1.0).item()
        acc = score(images, specs)
        print(f"threshold {threshold}: {report['heads_skipped']:.0f}/{report['heads']:.0f} heads, "
              f"{report['layers_skipped']:.0f}/{report['layers']:.0f} whole layers skipped; FLOPs saved: cross-attention "
              f"{report['cross_attention_flops_saved'] * 100:.0f} %, forward {report['forward_flops_saved'] * 100:.1f} %; "
              f"PSNR vs dense {p:.1f} dB; " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))


if __name__ == "__main__":
    main()
