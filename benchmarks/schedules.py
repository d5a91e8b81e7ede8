"""Few-step accuracy of the time schedules: the official time shift against uniform and sigmoid grids.

    python benchmarks/schedules.py [--prompts 32] [--steps 5 10 20]

The committed demo model samples held-out prompts (CFG 3, standard) with each schedule, solver
and step count; each result's distance to a 200-step rk4 solution of the same ODE is printed
(relative L2 over the batch), with the ratio to the official shift-4 grid. The Lumina-Next paper
introduces a sigmoid discretisation for few-step sampling; `schedule="sigmoid"` is our own
parameterisation of it (lumina.flow.sigmoid_time_grid), since the paper's constants are not
available here. This measures whether it does what the paper says it is for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lumina  # noqa: E402

SCHEDULES = {  # label: lumina.sample settings
    "shift 4 (official)": dict(schedule="shift", shift=4.0),
    "shift 2": dict(schedule="shift", shift=2.0),
    "uniform": dict(schedule="uniform"),
    "sigmoid 2": dict(schedule="sigmoid", sigmoid_scale=2.0),
    "sigmoid 4 (default)": dict(schedule="sigmoid", sigmoid_scale=4.0),
    "sigmoid 6": dict(schedule="sigmoid", sigmoid_scale=6.0),
}


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
    encoder = load_text_encoder(demo / "shapes_text_encoder", dtype=torch.float32)
    specs = prompt_set("held_out")[: args.prompts]
    cond, negative = encoder.encode([s.caption() for s in specs]), encoder.encode([""])
    side = model.config.base_image_size // model.config.vae_downsample
    shape = (len(specs), model.config.in_channels, side, side)
    common = dict(step_convention="model_steps", cfg=3.0, cfg_mode="standard", seed=0)
    reference = lumina.sample(model, cond, negative, shape, steps=200, solver="rk4", schedule="uniform", **common)

    print(f"[schedules] demo model, {len(specs)} held-out prompts: distance to a 200-step rk4 solution "
          f"(ratio to the official shift-4 grid)")
    for solver in ("euler", "midpoint"):
        for steps in args.steps:
            distances = {}
            for label, settings in SCHEDULES.items():
                out = lumina.sample(model, cond, negative, shape, steps=steps, solver=solver, **settings, **common)
                distances[label] = ((out - reference).norm() / reference.norm()).item()
            official = distances["shift 4 (official)"]
            cells = "  ".join(f"{label} {d:.4f} ({d / official:.2f})" for label, d in distances.items())
            print(f"  {solver:8s} {steps:3d} steps: {cells}")


if __name__ == "__main__":
    main()
