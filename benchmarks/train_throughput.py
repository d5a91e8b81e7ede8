"""Training throughput: train/'s accelerate loop against a plain hand-written PyTorch loop over the
same model, data, batch and objective, in one run (CPU). Target: ours ≥ 0.95× the plain loop.

    .venv/bin/python benchmarks/train_throughput.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lumina.text_encoders import load_text_encoder  # noqa: E402
from train.config import load_config  # noqa: E402
from train.data import build_dataset  # noqa: E402
from train.engine import CaptionCache, build_model, fit  # noqa: E402
from train.objective import draw_noise_and_t, flow_matching_loss  # noqa: E402
from train.tiny_text_encoder import build_text_encoder  # noqa: E402


def plain_loop(config, steps: int) -> float:
    """The minimal loop a researcher would write: no EMA, no logging, no checkpoints."""
    encoder = load_text_encoder(config.text.encoder, dtype=torch.float32)
    captions = CaptionCache(encoder)
    model = build_model(config, encoder.hidden_size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr)
    dataset = build_dataset(config)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.optim.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=lambda items: items, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    batches = iter(loader)
    start = None
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # the first step warms up
        items = next(batches)
        images = torch.stack([img for img, _ in items])
        cond = captions([c for _, c in items], images.device)
        noise, t = draw_noise_and_t(tuple(images.shape), g)
        loss = flow_matching_loss(model, images, noise, t, cond.cap_feats, cond.cap_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * config.optim.batch_size / (time.perf_counter() - start)


def ours(config, steps: int) -> float:
    out = fit(config)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]  # log_every=1: time between the end of step 1 and of the last step
    return (last["step"] - first["step"]) * config.optim.batch_size / (last["seconds"] - first["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = build_text_encoder(Path(tmp) / "te", seed=0)
        overrides = [f"text.encoder={encoder}", f"optim.steps={args.steps + 1}", "run.log_every=1",
                     f"run.save_every={10 ** 6}", "run.resume=false", "data.repeats=8"]
        config = load_config(REPO / "train" / "configs" / "shapes_demo.yaml", [*overrides, f"run.out_dir={tmp}/ours"])
        rate_plain = plain_loop(config, args.steps)
        rate_ours = ours(config, args.steps)
        rate_plain_again = plain_loop(config, args.steps)  # bracket ours so drifting load hits both alike
    plain = (rate_plain + rate_plain_again) / 2
    print(f"shapes demo model (3.8 M parameters, 32×32 px, batch {config.optim.batch_size}), fp32 CPU, "
          f"{torch.get_num_threads()} threads, {args.steps} timed steps each")
    print(f"plain PyTorch loop {plain:.1f} samples/s, train/ (accelerate, EMA, logging) {rate_ours:.1f} samples/s, "
          f"ratio ours/plain = {rate_ours / plain:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
