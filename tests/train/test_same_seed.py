"""One seed → one image: `python -m train sample` gives bit for bit what `lumina.sample` gives for
the same prompt, negative prompt, seed and settings (and the Lumina Flow Sampler node equals
`lumina.sample`: tests/nodes/test_node_sampler.py::test_flow_sampler_equals_the_library_call).
Also the samples.json index the CLI writes beside the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lumina
from lumina.text_encoders import load_text_encoder
from train.__main__ import main

PROMPT, NEGATIVE = "a small red circle at the top left", "blue"


@pytest.fixture(scope="module")
def latent_model(tmp_path_factory) -> Path:
    """A tiny latent Next-DiT with every weight random (a fresh build's zero final layer would
    make any two samplers agree)."""
    torch.manual_seed(0)
    config = lumina.LuminaConfig("next_dit", dim=32, n_layers=2, n_heads=2, n_kv_heads=1, cap_feat_dim=32, multiple_of=16,
                                 patch_size=2, in_channels=4, base_image_size=32, vae_downsample=8)
    model = lumina.build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return lumina.save_official(model, tmp_path_factory.mktemp("model") / "latent.safetensors")


def _library(model_file: Path, encoder: str, prompt: str, shape: tuple[int, ...], **settings) -> torch.Tensor:
    """The library call a user writes: prompt and negative encoded together, lumina.sample."""
    model = lumina.load_model(model_file, dtype=torch.float32)
    both = load_text_encoder(encoder, dtype=torch.float32).encode([prompt, NEGATIVE])
    cond = lumina.Conditioning(both.cap_feats[:1], both.cap_mask[:1])
    uncond = lumina.Conditioning(both.cap_feats[1:], both.cap_mask[1:])
    return lumina.sample(model, cond, uncond, shape, **settings)


def _cli(model_file: Path, encoder: str, out: Path, *flags: str) -> list[torch.Tensor]:
    assert main(["sample", str(model_file), "--encoder", encoder, "--negative", NEGATIVE, "--size", "48x32",
                 "--out", str(out), *flags]) == 0
    return [load_file(p)["latents"] for p in sorted(out.glob("*.safetensors"))]


@pytest.mark.parametrize("flags, settings", [
    # --official: lumina.sample's own defaults (30 grid points, shift 4, official CFG 4)
    (["--official", "--seed", "7"], dict(seed=7)),
    # the CLI's defaults (training's validation sampler), spelled out for the library
    (["--seed", "3"], dict(seed=3, steps=20, step_convention="model_steps", shift=1.0, cfg=4.0, cfg_mode="standard")),
    (["--seed", "5", "--steps", "3", "--solver", "midpoint", "--cfg", "2.5", "--cfg-mode", "official", "--shift", "2",
      "--step-convention", "grid_points"],
     dict(seed=5, steps=3, solver="midpoint", cfg=2.5, cfg_mode="official", shift=2.0, step_convention="grid_points")),
])
def test_cli_sample_equals_the_library_call_bit_for_bit(latent_model, encoder, tmp_path, flags, settings):
    (cli,) = _cli(latent_model, encoder, tmp_path / "out", "--prompt", PROMPT, *flags)
    library = _library(latent_model, encoder, PROMPT, (1, 4, 4, 6), **settings)
    assert cli.shape == library.shape and torch.equal(cli, library)


def test_every_prompt_is_its_single_run_and_the_index_says_how(latent_model, encoder, tmp_path):
    """Several prompts: each equals its own single-prompt library call at --seed, and samples.json
    holds the full prompt (file names cut it), the seed and every setting needed to redo it."""
    long_prompt = "a large green triangle at the bottom right on a black background " * 2
    out = tmp_path / "out"
    cli = _cli(latent_model, encoder, out, "--prompt", PROMPT, "--prompt", long_prompt, "--steps", "2", "--seed", "11")
    for got, prompt in zip(cli, [PROMPT, long_prompt], strict=True):
        want = _library(latent_model, encoder, prompt, (1, 4, 4, 6), seed=11, steps=2, step_convention="model_steps",
                        shift=1.0, cfg=4.0, cfg_mode="standard")
        assert torch.equal(got, want)
    index = json.loads((out / "samples.json").read_text())
    assert [row["prompt"] for row in index] == [PROMPT, long_prompt]
    assert [row["file"] for row in index] == sorted(p.name for p in out.glob("*.safetensors"))
    assert len(index[1]["file"]) < len(long_prompt)  # why the index is needed
    assert {k: index[1][k] for k in ("negative", "seed", "steps", "step_convention", "solver", "shift", "cfg", "cfg_mode",
                                      "width", "height", "frames")} == {
        "negative": NEGATIVE, "seed": 11, "steps": 2, "step_convention": "model_steps", "solver": "euler", "shift": 1.0,
        "cfg": 4.0, "cfg_mode": "standard", "width": 48, "height": 32, "frames": 1}
    assert index[0]["weights"] == str(latent_model)
