"""Reading and writing every released checkpoint form, with the official key names as our own.

Accepted: official `consolidated[_ema].00-of-01.{safetensors,pth}` files or their folder, diffusers
`LuminaNextDiT2DModel` files or folders (also a pipeline folder's `transformer/`), and single files
whose keys carry a prefix such as ComfyUI's `model.diffusion_model.`. `.pth` files are read with
`weights_only=True`: no pickled code ever runs. `model_args.pth` is not read at all; every field
that matters is inferred from tensor shapes (`lumina.config.infer_config`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .config import LuminaConfig, ffn_hidden_dim, guess_family, infer_config
from .errors import LuminaCheckpointError
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


def _read_safetensors(path: Path, dtype: torch.dtype | None) -> tuple[StateDict, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {}
            for key in f.keys():
                t = f.get_tensor(key)  # cast one tensor at a time: never two full copies in memory
                tensors[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        return tensors, metadata
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise LuminaCheckpointError(
            f"the file is not a readable safetensors file ({path.stat().st_size} bytes; {err})",
            source=str(path), hint="the download is probably truncated or corrupt; download it again",
        ) from None


def _read_torch(path: Path, dtype: torch.dtype | None, ema: bool = True) -> StateDict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure gets the same advice
        raise LuminaCheckpointError(
            f"the file cannot be read as plain PyTorch weights ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
            source=str(path),
            hint="it is truncated, not a PyTorch file, or pickles code (refused for safety); "
            "use the .safetensors release or re-save it as a plain state dict",
        ) from None
    wrappers = ("ema", "model", "state_dict", "module") if ema else ("model", "state_dict", "module", "ema")
    for wrapper in wrappers:  # training checkpoints nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise LuminaCheckpointError("the file holds no state dict of tensors", source=str(path))
    return {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in obj.items()}


def _read_diffusers_index(path: Path, dtype: torch.dtype | None) -> tuple[StateDict, dict[str, str]]:
    index = json.loads(path.read_text())
    out: StateDict = {}
    for shard in sorted(set(index.get("weight_map", {}).values())):
        out.update(_read_safetensors(path.parent / shard, dtype)[0])
    return out, {}


def read_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None, ema: bool = True) -> tuple[StateDict, dict[str, str], str]:
    """(raw state dict, safetensors metadata, resolved file name) of any accepted path."""
    file = resolve_checkpoint_path(path, ema)
    if file.name.endswith(".index.json"):
        sd, meta = _read_diffusers_index(file, dtype)
    elif file.suffix == ".safetensors":
        sd, meta = _read_safetensors(file, dtype)
    elif file.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        sd, meta = _read_torch(file, dtype, ema), {}
    else:
        raise LuminaCheckpointError(
            f"unknown file type {file.suffix!r}", source=str(file),
            hint="use a .safetensors or .pth Lumina checkpoint",
        )
    diffusers_json = file.parent / "config.json"
    if diffusers_json.is_file() and file.name.startswith("diffusion_pytorch_model"):
        meta = {**meta, DIFFUSERS_CONFIG_KEY: diffusers_json.read_text()}
    return sd, meta, str(file)


# -- key maps -------------------------------------------------------------------------------
def strip_prefix(state_dict: Mapping[str, Tensor]) -> tuple[StateDict, str]:
    """Drop a wrapper prefix (`model.diffusion_model.`, `module.`, `transformer.`, …) and any
    tensors outside it (a VAE or text encoder bundled in the same file)."""
    for key in state_dict:
        for anchor in _ANCHORS:
            if key.endswith(anchor) and (key == anchor or key[: -len(anchor)].endswith(".")):
                prefix = key[: -len(anchor)]
                return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}, prefix
    return dict(state_dict), ""


def is_diffusers(state_dict: Mapping[str, Any]) -> bool:
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
    """Any accepted naming → official names; also returns the detected format."""
    sd, prefix = strip_prefix(state_dict)
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
        raise LuminaCheckpointError(
            " and ".join(parts) + f" for a {model.config.n_layers}-layer model",
            source=source, family=family, keys=[f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected],
            hint="the file is incomplete, or mixes weights of different models",
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


def _config_from_metadata(metadata: Mapping[str, str], sd: Mapping[str, Tensor], source: str) -> LuminaConfig:
    """Our saved config if present; else shapes, with a diffusers config.json settling the one
    thing shapes cannot (patch size vs channels: x_embedder width is p²·C)."""
    raw = metadata.get(CONFIG_METADATA_KEY)
    if raw:
        return LuminaConfig.from_dict(json.loads(raw))
    channels = None
    if DIFFUSERS_CONFIG_KEY in metadata:
        channels = json.loads(metadata[DIFFUSERS_CONFIG_KEY]).get("in_channels")
    return infer_config(sd, source, in_channels=channels)


def load_model(
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor],
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    *,
    ema: bool = True,
    config: LuminaConfig | None = None,
) -> LuminaDiT:
    """Build the right family from any accepted checkpoint, without random-initialising it.

    dtype None keeps the stored dtype. The module is built on the meta device and takes the
    loaded tensors as its parameters (`assign=True`), so the weights are held once.
    """
    if isinstance(path_or_state_dict, Mapping):
        raw, metadata, source = dict(path_or_state_dict), {}, "state dict"
        if dtype is not None:
            raw = {k: v.to(dtype) if v.is_floating_point() else v for k, v in raw.items()}
    else:
        raw, metadata, source = read_state_dict(path_or_state_dict, dtype, ema)
    sd, _ = to_official(raw, source)
    config = config or _config_from_metadata(metadata, sd, source)
    with torch.device("meta"):
        model = build_model(config)
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True, assign=True)
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
