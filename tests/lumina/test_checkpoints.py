"""Checkpoint reading, writing and conversion (`lumina.checkpoints`).

Every accepted form of the golden weights must load into a model whose tensors equal the file's
and whose forward equals the official golden output; round trips must be bit-exact; every bad
input must fail with a LuminaCheckpointError naming the file, the family guessed and the keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

import lumina
from lumina_support import assert_checkpoint_message, load_error
from lumina.checkpoints import diffusers_to_official, official_to_diffusers

GOLDEN_DIR = Path(__file__).parents[1] / "fixtures" / "golden"
GOLDEN_SETS = {"next_dit": "nextdit_tiny", "flag_dit": "flagdit_tiny"}
ATOL = 1e-5
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Ref:
    family: str
    file: Path  # the golden model.safetensors (official keys, no metadata)
    sd: StateDict
    tensors: StateDict
    manifest: dict

    def state_dict(self) -> StateDict:
        """A fresh dict (tensors shared, never modified in place)."""
        return dict(self.sd)

    def diffusers_state_dict(self) -> StateDict:
        """diffusers names from the manifest's independent key map (Next-DiT only)."""
        key_map = self.manifest["diffusers_crosscheck"]["key_map_diffusers_to_official"]
        return {dk: self.sd[ok] for dk, ok in key_map.items()}


@lru_cache(maxsize=None)
def _load_ref(family: str) -> Ref:
    root = GOLDEN_DIR / GOLDEN_SETS[family]
    return Ref(
        family, root / "model.safetensors", load_file(str(root / "model.safetensors")),
        load_file(str(root / "tensors.safetensors")), json.loads((root / "manifest.json").read_text()),
    )


@pytest.fixture(params=list(GOLDEN_SETS), ids=list(GOLDEN_SETS.values()))
def ref(request: pytest.FixtureRequest) -> Ref:
    return _load_ref(request.param)


@pytest.fixture
def next_ref() -> Ref:
    return _load_ref("next_dit")


# -- helpers --------------------------------------------------------------------------------
def _forward(m: lumina.LuminaDiT, r: Ref, shape: str = "sq") -> torch.Tensor:
    t = r.tensors
    with torch.no_grad():
        return m(t[f"in.x_{shape}"], t["in.t"], t["in.cap_feats"], t["in.cap_mask"])


def _assert_golden_forward(m: lumina.LuminaDiT, r: Ref) -> None:
    diff = (_forward(m, r).float() - r.tensors["fwd.sq.out"]).abs().max().item()
    assert diff <= ATOL, f"max abs diff {diff:.3g} vs golden fwd.sq.out"


def _assert_same_tensors(a: StateDict, b: StateDict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def _save(sd: StateDict, path: Path) -> Path:
    """safetensors or torch file by suffix (parents created; shared tensors cloned)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, str(path))
    return path


def _perturbed(sd: StateDict) -> StateDict:
    return {k: v + 0.01 if v.is_floating_point() else v for k, v in sd.items()}


# -- accepted formats -----------------------------------------------------------------------
def _official_file(tmp: Path, r: Ref) -> Path:
    return _save(r.state_dict(), tmp / "lumina.safetensors")


def _official_folder(tmp: Path, r: Ref) -> Path:
    _save(r.state_dict(), tmp / "ckpt" / "consolidated.00-of-01.safetensors")
    return tmp / "ckpt"


def _pth_file(tmp: Path, r: Ref) -> Path:
    return _save(r.state_dict(), tmp / "lumina.pth")


def _pth_folder(tmp: Path, r: Ref) -> Path:
    _save(r.state_dict(), tmp / "ckpt" / "consolidated.00-of-01.pth")
    return tmp / "ckpt"


def _pth_nested(tmp: Path, r: Ref) -> Path:
    return _save({"model": r.state_dict(), "epoch": 3}, tmp / "train_state.pth")


def _prefixed(prefix: str) -> Callable[[Path, Ref], Path]:
    def write(tmp: Path, r: Ref) -> Path:
        return _save({prefix + k: v for k, v in r.sd.items()}, tmp / "prefixed.safetensors")
    return write


def _bundled(tmp: Path, r: Ref) -> Path:
    """A ComfyUI all-in-one file: the DiT plus a VAE and a text encoder under other prefixes."""
    gen = torch.Generator().manual_seed(0)
    extra = {
        "first_stage_model.encoder.conv_in.weight": torch.randn(128, 3, 3, 3, generator=gen),
        "first_stage_model.decoder.conv_out.bias": torch.randn(3, generator=gen),
        "cond_stage_model.transformer.embed_tokens.weight": torch.randn(10, 48, generator=gen),
    }
    return _save({**extra, **{"model.diffusion_model." + k: v for k, v in r.sd.items()}}, tmp / "aio.safetensors")


def _diffusers_folder(tmp: Path, r: Ref) -> Path:  # Next-DiT only: diffusers has no Flag-DiT
    _save(r.diffusers_state_dict(), tmp / "transformer" / "diffusion_pytorch_model.safetensors")
    return tmp / "transformer"


def _plain_dict(tmp: Path, r: Ref) -> StateDict:
    return r.state_dict()


FORMATS = {
    "official_file": _official_file,
    "official_folder": _official_folder,
    "pth_file": _pth_file,
    "pth_folder": _pth_folder,
    "pth_nested_model": _pth_nested,
    "comfyui_prefix": _prefixed("model.diffusion_model."),
    "module_prefix": _prefixed("module."),
    "bundled_with_vae": _bundled,
    "diffusers_folder": _diffusers_folder,
    "state_dict": _plain_dict,
}


@pytest.mark.parametrize(
    ("family", "fmt"),
    [(f, fmt) for f in GOLDEN_SETS for fmt in FORMATS if not (f == "flag_dit" and fmt == "diffusers_folder")],
)
def test_every_format_loads_golden_weights_and_forward(tmp_path: Path, family: str, fmt: str) -> None:
    ref = _load_ref(family)
    m = lumina.load_model(FORMATS[fmt](tmp_path, ref))
    assert m.family == ref.family
    assert not m.training
    _assert_same_tensors(m.state_dict(), ref.sd)
    _assert_golden_forward(m, ref)


def test_family_is_detected(ref: Ref) -> None:
    m = lumina.load_model(ref.file)
    assert isinstance(m, {"next_dit": lumina.NextDiT, "flag_dit": lumina.FlagDiT}[ref.family])
    cfg = ref.manifest["config"]
    assert (m.config.dim, m.config.n_layers, m.config.n_heads, m.config.kv_heads, m.config.cap_feat_dim) == (
        cfg["dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"] or cfg["n_heads"], cfg["cap_feat_dim"]
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("ema", [True, False])
def test_ema_file_preferred_only_when_asked(tmp_path: Path, ref: Ref, suffix: str, ema: bool) -> None:
    _save(ref.state_dict(), tmp_path / f"consolidated_ema.00-of-01{suffix}")
    _save(_perturbed(ref.sd), tmp_path / f"consolidated.00-of-01{suffix}")
    expected = ref.sd if ema else _perturbed(ref.sd)
    _assert_same_tensors(lumina.load_model(tmp_path, ema=ema).state_dict(), expected)


@pytest.mark.parametrize(
    "ema",
    [True, False],
)
def test_nested_training_checkpoint_honours_ema(tmp_path: Path, ref: Ref, ema: bool) -> None:
    path = _save({"model": _perturbed(ref.sd), "ema": ref.state_dict(), "step": 10}, tmp_path / "train.pth")
    _assert_same_tensors(lumina.load_model(path, ema=ema).state_dict(), ref.sd if ema else _perturbed(ref.sd))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("source", ["file", "state_dict"])
def test_dtype_casts_parameters(ref: Ref, dtype: torch.dtype, source: str) -> None:
    m = lumina.load_model(ref.file if source == "file" else ref.state_dict(), dtype=dtype)
    assert {p.dtype for p in m.parameters()} == {dtype}
    for key, value in m.state_dict().items():
        assert torch.equal(value, ref.sd[key].to(dtype)), key
    out = _forward(m, ref)
    assert out.dtype == dtype
    # loose: a low-precision forward only has to track the fp32 golden
    assert (out.float() - ref.tensors["fwd.sq.out"]).abs().max() <= {torch.bfloat16: 5e-2, torch.float16: 1e-2}[dtype]


def _mapped_file_bytes() -> int | None:
    """Bytes of files mapped into this process and resident (Linux; tmpfs files count as shmem)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return sum(int(fields[k].split()[0]) * 1024 for k in ("RssFile", "RssShmem"))
    except (OSError, KeyError):
        return None


def test_a_cast_load_maps_the_file_one_window_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading an fp32 file as bf16 keeps at most MAPPED_READ_BYTES of it (plus one tensor) mapped,
    not the whole file beside the cast weights; the weights are those of one whole-file read."""
    import lumina.checkpoints as checkpoints

    if _mapped_file_bytes() is None:
        pytest.skip("needs Linux's /proc/self/status")
    torch.manual_seed(0)
    config = lumina.LuminaConfig("next_dit", dim=512, n_layers=4, n_heads=8, n_kv_heads=8, cap_feat_dim=64)
    model = lumina.build_model(config)
    largest = max(p.numel() * 4 for p in model.parameters())
    path = lumina.save_official(model, tmp_path / "model.safetensors")
    size = path.stat().st_size
    peaks = []
    take = checkpoints._Intake.take

    def sampled_take(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        out = take(self, key, tensor)
        peaks[-1] = max(peaks[-1], _mapped_file_bytes() - start)
        return out

    monkeypatch.setattr(checkpoints._Intake, "take", sampled_take)
    loaded = {}
    # the whole file through one mapping first (the old way): it also brings the code the load
    # runs into memory, whose pages count as mapped files too; then four MiB at a time
    for window in (1 << 40, 4 << 20):
        monkeypatch.setattr(checkpoints, "MAPPED_READ_BYTES", window)
        peaks.append(0)
        start = _mapped_file_bytes()
        loaded[window] = lumina.load_model(path, dtype=torch.bfloat16).state_dict()
    assert size > 40 << 20
    assert peaks[0] > 0.8 * size, (peaks, size)  # the sampling sees the whole file when it is mapped whole
    assert peaks[1] < (4 << 20) + largest + (1 << 20), (peaks, size)
    for key, value in loaded[4 << 20].items():
        assert torch.equal(value, loaded[1 << 40][key]), key


def test_a_cast_load_of_a_pth_releases_each_tensors_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .pth read through torch.load(mmap=True) and cast to bf16: each tensor's pages leave the
    process once it is cast (the whole file stayed resident before), and the weights equal those
    of a plain torch.load, also for two tensors saved as overlapping views of one storage (the
    second is read after the first one's pages were dropped)."""
    import lumina.checkpoints as checkpoints

    if _mapped_file_bytes() is None or checkpoints._madvise() is None:
        pytest.skip("needs Linux")
    torch.manual_seed(0)
    config = lumina.LuminaConfig("next_dit", dim=512, n_layers=4, n_heads=8, n_kv_heads=8, cap_feat_dim=64)
    sd = lumina.build_model(config).state_dict()
    largest = max(v.numel() * 4 for v in sd.values())
    path = tmp_path / "consolidated.00-of-01.pth"
    torch.save(sd, path)
    shared = torch.randn(3 << 20)
    views = tmp_path / "views.pth"
    torch.save({"a": shared[: 2 << 20], "b": shared[1 << 20:]}, views)
    peak = [0]
    take = checkpoints._Intake.take

    def sampled_take(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        out = take(self, key, tensor)
        peak[0] = max(peak[0], _mapped_file_bytes() - start)
        return out

    monkeypatch.setattr(checkpoints._Intake, "take", sampled_take)
    start = _mapped_file_bytes()
    checkpoints.read_state_dict(path, torch.bfloat16)  # brings the code it runs into memory first
    peak[0], start = 0, _mapped_file_bytes()
    loaded, _, _ = checkpoints.read_state_dict(path, torch.bfloat16)
    assert path.stat().st_size > 40 << 20
    assert peak[0] < largest + (1 << 20), (peak, path.stat().st_size)
    for key, value in sd.items():
        assert torch.equal(loaded[key], value.to(torch.bfloat16)), key
    pair, _, _ = checkpoints.read_state_dict(views, torch.bfloat16)
    assert torch.equal(pair["a"], shared[: 2 << 20].bfloat16()) and torch.equal(pair["b"], shared[1 << 20:].bfloat16())


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["file.safetensors", "folder"])
def test_official_round_trip_is_exact(tmp_path: Path, ref: Ref, target: str) -> None:
    written = lumina.save_official(lumina.load_model(ref.file), tmp_path / target)
    folder = not target.endswith(".safetensors")
    assert written == (tmp_path / target / "consolidated.00-of-01.safetensors" if folder else tmp_path / target)
    _assert_same_tensors(load_file(str(written)), ref.sd)
    _assert_golden_forward(lumina.load_model(written), ref)


def test_save_official_accepts_a_state_dict(tmp_path: Path, ref: Ref) -> None:
    written = lumina.save_official(ref.state_dict(), tmp_path / "sd.safetensors")
    _assert_same_tensors(load_file(str(written)), ref.sd)


def test_diffusers_round_trip_is_exact(tmp_path: Path, next_ref: Ref) -> None:
    diffusers_sd = next_ref.diffusers_state_dict()
    assert {"layers.0.attn2.to_q.weight", "layers.1.attn2.norm_q.weight", "layers.1.attn2.norm_q.bias"} <= set(diffusers_sd)
    _save(diffusers_sd, tmp_path / "in" / "diffusion_pytorch_model.safetensors")
    folder = lumina.save_diffusers(lumina.load_model(tmp_path / "in"), tmp_path / "out")
    _assert_same_tensors(load_file(str(folder / "diffusion_pytorch_model.safetensors")), diffusers_sd)
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "LuminaNextDiT2DModel"


def test_key_maps_agree_with_the_manifest(next_ref: Ref) -> None:
    """Our key map against the one recorded when the goldens were cross-checked with diffusers."""
    diffusers_sd = next_ref.diffusers_state_dict()
    _assert_same_tensors(official_to_diffusers(next_ref.sd), diffusers_sd)
    _assert_same_tensors(diffusers_to_official(diffusers_sd), next_ref.sd)


def test_config_in_metadata_is_used_on_reload(tmp_path: Path, ref: Ref) -> None:
    m = lumina.load_model(ref.file)
    assert m.config.base_image_size == 1024  # nothing in the golden file says otherwise
    custom = m.config.with_(base_image_size=512, rope_theta=20000.0)
    written = lumina.save_official(m, tmp_path / "custom.safetensors", config=custom)
    assert lumina.load_model(written).config == custom
    # a model's own config travels without being passed
    again = lumina.save_official(lumina.load_model(written), tmp_path / "again.safetensors")
    assert lumina.load_model(again).config == custom


# -- bad inputs -----------------------------------------------------------------------------
def test_not_a_lumina_checkpoint(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    unet = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(320, 4, 3, 3, generator=gen),
        "model.diffusion_model.time_embed.0.weight": torch.randn(1280, 320, generator=gen),
        "model.diffusion_model.out.2.weight": torch.randn(4, 320, 3, 3, generator=gen),
    }
    path = _save(unet, tmp_path / "sd_unet.safetensors")
    msg = load_error(path)
    assert_checkpoint_message(msg, "no Lumina model found", str(path), "Offending keys:",
                    "model.diffusion_model.input_blocks.0.0.weight", family=None)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file(tmp_path: Path, ref: Ref, suffix: str) -> None:
    path = _save(ref.state_dict(), tmp_path / f"consolidated.00-of-01{suffix}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_checkpoint_message(load_error(path), "truncated", str(path), family=None)
    assert_checkpoint_message(load_error(tmp_path), "truncated", str(path), family=None)  # via the folder


def test_random_bytes_pth(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(os.urandom(4096))
    assert_checkpoint_message(load_error(path), "cannot be read as plain PyTorch weights", str(path), family=None)


class _Payload:
    """Unpickling this object would create `marker` (pickled as a call to builtins.open)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, ref: Ref) -> None:
    marker = tmp_path / "pwned"
    path = _save({**ref.state_dict(), "evil": _Payload(marker)}, tmp_path / "evil.pth")
    msg = load_error(path)
    assert not marker.exists()
    assert_checkpoint_message(msg, str(path), "cannot be read as plain PyTorch weights", "pickles code", family=None)
    # the payload is live: a plain unpickle does run it
    torch.load(str(path), weights_only=False)["evil"].close()
    assert marker.exists()


# keys in layers.1 are not read by infer_config; layers.0.attention.wk.weight is
@pytest.mark.parametrize(
    "key", ["layers.1.feed_forward.w3.weight", "layers.0.attention.wq.weight", "layers.0.attention.wk.weight"]
)
def test_missing_key(tmp_path: Path, ref: Ref, key: str) -> None:
    sd = ref.state_dict()
    del sd[key]
    path = _save(sd, tmp_path / "incomplete.safetensors")
    assert_checkpoint_message(load_error(path), "missing", key, str(path), family=ref.family)


def test_unexpected_key(tmp_path: Path, ref: Ref) -> None:
    path = _save({**ref.state_dict(), "foo.bar": torch.zeros(3)}, tmp_path / "extra.safetensors")
    assert_checkpoint_message(load_error(path), "unexpected", "foo.bar", str(path), family=ref.family)


def test_shape_mismatch(tmp_path: Path, ref: Ref) -> None:
    key = "layers.1.feed_forward.w2.weight"
    rows, cols = ref.sd[key].shape
    path = _save({**ref.state_dict(), key: torch.zeros(rows, cols - 32)}, tmp_path / "mixed.safetensors")
    msg = load_error(path)
    assert_checkpoint_message(msg, "shapes", key, f"({rows}, {cols - 32})", f"expected ({rows}, {cols})", str(path),
                    family=ref.family)


def test_lumina_image_2_is_named(tmp_path: Path, next_ref: Ref) -> None:
    sd = {**next_ref.state_dict(), "noise_refiner.0.x": torch.zeros(2)}
    path = _save({"model.diffusion_model." + k: v for k, v in sd.items()}, tmp_path / "lumina2.safetensors")
    assert_checkpoint_message(load_error(path), "Lumina-Image 2.0", str(path), family=None)


def test_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not weights")
    (tmp_path / "model_args.pth").write_bytes(b"")
    assert_checkpoint_message(load_error(tmp_path), "holds no Lumina weights", str(tmp_path), family=None)


def test_folder_with_model_parallel_shards(tmp_path: Path, ref: Ref) -> None:
    _save(ref.state_dict(), tmp_path / "consolidated.00-of-02.pth")
    _save(ref.state_dict(), tmp_path / "consolidated.01-of-02.pth")
    assert_checkpoint_message(load_error(tmp_path), "holds no Lumina weights", "model-parallel shards",
                    "consolidated.00-of-02.pth", family=None)


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "consolidated.00-of-01.safetensors"
    assert_checkpoint_message(load_error(path), "no such file", str(path), family=None)


@pytest.mark.parametrize("what", ["model", "state_dict"])
def test_flag_dit_cannot_be_saved_for_diffusers(tmp_path: Path, what: str) -> None:
    r = _load_ref("flag_dit")
    source = lumina.load_model(r.file) if what == "model" else r.state_dict()
    with pytest.raises(lumina.LuminaCheckpointError) as info:
        lumina.save_diffusers(source, tmp_path / "out")
    assert_checkpoint_message(str(info.value), "diffusers has no Flag-DiT", family="flag_dit")
    assert not (tmp_path / "out" / "diffusion_pytorch_model.safetensors").exists()


@pytest.mark.parametrize("duplicate", ["attn2.to_q.weight", "attn2.norm_q.weight"])
def test_diffusers_cross_attention_query_must_equal_self_attention(tmp_path: Path, next_ref: Ref, duplicate: str) -> None:
    sd = next_ref.diffusers_state_dict()
    key, twin = f"layers.1.{duplicate}", f"layers.1.{duplicate.replace('attn2', 'attn1')}"
    sd[key] = sd[key] + 0.01
    path = _save(sd, tmp_path / "untied.safetensors")
    assert_checkpoint_message(load_error(path), key, twin, str(path), family="next_dit")


@pytest.mark.parametrize("extra", ["foo.bar", "layers.0.foo.weight"])
def test_save_diffusers_rejects_unknown_official_keys(tmp_path: Path, next_ref: Ref, extra: str) -> None:
    with pytest.raises(lumina.LuminaCheckpointError) as info:
        lumina.save_diffusers({**next_ref.state_dict(), extra: torch.zeros(2)}, tmp_path)
    assert extra in str(info.value)
