"""`python -m train fit` on the Lumina-Video family (train/video_objective.py): a tiny random
LuminaVideo on moving-shapes clips learns, every step trains each patch entry with its own batch
and time shift, motion scores reach the model (with dropout), a resumed run equals the
uninterrupted one bit for bit, LoRA runs export and load, the released folder form is fine-tuned
and written, and the combinations that cannot train are refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import lumina
import train.engine
from train.config import ConfigError, load_config
from train.engine import fit

# head_dim 16 (Lumina-Video's RoPE needs a multiple of 16); 8-px clips of 2 frames: 2·4·4 tokens at 1x2
LV_TINY = [
    "model.family=lumina_video", "model.dim=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
    "model.multiple_of=16", "model.in_channels=3", "model.vae_downsample=1", "data.kind=moving_shapes",
    "data.image_size=8", "data.frames=2", "data.repeats=1", "optim.batch_size=4", "optim.lr=2e-3",
    "optim.warmup_steps=0", "run.log_every=1", "run.ema_decay=0.9", "run.progress=false",
    "text.convention=lumina_video",
]
WEIGHTS = ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors")


def config(encoder: str, out: Path, steps: int, *extra: str):
    return load_config(None, [*LV_TINY, f"text.encoder={encoder}", f"run.out_dir={out}", f"optim.steps={steps}",
                              f"run.save_every={steps}", *extra])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def record_calls(monkeypatch) -> list[dict]:
    """Every entry's loss call as fit makes it: the entry, the data's shape, times and motion."""
    seen = []
    loss = train.engine.lumina_video_loss

    def recording(model, data, noise, t, feats, mask, motion, entry, vd_weight=0.0):
        seen.append({"entry": entry, "shape": tuple(data.shape), "t": t.clone(), "motion": motion.clone(),
                     "data": data.clone(), "vd": vd_weight})
        return loss(model, data, noise, t, feats, mask, motion, entry, vd_weight)

    monkeypatch.setattr(train.engine, "lumina_video_loss", recording)
    return seen


def test_loss_falls_on_moving_shapes(encoder, tmp_path):
    out = fit(config(encoder, tmp_path / "run", 36, "run.ema_decay=0"))
    values = [r["loss"] for r in records(out)]
    first, last = sum(values[:12]) / 12, sum(values[-12:]) / 12
    print(f"lumina_video: mean loss of the first 12 steps {first:.4f}, of the last 12 {last:.4f}")
    assert last < 0.85 * first, f"loss {first:.3f} → {last:.3f} did not fall by 15 %"
    assert {"loss_1x2", "loss_2x2", "loss_2x4"} <= set(records(out)[0])  # each entry's own loss is logged
    model = lumina.load_model(out / "checkpoints" / "latest" / WEIGHTS[0])
    assert isinstance(model, lumina.LuminaVideo) and model.config.patches == ((2, 1), (2, 2), (4, 2))


def test_every_step_trains_each_entry_on_its_own_batch(encoder, tmp_path, monkeypatch):
    from lumina.flow import time_shift

    seen = record_calls(monkeypatch)
    fit(config(encoder, tmp_path / "run", 2, "data.motion_dropout=0"))
    assert [c["entry"] for c in seen] == [(2, 1), (2, 2), (4, 2)] * 2  # the official tasks, every step
    assert all(c["shape"] == (4, 3, 2, 8, 8) and c["vd"] == 1.0 for c in seen)
    batches = [c["data"] for c in seen]
    assert all(not torch.equal(a, b) for i, a in enumerate(batches) for b in batches[i + 1:])  # no batch twice
    # times: uniform draws shifted by the entry's pF·p (2, 4, 8) toward noise; the same draws
    # unshifted are recovered by the inverse shift u = s·t / (1 + (s − 1)·t)
    for call, shift in zip(seen[:3], (2.0, 4.0, 8.0)):
        u = shift * call["t"] / (1 + (shift - 1) * call["t"])
        assert torch.allclose(time_shift(u, shift), call["t"]) and bool(((u >= 0) & (u <= 1)).all())
    assert float(seen[2]["t"].mean()) < 0.5  # 2x4's shift 8 keeps its times near noise
    # motion: the moving shapes' exact scores (positive), no dropout asked
    assert all(bool((c["motion"] > 0).all()) for c in seen)


def test_entries_time_shifts_and_motion_dropout_are_settable(encoder, tmp_path, monkeypatch):
    seen = record_calls(monkeypatch)
    fit(config(encoder, tmp_path / "run", 8, "run.video_entries=[1x2]", "run.video_time_shifts=[1.0]",
               "data.motion_dropout=0.5", "run.video_vd_weight=0"))
    assert {c["entry"] for c in seen} == {(2, 1)} and len(seen) == 8 and all(c["vd"] == 0 for c in seen)
    motion = torch.cat([c["motion"] for c in seen])
    assert 0.2 < float((motion == -1).float().mean()) < 0.8 and bool((motion[motion != -1] > 0).all())


def test_resume_is_bit_identical(encoder, tmp_path):
    straight = fit(config(encoder, tmp_path / "straight", 4))
    fit(config(encoder, tmp_path / "resumed", 2))
    resumed = fit(config(encoder, tmp_path / "resumed", 4))
    for name in WEIGHTS:
        a = load_file(straight / "checkpoints" / "latest" / name)
        b = load_file(resumed / "checkpoints" / "latest" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert [r["loss"] for r in records(straight)] == [r["loss"] for r in records(resumed)]


def released_folder(folder: Path, seed: int = 0, cap_feat_dim: int = 32) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny Lumina-Video in the released form: consolidated.00-of-01.pth with torch.compile's
    `_orig_mod.` key segments, and a model_args.pth pickle (which nothing here may open)."""
    torch.manual_seed(seed)
    model = lumina.LuminaVideo(lumina.LuminaVideoConfig(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, cap_feat_dim=cap_feat_dim,
                                                        multiple_of=16, patches=((2, 1), (2, 2), (4, 2)), in_channels=3))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True)
    torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, folder / "consolidated.00-of-01.pth")
    (folder / "model_args.pth").write_bytes(b"not a pickle: never opened")
    return folder, sd


def test_fine_tuning_the_released_folder_form(encoder, tmp_path):
    folder, sd = released_folder(tmp_path / "released")
    # model.family is not given: the checkpoint makes the run lumina_video; its own shape wins over model.*
    cfg = load_config(None, [*[o for o in LV_TINY if not o.startswith(("model.family", "model.dim", "model.n_"))],
                             f"model.init_from={folder}", f"text.encoder={encoder}", f"run.out_dir={tmp_path / 'run'}",
                             "optim.steps=2", "run.save_every=2", "run.video_entries=[2x2]"])
    assert cfg.model.family == "lumina_video" and cfg.model.patch_size == 4
    out = fit(cfg)
    tuned = load_file(out / "checkpoints" / "latest" / WEIGHTS[0])
    assert tuned.keys() == sd.keys()
    assert not torch.equal(tuned["all_x_embedder.2-2.weight"], sd["all_x_embedder.2-2.weight"])  # trained
    assert torch.equal(tuned["all_x_embedder.2-1.weight"], sd["all_x_embedder.2-1.weight"])  # not trained: no gradient


def test_lora_run_exports_and_loads(encoder, tmp_path, capsys):
    from train.__main__ import main

    folder, sd = released_folder(tmp_path / "released")
    out = fit(load_config(None, [*LV_TINY, f"model.init_from={folder}", f"text.encoder={encoder}", "model.lora_rank=4",
                                 "run.ema_decay=0", "optim.lr=1e-2", f"run.out_dir={tmp_path / 'lora'}", "optim.steps=3", "run.save_every=3"]))
    latest = out / "checkpoints" / "latest"
    lora = load_file(latest / "lora.safetensors")
    assert "lora_unet_layers_0_attention_wq.lora_down.weight" in lora and "lora_unet_layers_1_feed_forward_w2.lora_up.weight" in lora
    trained = load_file(out / "state" / "model.safetensors")
    assert torch.equal(trained["all_x_embedder.2-1.weight"], sd["all_x_embedder.2-1.weight"])  # frozen base
    # the kohya file for ComfyUI's LoraLoader
    assert main(["export", str(out), "--out", str(tmp_path / "my_lora.safetensors")]) == 0
    assert load_file(tmp_path / "my_lora.safetensors").keys() == lora.keys()
    # the merged model in the released folder form: lumina.load_model reads it (weights_only, keys as released)
    assert main(["export", str(out), "--merge-lora", "--to", "official", "--out", str(tmp_path / "merged")]) == 0
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == ["consolidated.00-of-01.pth", "model_args.pth"]
    merged = lumina.load_model(tmp_path / "merged", dtype=torch.float32)
    expected = load_file(latest / WEIGHTS[0])
    assert isinstance(merged, lumina.LuminaVideo)
    assert all(torch.equal(merged.state_dict()[k], expected[k]) for k in expected)
    delta = expected["layers.0.attention.wq.weight"] - sd["layers.0.attention.wq.weight"]
    up, down = lora["lora_unet_layers_0_attention_wq.lora_up.weight"], lora["lora_unet_layers_0_attention_wq.lora_down.weight"]
    assert delta.abs().max() > 0 and torch.allclose(delta, up @ down, atol=1e-6)  # alpha = rank: scale 1
    with torch.no_grad():
        clip = merged(torch.randn(1, 3, 2, 8, 8), 0.5, torch.randn(1, 3, 32), None, 2.0, 2, 2)
    assert clip.shape == (1, 3, 2, 8, 8)
    # diffusers has no Lumina-Video format: a one-line refusal naming the way that works
    assert main(["export", str(out), "--merge-lora", "--to", "diffusers", "--out", str(tmp_path / "d")]) == 2
    assert "diffusers has no Lumina-Video model format; use --to official" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_export_to_official_round_trips_a_full_run(encoder, tmp_path):
    from train.__main__ import main

    out = fit(config(encoder, tmp_path / "run", 1))
    assert main(["export", str(out), "--to", "official", "--no-ema", "--out", str(tmp_path / "released")]) == 0
    assert main(["export", str(out), "--to", "official", "--out", str(tmp_path / "ema.safetensors")]) == 0
    saved = load_file(out / "checkpoints" / "latest" / WEIGHTS[0])
    ema = load_file(out / "checkpoints" / "latest" / WEIGHTS[1])
    raw = torch.load(tmp_path / "released" / "consolidated.00-of-01.pth", weights_only=True)
    assert raw.keys() == saved.keys() and all(torch.equal(raw[k], saved[k]) for k in saved)
    reread = lumina.load_model(tmp_path / "ema.safetensors")
    assert all(torch.equal(reread.state_dict()[k], ema[k]) for k in ema)


def test_validation_samples_are_animations(encoder, tmp_path):
    from PIL import Image

    out = fit(config(encoder, tmp_path / "run", 2, "run.sample_every=2", "run.video_sample_settings={motion: 0.1, neg_motion: -1}",
                     "run.sample_prompts=[a small red circle moving right on a white background, a large blue square moving up on a black background]"))
    with Image.open(out / "samples" / "step_0000002.webp") as img:
        assert img.is_animated and img.n_frames == 2 and img.size == (16, 8)  # two 8-px clips side by side


def test_the_example_config_loads(encoder):
    cfg = load_config(Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_lumina_video.yaml",
                      [f"text.encoder={encoder}"])
    assert cfg.model.family == "lumina_video" and cfg.data.frames > 1 and cfg.model.patch_size == 4


def test_jsonl_motion_scores(tmp_path):
    from train.clips import jsonl_motion_scores

    manifest = tmp_path / "clips.jsonl"
    manifest.write_text('{"video": "a.mp4", "caption": "x", "motion_score": 3.5}\n'
                        '{"video": "/abs/b.mp4", "caption": "y", "unimatch_flow": 1.25}\n'
                        '{"video": "c.mp4", "caption": "z"}\n')
    assert jsonl_motion_scores(manifest) == {tmp_path / "a.mp4": 3.5, Path("/abs/b.mp4"): 1.25}


@pytest.mark.parametrize("overrides, message", [
    (["run.video_entries=[4x4]"], "run.video_entries names 4x4, which this Lumina-Video model lacks: it has 1x2, 2x2, 2x4"),
    (["run.video_entries=[1x2, 2x2]", "run.video_time_shifts=[2]"], "must give one positive shift per trained entry (1x2, 2x2)"),
    (["data.frames=1"], "model.family=lumina_video, which trains on clips, but the data are images"),
    (["model.n_heads=4", "model.n_kv_heads=2"], "head_dim 8 must be a multiple of 16"),
    (["model.patches=[[2, 1], [2, 4]]", "data.frames=2"], "temporal patch size 4 needs 1 or a multiple of 4 latent frames"),
    (["run.t_sampler=shift"], "choose uniform (the official) or lognorm"),
    (["run.video_sample_config=f99"], "run.video_sample_config='f99': choose f24F96R960"),
    (["run.video_sample_settings={motoin: 1}"], "run.video_sample_settings: unknown sample settings ['motoin']"),
    (["run.video_sample_settings={patch_comb: 4x4}"], "run.video_sample_settings: this Lumina-Video model has no patch entry 4x4"),
])
def test_configs_a_lumina_video_run_refuses(encoder, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as info:
        config(encoder, tmp_path, 1, *overrides)
    assert message in str(info.value)


def test_wrong_checkpoint_combinations_are_refused(encoder, tmp_path):
    folder, _ = released_folder(tmp_path / "released")
    base = [o for o in LV_TINY if not o.startswith("model.family")]
    with pytest.raises(ConfigError, match=r"is a Lumina-Video checkpoint, which trains on clips, but the data are images "
                                          r"\(data.kind=shapes, data.frames=1\)"):
        load_config(None, [*base, f"model.init_from={folder}", "data.kind=shapes", "data.frames=1", f"text.encoder={encoder}"])
    image_run = fit(load_config(None, [*[o for o in base if not o.startswith(("data.frames", "data.kind", "text.conv"))],
                                       "model.family=next_dit", "model.patch_size=4", "data.kind=shapes", f"text.encoder={encoder}",
                                       f"run.out_dir={tmp_path / 'image'}", "optim.steps=1", "run.save_every=1"]))
    with pytest.raises(ConfigError, match="model.family=lumina_video but model.init_from=.* is not a Lumina-Video checkpoint"):
        load_config(None, [*LV_TINY, f"model.init_from={image_run / 'checkpoints' / 'latest' / WEIGHTS[0]}", f"text.encoder={encoder}"])
    wide, _ = released_folder(tmp_path / "wide", cap_feat_dim=48)
    with pytest.raises(ConfigError, match="reads 48-wide caption features but text.encoder=.* gives 32"):
        fit(load_config(None, [*base, f"model.init_from={wide}", f"text.encoder={encoder}", f"run.out_dir={tmp_path / 'w'}",
                               "optim.steps=1"]))


def test_the_sample_command_writes_lumina_video_clips(encoder, tmp_path, capsys):
    from PIL import Image

    from train.__main__ import main

    run = fit(config(encoder, tmp_path / "run", 1))
    out = tmp_path / "clips"
    assert main(["sample", str(run), "--prompt", "a red circle", "--frames", "4", "--steps", "3", "--cfg", "2",
                 "--size", "16x8", "--out", str(out)]) == 0
    with Image.open(out / "000_a_red_circle.webp") as img:
        assert img.is_animated and img.n_frames == 4 and img.size == (16, 8)
    row = json.loads((out / "samples.json").read_text())[0]
    assert row["video_config"] == "f16F64R512" and row["steps"] == 3 and row["frames"] == 4
    # the library gives the same clip for that seed and settings
    model = lumina.load_model(run / "checkpoints" / "latest" / WEIGHTS[1])
    from lumina.text_encoders import load_text_encoder
    from lumina.video_sampling import scaled_cfg

    te = load_text_encoder(encoder, convention="lumina_video")
    both = te.encode(["a red circle", ""])
    settings = lumina.video_sample_settings("f16F64R512", steps=3, cfg=scaled_cfg(lumina.SAMPLE_CONFIGS["f16F64R512"].cfg, 2.0))
    clip = lumina.sample_video(model, lumina.Conditioning(both.cap_feats[:1], both.cap_mask[:1]),
                               lumina.Conditioning(both.cap_feats[1:], both.cap_mask[1:]), (1, 3, 4, 8, 16), settings, seed=0)
    from lumina.pixels import to_uint8

    with Image.open(out / "000_a_red_circle.webp") as img:
        img.seek(2)
        frame = torch.tensor(np.array(img.convert("RGB")))
    assert torch.equal(frame, to_uint8(clip)[0, :, 2].permute(1, 2, 0))
    for bad, message in ((["--frames", "3"], "--frames 3 has 3 latent frames; this Lumina-Video model's temporal patch size 2"),
                         (["--size", "10x8"], "--size 10x8: width and height must be positive multiples of 4 px"),
                         (["--video-config", "f99"], "unknown Lumina-Video sample config 'f99'")):
        assert main(["sample", str(run), "--prompt", "x", "--out", str(out), *bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_processes_agree_with_one(encoder, tmp_path, distributed):
    """torchrun with 2 CPU processes (each entry's modules unused in the other entries' forwards)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    single = fit(config(encoder, tmp_path / "single", 3))
    args = [*LV_TINY, f"text.encoder={encoder}", f"run.out_dir={tmp_path / 'two'}", "optim.steps=3", "run.save_every=3",
            f"run.distributed={distributed}"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "train", "fit", *args], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    for name in WEIGHTS:
        a = load_file(single / "checkpoints" / "latest" / name)
        b = load_file(tmp_path / "two" / "checkpoints" / "latest" / name)
        assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5, name


def test_jsonl_motion_scores_reach_the_model_online_and_from_the_cache(encoder, tmp_path, monkeypatch):
    """A JSONL of frame folders, two with scores and two without (data.motion_score), trained
    online and from `python -m train cache`: every clip's loss call carries its own score."""
    from builders import moving_frames, write_frame_folder

    from train.cache import build_cache

    rows, expected = [], {}
    for i in range(4):
        caption = f"a {('small', 'large')[i % 2]} {('red', 'blue', 'green', 'yellow')[i]} square"
        write_frame_folder(tmp_path / "clips" / f"clip{i}", moving_frames(2, 8, 8, seed=i))
        row = {"video": f"clips/clip{i}", "caption": caption}
        if i < 2:
            row["motion_score"] = 1.5 + i
        rows.append(json.dumps(row))
        expected[caption] = 1.5 + i if i < 2 else 7.0
    (tmp_path / "clips.jsonl").write_text("\n".join(rows) + "\n")
    data = [o for o in LV_TINY if not o.startswith("data.kind")] + [
        "data.kind=jsonl", f"data.path={tmp_path / 'clips.jsonl'}", "data.buckets=false", "data.motion_score=7",
        "data.motion_dropout=0", "data.caption_dropout=0", "run.video_entries=[1x2]", f"text.encoder={encoder}",
        "optim.steps=2", "run.save_every=2"]
    build_cache(load_config(None, [*data, f"data.cache_dir={tmp_path / 'cache'}", f"run.out_dir={tmp_path / 'x'}"]))
    real_loss, real_caption = train.engine.lumina_video_loss, train.engine.CaptionCache.__call__
    for name, extra in (("online", []), ("cached", [f"data.cache_dir={tmp_path / 'cache'}"])):
        motions, texts_seen = [], []

        def recording(model, data, noise, t, feats, mask, motion, entry, vd_weight=0.0):
            motions.append(motion.clone())
            return real_loss(model, data, noise, t, feats, mask, motion, entry, vd_weight)

        def caption_call(self, texts, device):
            texts_seen.append(list(texts))
            return real_caption(self, texts, device)

        monkeypatch.setattr(train.engine, "lumina_video_loss", recording)
        monkeypatch.setattr(train.engine.CaptionCache, "__call__", caption_call)
        fit(load_config(None, [*data, *extra, f"run.out_dir={tmp_path / name}"]))
        assert len(texts_seen) == len(motions) == 2
        for texts, motion in zip(texts_seen, motions):
            assert motion.tolist() == [expected[c] for c in texts], name
