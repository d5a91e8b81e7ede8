"""The training loop on CPU: the loss falls, resuming is exact, two processes agree with one,
checkpoints load with lumina.load_model, and bad configs fail before any work starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import TINY
from safetensors.torch import load_file

import lumina
from train.config import ConfigError, load_config
from train.engine import fit

REPO = Path(__file__).resolve().parents[2]


def run(encoder: str, out: Path, steps: int, *extra: str) -> Path:
    config = load_config(None, [*TINY, f"text.encoder={encoder}", f"run.out_dir={out}", f"optim.steps={steps}",
                                f"run.save_every={steps}", *extra])
    return fit(config)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_loss_falls(encoder, tmp_path):
    out = run(encoder, tmp_path / "run", 80, "optim.batch_size=16")
    values = losses(out)
    first, last = sum(values[:10]) / 10, sum(values[-10:]) / 10
    assert last < 0.7 * first, f"loss {first:.3f} → {last:.3f} did not fall by 30 %"


def test_progress_bar_on_stderr(encoder, tmp_path, capsys):
    run(encoder, tmp_path / "bar", 3)
    err = capsys.readouterr().err
    assert "train: 100%" in err and "3/3" in err
    run(encoder, tmp_path / "quiet", 2, "run.progress=false")
    assert "train:" not in capsys.readouterr().err


def test_checkpoints_load_with_lumina(encoder, tmp_path):
    out = run(encoder, tmp_path / "run", 3)
    for name in ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors"):
        model = lumina.load_model(out / "checkpoints" / "latest" / name)
        assert model.config.in_channels == 3 and model.config.vae_downsample == 1 and model.config.base_image_size == 16
    assert lumina.load_model(out / "checkpoints" / "latest").config.dim == 32  # the folder: EMA preferred


def test_resume_is_bit_identical(encoder, tmp_path):
    straight = run(encoder, tmp_path / "straight", 12)
    run(encoder, tmp_path / "resumed", 5)
    resumed = run(encoder, tmp_path / "resumed", 12)
    for name in ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors"):
        a = load_file(straight / "checkpoints" / "latest" / name)
        b = load_file(resumed / "checkpoints" / "latest" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("override, message", [
    ("optim.nonsense=1", "unknown config key optim.nonsense"),
    ("optimizer.lr=1", "unknown config section [optimizer]"),
    ("optim.batch_size=0", "optim.batch_size=0 must be a positive multiple"),
    ("data.image_size=18", "not a multiple of patch_size × vae_downsample = 4"),
    ("data.kind=folder", "data.path=None does not exist"),
    ("optim.lr=fast", "optim.lr must be a float"),
    ("run.mixed_precision=fp16", "fp16 is unusable on CPUs"),
    ("optim.lr_schedule=linear", "choose constant or cosine"),
    ("optim.min_lr=1.0", "optim.min_lr=1.0 must be in [0, optim.lr=0.002]"),
])
def test_bad_configs_fail_before_work(encoder, tmp_path, override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [*TINY, f"text.encoder={encoder}", f"run.out_dir={tmp_path}", override])
    assert message in str(info.value)
    assert not (tmp_path / "log.jsonl").exists()


def test_compiled_training_follows_eager(encoder, tmp_path):
    """run.compile: the blocks through torch.compile; same losses and weights within float rounding
    (Adam amplifies rounding of near-zero gradients, hence the weight tolerance), same checkpoint keys."""
    eager = run(encoder, tmp_path / "eager", 6)
    compiled = run(encoder, tmp_path / "compiled", 6, "run.compile=true")
    torch.testing.assert_close(losses(compiled), losses(eager), rtol=1e-4, atol=0)
    for name in ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors"):
        a, b = load_file(eager / "checkpoints" / "latest" / name), load_file(compiled / "checkpoints" / "latest" / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=2e-4, msg=f"{name} {key}")


@pytest.mark.parametrize("override", ["run.gradient_checkpointing=true", "run.distributed=fsdp"])
def test_compile_refuses_what_it_cannot_trace(encoder, tmp_path, override):
    with pytest.raises(ConfigError, match="run.compile=true trains one process"):
        load_config(None, [*TINY, f"text.encoder={encoder}", f"run.out_dir={tmp_path}", "run.compile=true", override])


def test_learning_rate_schedules(encoder):
    from train.engine import lr_at

    base = [*TINY, f"text.encoder={encoder}", "optim.steps=110", "optim.warmup_steps=10", "optim.lr=1e-3"]
    constant = load_config(None, base)
    cosine = load_config(None, [*base, "optim.lr_schedule=cosine", "optim.min_lr=1e-4"])
    for config in (constant, cosine):  # the same linear warm-up
        assert lr_at(0, config) == pytest.approx(1e-4) and lr_at(9, config) == pytest.approx(1e-3)
    assert [lr_at(s, constant) for s in (10, 60, 109)] == [1e-3] * 3
    assert lr_at(10, cosine) == pytest.approx(1e-3)
    assert lr_at(60, cosine) == pytest.approx(5.5e-4)  # half way: the mean of lr and min_lr
    assert lr_at(110, cosine) == pytest.approx(1e-4)
    falling = [lr_at(s, cosine) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(falling, falling[1:]))


def test_missing_text_encoder_and_cli_exit_code(tmp_path):
    with pytest.raises(ConfigError, match="text.encoder"):
        load_config(None, ["text.encoder=/nonexistent"])
    bad = tmp_path / "run.yaml"
    bad.write_text("optim:\n  steps: 0\n")
    done = subprocess.run([sys.executable, "-m", "train", "fit", "--config", str(bad), "optim.lr=1e-3"], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 2 and "config error" in done.stderr


def test_lora_trains_only_adapters_and_exports_kohya_keys(encoder, tmp_path):
    base = run(encoder, tmp_path / "base", 3) / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors"
    out = run(encoder, tmp_path / "lora", 8, f"model.init_from={base}", "model.lora_rank=4", "optim.lr=1e-2")
    before = load_file(base)
    trained = load_file(out / "state" / "model.safetensors")
    adapters = {k for k in trained if "lora_" in k}
    assert adapters and all(".lora_A." in k or ".lora_B." in k for k in adapters)
    for key, value in trained.items():  # every base weight is exactly as it was
        if key not in adapters:
            assert torch.equal(value, before[key.replace(".base_layer.", ".")]), key
    assert any(trained[k].abs().max() > 0 for k in adapters if ".lora_B." in k)  # B starts at zero and moved

    lora = load_file(out / "checkpoints" / "latest" / "lora.safetensors")
    merged = load_file(out / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors")
    key = "lora_unet_layers_0_attention_wq"
    assert {f"{key}.lora_down.weight", f"{key}.lora_up.weight", f"{key}.alpha"} <= set(lora)
    rank = lora[f"{key}.lora_down.weight"].shape[0]
    delta = lora[f"{key}.lora_up.weight"] @ lora[f"{key}.lora_down.weight"] * (lora[f"{key}.alpha"] / rank)
    torch.testing.assert_close(before["layers.0.attention.wq.weight"] + delta, merged["layers.0.attention.wq.weight"])


def test_bf16_lora_keeps_frozen_weights_in_bf16(encoder, tmp_path):
    from train.engine import trainable_model

    base = run(encoder, tmp_path / "base", 2) / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors"
    args = [*TINY, f"text.encoder={encoder}", f"model.init_from={base}", "model.lora_rank=4", "run.mixed_precision=bf16",
            "run.ema_decay=null"]  # unset: no EMA for LoRA
    model, ema, trainable = trainable_model(load_config(None, args), 32)
    assert ema is None and trainable and all(p.dtype == torch.float32 for p in trainable)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    # accelerate fixes the mixed precision once per process: train in a fresh one
    out = tmp_path / "lora"
    cli = [*args, f"run.out_dir={out}", "optim.steps=4", "run.save_every=4", "optim.lr=1e-2"]
    done = subprocess.run([sys.executable, "-m", "train", "fit", *cli], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses(out))
    merged = lumina.load_model(out / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors", dtype=torch.float32)
    before = load_file(base)
    moved = (merged.state_dict()["layers.0.attention.wq.weight"] - before["layers.0.attention.wq.weight"]).abs().max()
    assert 0 < moved < 1.0  # the adapters were merged into the (bf16-rounded) base


def test_validation_images_and_tensorboard(encoder, tmp_path):
    out = run(encoder, tmp_path / "run", 4, "run.sample_every=2", "run.tensorboard=true",
              "run.sample_prompts=[a small red circle at the top left on a white background, a large blue square]")
    from PIL import Image

    pngs = sorted((out / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["step_0000002.png", "step_0000004.png"]
    with Image.open(pngs[-1]) as img:
        assert img.size == (32, 16)  # two 16 px prompts side by side
    assert any((out / "tensorboard").rglob("events.out.tfevents*"))
