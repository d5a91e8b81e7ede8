"""What train/ writes works in ComfyUI: the checkpoint loads through the node loader and samples,
and the exported LoRA, applied by core LoraLoaderModelOnly, reproduces the merged model."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.dim=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "model.patch_size=4",
        "model.multiple_of=16", "model.base_image_size=16", "data.image_size=16", "data.repeats=1",
        "optim.batch_size=8", "optim.warmup_steps=0", "run.ema_decay=0.9"]


@pytest.fixture(scope="module")
def trained(e2e_workspace, tiny_assets) -> dict:
    sys.path.insert(0, str(REPO))
    from train.config import load_config
    from train.engine import fit

    lumina_dir = e2e_workspace.models_dir / "lumina"
    common = [*TINY, f"text.encoder={tiny_assets.gemma}"]
    base = fit(load_config(None, [*common, f"run.out_dir={lumina_dir / 'trained'}", "optim.steps=4", "run.save_every=4"]))
    base_file = base / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors"
    lora = fit(load_config(None, [*common, f"run.out_dir={e2e_workspace.root / 'lora_run'}", "optim.steps=4", "run.save_every=4",
                                  f"model.init_from={base_file}", "model.lora_rank=4", "optim.lr=5e-2"]))
    (e2e_workspace.models_dir / "loras").mkdir(exist_ok=True)
    shutil.copy(lora / "checkpoints" / "latest" / "lora.safetensors", e2e_workspace.models_dir / "loras" / "tiny_lora.safetensors")
    shutil.copy(lora / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors", lumina_dir / "tiny_lora_merged.safetensors")
    return {"ema": "trained/checkpoints/latest/consolidated_ema.00-of-01.safetensors",
            "base": "trained/checkpoints/latest/consolidated.00-of-01.safetensors",
            "merged": "tiny_lora_merged.safetensors", "encoder": tiny_assets.name(tiny_assets.gemma)}


def pixel_graph(ckpt: str, encoder: str, prefix: str, lora: str | None = None, weight_dtype: str = "fp32") -> dict:
    model = ["1", 0]
    graph = {
        "1": {"class_type": "LuminaModelLoader", "inputs": {"ckpt_name": ckpt, "weight_dtype": weight_dtype}},
        "2": {"class_type": "LuminaTextEncoderLoader", "inputs": {"text_encoder": encoder, "dtype": "fp32", "convention": "auto"}},
        "3": {"class_type": "LuminaTextEncode", "inputs": {"text_encoder": ["2", 0], "prompt": "a small red circle at the top left",
                                                         "negative_prompt": ""}},
        "6": {"class_type": "LuminaPixelSpaceVAE", "inputs": {}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix}},
    }
    if lora:
        graph["9"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": lora, "strength_model": 1.0}}
        model = ["9", 0]
    graph["4"] = {"class_type": "LuminaEmptyLatent", "inputs": {"preset": "custom", "width": 16, "height": 16, "batch_size": 1, "model": model}}
    graph["5"] = {"class_type": "LuminaFlowSampler", "inputs": {
        "model": model, "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["4", 0], "seed": 5, "steps": 4,
        "step_convention": "model steps", "solver": "euler", "schedule": "shift", "shift": 1.0, "cfg": 3.0,
        "cfg_mode": "standard", "extrapolation": "auto", "denoise": 1.0}}
    return graph


def test_trained_checkpoint_loads_and_samples(comfy_server, trained, unique_prefix):
    entry = comfy_server.run(pixel_graph(trained["ema"], trained["encoder"], unique_prefix))
    [png] = comfy_server.output_files(entry)
    with Image.open(png) as img:
        assert img.size == (16, 16)


def test_exported_lora_in_core_loader_equals_the_merged_model(comfy_inprocess, trained, unique_prefix):
    def latent(graph):
        entry = comfy_inprocess.run(graph, dump=["5"])
        return load_file(entry["dumps"]["5"])["0.samples"]

    with_lora = latent(pixel_graph(trained["base"], trained["encoder"], unique_prefix, lora="tiny_lora.safetensors"))
    merged = latent(pixel_graph(trained["merged"], trained["encoder"], unique_prefix))
    base = latent(pixel_graph(trained["base"], trained["encoder"], unique_prefix))
    torch.testing.assert_close(with_lora, merged, atol=1e-5, rtol=0)
    assert (with_lora - base).abs().max() > 1e-4  # the LoRA really changes the model


def test_a_lora_on_fp8_weights_is_the_merged_model_up_to_fp8_rounding(comfy_inprocess, trained, unique_prefix):
    """Core LoraLoaderModelOnly on a model loaded with fp8_e4m3fn blocks: ComfyUI patches the fp8
    weights (cast up, add the LoRA, round back). The sample is as far from the fp32 merged model's
    as the merged model loaded in fp8 is (fp8's own rounding; measured 1.1-1.3x), and the LoRA's
    effect is well above that rounding (measured 3.6x)."""
    def latent(ckpt, lora=None, weight_dtype="fp8_e4m3fn"):
        graph = pixel_graph(ckpt, trained["encoder"], unique_prefix, lora=lora, weight_dtype=weight_dtype)
        return load_file(comfy_inprocess.run(graph, dump=["5"])["dumps"]["5"])["0.samples"]

    merged32 = latent(trained["merged"], weight_dtype="fp32")
    rounding = (latent(trained["merged"]) - merged32).norm()
    with_lora = latent(trained["base"], "tiny_lora.safetensors")
    assert torch.isfinite(with_lora).all() and rounding > 0
    assert (with_lora - merged32).norm() < 1.5 * rounding, (float((with_lora - merged32).norm()), float(rounding))
    assert (latent(trained["base"]) - merged32).norm() > 2 * rounding  # without the LoRA: far off


def test_with_lora_puts_the_lora_after_the_loader_at_any_strength(comfy_inprocess, trained, unique_prefix):
    """What `scripts/demo --lora` does to a workflow, in the real ComfyUI: strength 1 is the merged
    model, strength 0 the base model."""
    from tools.comfyui import with_lora

    def latent(graph):
        entry = comfy_inprocess.run(graph, dump=["5"])
        return load_file(entry["dumps"]["5"])["0.samples"]

    base_graph = pixel_graph(trained["base"], trained["encoder"], unique_prefix)
    full = latent(with_lora(base_graph, "tiny_lora.safetensors", 1.0))
    off = latent(with_lora(base_graph, "tiny_lora.safetensors", 0.0))
    torch.testing.assert_close(full, latent(pixel_graph(trained["merged"], trained["encoder"], unique_prefix)), atol=1e-5, rtol=0)
    torch.testing.assert_close(off, latent(base_graph), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no Lumina Model Loader"):
        with_lora({"1": {"class_type": "KSampler", "inputs": {}}}, "x.safetensors")
