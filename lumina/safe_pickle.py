"""Tensors-only reading of pickled torch and Lightning checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`).

`torch.load(weights_only=True)` refuses every real Lightning checkpoint: besides the state dict
they pickle `hyper_parameters` (OmegaConf containers), `callbacks` (keyed by Lightning classes),
loop states and sometimes numpy scalars, none of which torch's allow-list knows. Loading them with
plain pickle would import and call whatever the file names — arbitrary code.

This module unpickles with an allow-list instead. Every global a pickle asks for (the only way a
pickle reaches code) is resolved by `_resolve`:

- torch's own weights-only allow-list (tensor rebuild functions, storages, dtypes, `torch.Size`,
  `OrderedDict`, ...) and a few plain value types (`dict`, `list`, `int`, ...) are returned as is;
  they only build values;
- globals of packages known to be bookkeeping (`pytorch_lightning.*`, `lightning.*`, `omegaconf.*`,
  `numpy.*`, `argparse.Namespace`, `types.SimpleNamespace`, `pathlib` paths, ...) become *inert
  placeholders*: a class made here, never imported, never called — it only records the arguments and
  state the pickle gives it, so the rest of the file (and its tensors) can be read;
- anything else (`os.system`, `builtins.eval`, `subprocess.Popen`, `builtins.getattr`, a model
  class, ...) stops the load with `UnsafeCheckpointError`, naming the file and the global, before
  anything is called.

Storage, zip layout, memory mapping and the old (non-zip) format stay torch's own: `torch.load` is
given this restricted unpickler as its `pickle_module`, so its `find_class` is ours.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import types
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .errors import LuminaCheckpointError

__all__ = ["UnsafeCheckpointError", "InertObject", "load_pickled", "load_tensors", "flatten_tensors"]

# Module prefixes whose objects are bookkeeping in a training checkpoint; their globals become inert
# placeholders (never imported). A prefix ends with "." so "omegaconfx" does not match "omegaconf.".
INERT_MODULE_PREFIXES: tuple[str, ...] = (
    "pytorch_lightning.", "lightning.", "lightning_fabric.", "lightning_utilities.", "torchmetrics.",
    "omegaconf.", "numpy.", "typing.", "enum.", "datetime.", "pathlib.", "__main__.",
)
INERT_MODULES: frozenset[str] = frozenset({
    "pytorch_lightning", "lightning", "lightning_fabric", "omegaconf", "numpy", "typing", "enum",
    "datetime", "pathlib",
})
INERT_GLOBALS: frozenset[str] = frozenset({
    "argparse.Namespace", "types.SimpleNamespace", "collections.defaultdict", "collections.deque",
    "builtins.object", "builtins.type",
})
# builtins that only build plain values: safe to call with any arguments the pickle gives
_VALUE_BUILTINS: dict[str, type] = {
    t.__name__: t for t in (dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bytearray, bool, slice, range)
}


class UnsafeCheckpointError(LuminaCheckpointError):
    """A pickled checkpoint that asks for a global outside the allow-list; nothing was run."""

    def __init__(self, source: str, global_name: str) -> None:
        self.global_name = global_name
        super().__init__(
            f"its pickle asks for {global_name}, which is neither a tensor type nor a known inert "
            "bookkeeping class, so the load stopped before anything in the file was called",
            source=source,
            hint="the file may be malicious or pickle a whole model object; use the released "
            "checkpoint, or re-save it as a plain state dict of tensors (or .safetensors)",
        )


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler; turned into UnsafeCheckpointError with the file's name."""

    def __init__(self, global_name: str) -> None:
        super().__init__(global_name)
        self.global_name = global_name


class InertObject:
    """Stand-in for an object of a foreign class: holds what the pickle gave it, runs nothing.

    `global_name` says which class the file named; `args`, `kwargs`, `state`, `items` and
    `entries` are the constructor arguments, `__setstate__` state and appended / set items."""

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertObject":
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.entries = args, kwargs, None, [], {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls the class: nothing to do
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries[key] = value

    def __repr__(self) -> str:
        return f"<inert {self.global_name}>"


@lru_cache(maxsize=None)
def _placeholder(global_name: str) -> type:
    # one class per name: Lightning 1.x keys `callbacks` by class, so distinct names stay distinct keys
    return type(global_name.rsplit(".", 1)[-1], (InertObject,), {"global_name": global_name, "__module__": __name__})


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """copyreg._reconstructor of protocol 0/1 pickles, for placeholder classes only."""
    if isinstance(cls, type) and issubclass(cls, InertObject):
        return cls(base, state)
    raise _Refused(f"copyreg._reconstructor of {getattr(cls, '__qualname__', cls)!r}")


@lru_cache(maxsize=1)
def _torch_allowed() -> dict[str, Any]:
    # torch's own weights-only allow-list (rebuild functions, storages, dtypes, Size, OrderedDict, ...)
    from torch import _weights_only_unpickler as wou

    return dict(wou._get_allowed_globals())


def _is_inert(full: str) -> bool:
    return full in INERT_GLOBALS or full in INERT_MODULES or full.startswith(INERT_MODULE_PREFIXES)


def _resolve(module: str, name: str) -> Any:
    # Python 2 names of protocol <= 2 pickles (torch saves at protocol 2), as pickle's own
    # find_class would map them: `__builtin__.set` is `builtins.set`
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    full = f"{module}.{name}"
    allowed = _torch_allowed().get(full)
    if allowed is not None:
        return allowed
    if module == "builtins" and name in _VALUE_BUILTINS:
        return _VALUE_BUILTINS[name]
    if full == "copyreg._reconstructor":
        return _reconstructor
    if _is_inert(full):
        return _placeholder(full)
    raise _Refused(full)


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come only from `_resolve` (torch subclasses it and adds the
    storage lookup and `persistent_load`; both stay inside torch)."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see the class docstring
        return _resolve(module, name)


def _load(file: Any, **kwargs: Any) -> Any:
    return _Unpickler(file, **kwargs).load()


def _loads(data: bytes, **kwargs: Any) -> Any:
    return _Unpickler(io.BytesIO(data), **kwargs).load()


# what torch.load reads from its `pickle_module`: Unpickler (subclassed) and load (old format)
_restricted_pickle = types.ModuleType("lumina_restricted_pickle")
_restricted_pickle.Unpickler = _Unpickler  # type: ignore[attr-defined]
_restricted_pickle.load = _load  # type: ignore[attr-defined]
_restricted_pickle.loads = _loads  # type: ignore[attr-defined]
_restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def load_pickled(path: str | os.PathLike) -> Any:
    """The object a torch-saved file holds, with tensors on the CPU and every foreign object an
    `InertObject`. Raises `UnsafeCheckpointError` (nothing run) for a global outside the allow-list,
    `LuminaCheckpointError` for a missing or unreadable file."""
    file = Path(path)
    if not file.is_file():
        raise LuminaCheckpointError("the file does not exist", source=str(file), hint="check the path")
    mmap = zipfile.is_zipfile(file)  # the old (non-zip) format cannot be memory-mapped
    try:
        # weights_only=False only because torch refuses a custom pickle_module otherwise: the
        # restricted unpickler above is what decides what may be built
        return torch.load(str(file), map_location="cpu", pickle_module=_restricted_pickle, weights_only=False, mmap=mmap)
    except _Refused as err:
        raise UnsafeCheckpointError(str(file), err.global_name) from None
    except Exception as err:  # noqa: BLE001 - any other failure: truncated or not a torch file
        detail = str(err).strip().splitlines()
        raise LuminaCheckpointError(
            f"the file cannot be read as a PyTorch checkpoint ({type(err).__name__}: {detail[0][:200] if detail else 'no details'})",
            source=str(file), hint="it is truncated or not a PyTorch file; download it again",
        ) from None


def flatten_tensors(obj: Any, prefix: str = "") -> dict[str, Tensor]:
    """Every tensor in nested dicts, keyed by the '.'-joined path; other leaves are dropped."""
    out: dict[str, Tensor] = {}
    if isinstance(obj, Tensor):
        out[prefix] = obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            if isinstance(key, str):
                out.update(flatten_tensors(value, f"{prefix}.{key}" if prefix else key))
    return out


def load_tensors(path: str | os.PathLike, key: str | None = None) -> dict[str, Tensor]:
    """The state dict of a pickled checkpoint, tensors only.

    With `key`, the tensors under that top-level entry (e.g. `"generator"` of BigVGAN's
    `best_netG.pt`); otherwise a Lightning checkpoint's `state_dict`, or the whole file. Nested
    dicts are flattened with '.'; non-tensor values (hyper-parameters, loop states) are dropped."""
    obj = load_pickled(path)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = sorted(map(str, obj)) if isinstance(obj, Mapping) else [type(obj).__name__]
            raise LuminaCheckpointError(
                f"it has no entry {key!r} (top-level entries: {', '.join(found[:8]) or 'none'})",
                source=str(path), hint="check that this is the right file",
            )
        obj = obj[key]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    tensors = flatten_tensors(obj)
    if not tensors:
        raise LuminaCheckpointError("the file holds no tensors", source=str(path), hint="check that this is the right file")
    return tensors
