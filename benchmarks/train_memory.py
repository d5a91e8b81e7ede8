"""Peak training memory of Next-DiT 2B at 1024² (4096 image tokens): LoRA vs full fine-tuning, with
and without gradient checkpointing. Target: LoRA fine-tuning fits in 24 GB.

The model (what `--predict` prints, on any machine): static bytes counted exactly from the model
train/ builds (weights in the dtype train/ keeps them in, fp32 gradients and AdamW moments of the
trainable parameters) plus the tensors autograd saves for the backward pass, counted with
saved-tensor hooks while a bf16-autocast forward of a 1- and a 2-block model at the full 2B width
runs on the CPU at two token counts (the counts are linear in blocks and tokens: attention is
SDPA's flash kernel, which keeps O(tokens) state). The per-block and per-token slopes are then
extrapolated to 24 blocks and 4160 tokens. With checkpointing only the block inputs are kept,
plus one block's saved tensors while it is recomputed.

`--cuda` (a GPU machine) builds the real 2B model with train/'s own setup (`trainable_model`: LoRA
adapters, bf16 frozen base, per-block checkpointing), runs optimizer steps exactly like the engine
(accelerate bf16 autocast, flow-matching loss, clipping, AdamW), and prints
torch.cuda.max_memory_allocated beside the prediction.

    .venv/bin/python benchmarks/train_memory.py --predict          # CPU, ~1 min
    python benchmarks/train_memory.py --predict --cuda             # on a GPU machine
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train.config import load_config  # noqa: E402
from train.engine import trainable_model  # noqa: E402
from train.objective import flow_matching_loss  # noqa: E402

GiB = 1024**3
SIDE = 1024  # px; SDXL VAE → 128² latent, patch 2 → 64² = 4096 tokens (+64 [nextline])
CAPTION_TOKENS = 128  # Gemma tokens of a long prompt (the official max_length is 256)
# google/gemma-2b (config: vocab 256000, hidden 2048, 18 layers, 8 query heads × 256, 1 KV head,
# MLP 16384): the frozen encoder's bf16 weights when captions are not cached beforehand
GEMMA_2B_PARAMS = 256000 * 2048 + 18 * (2048 * (2048 + 256 + 256 + 2048) + 3 * 2048 * 16384 + 2 * 2048) + 2048
NEXT_DIT_2B = ["model.family=next_dit", "model.dim=2304", "model.n_layers=24", "model.n_heads=32", "model.n_kv_heads=8",
               "model.patch_size=2", "model.in_channels=4", "model.multiple_of=256", "model.base_image_size=1024",
               "model.vae_downsample=8", "data.image_size=1024", "run.mixed_precision=bf16", "run.ema_decay=0"]


def config_for(mode: str, checkpointing: bool, layers: int | None = None, encoder: str = str(REPO)):
    extra = [f"model.lora_rank={32 if mode == 'lora' else 0}", f"run.gradient_checkpointing={checkpointing}"]
    if layers is not None:
        extra.append(f"model.n_layers={layers}")
    return load_config(None, [*NEXT_DIT_2B, *extra, f"text.encoder={encoder}"])


def static_bytes(model: torch.nn.Module) -> dict[str, int]:
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"weights": params, "grads": 4 * trainable, "adam": 8 * trainable, "trainable": trainable}


def saved_bytes(model: torch.nn.Module, tokens_side: int, device: str = "cpu") -> int:
    """Bytes autograd keeps for backward in one bf16-autocast forward (each storage counted once,
    parameters themselves excluded: they are already counted as weights)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    c = model.config
    side = tokens_side * c.patch_size
    x = torch.randn(1, c.in_channels, side, side, device=device)
    feats = torch.randn(1, CAPTION_TOKENS, c.cap_feat_dim, device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast(device, dtype=torch.bfloat16):
        out = model(x, torch.rand(1, device=device), feats, torch.ones(1, CAPTION_TOKENS, dtype=torch.bool, device=device))
    del out
    return sum(seen.values())


def predict(mode: str, checkpointing: bool) -> dict[str, float]:
    """Extrapolate the saved-activation bytes of 1- and 2-block models at two token counts."""
    measured, static, residual_bytes = {}, {}, 4
    for layers in (1, 2):
        torch.manual_seed(0)
        model, _, _ = trainable_model(config_for(mode, False, layers), 2048)
        static[layers] = static_bytes(model)
        hook = model.layers[0].register_forward_hook(lambda m, i, o: setattr(m, "out_bytes", o.element_size()))
        for side in (8, 16):  # 8² and 16² image tokens
            measured[layers, side] = saved_bytes(model, side)
        residual_bytes = model.layers[0].out_bytes
        hook.remove()
        del model
        gc.collect()
    tokens = {8: 8 * 9, 16: 16 * 17}  # one [nextline] per row
    per_block = {s: measured[2, s] - measured[1, s] for s in tokens}
    outside = {s: measured[1, s] - per_block[s] for s in tokens}

    def at(values: dict[int, int], n: int) -> float:  # linear in tokens through the two measurements
        return values[8] + (values[16] - values[8]) / (tokens[16] - tokens[8]) * (n - tokens[8])

    n_tokens, n_layers = (SIDE // 16) * (SIDE // 16 + 1), 24
    weights, grads_adam, trainable = (
        static[1][k] + (n_layers - 1) * (static[2][k] - static[1][k]) for k in ("weights", "adam", "trainable"))
    grads_adam = grads_adam * 3 // 2  # AdamW's two fp32 moments + the fp32 gradient
    if checkpointing:  # each block keeps only its input; one block's tensors live while it is recomputed
        activations = n_layers * n_tokens * 2304 * residual_bytes + at(per_block, n_tokens) + at(outside, n_tokens)
    else:
        activations = n_layers * at(per_block, n_tokens) + at(outside, n_tokens)
    total = weights + grads_adam + activations
    return {"weights": weights / GiB, "grads+adam": grads_adam / GiB, "activations": activations / GiB,
            "total": total / GiB, "trainable_M": trainable / 1e6,
            "saved_per_block_per_token_KiB": (per_block[16] - per_block[8]) / (tokens[16] - tokens[8]) / 1024}


def measure_cuda(mode: str, checkpointing: bool, steps: int = 3) -> dict[str, float]:
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision="bf16")
    torch.manual_seed(0)
    model, _, trainable = trainable_model(config_for(mode, checkpointing), 2048)
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    model, optimizer = accelerator.prepare(model, optimizer)
    c = accelerator.unwrap_model(model).config
    latent = SIDE // 8
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        data = torch.randn(1, c.in_channels, latent, latent, device="cuda")
        noise, t = torch.randn_like(data), torch.rand(1, device="cuda")
        feats = torch.randn(1, CAPTION_TOKENS, 2048, device="cuda")
        mask = torch.ones(1, CAPTION_TOKENS, dtype=torch.bool, device="cuda")
        with accelerator.autocast():
            loss = flow_matching_loss(model, data, noise, t, feats, mask)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, 2.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / GiB
    del model, optimizer, trainable
    accelerator.free_memory()
    gc.collect()
    torch.cuda.empty_cache()
    return {"peak": peak, "s_per_step": min(timings[1:] or timings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predict", action="store_true", help="the CPU-measured model, extrapolated")
    parser.add_argument("--cuda", action="store_true", help="measure on the GPU (train/'s own setup)")
    parser.add_argument("--modes", default="lora:1,lora:0,full:1,full:0", help="mode:checkpointing list")
    args = parser.parse_args()
    encoder_gib = GEMMA_2B_PARAMS * 2 / GiB
    print(f"Next-DiT 2B, {SIDE}² (4096 image tokens), batch 1, {CAPTION_TOKENS} caption tokens, bf16 autocast, AdamW;"
          f" + Gemma-2B encoder in bf16 if captions are not cached: {encoder_gib:.2f} GiB")
    rows = []
    for item in args.modes.split(","):
        mode, ckpt = item.split(":")
        row = {"mode": mode, "checkpointing": ckpt == "1"}
        if args.predict:
            row["predicted"] = predict(mode, ckpt == "1")
        if args.cuda:
            try:
                row["cuda"] = measure_cuda(mode, ckpt == "1")
            except torch.OutOfMemoryError:
                row["cuda"] = {"peak": float("nan"), "oom": True}
                gc.collect()
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'mode':6} {'ckpt':5} {'predicted GiB':>14} {'measured GiB':>13} {'measured/pred':>14} {'+encoder':>9} fits 24 GB")
    for row in rows:
        pred = row.get("predicted", {}).get("total", float("nan"))
        meas = row.get("cuda", {}).get("peak", float("nan"))
        best = meas if meas == meas else pred
        print(f"{row['mode']:6} {str(row['checkpointing']):5} {pred:14.2f} {meas:13.2f} {meas / pred:14.3f}"
              f" {best + encoder_gib:9.2f} {'yes' if best * GiB <= 24e9 else 'no'} (cached captions)"
              f" / {'yes' if (best + encoder_gib) * GiB <= 24e9 else 'no'} (encoder loaded)")


if __name__ == "__main__":
    main()
