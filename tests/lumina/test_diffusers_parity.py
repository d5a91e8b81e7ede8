"""Our Next-DiT against diffusers' LuminaNextDiT2DModel on the same weights, both directions.

(a) the official golden weights, written by `lumina.save_diffusers` and read by diffusers;
(b) diffusers models with seeded random weights, written by diffusers and read by `lumina.load_model`.
Forwards must agree to 1e-5 and the weights must survive diffusers → ours → diffusers bit for bit.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lumina

diffusers = pytest.importorskip("diffusers")
from diffusers import LuminaNextDiT2DModel  # noqa: E402
from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina  # noqa: E402

GOLDEN_DIR = Path(__file__).parents[1] / "fixtures" / "golden"
ATOL = 1e-5

# Small diffusers configs: head_dim divisible by 4 (2-D RoPE); GQA where num_kv_heads < heads.
DIFFUSERS_CONFIGS = {
    "gqa": dict(
        hidden_size=96, num_layers=2, num_attention_heads=4, num_kv_heads=2, multiple_of=32,
        cross_attention_dim=40,
    ),
    "mqa_no_qknorm_no_sigma": dict(
        hidden_size=64, num_layers=2, num_attention_heads=2, num_kv_heads=1, multiple_of=16,
        cross_attention_dim=24, qk_norm=False, learn_sigma=False,
    ),
    # FFN width from ffn_dim_multiplier: int(2·4·256/3)=682 → int(0.68·682)=463 → rounded to 464
    "ffn_multiplier": dict(
        hidden_size=256, num_layers=1, num_attention_heads=4, num_kv_heads=2, multiple_of=16,
        ffn_dim_multiplier=0.68, cross_attention_dim=32,
    ),
}


# -- helpers --------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _golden_next_dit() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    root = GOLDEN_DIR / "nextdit_tiny"
    return load_file(str(root / "model.safetensors")), load_file(str(root / "tensors.safetensors"))


def _init_nontrivial(module: torch.nn.Module, seed: int = 0) -> None:
    """Seeded weights far from diffusers' init: nonzero gates (cross-attention matters), norm
    weights near 1, small biases, matrices scaled by 1/sqrt(fan_in), a random pad token; the
    cross-attention query (attn2.to_q, attn2.norm_q) tied to the self-attention one as in Lumina."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("gate"):
                p.copy_(0.5 * noise)
            elif p.ndim >= 2:
                p.copy_(noise / math.sqrt(p.shape[1]))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:  # biases, pad_token
                p.copy_(0.05 * noise if name.endswith("bias") else noise)
        for layer in getattr(module, "layers", ()):  # the official model has one query for both
            layer.attn2.to_q.load_state_dict(layer.attn1.to_q.state_dict())
            if layer.attn1.norm_q is not None:
                layer.attn2.norm_q.load_state_dict(layer.attn1.norm_q.state_dict())


def _random_diffusers_model(config_name: str) -> LuminaNextDiT2DModel:
    dm = LuminaNextDiT2DModel(sample_size=16, **DIFFUSERS_CONFIGS[config_name])
    _init_nontrivial(dm)
    return dm.eval()


def _inputs(in_channels: int, cap_dim: int, shape: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(7)
    hw = {"sq": (16, 16), "ns": (12, 20)}[shape]
    x = torch.randn(2, in_channels, *hw, generator=gen)
    t = torch.tensor([0.3, 0.8])
    cap = torch.randn(2, 7, cap_dim, generator=gen)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    return x, t, cap, mask


def _diffusers_forward(dm: LuminaNextDiT2DModel, x, t, cap, mask) -> torch.Tensor:
    rope = get_2d_rotary_pos_embed_lumina(dm.head_dim, 384, 384)
    with torch.no_grad():
        return dm(x, t, cap, mask, rope, cross_attention_kwargs={}, return_dict=False)[0]


def _our_forward(model: lumina.LuminaDiT, x, t, cap, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(x, t, cap, mask, return_sigma=True)


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff <= ATOL, f"max abs diff {diff:.3g} > {ATOL}"


def _assert_parity(model: lumina.LuminaDiT, dm: LuminaNextDiT2DModel, shape: str) -> None:
    x, t, cap, mask = _inputs(dm.config.in_channels, dm.config.cross_attention_dim, shape)
    _assert_close(_our_forward(model, x, t, cap, mask), _diffusers_forward(dm, x, t, cap, mask))


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


# -- (a) official golden → diffusers --------------------------------------------------------
@pytest.mark.parametrize("shape", ["sq", "ns"])
def test_golden_saved_for_diffusers_matches_our_forward(tmp_path: Path, shape: str) -> None:
    sd, tensors = _golden_next_dit()
    model = lumina.load_model(GOLDEN_DIR / "nextdit_tiny" / "model.safetensors")
    folder = lumina.save_diffusers(model, tmp_path / "transformer")
    dm = LuminaNextDiT2DModel.from_pretrained(folder).eval()

    args = (tensors[f"in.x_{shape}"], tensors["in.t"], tensors["in.cap_feats"], tensors["in.cap_mask"])
    theirs = _diffusers_forward(dm, *args)
    ours = _our_forward(model, *args)
    _assert_close(ours, theirs)  # both halves (velocity and sigma)
    with torch.no_grad():
        _assert_close(model(*args), theirs[:, : model.config.in_channels])
    _assert_close(theirs, tensors[f"diffusers.fwd.{shape}.out_full"])


def test_golden_saved_for_diffusers_config_rebuilds_same_shapes(tmp_path: Path) -> None:
    model = lumina.load_model(GOLDEN_DIR / "nextdit_tiny" / "model.safetensors")
    folder = lumina.save_diffusers(model, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    fresh = LuminaNextDiT2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    saved = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    assert {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == {k: tuple(v.shape) for k, v in saved.items()}


# -- (b) random diffusers weights → ours ----------------------------------------------------
@pytest.mark.parametrize("shape", ["sq", "ns"])
@pytest.mark.parametrize("config_name", list(DIFFUSERS_CONFIGS))
def test_random_diffusers_model_loads_with_same_forward(tmp_path: Path, config_name: str, shape: str) -> None:
    dm = _random_diffusers_model(config_name)
    dm.save_pretrained(tmp_path / "dm")
    model = lumina.load_model(tmp_path / "dm")
    c, dc = model.config, dm.config
    assert (c.family, c.dim, c.n_layers, c.n_heads, c.kv_heads) == (
        "next_dit", dc.hidden_size, dc.num_layers, dc.num_attention_heads, dc.num_kv_heads or dc.num_attention_heads
    )
    assert (c.qk_norm, c.learn_sigma, c.cap_feat_dim) == (dc.qk_norm, dc.learn_sigma, dc.cross_attention_dim)
    _assert_parity(model, dm, shape)


def test_random_weights_make_cross_attention_matter() -> None:
    """Guard for the parity tests: the seeded weights are not a near-identity that hides errors."""
    dm = _random_diffusers_model("gqa")
    assert all(layer.gate.abs().min() > 1e-3 for layer in dm.layers)
    x, t, cap, mask = _inputs(4, 40, "sq")
    out = _diffusers_forward(dm, x, t, cap, mask)
    out_other_caption = _diffusers_forward(dm, x, t, torch.randn_like(cap), mask)
    assert (out - out_other_caption).abs().max() > 1e-2
    # gates set to 0 switch cross-attention off: the output must move
    for layer in dm.layers:
        layer.gate.data.zero_()
    assert (out - _diffusers_forward(dm, x, t, cap, mask)).abs().max() > 1e-2


def test_pipeline_folder_loads_its_transformer(tmp_path: Path) -> None:
    dm = _random_diffusers_model("gqa")
    pipe = tmp_path / "pipeline"
    dm.save_pretrained(pipe / "transformer")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "LuminaText2ImgPipeline"}))
    (pipe / "vae").mkdir()
    model = lumina.load_model(pipe)
    _assert_same_tensors(model.state_dict(), lumina.load_model(pipe / "transformer").state_dict())
    _assert_parity(model, dm, "sq")


@pytest.mark.parametrize("layout", ["sharded_safetensors", "bin"])
def test_other_diffusers_file_layouts_load(tmp_path: Path, layout: str) -> None:
    dm = _random_diffusers_model("gqa")
    if layout == "sharded_safetensors":
        dm.save_pretrained(tmp_path, max_shard_size="100KB")
        assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
    else:
        dm.save_pretrained(tmp_path, safe_serialization=False)
        assert (tmp_path / "diffusion_pytorch_model.bin").is_file()
    _assert_parity(lumina.load_model(tmp_path), dm, "sq")


@pytest.mark.parametrize(
    "config_name",
    DIFFUSERS_CONFIGS,
)
def test_diffusers_round_trip_is_exact_and_loadable(tmp_path: Path, config_name: str) -> None:
    """diffusers → ours → save_diffusers gives diffusers' own tensors back, and diffusers can
    rebuild the model from our config.json with the same forward."""
    dm = _random_diffusers_model(config_name)
    dm.save_pretrained(tmp_path / "in")
    out = lumina.save_diffusers(lumina.load_model(tmp_path / "in"), tmp_path / "out")
    _assert_same_tensors(load_file(str(out / "diffusion_pytorch_model.safetensors")), dm.state_dict())
    reloaded = LuminaNextDiT2DModel.from_pretrained(out).eval()
    x, t, cap, mask = _inputs(dm.config.in_channels, dm.config.cross_attention_dim, "sq")
    assert torch.equal(_diffusers_forward(reloaded, x, t, cap, mask), _diffusers_forward(dm, x, t, cap, mask))


def test_diffusers_config_json_decides_patch_and_channels(tmp_path: Path) -> None:
    dm = LuminaNextDiT2DModel(
        sample_size=16, patch_size=2, in_channels=16, hidden_size=64, num_layers=1,
        num_attention_heads=2, num_kv_heads=1, multiple_of=16, cross_attention_dim=24,
    )
    _init_nontrivial(dm)
    dm.save_pretrained(tmp_path)
    model = lumina.load_model(tmp_path)
    assert (model.config.patch_size, model.config.in_channels) == (2, 16)
    _assert_parity(model, dm.eval(), "sq")
