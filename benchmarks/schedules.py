"""Few-step accuracy of the time schedules: the official time shift against uniform and sigmoid grids.

    python benchmarks/schedules.py [--prompts 32] [--steps 5 10 20]

The committed demo model samples held-out prompts (CFG 3, standard) with each schedule, solver
and step count; each result's distance to a 200-step rk4 solution of the same ODE is printed
(relative L2 over the batch), with the ratio to the official shift-4 grid, then the image-space
PSNR (dB) and SSIM to that solution (kornia.metrics, per image then averaged) on the pictures
in [0, 1]: the demo model works in pixel space, so its latent is the image. The Lumina-Next paper
introduces a sigmoid discretisation for few-step sampling; `schedule="sigmoid"` is our own
parameterisation of it (lumina.flow.sigmoid_time_grid), since the paper's constants are not
available here. This measures whether it does what the paper says it is for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from kornia.metrics import psnr, ssim

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lumina  # noqa: E402
from lumina.pixels import to_unit  # noqa: E402

SSIM_WINDOW = 11  # the usual Gaussian window; "valid" padding so no score comes from padded borders

SCHEDULES = {  # label: lumina.sample settings
    "shift 4 (official)": dict(schedule="shift", shift=4.0),
    "shift 2": dict(schedule="shift", shift=2.0),
    "uniform": dict(schedule="uniform"),
    "sigmoid 2": dict(schedule="sigmoid", sigmoid_scale=2.0),
    "sigmoid 4 (default)": dict(schedule="sigmoid", sigmoid_scale=4.0),
    "sigmoid 6": dict(schedule="sigmoid", sigmoid_scale=6.0),
}


def image_scores(images: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(mean PSNR in dB, mean SSIM) of (B, 3, H, W) images in [0, 1] against the reference's."""
    per_image = [psnr(x[None], r[None], max_val=1.0) for x, r in zip(images, reference, strict=True)]
    structural = ssim(images, reference, SSIM_WINDOW, max_val=1.0, padding="valid").mean(dim=(1, 2, 3))
    return torch.stack(per_image).mean().item(), structural.mean().item()


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    args = parser.parse_args()

    from lumina.text_encoders import load_text_encoder
    from train.evaluate import prompt_set

    demo = ROOT / "assets" / "demo"
    model = lumina.load_model(demo / "lumina_shapes" / "consolidated_ema.00-of-01.safetensors", dtype=torch.float32)
    if model.config.vae_downsample != 1:
        raise SystemExit("the image metrics need a pixel-space model (vae_downsample 1); this one needs a VAE to decode")
    encoder = load_text_encoder(demo / "shapes_text_encoder", dtype=torch.float32)
    specs = prompt_set("held_out")[: args.prompts]
    cond, negative = encoder.encode([s.caption() for s in specs]), encoder.encode([""])
    side = model.config.base_image_size // model.config.vae_downsample
    shape = (len(specs), model.config.in_channels, side, side)
    common = dict(step_convention="model_steps", cfg=3.0, cfg_mode="standard", seed=0)
    reference = lumina.sample(model, cond, negative, shape, steps=200, solver="rk4", schedule="uniform", **common)
    reference_images = to_unit(reference)

    print(f"[schedules] demo model, {len(specs)} held-out prompts: distance to a 200-step rk4 solution "
          f"(ratio to the official shift-4 grid), PSNR dB, SSIM")
    for solver in ("euler", "midpoint"):
        for steps in args.steps:
            distances, images = {}, {}
            for label, settings in SCHEDULES.items():
                out = lumina.sample(model, cond, negative, shape, steps=steps, solver=solver, **settings, **common)
                distances[label] = ((out - reference).norm() / reference.norm()).item()
                images[label] = image_scores(to_unit(out), reference_images)
            official = distances["shift 4 (official)"]
            cells = "  ".join(f"{label} {d:.4f} ({d / official:.2f}) {images[label][0]:.2f} dB {images[label][1]:.4f}"
                              for label, d in distances.items())
            print(f"  {solver:8s} {steps:3d} steps: {cells}")


if __name__ == "__main__":
    main()
