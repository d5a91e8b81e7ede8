"""Loading the released Lumina-T2Music / T2Audio layouts: folders built with tiny tensors under
the real key names, the CFM checkpoint pickled the way PyTorch Lightning saves it."""

from __future__ import annotations

import os
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumina.audio_checkpoints import (
    find_audio_release, kind_of_keys, load_audio_model, read_audio_checkpoint, split_cfm_state_dict,
)
from lumina.errors import LuminaCheckpointError
from lumina.safe_pickle import UnsafeCheckpointError

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "lumina_music_tiny"
LIGHTNING_MODULES = ("pytorch_lightning.callbacks.model_checkpoint", "omegaconf.dictconfig")
TEXT_KEYS = {
    "music": ["cond_stage_model.transformer.shared.weight",
              "cond_stage_model.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"],
    "audio": ["cond_stage_model.caption_encoder.base.embeddings.word_embeddings.weight",
              "cond_stage_model.caption_encoder.projection.linear1.weight",
              "cond_stage_model.t5_transformer.shared.weight"],
}


@pytest.fixture(scope="module")
def cfm_sd() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN / "cfm.safetensors"))


class _ModelCheckpoint:
    def __init__(self, dirpath):
        self.dirpath = dirpath


class _DictConfig:
    def __init__(self, content):
        self._content = content


@pytest.fixture
def lightning_classes():
    """Fake Lightning / OmegaConf classes under their real module names, so torch.save pickles
    them as Lightning does; removed again after the test."""
    added = []
    for name, cls in zip(LIGHTNING_MODULES, (_ModelCheckpoint, _DictConfig)):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            mod_name = ".".join(parts[:i])
            if mod_name not in sys.modules:
                sys.modules[mod_name] = types.ModuleType(mod_name)
                added.append(mod_name)
        cls.__module__ = name
        cls.__qualname__ = cls.__name__ = cls.__name__.lstrip("_")
        setattr(sys.modules[name], cls.__name__, cls)
    yield
    for mod_name in added:
        sys.modules.pop(mod_name, None)


def _save_lightning(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "epoch": 119, "global_step": 100000, "pytorch-lightning_version": "1.7.7",
        "state_dict": OrderedDict(state_dict),
        "callbacks": {_ModelCheckpoint: {"best_model_score": torch.tensor(0.1)}, "obj": _ModelCheckpoint("logs")},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 3e-6}]}], "lr_schedulers": [],
        "hyper_parameters": _DictConfig({"linear_start": 0.00085}),
    }
    torch.save(ckpt, path)
    return path


def _with_text(sd: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    return {**sd, **{k: torch.randn(4, 4) for k in TEXT_KEYS[kind]}}


def _release(root: Path, kind: str, sd: dict[str, torch.Tensor], *, vocoder: bool = True, clap: bool = True) -> Path:
    folder, voc = {"music": ("music_generation", "bigvnat"), "audio": ("audio_generation", "bigvgan")}[kind]
    _save_lightning(root / folder / ("119.ckpt" if kind == "music" else "324.ckpt"), _with_text(sd, kind))
    vae = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    (root / "maa2").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": vae}, root / "maa2" / "maa2.ckpt")
    if vocoder:
        (root / voc).mkdir(parents=True, exist_ok=True)
        (root / voc / "args.yml").write_text((GOLDEN / "vocoder_args.yml").read_text())
        torch.save({"generator": load_file(str(GOLDEN / "vocoder.safetensors"))}, root / voc / "best_netG.pt")
    if kind == "audio" and clap:
        (root / "CLAP").mkdir(parents=True, exist_ok=True)
        torch.save({"model": {"caption_encoder.projection.linear1.weight": torch.randn(4, 4)}}, root / "CLAP" / "CLAP_weights_2022.pth")
    return root


def test_lightning_checkpoint_loads_the_dit_and_splits_the_rest(tmp_path, cfm_sd, lightning_classes):
    root = _release(tmp_path / "Lumina-T2Music", "music", cfm_sd)
    model, ckpt = load_audio_model(root / "music_generation" / "119.ckpt", kind="music", max_len=64)
    assert ckpt.kind == "music" and ckpt.name == "Lumina-T2Music"
    assert abs(ckpt.scale_factor - 0.7318) < 1e-6
    assert set(ckpt.first_stage) == {k[len("first_stage_model."):] for k in cfm_sd if k.startswith("first_stage_model.")}
    assert set(ckpt.cond_stage) == {k[len("cond_stage_model."):] for k in TEXT_KEYS["music"]}
    assert "betas" not in ckpt.dit and "scale_factor" not in ckpt.dit
    # the loaded DiT is the golden one: the golden forward comes out
    tensors = load_file(str(GOLDEN / "tensors.safetensors"))
    with torch.no_grad():
        out = model(tensors["in.x"], tensors["in.t"], tensors["in.context"])
    assert float((out - tensors["dit.out"]).abs().max()) <= 1e-5
    # the folder alone finds the same file, and tells the kind
    model2, ckpt2 = load_audio_model(root, max_len=64)
    assert ckpt2.kind == "music" and torch.equal(model2.proj_in.weight, model.proj_in.weight)
    # dtype on load
    half, _ = load_audio_model(root, dtype=torch.bfloat16, max_len=64)
    assert half.proj_in.weight.dtype == torch.bfloat16


def test_the_whole_release_folder_is_found(tmp_path, cfm_sd, lightning_classes):
    music = find_audio_release(_release(tmp_path / "m", "music", cfm_sd))
    assert music.kind == "music" and music.dit.name == "119.ckpt" and music.vocoder_dir.name == "bigvnat"
    assert music.vae.name == "maa2.ckpt" and music.clap is None
    audio = find_audio_release(_release(tmp_path / "a", "audio", cfm_sd))
    assert audio.kind == "audio" and audio.dit.name == "324.ckpt" and audio.vocoder_dir.name == "bigvgan"
    assert audio.clap.name == "CLAP_weights_2022.pth"


def test_audio_checkpoint_is_told_from_music(tmp_path, cfm_sd, lightning_classes):
    root = _release(tmp_path / "Lumina-T2Audio", "audio", cfm_sd)
    _, ckpt = load_audio_model(root, max_len=64)
    assert ckpt.kind == "audio"
    assert set(ckpt.cond_stage) == {k[len("cond_stage_model."):] for k in TEXT_KEYS["audio"]}
    assert kind_of_keys(_with_text(cfm_sd, "music")) == "music" and kind_of_keys(cfm_sd) is None


def test_music_checkpoint_given_where_audio_is_expected(tmp_path, cfm_sd, lightning_classes):
    root = _release(tmp_path / "Lumina-T2Music", "music", cfm_sd)
    with pytest.raises(LuminaCheckpointError, match="is a Lumina-T2Music checkpoint.*not Lumina-T2Audio.*324.ckpt"):
        load_audio_model(root / "music_generation" / "119.ckpt", kind="audio")
    with pytest.raises(LuminaCheckpointError, match="no audio_generation/ folder: this is a Lumina-T2Music folder"):
        find_audio_release(root, kind="audio")
    # no text weights in the file: its folder tells
    bare = _save_lightning(tmp_path / "x" / "music_generation" / "119.ckpt", cfm_sd)
    with pytest.raises(LuminaCheckpointError, match="Lumina-T2Music checkpoint \\(its folder says so\\)"):
        read_audio_checkpoint(bare, kind="audio")
    # nothing tells: the caller's kind is taken
    assert split_cfm_state_dict(cfm_sd, kind="audio").kind == "audio"
    with pytest.raises(LuminaCheckpointError, match="both the music text stack"):
        split_cfm_state_dict(_with_text(_with_text(cfm_sd, "music"), "audio"))


def test_missing_parts_are_named(tmp_path, cfm_sd, lightning_classes):
    root = _release(tmp_path / "m", "music", cfm_sd, vocoder=False)
    (root / "bigvnat").mkdir()
    with pytest.raises(LuminaCheckpointError, match="lacks bigvnat/args.yml and bigvnat/best_netG.pt \\(the BigVGAN vocoder\\)"):
        find_audio_release(root)
    assert find_audio_release(root, require_all=False).vocoder_dir is None
    aroot = _release(tmp_path / "a", "audio", cfm_sd, clap=False)
    with pytest.raises(LuminaCheckpointError, match="CLAP/CLAP_weights_2022.pth"):
        find_audio_release(aroot)
    with pytest.raises(LuminaCheckpointError, match="no CFM checkpoint found"):
        load_audio_model(tmp_path / "m" / "bigvnat")
    with pytest.raises(LuminaCheckpointError, match="no DiT weights.*maa2.ckpt is the autoencoder"):
        load_audio_model(tmp_path / "m" / "maa2" / "maa2.ckpt")
    with pytest.raises(LuminaCheckpointError, match="does not exist"):
        load_audio_model(tmp_path / "nowhere.ckpt")


def test_truncated_dit_is_refused(cfm_sd):
    sd = {k: v for k, v in cfm_sd.items() if not k.startswith("model.diffusion_model.blocks.1.feed_forward")}
    with pytest.raises(LuminaCheckpointError, match="blocks \\[1\\] are incomplete"):
        load_audio_model(sd)
    bad = dict(cfm_sd)
    bad["model.diffusion_model.proj_in.weight"] = torch.full_like(bad["model.diffusion_model.proj_in.weight"], float("nan"))
    with pytest.raises(LuminaCheckpointError, match="NaN or infinite"):
        load_audio_model(bad, max_len=64)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, cfm_sd):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "music_generation" / "119.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": dict(cfm_sd), "hyper_parameters": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="system.*stopped before anything"):
        load_audio_model(path)
    assert not marker.exists()
