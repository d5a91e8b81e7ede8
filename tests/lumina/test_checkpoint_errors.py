"""Checkpoints that are wrong must say so (issue 13): nothing loads as another model, nothing
broken loads silently, and every refusal is one LuminaCheckpointError naming the file, the family
guessed, the offending keys and the fix.

Covered: a diffusers config.json that contradicts its tensors, NaN/inf weights, JSON that does not
parse (config.json, the shard index, our lumina_config metadata), one stray layer key, and torch's
old (non-zip) .pth format, which loads weights-only without mmap and still never runs pickled code.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import lumina
from lumina.checkpoints import CONFIG_METADATA_KEY, read_state_dict
from lumina.config import layer_count
from lumina_support import assert_checkpoint_message, load_error

GOLDEN_DIR = Path(__file__).parents[1] / "fixtures" / "golden"
GOLDEN_SETS = {"next_dit": "nextdit_tiny", "flag_dit": "flagdit_tiny"}
StateDict = dict[str, torch.Tensor]


@lru_cache(maxsize=None)
def _golden(family: str) -> tuple[StateDict, StateDict]:
    """(official-named weights, golden tensors) of a family; never modified in place."""
    root = GOLDEN_DIR / GOLDEN_SETS[family]
    return load_file(str(root / "model.safetensors")), load_file(str(root / "tensors.safetensors"))


def _sd(family: str) -> StateDict:
    return dict(_golden(family)[0])


@pytest.fixture(params=list(GOLDEN_SETS))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def _save(sd: StateDict, path: Path, metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def assert_message(msg: str, *parts: str, family: str | None) -> None:
    """The checkpoint message parts, the family guessed, and a fix."""
    assert_checkpoint_message(msg, *parts, family=family, fix=True)


def _assert_golden(model: lumina.LuminaDiT, family: str) -> None:
    sd, t = _golden(family)
    state = model.state_dict()
    assert sorted(state) == sorted(sd)
    assert all(torch.equal(state[k], v) for k, v in sd.items())
    with torch.no_grad():
        out = model(t["in.x_sq"], t["in.t"], t["in.cap_feats"], t["in.cap_mask"])
    assert (out - t["fwd.sq.out"]).abs().max() <= 1e-5


# -- a diffusers config.json that contradicts the tensors -------------------------------------
def _diffusers_folder(tmp: Path, **config_changes: Any) -> Path:
    """The Next-DiT golden as a diffusers folder, its config.json edited."""
    folder = lumina.save_diffusers(_sd("next_dit"), tmp / "transformer")
    config = json.loads((folder / "config.json").read_text())
    for key, value in config_changes.items():
        if value is _DROP:
            config.pop(key)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


_DROP = object()


def test_unedited_config_json_loads(tmp_path: Path) -> None:
    _assert_golden(lumina.load_model(_diffusers_folder(tmp_path)), "next_dit")


def test_in_channels_that_contradicts_the_patch_embedder(tmp_path: Path) -> None:
    """The issue's case: 2²×4 = 16 features per patch, config.json says 16 channels; this used to
    load as patch size 1 with 16 channels."""
    folder = _diffusers_folder(tmp_path, in_channels=16)
    msg = load_error(folder)
    assert_message(
        msg, str(folder / "config.json"), "contradicts the tensors",
        "in_channels is 16 there, the tensors say 4 with patch_size 2", "Offending keys: in_channels.",
        str(folder / "diffusion_pytorch_model.safetensors"), "the tensors decide the model", family="next_dit",
    )


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("hidden_size", 256, "hidden_size is 256 there, the tensors say 128"),
        ("num_layers", 3, "num_layers is 3 there, the tensors say 2"),
        ("cross_attention_dim", 2048, "cross_attention_dim is 2048 there, the tensors say 48"),
        ("num_attention_heads", 8, "num_attention_heads is 8 there, the tensors say 4"),
        ("num_kv_heads", 4, "num_kv_heads is 4 there, the tensors say 2"),
        ("learn_sigma", False, "learn_sigma is False there, the tensors say True"),
        ("qk_norm", False, "qk_norm is False there, the tensors say True"),
        ("multiple_of", 256,
         "multiple_of/ffn_dim_multiplier is 256/None there (an FFN width of 512), the tensors say 352"),
        ("patch_size", 3, "patch_size is 3 there, the tensors say 16 features per patch"),
        ("hidden_size", "128", "hidden_size is '128' there, not a positive integer"),
    ],
)
def test_config_json_field_that_contradicts_the_tensors(tmp_path: Path, key: str, value: Any, says: str) -> None:
    folder = _diffusers_folder(tmp_path, **{key: value})
    assert_message(load_error(folder), str(folder / "config.json"), says, family="next_dit")


def test_a_malformed_value_is_reported_once(tmp_path: Path) -> None:
    msg = load_error(_diffusers_folder(tmp_path, num_layers="2"))
    assert msg.count("num_layers") == 2, msg  # the detail and the offending key, no second "contradiction"


def test_every_contradiction_is_listed(tmp_path: Path) -> None:
    folder = _diffusers_folder(tmp_path, hidden_size=64, num_layers=8, cross_attention_dim=4096)
    assert_message(
        load_error(folder), "hidden_size is 64", "num_layers is 8", "cross_attention_dim is 4096",
        "Offending keys: hidden_size, num_layers, cross_attention_dim.", family="next_dit",
    )


def test_in_channels_alone_must_split_the_patch_embedder(tmp_path: Path) -> None:
    folder = _diffusers_folder(tmp_path, patch_size=_DROP, in_channels=3)
    assert_message(load_error(folder), "in_channels is 3 there", "1²×16 or 2²×4 or 4²×1", family="next_dit")


def test_config_json_without_shape_keys_follows_the_tensors(tmp_path: Path) -> None:
    """Keys config.json leaves out cannot contradict anything: the tensors' reading stands."""
    folder = _diffusers_folder(tmp_path, in_channels=_DROP, patch_size=_DROP, num_layers=_DROP)
    _assert_golden(lumina.load_model(folder), "next_dit")


# -- NaN and infinite weights ------------------------------------------------------------------
def test_nan_and_inf_weights_are_refused_with_their_names(tmp_path: Path, family: str) -> None:
    sd = _sd(family)
    sd["layers.1.attention.wo.weight"] = sd["layers.1.attention.wo.weight"].clone()
    sd["layers.1.attention.wo.weight"][3, 5] = float("nan")
    sd["final_layer.linear.bias"] = sd["final_layer.linear.bias"].clone()
    sd["final_layer.linear.bias"][0] = float("-inf")
    path = _save(sd, tmp_path / "diverged.safetensors")
    msg = load_error(path)
    assert_message(msg, str(path), "2 tensor(s) hold NaN or infinite values",
                    "final_layer.linear.bias", "layers.1.attention.wo.weight", "earlier checkpoint", family=family)
    # also when cast while reading, and through read_state_dict
    assert_message(load_error(path, dtype=torch.bfloat16), "hold NaN or infinite values", family=family)
    with pytest.raises(lumina.LuminaCheckpointError, match="hold NaN or infinite values"):
        read_state_dict(path)


def test_nan_in_a_state_dict_is_refused(family: str) -> None:
    sd = _sd(family)
    sd["x_embedder.weight"] = torch.full_like(sd["x_embedder.weight"], float("nan"))
    assert_message(load_error(sd), "state dict", "1 tensor(s) hold NaN", "x_embedder.weight", family=family)


def test_nan_in_diffusers_names_is_reported_as_nan(tmp_path: Path) -> None:
    """The duplicated cross-attention query holds the same NaN: reported as NaN, under the
    file's own names, not as two tensors that differ."""
    folder = _diffusers_folder(tmp_path)
    sd = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    for key in ("layers.0.attn1.to_q.weight", "layers.0.attn2.to_q.weight"):
        sd[key] = sd[key].clone()
        sd[key][0, 0] = float("nan")
    _save(sd, folder / "diffusion_pytorch_model.safetensors")
    assert_message(load_error(folder), "2 tensor(s) hold NaN", "layers.0.attn1.to_q.weight",
                    "layers.0.attn2.to_q.weight", family="next_dit")


def test_nan_in_a_pth_file_is_refused(tmp_path: Path) -> None:
    sd = _sd("flag_dit")
    sd["eol_token"] = torch.full_like(sd["eol_token"], float("inf"))
    torch.save({"model": sd}, tmp_path / "train.pth")
    assert_message(load_error(tmp_path / "train.pth"), "eol_token", "NaN or infinite", family="flag_dit")


def test_weights_that_overflow_the_requested_dtype(tmp_path: Path) -> None:
    sd = _sd("next_dit")
    sd["layers.0.attention.wq.weight"] = sd["layers.0.attention.wq.weight"] * 1e6  # finite in fp32, not in fp16
    path = _save(sd, tmp_path / "wide.safetensors")
    assert_message(load_error(path, dtype=torch.float16), "1 tensor(s) overflow to infinity when cast to float16",
                    "layers.0.attention.wq.weight", "load in bfloat16 or float32", family="next_dit")
    assert lumina.load_model(path, dtype=torch.bfloat16).config.dim == 128


def test_nan_outside_the_model_in_a_bundled_file_is_ignored(tmp_path: Path) -> None:
    """A broken VAE bundled in a ComfyUI all-in-one file is not the model's concern."""
    extra = {"first_stage_model.decoder.conv_out.bias": torch.full((3,), float("nan"))}
    sd = {**extra, **{"model.diffusion_model." + k: v for k, v in _sd("next_dit").items()}}
    _assert_golden(lumina.load_model(_save(sd, tmp_path / "aio.safetensors")), "next_dit")


def test_large_finite_sums_are_not_mistaken_for_inf() -> None:
    """fp16 sums overflow at 65504; the element-wise confirmation keeps such weights loadable."""
    sd = _sd("next_dit")
    sd["layers.0.attention.wq.weight"] = torch.full_like(sd["layers.0.attention.wq.weight"], 60000.0)
    model = lumina.load_model(sd, dtype=torch.float16)
    assert torch.isfinite(model.state_dict()["layers.0.attention.wq.weight"]).all()


# -- JSON that does not parse --------------------------------------------------------------------
def test_config_json_that_is_not_json(tmp_path: Path) -> None:
    folder = _diffusers_folder(tmp_path)
    (folder / "config.json").write_text('{\n  "hidden_size": 128,\n  "num_layers": 2\n  "patch_size": 2\n}')
    msg = load_error(folder)
    assert_message(msg, str(folder / "config.json"), "config.json is not valid JSON",
                    "Expecting ',' delimiter at line 4 column 3, char 44", "fix config.json", family="next_dit")


def test_config_json_that_is_not_an_object(tmp_path: Path) -> None:
    folder = _diffusers_folder(tmp_path)
    (folder / "config.json").write_text("[1, 2]")
    assert_message(load_error(folder), str(folder / "config.json"), "holds a JSON list, not an object",
                    family="next_dit")


def test_shard_index_that_is_not_json(tmp_path: Path) -> None:
    folder = lumina.save_diffusers(_sd("next_dit"), tmp_path / "transformer")
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "part-00001.safetensors")
    index.write_text('{"weight_map": {"pad_token": "part-00001.safetensors",}}')
    assert_message(load_error(folder), str(index), "is not valid JSON", "line 1 column 55, char 54", family=None)
    index.write_text('{"weight_map": {"pad_token": "part-00002.safetensors"}}')
    assert_message(load_error(folder), str(index), "shard part-00002.safetensors listed in the index is missing",
                    family=None)


def test_lumina_config_metadata_that_is_not_json(tmp_path: Path, family: str) -> None:
    path = _save(_sd(family), tmp_path / "ours.safetensors", metadata={CONFIG_METADATA_KEY: '{"family": "next_dit",'})
    assert_message(load_error(path), str(path), "its lumina_config metadata is not valid JSON",
                    "line 1 column 23, char 22", "lumina.save_official", family=family)


def test_lumina_config_metadata_that_is_no_config(tmp_path: Path) -> None:
    path = _save(_sd("next_dit"), tmp_path / "ours.safetensors",
                 metadata={CONFIG_METADATA_KEY: json.dumps({"family": "next_dit", "dim": 128})})
    assert_message(load_error(path), str(path), "lumina_config metadata is not a valid configuration",
                    "n_layers", family="next_dit")


# -- a stray layer key -----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["foo.weight", "attention.wq.weight"])
def test_stray_layer_key_is_one_unexpected_key(tmp_path: Path, family: str, suffix: str) -> None:
    sd = _sd(family)
    key = f"layers.2.{suffix}"
    path = _save({**sd, key: sd["layers.0.attention.wq.weight"]}, tmp_path / "stray.safetensors")
    msg = load_error(path)
    assert_message(msg, str(path), "1 unexpected key(s) for a 2-layer model",
                    "layer 2 lies beyond the 2 layers 0–1 the other tensors describe",
                    f"Offending keys: unexpected {key}.", "remove those tensors from the file", family=family)
    assert "missing" not in msg


def test_stray_key_far_beyond_the_layers(tmp_path: Path) -> None:
    sd = _sd("next_dit")
    path = _save({**sd, "layers.17.gate": torch.zeros(4)}, tmp_path / "stray.safetensors")
    assert_message(load_error(path), "1 unexpected key(s) for a 2-layer model", "layer 17 lies beyond",
                    "unexpected layers.17.gate", family="next_dit")


def test_layer_count_reads_the_majority() -> None:
    block = ["attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "feed_forward.w1.weight"]
    full = [f"layers.{i}.{s}" for i in range(8) for s in block]
    assert layer_count(full) == 8
    assert layer_count(full + ["layers.8.foo"]) == 8  # one stray key: not a ninth block
    assert layer_count(full + ["layers.30.foo", "layers.9.bar"]) == 8
    assert layer_count(full[:-1]) == 8  # the last block lacks one tensor: still a block, reported missing
    assert layer_count([k for k in full if not k.startswith("layers.3.")]) == 8  # a whole block missing inside
    assert layer_count(["x_embedder.weight"]) == 0


def test_a_real_last_layer_missing_a_tensor_is_still_missing(tmp_path: Path, family: str) -> None:
    sd = _sd(family)
    del sd["layers.1.attention.wq.weight"]
    path = _save(sd, tmp_path / "incomplete.safetensors")
    assert_message(load_error(path), "1 missing key(s) for a 2-layer model", "missing layers.1.attention.wq.weight",
                    family=family)


# -- torch's old (non-zip) .pth format -------------------------------------------------------------
@pytest.mark.parametrize("nested", [False, True])
def test_old_format_pth_loads(tmp_path: Path, family: str, nested: bool) -> None:
    path = tmp_path / "ckpt" / "consolidated.00-of-01.pth"
    path.parent.mkdir()
    torch.save({"model": _sd(family), "step": 3} if nested else _sd(family), str(path),
               _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b"PK")  # really the old format
    _assert_golden(lumina.load_model(path), family)
    _assert_golden(lumina.load_model(path.parent), family)
    model = lumina.load_model(path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


class _Payload:
    """Unpickling this object would create `marker` (pickled as a call to open)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("zip_format", [False, True])
def test_pickled_code_is_refused_in_either_format(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({**_sd("next_dit"), "evil": _Payload(marker)}, str(path), _use_new_zipfile_serialization=zip_format)
    msg = load_error(path)
    assert not marker.exists()
    assert_message(msg, str(path), "cannot be read as plain PyTorch weights", "it pickles io.open",
                    "pickles code, which is refused for safety and never run", family=None)
    assert "weights_only` set to `False" not in msg  # torch's advice to run it is not passed on
    torch.load(str(path), weights_only=False)["evil"].close()  # the payload is live
    assert marker.exists()


def test_truncated_old_format_pth(tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    torch.save(_sd("flag_dit"), str(path), _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_message(load_error(path), str(path), "cannot be read as plain PyTorch weights", "truncated", family=None)
