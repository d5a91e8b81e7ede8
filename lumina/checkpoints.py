"""Reading and writing every released checkpoint form, with the official key names as our own.

Accepted: official `consolidated[_ema].00-of-01.{safetensors,pth}` files or their folder, diffusers
`LuminaNextDiT2DModel` files or folders (also a pipeline folder's `transformer/`), and single files
whose keys carry a prefix such as ComfyUI's `model.diffusion_model.`. `.pth` files (zip or torch's
old format) are read with `weights_only=True`: no pickled code ever runs. `model_args.pth` is not
read at all; every field that matters is inferred from tensor shapes (`lumina.config.infer_config`),
and a diffusers `config.json` that contradicts them is an error, never silently followed.
Every floating-point tensor is checked for NaN/inf as it is read (one reduction per tensor).
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import mmap as mmap_module
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .config import LuminaConfig, guess_family, infer_config
from .video_config import VIDEO_FAMILY, LuminaVideoConfig, strip_compile_prefix
from .widths import ffn_hidden_dim
from .errors import LuminaCheckpointError, LuminaInputError
from .finite import all_finite
from .fp8 import FP8_DTYPES, in_blocks, store_fp8
from .model import LuminaDiT, build_model

StateDict = dict[str, Tensor]
CONFIG_METADATA_KEY = "lumina_config"
DIFFUSERS_CONFIG_KEY = "diffusers_config.json"

OFFICIAL_FILES = (
    "consolidated_ema.00-of-01.safetensors", "consolidated.00-of-01.safetensors",
    "consolidated_ema.00-of-01.pth", "consolidated.00-of-01.pth",
)
DIFFUSERS_FILES = (
    "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
)
_ANCHORS = ("x_embedder.weight", "patch_embedder.proj.weight")  # official, diffusers

# diffusers LuminaNextDiT2DModel name → official name (checked by strict loads both ways).
_DIFFUSERS_GLOBAL = {
    "pad_token": "pad_token",
    "patch_embedder.proj.weight": "x_embedder.weight",
    "patch_embedder.proj.bias": "x_embedder.bias",
    "time_caption_embed.timestep_embedder.linear_1.weight": "t_embedder.mlp.0.weight",
    "time_caption_embed.timestep_embedder.linear_1.bias": "t_embedder.mlp.0.bias",
    "time_caption_embed.timestep_embedder.linear_2.weight": "t_embedder.mlp.2.weight",
    "time_caption_embed.timestep_embedder.linear_2.bias": "t_embedder.mlp.2.bias",
    "time_caption_embed.caption_embedder.0.weight": "cap_embedder.0.weight",
    "time_caption_embed.caption_embedder.0.bias": "cap_embedder.0.bias",
    "time_caption_embed.caption_embedder.1.weight": "cap_embedder.1.weight",
    "time_caption_embed.caption_embedder.1.bias": "cap_embedder.1.bias",
    "norm_out.linear_1.weight": "final_layer.adaLN_modulation.1.weight",
    "norm_out.linear_1.bias": "final_layer.adaLN_modulation.1.bias",
    "norm_out.linear_2.weight": "final_layer.linear.weight",
    "norm_out.linear_2.bias": "final_layer.linear.bias",
}
_DIFFUSERS_LAYER = {
    "gate": "attention.gate",
    "norm1.linear.weight": "adaLN_modulation.1.weight",
    "norm1.linear.bias": "adaLN_modulation.1.bias",
    "norm1.norm.weight": "attention_norm1.weight",
    "attn1.to_q.weight": "attention.wq.weight",
    "attn1.to_k.weight": "attention.wk.weight",
    "attn1.to_v.weight": "attention.wv.weight",
    "attn2.to_k.weight": "attention.wk_y.weight",
    "attn2.to_v.weight": "attention.wv_y.weight",
    "attn2.to_out.0.weight": "attention.wo.weight",
    "attn1.norm_q.weight": "attention.q_norm.weight",
    "attn1.norm_q.bias": "attention.q_norm.bias",
    "attn1.norm_k.weight": "attention.k_norm.weight",
    "attn1.norm_k.bias": "attention.k_norm.bias",
    "attn2.norm_k.weight": "attention.ky_norm.weight",
    "attn2.norm_k.bias": "attention.ky_norm.bias",
    "norm2.weight": "attention_norm2.weight",
    "norm1_context.weight": "attention_y_norm.weight",
    "feed_forward.linear_1.weight": "feed_forward.w1.weight",
    "feed_forward.linear_2.weight": "feed_forward.w2.weight",
    "feed_forward.linear_3.weight": "feed_forward.w3.weight",
    "ffn_norm1.weight": "ffn_norm1.weight",
    "ffn_norm2.weight": "ffn_norm2.weight",
}
# diffusers stores the cross-attention query projection and norm a second time; the official
# model has one wq / q_norm serving both branches.
_DIFFUSERS_DUPLICATES = {
    "attn2.to_q.weight": "attn1.to_q.weight",
    "attn2.norm_q.weight": "attn1.norm_q.weight",
    "attn2.norm_q.bias": "attn1.norm_q.bias",
}
_OFFICIAL_TO_DIFFUSERS_LAYER = {v: k for k, v in _DIFFUSERS_LAYER.items()}
_OFFICIAL_TO_DIFFUSERS_GLOBAL = {v: k for k, v in _DIFFUSERS_GLOBAL.items()}


# -- reading files --------------------------------------------------------------------------
def resolve_checkpoint_path(path: str | os.PathLike, ema: bool = True) -> Path:
    """A file as given, or the weights file inside an official, diffusers or pipeline folder."""
    path = Path(path)
    if not path.exists():
        raise LuminaCheckpointError("no such file or folder", source=str(path), hint="check the path")
    if path.is_file():
        return path
    names = OFFICIAL_FILES if ema else tuple(n for n in OFFICIAL_FILES if "_ema" not in n) + OFFICIAL_FILES
    for name in names + DIFFUSERS_FILES:
        if (path / name).is_file():
            return path / name
    if (path / "transformer").is_dir():
        return resolve_checkpoint_path(path / "transformer", ema)
    shards = sorted(path.glob("consolidated*.??-of-??.*"))
    hint = (
        f"found model-parallel shards ({shards[0].name}); merge them into one 00-of-01 file first"
        if shards else
        "put consolidated.00-of-01.safetensors (official) or diffusion_pytorch_model.safetensors (diffusers) there"
    )
    raise LuminaCheckpointError("the folder holds no Lumina weights file", source=str(path), hint=hint)


class _Intake:
    """Casts each tensor as it is read and checks it for NaN/inf in the same pass, so a 5B model is
    still held once and read once; the bad names are collected so one error can list them all."""

    def __init__(self, dtype: torch.dtype | None, fp8: torch.dtype | None = None) -> None:
        self.dtype = dtype
        self.fp8 = fp8  # storage of the blocks' linear weights (lumina.fp8), read straight into it
        self.nonfinite: list[str] = []  # NaN/inf in the file itself
        self.overflow: list[str] = []  # finite in the file, ±inf (fp8: NaN) after the cast to `dtype`

    def dtype_of(self, key: str, tensor: Tensor) -> torch.dtype | None:
        if self.fp8 is not None and tensor.ndim == 2 and key.endswith(".weight") and in_blocks(key):
            return self.fp8
        return self.dtype

    def take(self, key: str, tensor: Tensor) -> Tensor:
        dtype = self.dtype_of(key, tensor)
        out = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        if not all_finite(out):
            # only a bad tensor pays for the second check that tells a corrupt file from a narrow dtype
            cast_only = out is not tensor and all_finite(tensor)
            (self.overflow if cast_only else self.nonfinite).append(key)
        return out

    def check(self, source: str, keys: Iterable[str], prefix: str = "") -> None:
        """Raise for the non-finite tensors whose names start with `prefix` (the model's own:
        a broken VAE bundled in the same file is not the model's problem)."""
        nonfinite = [k for k in self.nonfinite if k.startswith(prefix)]
        overflow = [k for k in self.overflow if k.startswith(prefix)]
        if nonfinite:
            raise LuminaCheckpointError(
                f"{len(nonfinite)} tensor(s) hold NaN or infinite values", source=source,
                family=_guess_family_of_keys(keys), keys=nonfinite,
                hint="the weights are corrupt (a diverged training run, a failed conversion or a damaged "
                "download); use another copy or an earlier checkpoint",
            )
        if overflow:
            name = " / ".join(sorted({str(self.dtype if self.fp8 is None or not in_blocks(k) else self.fp8).removeprefix("torch.")
                                      for k in overflow}))
            raise LuminaCheckpointError(
                f"{len(overflow)} tensor(s) overflow to infinity when cast to {name}", source=source,
                family=_guess_family_of_keys(keys), keys=overflow,
                hint=f"their values exceed {name}'s range; load in bfloat16 or float32",
            )


def _parse_json(text: str, what: str, source: str, hint: str, family: str | None = None) -> dict[str, Any]:
    """A JSON object, or an error naming the file (or metadata entry) and where the JSON breaks."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise LuminaCheckpointError(
            f"{what} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}, char {err.pos})",
            source=source, family=family, hint=hint,
        ) from None
    if not isinstance(data, dict):
        raise LuminaCheckpointError(
            f"{what} holds a JSON {type(data).__name__}, not an object", source=source, family=family, hint=hint,
        )
    return data


def _read_json_file(path: Path, hint: str, family: str | None = None) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LuminaCheckpointError(
            f"{path.name} cannot be read as text ({err})", source=str(path), family=family, hint=hint,
        ) from None
    return _parse_json(text, path.name, str(path), hint, family)


# Bytes of cast tensors read through one mapping of a safetensors file before it is reopened: a
# mapping's pages stay in the process's resident memory until it is closed, so a file read whole
# through one mapping (an fp32 checkpoint cast to bf16 or fp8) would count the whole file on top of
# the cast weights. Tensors kept as stored are views of their mapping and keep it alive either way.
MAPPED_READ_BYTES = 64 << 20


def _read_safetensors(path: Path, intake: _Intake) -> tuple[StateDict, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata, keys = f.metadata() or {}, list(f.keys())
        tensors: StateDict = {}
        while len(tensors) < len(keys):
            with safe_open(str(path), framework="pt", device="cpu") as f:
                read = 0
                # one tensor at a time: cast and checked as it is read, never two full copies in memory
                for key in keys[len(tensors):]:
                    stored = f.get_tensor(key)
                    tensors[key] = intake.take(key, stored)
                    read += stored.numel() * stored.element_size() if tensors[key] is not stored else 0
                    del stored  # a view of the mapping, which is released with the last one
                    if read >= MAPPED_READ_BYTES:
                        break
        return tensors, metadata
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        size = f"{path.stat().st_size} bytes; " if path.is_file() else ""
        raise LuminaCheckpointError(
            f"the file is not a readable safetensors file ({size}{err})",
            source=str(path), hint="the download is probably truncated or corrupt; download it again",
        ) from None


def _torch_load_reason(err: Exception) -> tuple[str, str]:
    """(what went wrong, the fix) for a failed `torch.load(weights_only=True)`, without torch's
    advice to retry with weights_only=False (that would run whatever the file pickles)."""
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"it pickles {found.group(1)}, not only tensors",
            "the file pickles code, which is refused for safety and never run; use the .safetensors "
            "release or re-save it as a plain state dict of tensors",
        )
    detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    return (
        f"{type(err).__name__}: {detail[0][:200] if detail else 'no details'}",
        "it is truncated or not a PyTorch file (or pickles code, refused for safety); download it again "
        "or use the .safetensors release",
    )


def _read_torch(path: Path, intake: _Intake, ema: bool = True) -> StateDict:
    # torch's old (non-zip) format cannot be memory-mapped: it loads fully instead, still weights-only
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any unpickling failure gets the same treatment
        reason, hint = _torch_load_reason(err)
        raise LuminaCheckpointError(
            f"the file cannot be read as plain PyTorch weights ({reason})", source=str(path), hint=hint,
        ) from None
    wrappers = ("ema", "model", "state_dict", "module") if ema else ("model", "state_dict", "module", "ema")
    for wrapper in wrappers:  # training checkpoints nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]  # the outer dict (and an unused ema/model twin) is freed here
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise LuminaCheckpointError("the file holds no state dict of tensors", source=str(path))
    # popped one by one: an old-format file is in memory, and each stored tensor is dropped once cast
    release = mmap and _native_byte_order(path)
    out: StateDict = {}
    for key in list(obj):
        stored = obj.pop(key)
        out[key] = intake.take(key, stored)
        if release and out[key] is not stored:
            _release_mapped_pages(stored)
    return out


def _native_byte_order(path: Path) -> bool:
    """Whether torch.load used the archive's bytes as they are: a file of the other byte order is
    swapped in place in the private mapping, and swapped pages must not be dropped (a re-read would
    bring back the unswapped bytes)."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/byteorder")]
        order = archive.read(names[0]).decode().strip() if names else "little"  # torch's older files: little
    return order == sys.byteorder


_MADV_DONTNEED = 4  # Linux


@functools.cache
def _madvise() -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), ctypes.c_int
    return function


def _release_mapped_pages(tensor: Tensor) -> None:
    """Drop the resident pages of a tensor read through torch.load(mmap=True) once it has been cast.

    All tensors of such a file share one private, read-only-in-practice mapping, which stays
    alive until the last of them is freed, so every page read would stay resident beside the
    cast weights until the whole file was read (the whole checkpoint on top of the model). Pages
    of a private file mapping that were never written are only dropped from this process: a later
    read of the same bytes (another tensor sharing the page) reads them from the file again."""
    madvise = _madvise()
    if madvise is None or not tensor.is_contiguous():
        return
    page = mmap_module.PAGESIZE
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // page) * page, end // page * page  # whole pages inside the tensor's bytes
    if last > first:
        madvise(first, last - first, _MADV_DONTNEED)


def _read_diffusers_index(path: Path, intake: _Intake) -> tuple[StateDict, dict[str, str]]:
    hint = "it is diffusers' shard index; download it again with its shards"
    weight_map = _read_json_file(path, hint).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise LuminaCheckpointError('the index has no "weight_map" of tensor → shard', source=str(path), hint=hint)
    out: StateDict = {}
    for shard in sorted(set(map(str, weight_map.values()))):
        if not (path.parent / shard).is_file():
            raise LuminaCheckpointError(
                f"shard {shard} listed in the index is missing", source=str(path), hint="download the missing shard",
            )
        out.update(_read_safetensors(path.parent / shard, intake)[0])
    return out, {}


def _read(path: str | os.PathLike, intake: _Intake, ema: bool) -> tuple[StateDict, dict[str, str], str]:
    file = resolve_checkpoint_path(path, ema)
    if file.name.endswith(".index.json"):
        sd, meta = _read_diffusers_index(file, intake)
    elif file.suffix == ".safetensors":
        sd, meta = _read_safetensors(file, intake)
    elif file.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        sd, meta = _read_torch(file, intake, ema), {}
    else:
        raise LuminaCheckpointError(
            f"unknown file type {file.suffix!r}", source=str(file),
            hint="use a .safetensors or .pth Lumina checkpoint",
        )
    diffusers_json = file.parent / "config.json"
    if diffusers_json.is_file() and file.name.startswith("diffusion_pytorch_model"):
        # validated here, where the file's name is known; kept as text like safetensors metadata
        data = _read_json_file(diffusers_json, _CONFIG_JSON_HINT, _guess_family_of_keys(sd))
        meta = {**meta, DIFFUSERS_CONFIG_KEY: json.dumps(data)}
    return sd, meta, str(file)


def read_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None, ema: bool = True) -> tuple[StateDict, dict[str, str], str]:
    """(raw state dict, safetensors metadata, resolved file name) of any accepted path.
    Tensors holding NaN or inf (or overflowing in `dtype`) are refused."""
    intake = _Intake(dtype)
    sd, meta, file = _read(path, intake, ema)
    intake.check(file, sd.keys())
    return sd, meta, file


# -- key maps -------------------------------------------------------------------------------
def _prefix_of(keys: Iterable[str]) -> str | None:
    """The wrapper prefix in front of the patch embedder's weight ("" for none), None without one."""
    for key in keys:
        for anchor in _ANCHORS:
            if key.endswith(anchor) and (key == anchor or key[: -len(anchor)].endswith(".")):
                return key[: -len(anchor)]
    return None


def strip_prefix(state_dict: Mapping[str, Tensor]) -> tuple[StateDict, str]:
    """Drop a wrapper prefix (`model.diffusion_model.`, `module.`, `transformer.`, …) and any
    tensors outside it (a VAE or text encoder bundled in the same file)."""
    prefix = _prefix_of(state_dict)
    if prefix is None:
        return dict(state_dict), ""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}, prefix


def _guess_family_of_keys(keys: Iterable[str]) -> str | None:
    """The family from raw key names (any prefix, official or diffusers), for errors raised
    before the keys are converted."""
    keys = list(keys)
    prefix = _prefix_of(keys) or ""
    stripped = {k[len(prefix):] for k in keys if k.startswith(prefix)}
    return "next_dit" if is_diffusers(stripped) else guess_family(stripped)


def is_diffusers(state_dict: Mapping[str, Any] | set[str]) -> bool:
    return "patch_embedder.proj.weight" in state_dict


def diffusers_to_official(state_dict: Mapping[str, Tensor], source: str = "state dict") -> StateDict:
    """diffusers LuminaNextDiT2DModel names → official Next-DiT names."""
    out: StateDict = {}
    unknown = []
    for key, value in state_dict.items():
        if key in _DIFFUSERS_GLOBAL:
            out[_DIFFUSERS_GLOBAL[key]] = value
            continue
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "layers":
            suffix = parts[2]
            if suffix in _DIFFUSERS_LAYER:
                out[f"layers.{parts[1]}.{_DIFFUSERS_LAYER[suffix]}"] = value
                continue
            if suffix in _DIFFUSERS_DUPLICATES:
                twin = f"layers.{parts[1]}.{_DIFFUSERS_DUPLICATES[suffix]}"
                if twin in state_dict and not torch.equal(state_dict[twin], value):
                    raise LuminaCheckpointError(
                        f"{key} differs from {twin}; the Lumina architecture shares one query projection "
                        "between self- and cross-attention, so this file cannot be represented exactly",
                        source=source, family="next_dit", keys=[key, twin],
                    )
                continue
        unknown.append(key)
    if unknown:
        raise LuminaCheckpointError(
            "diffusers keys with no official counterpart", source=source, family="next_dit", keys=unknown,
            hint="this loader knows LuminaNextDiT2DModel from diffusers 0.29 and later",
        )
    return out


def official_to_diffusers(state_dict: Mapping[str, Tensor], source: str = "state dict") -> StateDict:
    """Official Next-DiT names → diffusers LuminaNextDiT2DModel names (duplicates restored)."""
    if guess_family(state_dict.keys()) != "next_dit":
        raise LuminaCheckpointError(
            "diffusers has no Flag-DiT (Lumina-T2I) model; only Next-DiT converts to diffusers",
            source=source, family=guess_family(state_dict.keys()),
            hint="save Flag-DiT in the official format with save_official",
        )
    out: StateDict = {}
    unknown = []
    for key, value in state_dict.items():
        parts = key.split(".", 2)
        if key in _OFFICIAL_TO_DIFFUSERS_GLOBAL:
            out[_OFFICIAL_TO_DIFFUSERS_GLOBAL[key]] = value
        elif len(parts) == 3 and parts[0] == "layers" and parts[2] in _OFFICIAL_TO_DIFFUSERS_LAYER:
            out[f"layers.{parts[1]}.{_OFFICIAL_TO_DIFFUSERS_LAYER[parts[2]]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise LuminaCheckpointError(
            "keys with no diffusers counterpart", source=source, family="next_dit", keys=unknown,
            hint="pass the weights of one Next-DiT model with official key names",
        )
    for key in list(out):
        parts = key.split(".", 2)
        for duplicate, original in _DIFFUSERS_DUPLICATES.items():
            if parts[0] == "layers" and parts[2] == original:
                out[f"layers.{parts[1]}.{duplicate}"] = out[key]
    return out


def to_official(state_dict: Mapping[str, Tensor], source: str = "state dict") -> tuple[StateDict, str]:
    """Any accepted naming → official names; also returns the detected format. torch.compile's
    `_orig_mod.` key segments (in the released Lumina-Video file) are dropped."""
    sd, prefix = strip_prefix(strip_compile_prefix(state_dict))
    if is_diffusers(sd):
        return diffusers_to_official(sd, source), "diffusers"
    _reject_other_models(sd, source)
    return sd, ("prefixed:" + prefix) if prefix else "official"


def _reject_other_models(sd: Mapping[str, Tensor], source: str) -> None:
    if any(k.startswith(("noise_refiner.", "context_refiner.")) for k in sd):
        raise LuminaCheckpointError(
            "this is a Lumina-Image 2.0 checkpoint (it has noise_refiner/context_refiner layers), "
            "a different architecture", source=source,
            hint="load Lumina-Image 2.0 with ComfyUI's core loader; this pack runs Lumina-T2I and Lumina-Next",
        )


# -- validation and loading -----------------------------------------------------------------
def check_state_dict(model: LuminaDiT, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Raise one error listing missing keys, unexpected keys and shape mismatches."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    family = model.family
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s)")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s)")
        n = model.config.n_layers
        beyond = sorted({i for k in unexpected if (i := _layer_index(k)) is not None and i >= n})
        extra = (
            f" (layer {', '.join(map(str, beyond))} lies beyond the {n} layers 0–{n - 1} the other tensors describe)"
            if beyond else ""
        )
        raise LuminaCheckpointError(
            " and ".join(parts) + f" for a {n}-layer model" + extra,
            source=source, family=family, keys=[f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected],
            hint="the file is incomplete, or mixes weights of different models" if missing else
            "remove those tensors from the file: they are no part of this model",
        )
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {shape})"
        for k, shape in expected.items() if tuple(state_dict[k].shape) != shape
    ]
    if wrong:
        raise LuminaCheckpointError(
            "tensor shapes do not fit one model", source=source, family=family, keys=wrong,
            hint="the file mixes weights of different model sizes",
        )


def _layer_index(key: str) -> int | None:
    parts = key.split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() else None


_CONFIG_JSON_HINT = (
    "fix config.json (diffusers' LuminaNextDiT2DModel config), or delete it: the model is then read off the "
    "tensors alone, with 4-channel latents assumed where the patch size is ambiguous"
)
_METADATA_HINT = "re-save the file with lumina.save_official, or drop its lumina_config metadata"


def _config_from_metadata(metadata: Mapping[str, str], sd: Mapping[str, Tensor], source: str) -> LuminaConfig:
    """Our saved config if present; else shapes, with a diffusers config.json settling the one
    thing shapes cannot (patch size vs channels: x_embedder width is p²·C) and checked against
    them on everything else."""
    raw = metadata.get(CONFIG_METADATA_KEY)
    if raw:
        data = _parse_json(raw, f"its {CONFIG_METADATA_KEY} metadata", source, _METADATA_HINT, guess_family(sd))
        if isinstance(data, dict) and data.get("family") == VIDEO_FAMILY:
            return _video_config_from(data, source)
        if isinstance(data, dict) and data.get("family") == "flag_dit" and "nextframe_token" not in data:
            # saved before the field existed: the optional [nextframe] token is there or not
            data = {**data, "nextframe_token": "nextframe_token" in sd}
        try:
            return LuminaConfig.from_dict(data)
        except (TypeError, ValueError) as err:
            raise LuminaCheckpointError(
                f"its {CONFIG_METADATA_KEY} metadata is not a valid configuration ({err})",
                source=source, family=data.get("family") if data.get("family") in ("flag_dit", "next_dit") else None,
                hint=_METADATA_HINT,
            ) from None
    config = infer_config(sd, source)
    if DIFFUSERS_CONFIG_KEY in metadata:
        data = _parse_json(metadata[DIFFUSERS_CONFIG_KEY], "config.json", source, _CONFIG_JSON_HINT, config.family)
        config = _reconcile_diffusers_config(data, config, source)
    return config


def _video_config_from(data: Mapping[str, Any], source: str) -> LuminaVideoConfig:
    try:
        return LuminaVideoConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise LuminaCheckpointError(
            f"its {CONFIG_METADATA_KEY} metadata is not a valid Lumina-Video configuration ({err})",
            source=source, family=VIDEO_FAMILY, hint=_METADATA_HINT,
        ) from None


def _split_patch(width: int, patch: Any, channels: Any) -> tuple[int, int] | tuple[str, str]:
    """(patch_size, in_channels) from config.json values that fit the patch embedder's width
    (p²·C features per patch), else (offending key, what the tensors say instead)."""
    splits = [(p, width // (p * p)) for p in range(1, math.isqrt(width) + 1) if width % (p * p) == 0]
    features = f"{width} features per patch = patch_size² × in_channels"
    options = f"{features}, i.e. " + " or ".join(f"{p}²×{c}" for p, c in splits)
    if patch is not None and channels is not None:
        if patch * patch * channels == width:
            return patch, channels
        if width % (patch * patch) == 0:  # the patch size fits: the channel count is what is wrong
            return "in_channels", f"{width // (patch * patch)} with patch_size {patch} ({features})"
        return "patch_size", f"{options}; {patch}²×{channels} = {patch * patch * channels}"
    if channels is not None:
        found = [p for p, c in splits if c == channels]
        return (found[0], channels) if found else ("in_channels", options)
    if width % (patch * patch) == 0:
        return patch, width // (patch * patch)
    return "patch_size", options


def _reconcile_diffusers_config(data: Mapping[str, Any], config: LuminaConfig, source: str) -> LuminaConfig:
    """The tensors' config with config.json's patch size/channels split; any field of config.json
    that the tensors contradict is an error listing each (the tensors decide; following either
    side silently builds another model than the one meant)."""
    config_json = str(Path(source).parent / "config.json") if source != "state dict" else "config.json"
    contradictions: list[tuple[str, str]] = []  # (key, what config.json says against the tensors)
    sizes = ("patch_size", "in_channels", "hidden_size", "num_layers", "num_attention_heads", "num_kv_heads",
             "cross_attention_dim")
    malformed = [
        k for k in sizes
        if data.get(k) is not None and (isinstance(data[k], bool) or not isinstance(data[k], int) or data[k] <= 0)
    ]
    contradictions += [(k, f"{k} is {data[k]!r} there, not a positive integer") for k in malformed]
    # no arithmetic on malformed values: those are reported as they are
    if not malformed and (data.get("patch_size") is not None or data.get("in_channels") is not None):
        split = _split_patch(config.patch_features, data.get("patch_size"), data.get("in_channels"))
        if isinstance(split[0], int):
            config = config.with_(patch_size=split[0], in_channels=split[1])
        else:
            contradictions.append((split[0], f"{split[0]} is {data.get(split[0])!r} there, the tensors say {split[1]}"))
    kv = data.get("num_kv_heads") or data.get("num_attention_heads")
    checks: list[tuple[str, Any, Any, str]] = [  # key, config.json value, tensors' value, evidence
        ("hidden_size", data.get("hidden_size"), config.dim, "rows of patch_embedder.proj.weight"),
        ("num_layers", data.get("num_layers"), config.n_layers, "layers.<i> blocks"),
        ("num_attention_heads", data.get("num_attention_heads"), config.n_heads, "entries of layers.0.gate"),
        ("num_kv_heads", kv if "num_kv_heads" in data else None, config.kv_heads,
         "rows of layers.0.attn1.to_k.weight / head size"),
        ("cross_attention_dim", data.get("cross_attention_dim"), config.cap_feat_dim,
         "width of layers.0.norm1_context.weight"),
        ("learn_sigma", data.get("learn_sigma"), config.learn_sigma,
         "norm_out.linear_2.weight rows vs patch features"),
        ("qk_norm", data.get("qk_norm"), config.qk_norm, "layers.0.attn1.norm_q present or not"),
    ]
    contradictions += [
        (k, f"{k} is {v!r} there, the tensors say {ours!r} ({evidence})")
        for k, v, ours, evidence in checks if v is not None and v != ours and k not in malformed
    ]
    if "multiple_of" in data or "ffn_dim_multiplier" in data:
        try:
            width = ffn_hidden_dim(config.dim, int(data.get("multiple_of") or 256), data.get("ffn_dim_multiplier"))
        except (TypeError, ValueError, ZeroDivisionError):
            width = None
        if width != config.hidden_dim:
            key = "multiple_of/ffn_dim_multiplier"
            contradictions.append((key, (
                f"{key} is {data.get('multiple_of')!r}/{data.get('ffn_dim_multiplier')!r} there (an FFN width of "
                f"{width}), the tensors say {config.hidden_dim} (rows of layers.0.feed_forward.linear_1.weight)"
            )))
    if contradictions:
        details = "; ".join(detail for _, detail in contradictions)
        raise LuminaCheckpointError(
            f"{config_json} contradicts the tensors: {details}", source=source, family=config.family,
            keys=[k for k, _ in contradictions],
            hint="the tensors decide the model: correct those entries of config.json to match them, or use the "
            "config.json that came with these weights",
        )
    return config


def load_model(
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor],
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    *,
    ema: bool = True,
    config: LuminaConfig | None = None,
    fp8: str | None = None,
) -> LuminaDiT:
    """Build the right family from any accepted checkpoint, without random-initialising it.

    dtype None keeps the stored dtype. The module is built on the meta device and takes the
    loaded tensors as its parameters (`assign=True`), so the weights are held once. Tensors
    holding NaN/inf (or overflowing in `dtype`) are refused, and a diffusers config.json must
    agree with the tensors: every problem is one LuminaCheckpointError.
    fp8 ("fp8_e4m3fn" / "fp8_e5m2"): the blocks' linear weights are read straight into that
    storage (lumina.fp8; the rest in `dtype`, which must then be given), so the bf16 copy never exists.
    """
    if fp8 is not None and (fp8 not in FP8_DTYPES or dtype is None):
        raise LuminaInputError(f"fp8={fp8!r} needs one of {', '.join(FP8_DTYPES)} and a compute dtype (dtype=torch.bfloat16)")
    intake = _Intake(dtype, FP8_DTYPES[fp8] if fp8 else None)
    if isinstance(path_or_state_dict, Mapping):
        raw, metadata, source = {k: intake.take(k, v) for k, v in path_or_state_dict.items()}, {}, "state dict"
    else:
        raw, metadata, source = _read(path_or_state_dict, intake, ema)
    # before the key conversion: comparing NaN twins there would give a misleading error
    intake.check(source, raw.keys(), prefix=_prefix_of(raw) or "")
    sd, _ = to_official(raw, source)
    config = config or _config_from_metadata(metadata, sd, source)
    with torch.device("meta"):
        model = build_model(config)
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True, assign=True)
    if fp8 is not None:
        store_fp8(model, dtype, fp8)  # the fp8 tensors are in place already: this sets the casting layers
    return model.to(device).eval()


# -- writing --------------------------------------------------------------------------------
def _plain_state_dict(model_or_sd: LuminaDiT | Mapping[str, Tensor]) -> StateDict:
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, torch.nn.Module) else dict(model_or_sd)
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_official(model_or_sd: LuminaDiT | Mapping[str, Tensor], path: str | os.PathLike, config: LuminaConfig | None = None) -> Path:
    """Official-named safetensors (a file, or `consolidated.00-of-01.safetensors` in a folder),
    with our config in the metadata so it reloads without guessing."""
    sd = _plain_state_dict(model_or_sd)
    config = config or getattr(model_or_sd, "config", None) or infer_config(sd)
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "consolidated.00-of-01.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={CONFIG_METADATA_KEY: config.to_json(), "format": "pt"})
    return path


def diffusers_config(config: LuminaConfig) -> dict[str, Any]:
    """config.json for diffusers' LuminaNextDiT2DModel, with an FFN rule that gives our width."""
    base = int(2 * (4 * config.dim) / 3)
    multiple_of, multiplier = config.multiple_of, None
    if ffn_hidden_dim(config.dim, multiple_of) != config.hidden_dim:
        # With multiple_of = our width, diffusers rounds any width in (0, ours] up to exactly ours;
        # a multiplier first brings a larger base width below it.
        multiple_of = config.hidden_dim
        if config.hidden_dim < base:
            multiplier = config.hidden_dim / base
    return {
        "_class_name": "LuminaNextDiT2DModel",
        "sample_size": config.base_image_size // config.vae_downsample,
        "patch_size": config.patch_size, "in_channels": config.in_channels, "hidden_size": config.dim,
        "num_layers": config.n_layers, "num_attention_heads": config.n_heads, "num_kv_heads": config.kv_heads,
        "multiple_of": multiple_of, "ffn_dim_multiplier": multiplier, "norm_eps": config.norm_eps,
        "learn_sigma": config.learn_sigma, "qk_norm": config.qk_norm,
        "cross_attention_dim": config.cap_feat_dim, "scaling_factor": 1.0,
    }


def save_diffusers(model_or_sd: LuminaDiT | Mapping[str, Tensor], folder: str | os.PathLike, config: LuminaConfig | None = None) -> Path:
    """A diffusers `LuminaNextDiT2DModel` folder: config.json + diffusion_pytorch_model.safetensors."""
    sd = _plain_state_dict(model_or_sd)
    config = config or getattr(model_or_sd, "config", None) or infer_config(sd)
    folder = Path(folder)
    converted = official_to_diffusers(sd, source=str(folder))  # before mkdir: a refusal leaves nothing behind
    folder.mkdir(parents=True, exist_ok=True)
    # the duplicated query tensors must be real copies: safetensors refuses shared storage
    save_file({k: v.clone() for k, v in converted.items()}, str(folder / DIFFUSERS_FILES[0]), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(diffusers_config(config), indent=2))
    return folder
