"""`python -m train sample | export | cache`: images from a run, checkpoints in the official and
diffusers forms (loading back exactly), LoRA runs with and without merging, and bad invocations
failing with exit code 2 and a message naming the flag or file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import TINY, write_vae
from safetensors.torch import load_file, save_file

import lumina
from train.__main__ import main
from train.config import load_config
from train.engine import fit

REPO = Path(__file__).resolve().parents[2]


def _fit(encoder: str, out: Path, steps: int, *extra: str) -> Path:
    return fit(load_config(None, [*TINY, f"text.encoder={encoder}", f"run.out_dir={out}", f"optim.steps={steps}",
                                  f"run.save_every={steps}", *extra]))


@pytest.fixture(scope="module")
def tiny_run(encoder, tmp_path_factory) -> Path:
    """A 3-step pixel-space run with EMA: checkpoints/latest holds both weight files."""
    return _fit(encoder, tmp_path_factory.mktemp("runs") / "tiny", 3)


@pytest.fixture(scope="module")
def lora_run(encoder, tiny_run, tmp_path_factory) -> Path:
    base = tiny_run / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors"
    # run.ema_decay unset: a LoRA run keeps no EMA by default
    return _fit(encoder, tmp_path_factory.mktemp("runs") / "lora", 3, f"model.init_from={base}", "model.lora_rank=4",
                "optim.lr=1e-2", "run.ema_decay=null")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


# -- sample ---------------------------------------------------------------------------------
def test_sample_writes_one_png_per_prompt_at_the_requested_size(tiny_run, tmp_path):
    from PIL import Image

    out = tmp_path / "pics"
    assert main(["sample", str(tiny_run), "--prompt", "a small red circle", "--prompt", "a large blue square",
                 "--prompt", "", "--size", "32x16", "--steps", "3", "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["000_a_small_red_circle.png", "001_a_large_blue_square.png", "002_empty.png"]
    for png in pngs:
        with Image.open(png) as img:
            assert img.size == (32, 16) and img.mode == "RGB"


def test_sample_matches_training_validation_and_reads_a_prompts_file(encoder, tiny_run, tmp_path):
    """The CLI and the trainer's validation images sample alike (one shared function): the defaults
    with the run's seed give the validation row's pixels."""
    import numpy as np
    from PIL import Image

    from lumina.text_encoders import load_text_encoder
    from train.engine import validation_images

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a small red circle\n\na large blue square\n")
    out = tmp_path / "pics"
    assert main(["sample", str(tiny_run / "checkpoints" / "latest"), "--prompts-file", str(prompts), "--no-ema",
                 "--encoder", encoder, "--out", str(out)]) == 0
    cli = [np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))]
    assert len(cli) == 2 and cli[0].shape == (16, 16, 3)  # the model's base_image_size by default

    config = load_config(None, [*TINY, f"text.encoder={encoder}", "run.sample_prompts=[a small red circle, a large blue square]"])
    model = lumina.load_model(tiny_run / "checkpoints" / "latest", dtype=torch.float32, ema=False)
    row = validation_images(config, model, load_text_encoder(encoder, dtype=torch.float32), tmp_path / "val")
    assert np.array_equal(np.asarray(Image.open(row)), np.concatenate(cli, axis=1))


def _tiny_vae(folder: Path) -> Path:
    """The SDXL VAE's layout in miniature: 4 blocks, so 8× downsampling, 4 latent channels."""
    return write_vae(folder, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                     block_out_channels=(8, 8, 8, 8), norm_num_groups=4, scaling_factor=0.5, sample_size=32)


def test_sample_latent_model_writes_latents_or_decodes_with_a_vae(encoder, tmp_path):
    """A latent model (SDXL-VAE layout, 8× downsampling) writes its latents; with --vae the PNG is the
    VAE's decode of exactly those latents divided by the VAE config's scaling_factor."""
    import numpy as np
    from diffusers import AutoencoderKL
    from PIL import Image

    torch.manual_seed(0)
    config = lumina.LuminaConfig("next_dit", dim=32, n_layers=1, n_heads=2, n_kv_heads=1, cap_feat_dim=32, multiple_of=16,
                                 patch_size=2, in_channels=4, base_image_size=32, vae_downsample=8)
    model_file = lumina.save_official(lumina.build_model(config), tmp_path / "latent.safetensors")
    vae = _tiny_vae(tmp_path / "vae")
    args = ["sample", str(model_file), "--encoder", encoder, "--prompt", "a red circle", "--size", "48x32", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "latents")]) == 0
    (latent_file,) = (tmp_path / "latents").glob("*.safetensors")
    latents = load_file(latent_file)["latents"]
    assert latents.shape == (1, 4, 4, 6)
    assert main([*args, "--vae", str(vae), "--out", str(tmp_path / "pngs")]) == 0
    (png,) = (tmp_path / "pngs").glob("*.png")
    with torch.inference_mode():
        decoded = AutoencoderKL.from_pretrained(vae).decode(latents / 0.5).sample
    expected = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(png)), expected) and expected.shape == (32, 48, 3)


# -- export ---------------------------------------------------------------------------------
def test_export_official_round_trips_bit_identically(tiny_run, tmp_path):
    latest = tiny_run / "checkpoints" / "latest"
    assert main(["export", str(tiny_run), "--to", "official", "--out", str(tmp_path / "ema.safetensors")]) == 0
    assert main(["export", str(latest), "--to", "official", "--no-ema", "--out", str(tmp_path / "raw")]) == 0
    ema = lumina.load_model(tmp_path / "ema.safetensors")
    raw = lumina.load_model(tmp_path / "raw" / "consolidated.00-of-01.safetensors")
    assert ema.config == raw.config == lumina.load_model(latest).config
    assert _same_weights(ema, lumina.load_model(latest / "consolidated_ema.00-of-01.safetensors"))  # EMA by default
    assert _same_weights(raw, lumina.load_model(latest / "consolidated.00-of-01.safetensors"))
    assert not _same_weights(ema, raw)

    assert main(["export", str(tiny_run), "--to", "official", "--dtype", "bf16", "--out", str(tmp_path / "bf16.safetensors")]) == 0
    half = lumina.load_model(tmp_path / "bf16.safetensors")
    assert _same_weights(half, lumina.load_model(latest, dtype=torch.bfloat16))


def test_export_diffusers_loads_back_with_the_same_forward(tiny_run, tmp_path):
    out = tmp_path / "diffusers"
    assert main(["export", str(tiny_run), "--to", "diffusers", "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    source, exported = lumina.load_model(tiny_run / "checkpoints" / "latest"), lumina.load_model(out)
    assert exported.config.dim == 32 and exported.config.in_channels == 3
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.rand(2, generator=g)
    feats, mask = torch.randn(2, 5, 32, generator=g), torch.tensor([[1] * 5, [1] * 3 + [0] * 2], dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(exported(x, t, feats, mask), source(x, t, feats, mask), rtol=0, atol=0)


def test_export_lora_run_with_and_without_merging(lora_run, tmp_path):
    latest = lora_run / "checkpoints" / "latest"
    assert main(["export", str(lora_run), "--out", str(tmp_path / "my_lora.safetensors")]) == 0
    kohya, original = load_file(tmp_path / "my_lora.safetensors"), load_file(latest / "lora.safetensors")
    assert kohya.keys() == original.keys() and all(torch.equal(kohya[k], original[k]) for k in kohya)
    assert (tmp_path / "my_lora.safetensors").read_bytes() == (latest / "lora.safetensors").read_bytes()

    assert main(["export", str(latest), "--merge-lora", "--to", "official", "--out", str(tmp_path / "merged.safetensors")]) == 0
    merged = load_file(tmp_path / "merged.safetensors")
    base = load_file(Path(yaml_value(lora_run, "model", "init_from")))
    key = "lora_unet_layers_1_feed_forward_w2"
    rank = kohya[f"{key}.lora_down.weight"].shape[0]
    delta = kohya[f"{key}.lora_up.weight"] @ kohya[f"{key}.lora_down.weight"] * (kohya[f"{key}.alpha"] / rank)
    torch.testing.assert_close(merged["layers.1.feed_forward.w2.weight"], base["layers.1.feed_forward.w2.weight"] + delta)
    assert not any("lora" in k for k in merged)
    assert _same_weights(lumina.load_model(tmp_path / "merged.safetensors"), lumina.load_model(latest))

    assert main(["export", str(latest / "lora.safetensors"), "--merge-lora", "--to", "diffusers", "--out", str(tmp_path / "d")]) == 0
    assert _same_weights(lumina.load_model(tmp_path / "d"), lumina.load_model(latest))


def yaml_value(run: Path, section: str, key: str):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())[section][key]


# -- bad invocations ------------------------------------------------------------------------
def _fails(argv: list[str], capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2, argv
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["export", "{missing}", "--to", "official", "--out", "{tmp}/x"], "{missing}: no such file or folder"),
    (["export", "{run}", "--to", "onnx", "--out", "{tmp}/x"], "argument --to: invalid choice: 'onnx'"),
    (["export", "{run}", "--out", "{tmp}/x"], "--to is required"),
    (["export", "{run}", "--to", "official"], "the following arguments are required: --out"),
    (["export", "{run}", "--to", "diffusers", "--out", "{tmp}/x.safetensors"], "--to diffusers writes a folder"),
    (["export", "{run}", "--merge-lora", "--to", "official", "--out", "{tmp}/x"], "--merge-lora: {run}/checkpoints/latest is not a LoRA run"),
    (["export", "{lora}", "--to", "diffusers", "--out", "{tmp}/x"], "--to diffusers: {lora}/checkpoints/latest/lora.safetensors is a LoRA"),
    (["export", "{lora}", "--to", "official", "--out", "{tmp}/x"],
     "--to official: {lora}/checkpoints/latest/lora.safetensors is a LoRA (kohya format, for ComfyUI's LoraLoaderModelOnly); "
     "add --merge-lora to export the merged model as official, or drop --to to export the LoRA file"),
    (["export", "{lora}", "--ema", "--out", "{tmp}/x"], "--ema: {lora}/checkpoints/latest has no EMA LoRA"),
    (["export", "{lora}", "--merge-lora", "--ema", "--to", "official", "--out", "{tmp}/x"], "has no EMA weights"),
    (["export", "{run}", "--to", "official", "--dtype", "fp16", "--out", "{tmp}/x"], "argument --dtype: invalid choice: 'fp16'"),
    (["sample", "{run}"], "no prompts: give --prompt"),
    (["sample", "{run}", "--prompt", "x", "--size", "30x16"], "--size 30x16: width and height must be positive multiples of 4 px"),
    (["sample", "{run}", "--prompt", "x", "--size", "big"], "--size 'big': write it as WxH"),
    (["sample", "{run}", "--prompts-file", "{tmp}/none.txt"], "--prompts-file {tmp}/none.txt: no such file"),
    (["sample", "{run}/checkpoints/latest/consolidated.00-of-01.safetensors", "--prompt", "x", "--encoder", "{tmp}"], "--encoder: "),
    (["sample", "{model}", "--prompt", "x"], "--encoder is required"),
    (["sample", "{run}", "--prompt", "x", "--vae", "{tmp}/novae"], None),  # pixel model: --vae is not needed, ignored
    (["bogus"], "invalid choice: 'bogus'"),
])
def test_bad_invocations_exit_2_naming_the_problem(tiny_run, lora_run, tmp_path, capsys, argv, message):
    model = tmp_path / "model.safetensors"
    save_file(load_file(tiny_run / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors"), str(model),
              metadata={"lumina_config": lumina.load_model(tiny_run / "checkpoints" / "latest").config.to_json()})
    names = {"run": str(tiny_run), "lora": str(lora_run), "tmp": str(tmp_path), "missing": str(tmp_path / "nope"),
             "model": str(model)}
    argv = [a.format(**names) for a in argv]
    if message is None:
        assert main([*argv, "--steps", "1", "--out", str(tmp_path / "ok")]) == 0
        return
    assert message.format(**names) in _fails(argv, capsys)


def test_cli_exit_code_in_a_real_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "train", "export", str(tmp_path / "nope"), "--to", "official", "--out",
                           str(tmp_path / "x")], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and f"{tmp_path / 'nope'}: no such file or folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_cache_subcommand_loads_the_config_and_calls_build_cache(encoder, tmp_path, monkeypatch, capsys):
    cache = pytest.importorskip("train.cache")
    seen = []

    def fake_build_cache(config):
        seen.append(config)
        return tmp_path / "cache"

    monkeypatch.setattr(cache, "build_cache", fake_build_cache)
    (tmp_path / "images").mkdir()
    run = tmp_path / "run.yaml"
    run.write_text(f"text:\n  encoder: {encoder}\ndata:\n  kind: folder\n  path: {tmp_path / 'images'}\n")
    assert main(["cache", "--config", str(run), f"data.cache_dir={tmp_path / 'cache'}", *TINY]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache")
    assert seen[0].data.cache_dir == str(tmp_path / "cache") and seen[0].model.dim == 32
    assert main(["cache", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config error: config file" in capsys.readouterr().err
