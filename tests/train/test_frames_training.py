"""Training on frames: 5-D latents through Next-DiT (3-D RoPE) and Flag-DiT ([nextframe] token) on
the procedural moving shapes and on a folder of clips in (frames, height, width) buckets; resume,
LoRA, validation clips, and the configs a frames model refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import FRAMES_TINY, moving_frames, write_frame_folder, write_video
from safetensors.torch import load_file

import lumina
import train.engine
from train.config import ConfigError, load_config
from train.engine import fit

WEIGHTS = ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors")


def config(encoder: str, out: Path, steps: int, *extra: str):
    return load_config(None, [*FRAMES_TINY, "data.kind=moving_shapes", f"text.encoder={encoder}", f"run.out_dir={out}",
                              f"optim.steps={steps}", f"run.save_every={steps}", *extra])


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def record_batches(monkeypatch) -> list:
    """The shape of every step's data as the loss sees it."""
    seen = []
    loss = train.engine.flow_matching_loss

    def recording(model, data, *args, **kwargs):
        seen.append(tuple(data.shape) if isinstance(data, torch.Tensor) else [tuple(d.shape) for d in data])
        return loss(model, data, *args, **kwargs)

    monkeypatch.setattr(train.engine, "flow_matching_loss", recording)
    return seen


@pytest.mark.parametrize("family", ["next_dit", "flag_dit"])
def test_loss_falls_on_moving_shapes(encoder, tmp_path, monkeypatch, family):
    seen = record_batches(monkeypatch)
    kv = ["model.n_kv_heads=1"] if family == "next_dit" else []
    out = fit(config(encoder, tmp_path / family, 30, f"model.family={family}", "run.ema_decay=0", *kv))
    assert set(seen) == {(8, 3, 4, 16, 16)}  # (batch, channels, frames, height, width): one 5-D tensor a step
    values = losses(out)
    first, last = sum(values[:10]) / 10, sum(values[-10:]) / 10
    print(f"{family}: mean loss of the first 10 steps {first:.4f}, of the last 10 {last:.4f}")
    assert last < 0.9 * first, f"loss {first:.3f} → {last:.3f} did not fall by 10 %"
    model = lumina.load_model(out / "checkpoints" / "latest" / WEIGHTS[0])
    assert model.config.family == family and model.config.nextframe_token == (family == "flag_dit")


def test_resume_on_frames_is_bit_identical(encoder, tmp_path):
    straight = fit(config(encoder, tmp_path / "straight", 6, "model.n_kv_heads=1"))
    fit(config(encoder, tmp_path / "resumed", 3, "model.n_kv_heads=1"))
    resumed = fit(config(encoder, tmp_path / "resumed", 6, "model.n_kv_heads=1"))
    for name in WEIGHTS:
        a = load_file(straight / "checkpoints" / "latest" / name)
        b = load_file(resumed / "checkpoints" / "latest" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_lora_on_a_flag_dit_frames_model(encoder, tmp_path):
    base = fit(config(encoder, tmp_path / "base", 2, "model.family=flag_dit")) / "checkpoints" / "latest" / WEIGHTS[0]
    out = fit(config(encoder, tmp_path / "lora", 5, "model.family=flag_dit", f"model.init_from={base}",
                     "model.lora_rank=4", "optim.lr=1e-2"))
    before = load_file(base)
    trained = load_file(out / "state" / "model.safetensors")
    adapters = {k for k in trained if "lora_" in k}
    assert adapters and torch.equal(trained["nextframe_token"], before["nextframe_token"])  # frozen like every base weight
    assert any(trained[k].abs().max() > 0 for k in adapters if ".lora_B." in k)
    lora = load_file(out / "checkpoints" / "latest" / "lora.safetensors")
    assert "lora_unet_layers_0_attention_wq.lora_down.weight" in lora
    merged = lumina.load_model(out / "checkpoints" / "latest" / WEIGHTS[0])
    assert merged.config.nextframe_token
    with torch.no_grad():  # the merged model takes clips
        out5 = merged(torch.randn(1, 3, 4, 16, 16), 0.5, torch.randn(1, 3, 32))
    assert out5.shape == (1, 3, 4, 16, 16)


def test_validation_samples_are_animated_webp(encoder, tmp_path):
    from PIL import Image

    out = fit(config(encoder, tmp_path / "run", 2, "model.n_kv_heads=1", "run.sample_every=2",
                     "run.sample_prompts=[a small red circle moving right on a white background, a large blue square moving up on a black background]"))
    webp = out / "samples" / "step_0000002.webp"
    with Image.open(webp) as img:
        assert img.is_animated and img.n_frames == 4 and img.size == (32, 16)  # two 16-px clips side by side


def test_a_clip_folder_trains_in_batches_of_one_bucket(encoder, tmp_path, monkeypatch):
    root = tmp_path / "clips"
    for i in range(4):  # square clips: 6 frames, 3 frames
        write_video(root / f"square{i}.mp4", moving_frames(6, 32, 32, seed=i))
        (root / f"square{i}.txt").write_text(f"a large {('red', 'blue', 'green', 'yellow')[i]} square")
        write_frame_folder(root / f"short{i}", moving_frames(3, 32, 32, seed=10 + i), caption=f"a small {('red', 'blue', 'green', 'yellow')[i]} circle")
    seen = record_batches(monkeypatch)
    cfg = load_config(None, [*FRAMES_TINY, "data.kind=folder", f"data.path={root}", "data.min_frames=2",
                             "data.bucket_top_k=1", "optim.batch_size=4", "model.n_kv_heads=1", f"text.encoder={encoder}",
                             f"run.out_dir={tmp_path / 'run'}", "optim.steps=4", "run.save_every=4"])
    fit(cfg)
    # 4-frame clips at 16 px (4·16 tokens), 3-frame ones at 16 px (3·16 of the 64): one shape per batch
    assert sorted(set(seen)) == [(4, 3, 3, 16, 16), (4, 3, 4, 16, 16)]


@pytest.mark.parametrize("overrides, message", [
    (["model.dim=32"], "[model]: data.frames=4 has 4 frames but this Next-DiT model's head_dim 16 cannot carry 3-D"),
    (["data.kind=shapes"], "data.frames=4: the shapes data are still images; use data.kind=moving_shapes"),
    (["data.frame_stride=2", "data.fps=8"], "data.fps=8.0 and data.frame_stride=2 both thin the frames out"),
    (["data.min_frames=5"], "data.min_frames=5 must be in [0, data.frames=4]"),
])
def test_configs_a_frames_model_refuses(encoder, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as info:
        config(encoder, tmp_path, 1, "model.n_kv_heads=1", *overrides)
    assert message in str(info.value)


def test_fine_tuning_a_flag_dit_without_nextframe_token_is_refused(encoder, tmp_path):
    base = fit(config(encoder, tmp_path / "base", 1, "model.family=flag_dit", "model.nextframe_token=false", "data.frames=1"))
    with pytest.raises(ConfigError, match="no learned \\[nextframe\\] token"):
        fit(config(encoder, tmp_path / "tune", 1, f"model.init_from={base / 'checkpoints' / 'latest' / WEIGHTS[0]}"))


def test_the_example_config_loads(encoder):
    cfg = load_config(Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_video.yaml", [f"text.encoder={encoder}"])
    assert cfg.data.kind == "moving_shapes" and cfg.data.frames > 1


def test_the_sample_command_writes_animated_webp_clips(encoder, tmp_path, capsys):
    from PIL import Image

    from train.__main__ import main

    run = fit(config(encoder, tmp_path / "run", 1, "model.n_kv_heads=1"))
    out = tmp_path / "clips"
    assert main(["sample", str(run), "--prompt", "a red circle moving up", "--frames", "3", "--steps", "2", "--out", str(out)]) == 0
    with Image.open(out / "000_a_red_circle_moving_up.webp") as img:
        assert img.is_animated and img.n_frames == 3 and img.size == (16, 16)
    image_run = fit(config(encoder, tmp_path / "images", 1, "model.dim=32", "model.n_kv_heads=1", "data.kind=shapes", "data.frames=1"))
    assert main(["sample", str(image_run), "--prompt", "a red circle", "--frames", "3", "--out", str(out)]) == 2
    assert "--frames 3 has 3 frames but this Next-DiT model's head_dim 16 cannot carry 3-D" in capsys.readouterr().err
