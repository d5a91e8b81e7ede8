"""lumina.safe_pickle: Lightning-style checkpoints load tensors-only; a pickle that would run code
is refused before anything in it is called."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from lumina.errors import LuminaCheckpointError
from lumina.safe_pickle import InertObject, UnsafeCheckpointError, load_pickled, load_tensors

CALLS: list[str] = []  # every constructor / setstate of the fake foreign classes appends here


def _fake_module(name: str, **classes: type) -> types.ModuleType:
    """Registers a module `name` holding `classes` so pickle can save them under that name."""
    mod = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
        setattr(mod, cls_name, cls)
    sys.modules[name] = mod
    parts = name.split(".")
    for i in range(1, len(parts)):  # importing a dotted name needs its parent packages
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    return mod


class _Recorder:
    def __init__(self, *args, **kwargs):
        CALLS.append(f"{type(self).__name__}.__init__")
        self.args = args

    def __setstate__(self, state):
        CALLS.append(f"{type(self).__name__}.__setstate__")
        self.__dict__.update(state)


class _ModelCheckpoint(_Recorder):
    pass


class _DictConfig(_Recorder):
    def __reduce__(self):  # like omegaconf: rebuilt by calling the class, then state
        return (type(self), (), {"_content": {"lr": 3e-6}, "_metadata": None})


class _AttributeDict(dict):
    pass


FOREIGN_MODULES = ("pytorch_lightning.callbacks.model_checkpoint", "omegaconf.dictconfig", "lightning_fabric.utilities.data")


@pytest.fixture
def foreign_classes():
    """Fake Lightning / OmegaConf classes, importable while the checkpoint is saved AND loaded:
    a loader that called them would leave a trace in CALLS."""
    mods = [
        _fake_module(FOREIGN_MODULES[0], ModelCheckpoint=_ModelCheckpoint),
        _fake_module(FOREIGN_MODULES[1], DictConfig=_DictConfig),
        _fake_module(FOREIGN_MODULES[2], AttributeDict=_AttributeDict),
    ]
    yield mods
    for name in list(sys.modules):
        if name.split(".")[0] in {m.split(".")[0] for m in FOREIGN_MODULES} and isinstance(sys.modules[name], types.ModuleType) \
                and getattr(sys.modules[name], "__file__", None) is None:
            sys.modules.pop(name, None)


def _lightning_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict:
    hp = _AttributeDict(lr=3e-6)
    cfg = _DictConfig()
    cb = _ModelCheckpoint("logs/ckpt")
    return {
        "epoch": 119, "global_step": 1234, "tags": {"music", "t2x"}, "window": slice(1, 4), "pytorch-lightning_version": "1.7.7",
        "state_dict": OrderedDict(state_dict),
        "callbacks": {_ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "dirpath": "logs"}, "obj": cb},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}],
        "lr_schedulers": [], "hyper_parameters": hp, "hparams": cfg,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 120}}}},
    }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_lightning_checkpoint_loads_tensors_only_without_calling_foreign_classes(tmp_path, foreign_classes, zip_format):
    sd = {"model.diffusion_model.proj_in.weight": torch.randn(8, 4), "scale_factor": torch.tensor(0.73)}
    path = tmp_path / "119.ckpt"
    torch.save(_lightning_checkpoint(sd), path, _use_new_zipfile_serialization=zip_format)
    CALLS.clear()
    # torch's weights-only loader cannot read it (the reason this module exists)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    tensors = load_tensors(path)
    assert CALLS == []  # no foreign class was constructed or given state
    assert set(tensors) == set(sd)
    for key, value in sd.items():
        assert torch.equal(tensors[key], value)
    raw = load_pickled(path)
    assert CALLS == []
    assert isinstance(raw["hparams"], InertObject) and raw["hparams"].global_name == "omegaconf.dictconfig.DictConfig"
    assert raw["hparams"].state["_content"] == {"lr": 3e-6}
    assert isinstance(raw["hyper_parameters"], InertObject)
    keys = [k for k in raw["callbacks"] if not isinstance(k, str)]
    assert len(keys) == 1 and keys[0].global_name.endswith("ModelCheckpoint") and issubclass(keys[0], InertObject)
    assert raw["epoch"] == 119 and raw["tags"] == {"music", "t2x"} and raw["window"] == slice(1, 4)


def test_nested_key_and_flattening(tmp_path):
    path = tmp_path / "best_netG.pt"
    gen = {"conv_pre.weight_v": torch.randn(4, 2, 7), "ups": {"0": {"0": {"bias": torch.randn(3)}}}}
    torch.save({"generator": gen, "steps": 10}, path)
    tensors = load_tensors(path, key="generator")
    assert set(tensors) == {"conv_pre.weight_v", "ups.0.0.bias"}
    with pytest.raises(LuminaCheckpointError, match="no entry 'discriminator'.*generator"):
        load_tensors(path, key="discriminator")


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _attacks(marker: Path) -> dict[str, object]:
    cmd = f"touch {marker}"
    return {
        "os.system": _Evil(os.system, cmd),
        "builtins.eval": _Evil(eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Evil(exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": _Evil(getattr, OrderedDict(), "popitem"),
        "builtins.__import__": _Evil(__import__, "os"),
    }


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "builtins.getattr", "builtins.__import__"])
@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw_pickle"])
def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, attack, fmt):
    marker = tmp_path / "pwned"
    # a plain pickle cannot hold a tensor without torch's persistent ids (it would pickle a call to
    # torch.load, itself refused): the raw-pickle file carries a list instead
    weights = [0.5, 1.5] if fmt == "raw_pickle" else torch.randn(2)
    payload = {"state_dict": {"w": weights}, "hyper_parameters": _attacks(marker)[attack]}
    path = tmp_path / "evil.ckpt"
    if fmt == "raw_pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(UnsafeCheckpointError) as info:
        load_tensors(path)
    assert not marker.exists()
    msg = str(info.value)
    expected = {"os.system": ("posix.system", "os.system", "nt.system"), "subprocess.Popen": ("subprocess.Popen",)}
    assert info.value.global_name in expected.get(attack, (attack,))
    assert info.value.global_name in msg and str(path) in msg and "stopped before anything" in msg


def test_a_pickled_module_object_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        load_tensors(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(LuminaCheckpointError, match="does not exist"):
        load_tensors(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(LuminaCheckpointError, match="cannot be read as a PyTorch checkpoint"):
        load_tensors(bad)
    empty = tmp_path / "empty.ckpt"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(LuminaCheckpointError, match="no tensors"):
        load_tensors(empty)
