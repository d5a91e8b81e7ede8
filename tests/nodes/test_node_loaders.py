"""Lumina Model Loader, Lumina Text Encoder Loader, Lumina Text Encode, Lumina Batch Text Encode."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.text_encoders import load_text_encoder
from nodes_support import encode


def load(comfyui, ckpt_name, weight_dtype="fp32", **optional):
    (model,) = comfyui.run_node("LuminaModelLoader", ckpt_name=ckpt_name, weight_dtype=weight_dtype, **optional)
    return model


# -- the model loader -----------------------------------------------------------------------------------

def test_loader_lists_the_checkpoints_of_every_lumina_folder(comfyui, tiny):
    names = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaModelLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert {"tiny_next_dit.safetensors", "tiny_flag_dit.safetensors",
            "tiny_next_dit_diffusers/diffusion_pytorch_model.safetensors"} <= set(names)


@pytest.mark.parametrize("asset, family, caption_dim", [("next_dit", "next_dit", 64), ("flag_dit", "flag_dit", 96),
                                                       ("next_dit_diffusers", "next_dit", 64)])
def test_every_checkpoint_form_loads_as_a_standard_model(comfyui, tiny, asset, family, caption_dim):
    import comfy.model_patcher

    path = getattr(tiny, asset)
    name = tiny.name(path / "diffusion_pytorch_model.safetensors" if path.is_dir() else path)
    model = load(comfyui, name)
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    inner = model.model.diffusion_model
    assert inner.family == family and inner.config.dim == 64 and inner.config.cap_feat_dim == caption_dim
    assert {p.dtype for p in inner.parameters()} == {torch.float32}
    assert model.model.latent_format.scale_factor == pytest.approx(0.13025)  # SDXL latents: core VAE nodes decode them


def test_diffusers_and_official_files_hold_the_same_weights(comfyui, tiny):
    official = load(comfyui, tiny.name(tiny.next_dit)).model.diffusion_model.state_dict()
    diffusers = load(comfyui, tiny.name(tiny.next_dit_diffusers / "diffusion_pytorch_model.safetensors")).model.diffusion_model.state_dict()
    assert official.keys() == diffusers.keys()
    for key in official:
        torch.testing.assert_close(diffusers[key], official[key], atol=0, rtol=0)


def test_weight_dtypes(comfyui, tiny):
    name = tiny.name(tiny.next_dit)
    assert {p.dtype for p in load(comfyui, name, "bf16").model.diffusion_model.parameters()} == {torch.bfloat16}
    # on a CPU: bf16 where it multiplies bf16 natively, fp32 elsewhere
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    expected = torch.bfloat16 if native else torch.float32
    assert {p.dtype for p in load(comfyui, name, "auto").model.diffusion_model.parameters()} == {expected}
    with pytest.raises(ValueError, match="fp16 weights are for GPUs"):
        load(comfyui, name, "fp16")
    fp8 = load(comfyui, name, "fp8_e4m3fn").model.diffusion_model
    dtypes = {n: p.dtype for n, p in fp8.named_parameters()}
    assert dtypes["layers.0.attention.wq.weight"] == torch.float8_e4m3fn and dtypes["x_embedder.weight"] == expected


def test_fp8_weights_sample_close_to_the_compute_dtype(comfyui, tiny, gemma):
    from nodes_support import empty_latent, encode, flow_sample

    captions = encode(comfyui, gemma, "a red circle", "")
    latent = empty_latent(comfyui, 32, 32)
    full = flow_sample(comfyui, load(comfyui, tiny.name(tiny.next_dit), "auto"), *captions, latent, seed=2)
    fp8 = flow_sample(comfyui, load(comfyui, tiny.name(tiny.next_dit), "fp8_e4m3fn"), *captions, latent, seed=2)
    assert torch.isfinite(fp8).all() and not torch.equal(fp8, full)
    assert (fp8 - full).abs().max() <= 0.1 * full.abs().max()  # bound for a 3-step sample (one forward: 5 %, test_fp8.py)
    (handle,) = comfyui.run_node("LuminaTextEncoderLoader", text_encoder=tiny.name(tiny.gemma), dtype="fp8_e4m3fn",
                                 convention="auto", device="cpu")
    assert handle.encoder.model.layers[0].self_attn.q_proj.weight.dtype == torch.float8_e4m3fn
    positive, _ = comfyui.run_node("LuminaTextEncode", text_encoder=handle, prompt="a red circle", negative_prompt="")
    assert torch.isfinite(positive[0][0]).all()


def test_sampling_shift_sets_the_schedule_of_core_samplers(comfyui, tiny):
    import comfy.samplers

    name = tiny.name(tiny.next_dit)
    default = comfy.samplers.calculate_sigmas_scheduler(load(comfyui, name).model, "simple", 4)
    same = comfy.samplers.calculate_sigmas_scheduler(load(comfyui, name, sampling_shift=4.0).model, "simple", 4)
    shifted = comfy.samplers.calculate_sigmas_scheduler(load(comfyui, name, sampling_shift=8.0).model, "simple", 4)
    torch.testing.assert_close(same, default)
    assert default[0] == pytest.approx(1.0, abs=1e-3) and default[-1] == 0.0
    assert (shifted[1:-1] > default[1:-1]).all()  # a larger shift spends more of the steps near noise


def test_bad_checkpoints_are_clear_errors(comfyui, tiny):
    with pytest.raises(ValueError) as info:
        load(comfyui, tiny.name(tiny.not_lumina))
    assert "not_lumina.safetensors" in str(info.value) and "no Lumina model found" in str(info.value)
    with pytest.raises(FileNotFoundError, match="'no_such_model.safetensors' not found .* put it in models/lumina"):
        load(comfyui, "no_such_model.safetensors")


# -- text encoders ----------------------------------------------------------------------------------------

def test_text_encoder_loader_lists_and_loads_local_folders(comfyui, tiny):
    names = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaTextEncoderLoader"].INPUT_TYPES()["required"]["text_encoder"][0]
    assert {"tiny_gemma", "tiny_llama"} <= set(names)
    (handle,) = comfyui.run_node("LuminaTextEncoderLoader", text_encoder="tiny_llama", dtype="fp32", convention="auto", device="cpu")
    assert handle.encode(["a red circle"]).cap_feats.shape[-1] == 96
    with pytest.raises(ValueError, match="fp16 text encoders are for GPUs"):
        comfyui.run_node("LuminaTextEncoderLoader", text_encoder="tiny_gemma", dtype="fp16", convention="auto", device="cpu")
    with pytest.raises(FileNotFoundError, match="'no_such_encoder' not found"):
        comfyui.run_node("LuminaTextEncoderLoader", text_encoder="no_such_encoder", dtype="fp32", convention="auto")


def test_text_encode_gives_two_conditionings_encoded_together(comfyui, tiny, gemma):
    prompt, negative = "a small red circle at the top left", "blurry"
    positive, negative_cond = encode(comfyui, gemma, prompt, negative)
    assert len(positive) == 1 and len(negative_cond) == 1  # standard CONDITIONING: [[features, {extras}]]
    (feats, extras), (neg_feats, neg_extras) = positive[0], negative_cond[0]
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert feats.shape[0] == 1 and feats.shape[2] == 64 and feats.shape == neg_feats.shape  # one padded batch
    mask, neg_mask = extras["attention_mask"], neg_extras["attention_mask"]
    assert mask.shape == feats.shape[:2] and mask.sum() > neg_mask.sum() > 0

    library = load_text_encoder(tiny.gemma, dtype=torch.float32).encode([prompt, negative])
    torch.testing.assert_close(feats, library.cap_feats[:1].float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(neg_feats, library.cap_feats[1:].float(), atol=1e-6, rtol=0)
    assert torch.equal(mask, library.cap_mask[:1].cpu()) and torch.equal(neg_mask, library.cap_mask[1:].cpu())


def test_batch_text_encode_gives_one_item_per_line(comfyui, gemma):
    (positive, negative) = comfyui.run_node("LuminaBatchTextEncode", text_encoder=gemma,
                                            prompts="a red circle\n\n  a blue square  \na green triangle", negative_prompt="")
    feats, extras = positive[0]
    assert feats.shape[0] == 3 and extras["attention_mask"].shape == feats.shape[:2] and negative[0][0].shape[0] == 1
    single, _ = encode(comfyui, gemma, "a blue square")
    n = int(single[0][1]["attention_mask"].sum())
    torch.testing.assert_close(feats[1, :n], single[0][0][0, :n], atol=1e-5, rtol=0)  # stripped, blank lines skipped
    with pytest.raises(ValueError, match="write at least one prompt"):
        comfyui.run_node("LuminaBatchTextEncode", text_encoder=gemma, prompts=" \n\n", negative_prompt="")


def test_the_library_is_a_separate_copy_from_the_packs(comfyui):
    """Our tests compare node outputs with the top-level `lumina`; the nodes use the pack's copy."""
    assert comfyui.pack.lumina is not lumina and comfyui.pack.lumina.__name__ == "comfyui_lumina_t2x.lumina"


def test_text_encode_nodes_name_unknown_words_once(comfyui, gemma):
    with pytest.warns(UserWarning) as record:
        comfyui.run_node("LuminaTextEncode", text_encoder=gemma, prompt="a red zebra at the top", negative_prompt="zebra stripes")
    assert len(record) == 1 and "'zebra' (prompt 1, 2), 'stripes' (prompt 2)" in str(record[0].message)
    with pytest.warns(UserWarning, match=r"does not know 1 word: 'unicorn' \(prompt 2\)"):
        comfyui.run_node("LuminaBatchTextEncode", text_encoder=gemma, prompts="a red cat\na unicorn", negative_prompt="")
