"""Fine-tuning as a person meets it: what `fit` says at start-up, a finished run rerun, EMA of
LoRA adapters (exported as lora_ema.safetensors), and the example LoRA config validating."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from builders import TINY
from safetensors.torch import load_file

from train.__main__ import main
from train.config import ConfigError, ema_decay, load_config
from train.engine import fit

REPO = Path(__file__).resolve().parents[2]


def _run(encoder: str, out: Path, steps: int, *extra: str) -> Path:
    return fit(load_config(None, [*TINY, "run.progress=false", f"text.encoder={encoder}", f"run.out_dir={out}",
                                  f"optim.steps={steps}", f"run.save_every={steps}", *extra]))


@pytest.fixture(scope="module")
def base(encoder, tmp_path_factory) -> Path:
    out = _run(encoder, tmp_path_factory.mktemp("runs") / "base", 2)
    return out / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors"


def test_start_up_says_what_was_found_and_what_trains(encoder, tmp_path, caplog):
    from train.data import build_dataset

    caplog.set_level(logging.INFO, logger="train")
    out = _run(encoder, tmp_path / "run", 1)
    items = len(build_dataset(load_config(out / "config.yaml")))
    text = caplog.text
    assert f"found {items} images with {items} captions (" in text and ", 0 empty)" in text
    import lumina

    model = lumina.load_model(out / "checkpoints" / "latest", ema=False)
    total = sum(p.numel() for p in model.parameters())
    assert f"training {total:,} of {total:,} parameters (100.00%), EMA 0.9" in text
    assert "training on 1 process on cpu (no distribution)" in text and "process(es)" not in text


def test_lora_start_up_counts_only_the_adapters(encoder, base, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="train")
    _run(encoder, tmp_path / "lora", 1, f"model.init_from={base}", "model.lora_rank=4", "run.ema_decay=null")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training ") and "parameters" in r.getMessage())
    trainable, total = (int(n.replace(",", "")) for n in line.split()[1:4:2])
    assert 0 < trainable < total / 2 and line.endswith(", LoRA rank 4, no EMA")


def test_rerunning_a_finished_run_says_it_is_done_and_how_to_go_on(encoder, tmp_path, caplog):
    out = _run(encoder, tmp_path / "run", 2)
    log_before = (out / "log.jsonl").read_text()
    caplog.set_level(logging.INFO, logger="train")
    _run(encoder, tmp_path / "run", 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{out} already finished: it holds step 2 and optim.steps=2. To train longer, raise optim.steps "
                        "(e.g. optim.steps=4 continues from step 2); to start over, set run.resume=false or a new run.out_dir"]
    assert (out / "log.jsonl").read_text() == log_before  # nothing trained
    _run(encoder, tmp_path / "run", 4)  # the advice works
    assert len((out / "log.jsonl").read_text().splitlines()) == 4


def test_ema_default_is_off_for_lora_and_on_for_full_training(encoder):
    common = [*TINY, f"text.encoder={encoder}", "run.ema_decay=null"]
    assert ema_decay(load_config(None, common)) == 0.995
    assert ema_decay(load_config(None, [*common, "model.lora_rank=4"])) == 0.0
    assert ema_decay(load_config(None, [*TINY, f"text.encoder={encoder}", "model.lora_rank=4"])) == 0.9  # asked for
    with pytest.raises(ConfigError, match=r"run.ema_decay=1.0 must be in \[0, 1\)"):
        load_config(None, [*common, "run.ema_decay=1.0"])


def test_lora_with_ema_averages_the_adapters_and_exports_them(encoder, base, tmp_path):
    """run.ema_decay with model.lora_rank: an EMA of the adapters (the base stays shared and frozen),
    written as lora_ema.safetensors and merged as consolidated_ema; resume repeats it exactly."""
    import lumina

    lora = [f"model.init_from={base}", "model.lora_rank=4", "optim.lr=1e-2", "run.ema_decay=0.5"]
    out = _run(encoder, tmp_path / "lora", 4, *lora)
    latest = out / "checkpoints" / "latest"
    raw, averaged = load_file(latest / "lora.safetensors"), load_file(latest / "lora_ema.safetensors")
    assert raw.keys() == averaged.keys()
    ups = [k for k in raw if k.endswith("lora_up.weight")]
    assert any(not torch.equal(raw[k], averaged[k]) for k in ups) and any(averaged[k].abs().max() > 0 for k in ups)
    # consolidated_ema is the base with the averaged adapters merged in
    before, merged_ema = load_file(base), load_file(latest / "consolidated_ema.00-of-01.safetensors")
    key = "lora_unet_layers_1_feed_forward_w2"
    rank = averaged[f"{key}.lora_down.weight"].shape[0]
    delta = averaged[f"{key}.lora_up.weight"] @ averaged[f"{key}.lora_down.weight"] * (averaged[f"{key}.alpha"] / rank)
    torch.testing.assert_close(merged_ema["layers.1.feed_forward.w2.weight"], before["layers.1.feed_forward.w2.weight"] + delta)
    assert not any("lora" in k for k in merged_ema)
    assert lumina.load_model(latest / "consolidated_ema.00-of-01.safetensors").config == lumina.load_model(base).config

    # export: the EMA LoRA by default (like the model's EMA weights), the raw adapters with --no-ema
    assert main(["export", str(out), "--out", str(tmp_path / "a.safetensors")]) == 0
    assert main(["export", str(out), "--no-ema", "--out", str(tmp_path / "b.safetensors")]) == 0
    assert (tmp_path / "a.safetensors").read_bytes() == (latest / "lora_ema.safetensors").read_bytes()
    assert (tmp_path / "b.safetensors").read_bytes() == (latest / "lora.safetensors").read_bytes()

    _run(encoder, tmp_path / "resumed", 2, *lora)
    resumed = _run(encoder, tmp_path / "resumed", 4, *lora) / "checkpoints" / "latest"
    for name in ("lora.safetensors", "lora_ema.safetensors", "consolidated_ema.00-of-01.safetensors"):
        a, b = load_file(latest / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_the_demo_lora_config_validates(tmp_path, monkeypatch):
    """train/configs/demo_lora.yaml, the README's fine-tune example, exactly as written: run from a
    root holding assets/ (the demo model and encoder) and the user's my_concept/ folder."""
    from builders import write_images

    (tmp_path / "assets").symlink_to(REPO / "assets")
    write_images(tmp_path / "my_concept", [(32, 32)] * 2)
    monkeypatch.chdir(tmp_path)
    config = load_config(REPO / "train" / "configs" / "demo_lora.yaml")
    assert config.model.lora_rank > 0 and Path(config.model.init_from).is_file()
    assert config.text.encoder.endswith("shapes_text_encoder") and ema_decay(config) == 0.0
    assert [s["kind"] for s in config.data.sources] == ["folder", "shapes"]


def test_the_released_model_lora_config_trains_as_written(encoder, vae, tmp_path, monkeypatch):
    """train/configs/next_sft_lora.yaml, the README's released-model example: its paths (a ComfyUI
    models folder, my_concept/ and my_regularisation/) filled with tiny stand-ins of the same kind
    (a latent Next-DiT, a Gemma folder, a diffusers AutoencoderKL); only sizes are overridden."""
    import lumina
    from builders import write_images

    models = tmp_path / "ComfyUI" / "models"
    torch.manual_seed(0)
    tiny = lumina.build_model(lumina.LuminaConfig("next_dit", dim=32, n_layers=2, n_heads=2, n_kv_heads=1, cap_feat_dim=32,
                                                  multiple_of=16, patch_size=2, in_channels=4, base_image_size=32,
                                                  vae_downsample=2))
    lumina.save_official(tiny, models / "lumina" / "Lumina-Next-SFT" / "consolidated_ema.00-of-01.safetensors")
    (models / "text_encoders").mkdir(parents=True)
    (models / "text_encoders" / "gemma-2b").symlink_to(encoder)
    (models / "vae").mkdir()
    (models / "vae" / "sdxl-vae").symlink_to(vae)
    write_images(tmp_path / "my_concept", [(32, 32)] * 3)
    write_images(tmp_path / "my_regularisation", [(32, 32)] * 3, seed=1)
    monkeypatch.chdir(tmp_path)
    config = load_config(REPO / "train" / "configs" / "next_sft_lora.yaml", [
        "model.vae_downsample=2", "data.image_size=32", "optim.steps=2", "optim.batch_size=2", "run.mixed_precision=no",
        "run.save_every=2", "run.progress=false"])
    assert config.model.lora_rank == 16 and [s["path"] for s in config.data.sources] == ["my_concept", "my_regularisation"]
    latest = fit(config) / "checkpoints" / "latest"
    assert (latest / "lora.safetensors").is_file()


def test_an_unquoted_no_stays_the_word_no(tmp_path):
    """YAML 1.1 reads `mixed_precision: no` (and `=no` on the command line) as False: a text key gets the word back."""
    (tmp_path / "c.yaml").write_text("run:\n  mixed_precision: no\n")
    encoder = f"text.encoder={tmp_path}"  # any folder: only the config is read here
    assert load_config(tmp_path / "c.yaml", [encoder]).run.mixed_precision == "no"
    assert load_config(None, ["run.mixed_precision=no", encoder]).run.mixed_precision == "no"
