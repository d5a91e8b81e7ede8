"""Loading the released Lumina-T2Music and Lumina-T2Audio files safely.

Released layouts (Hugging Face Alpha-VLLM/Lumina-T2Music and Lumina-T2Audio):
  Lumina-T2Music/  music_generation/119.ckpt   maa2/maa2.ckpt   bigvnat/{args.yml, best_netG.pt}
  Lumina-T2Audio/  audio_generation/324.ckpt   maa2/maa2.ckpt   bigvgan/{args.yml, best_netG.pt}
                   CLAP/CLAP_weights_2022.pth

`119.ckpt` / `324.ckpt` are pickled PyTorch Lightning checkpoints of the whole `CFM` module; its
`state_dict` holds the DiT under `model.diffusion_model.*`, the mel VAE under `first_stage_model.*`,
the 0-d `scale_factor` buffer (scale_by_std), the text stack under `cond_stage_model.*` and DDPM
schedule buffers that CFM sampling never reads. They are read with `lumina.safe_pickle` (an
allow-list unpickler: tensors only, no pickled code ever runs); `.safetensors` files holding the
same keys are read directly.

Music and audio have the same DiT shapes; what tells them apart is the text stack the checkpoint
carries: music's `FrozenFLANEmbedder` keeps FLAN-T5 under `cond_stage_model.transformer.*`, audio's
`FrozenCLAPFLANEmbedder` keeps CLAP's BERT tower under `cond_stage_model.caption_encoder.*` and
T5 v1.1 under `cond_stage_model.t5_transformer.*`, and its DiT sees the two concatenated (77 CLAP
tokens then 77 T5 tokens). A file without text weights is told by its folder
(`music_generation/`, `audio_generation/`), else by the `kind` the caller names.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .errors import LuminaCheckpointError
from .model.audio_dit import AUDIO_DIT_NAME, AudioDiT, AudioDiTConfig, infer_audio_dit_config
from .safe_pickle import load_tensors

KINDS = ("music", "audio")
KIND_NAMES = {"music": "Lumina-T2Music", "audio": "Lumina-T2Audio"}
DIT_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
_TEXT_MARKERS = {
    "music": ("cond_stage_model.transformer.",),
    "audio": ("cond_stage_model.caption_encoder.", "cond_stage_model.t5_transformer."),
}
# the released folders: DiT checkpoint folder, vocoder folder, the text weights the audio model needs
RELEASE_DIRS = {"music": ("music_generation", "bigvnat"), "audio": ("audio_generation", "bigvgan")}
CLAP_FILE = ("CLAP", "CLAP_weights_2022.pth")
VAE_FILE = ("maa2", "maa2.ckpt")


@dataclass
class AudioCheckpoint:
    """The parts of a released CFM checkpoint, prefixes stripped.

    kind: "music" or "audio" (None when nothing in the file or its path tells);
    dit: FlagDiTv2 weights (official names, `model.diffusion_model.` removed);
    first_stage: the mel VAE's (`first_stage_model.` removed) — for `lumina.audio_vae`;
    cond_stage: the text stack's (`cond_stage_model.` removed), empty when not bundled;
    scale_factor: the latent scale (decode latent / scale_factor), None when absent."""

    kind: str | None
    dit: dict[str, Tensor]
    first_stage: dict[str, Tensor] = field(default_factory=dict)
    cond_stage: dict[str, Tensor] = field(default_factory=dict)
    scale_factor: float | None = None
    source: str = "state dict"

    @property
    def name(self) -> str:
        return KIND_NAMES.get(self.kind or "", "Lumina-T2Music / Lumina-T2Audio")


def _check_kind(kind: str | None, what: str = "kind") -> None:
    if kind is not None and kind not in KINDS:
        raise LuminaCheckpointError(f"{what}={kind!r} is not one of {', '.join(KINDS)}", hint="pass kind='music' or kind='audio'")


def kind_of_keys(keys: Any) -> str | None:
    """'music' / 'audio' from the text-stack keys a CFM state dict carries, None when it has none."""
    found = {kind for kind, markers in _TEXT_MARKERS.items() if any(k.startswith(markers) for k in keys)}
    if len(found) > 1:
        return "mixed"
    return found.pop() if found else None


def kind_of_path(path: str | os.PathLike) -> str | None:
    parts = {p.lower() for p in Path(path).parts}
    found = {kind for kind, (folder, _) in RELEASE_DIRS.items() if folder in parts}
    return found.pop() if len(found) == 1 else None


def resolve_dit_checkpoint(path: str | os.PathLike, kind: str | None = None) -> Path:
    """The CFM checkpoint file of `path`: the file itself, or the one `.ckpt` / `.safetensors` in a
    folder, its `music_generation/` / `audio_generation/` subfolder (the released model folder)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise LuminaCheckpointError("the path does not exist", source=str(p), hint="check the path")
    folders = [p] + [p / RELEASE_DIRS[k][0] for k in ((kind,) if kind else KINDS)]
    for folder in folders:
        files = sorted(f for f in folder.glob("*") if f.suffix in (".ckpt", ".safetensors") and f.is_file()) if folder.is_dir() else []
        if len(files) == 1:
            return files[0]
        if len(files) > 1:
            raise LuminaCheckpointError(
                f"the folder holds several checkpoints ({', '.join(f.name for f in files)})", source=str(folder),
                hint="pass the checkpoint file itself",
            )
    want = " or ".join(f"{RELEASE_DIRS[k][0]}/*.ckpt" for k in ((kind,) if kind else KINDS))
    raise LuminaCheckpointError(f"no CFM checkpoint found (looked for *.ckpt and {want})", source=str(p),
                                hint="pass the released 119.ckpt (music) or 324.ckpt (audio)")


def _read(file: Path) -> dict[str, Tensor]:
    if file.suffix == ".safetensors":
        try:
            return load_file(str(file))
        except (SafetensorError, OSError) as err:
            raise LuminaCheckpointError(f"the safetensors file cannot be read ({err})", source=str(file),
                                        hint="download it again") from None
    return load_tensors(file)


def split_cfm_state_dict(state_dict: Mapping[str, Tensor], source: str = "state dict", kind: str | None = None) -> AudioCheckpoint:
    """Split a whole-CFM state dict into its parts and tell music from audio (see the module doc).
    `kind` is what the caller expects: a checkpoint of the other kind is an error."""
    _check_kind(kind)
    found = kind_of_keys(state_dict)
    if found == "mixed":
        raise LuminaCheckpointError(
            "it carries both the music text stack (cond_stage_model.transformer.*) and the audio one "
            "(cond_stage_model.caption_encoder.* / t5_transformer.*)", source=source,
            hint="the file mixes two checkpoints; use the released file",
        )
    if found is None and source != "state dict":
        found = kind_of_path(source)
    if kind is not None and found is not None and found != kind:
        other = RELEASE_DIRS[found][0]
        raise LuminaCheckpointError(
            f"this is a {KIND_NAMES[found]} checkpoint ({'its text stack' if kind_of_keys(state_dict) else 'its folder'} "
            f"says so), not {KIND_NAMES[kind]}",
            source=source,
            hint=f"load it as kind='{found}' ({other}/), or pick the {KIND_NAMES[kind]} checkpoint "
            f"({RELEASE_DIRS[kind][0]}/{'119' if kind == 'music' else '324'}.ckpt)",
        )
    dit = {k[len(DIT_PREFIX):]: v for k, v in state_dict.items() if k.startswith(DIT_PREFIX)}
    if not dit:
        has_bare = "proj_in.weight" in state_dict
        if not has_bare:
            raise LuminaCheckpointError(
                f"no DiT weights ({DIT_PREFIX}*) in it", source=source, keys=sorted(state_dict)[:5],
                hint="pick the released music_generation/119.ckpt or audio_generation/324.ckpt"
                + (" (maa2.ckpt is the autoencoder, best_netG.pt the vocoder)" if any(k.startswith(("encoder.", "decoder.", "generator")) for k in state_dict) else ""),
            )
        dit = {k: v for k, v in state_dict.items() if not k.startswith((VAE_PREFIX, TEXT_PREFIX)) and k != "scale_factor"}
    scale = state_dict.get("scale_factor")
    scale_factor = None
    if scale is not None:
        if scale.numel() != 1 or not math.isfinite(float(scale)) or float(scale) == 0.0:
            raise LuminaCheckpointError(f"scale_factor {scale.tolist()} is not one finite non-zero number", source=source,
                                        keys=["scale_factor"], hint="the file is damaged; download it again")
        scale_factor = float(scale)
    return AudioCheckpoint(
        kind=kind or found, dit=dit,
        first_stage={k[len(VAE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(VAE_PREFIX)},
        cond_stage={k[len(TEXT_PREFIX):]: v for k, v in state_dict.items() if k.startswith(TEXT_PREFIX)},
        scale_factor=scale_factor, source=source,
    )


def read_audio_checkpoint(path: str | os.PathLike, kind: str | None = None) -> AudioCheckpoint:
    """Read a released CFM checkpoint (file or folder, `.ckpt` / `.pt` / `.safetensors`) tensors-only
    and split it (`split_cfm_state_dict`). `kind` ('music' / 'audio'): what the caller expects."""
    _check_kind(kind)
    file = resolve_dit_checkpoint(path, kind)
    return split_cfm_state_dict(_read(file), str(file), kind)


def _check_dit_state_dict(model: AudioDiT, sd: Mapping[str, Tensor], source: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {s})" for k, s in expected.items() if k in sd and tuple(sd[k].shape) != s]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing key(s)"] * bool(missing) + [f"{len(unexpected)} unexpected key(s)"] * bool(unexpected)
        parts += [f"{len(wrong)} tensor(s) of the wrong shape"] * bool(wrong)
        raise LuminaCheckpointError(
            " and ".join(parts) + f" for a {model.config.n_layers}-block {AUDIO_DIT_NAME}", source=source,
            keys=[f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected] + wrong,
            hint="the file is incomplete or mixes weights of different models",
        )
    bad = [k for k, v in sd.items() if v.is_floating_point() and not math.isfinite(float(v.float().sum()))]
    if bad:
        raise LuminaCheckpointError(
            f"{len(bad)} tensor(s) hold NaN or infinite values", source=source, keys=bad,
            hint="the weights are corrupt; use another copy",
        )


def build_audio_dit(
    dit_state_dict: Mapping[str, Tensor], source: str = "state dict", dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu", *, config: AudioDiTConfig | None = None, **config_overrides: Any,
) -> AudioDiT:
    """An AudioDiT from its (prefix-free) weights: config from shapes, built on the meta device and
    given the tensors (held once). `config_overrides`: max_len, rope_theta, norm_eps, n_heads."""
    sd = dict(dit_state_dict)
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    config = config or infer_audio_dit_config(sd, source, **config_overrides)
    with torch.device("meta"):
        model = AudioDiT(config)
    _check_dit_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True, assign=True)
    model = model.to(device).eval()
    model.pack_weights()  # assign=True put the file's tensors in place: lay the SwiGLU's [w1; w3] out (one copy of those two)
    return model


def load_audio_model(
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor] | AudioCheckpoint, kind: str | None = None,
    dtype: torch.dtype | None = None, device: str | torch.device = "cpu", **config_overrides: Any,
) -> tuple[AudioDiT, AudioCheckpoint]:
    """The 1-D Flag-DiT of a released Lumina-T2Music / T2Audio checkpoint, and the split checkpoint
    (its VAE weights, text weights, scale_factor and kind, for the rest of the pipeline).

    `path_or_state_dict`: the released `119.ckpt` / `324.ckpt`, the model folder holding it, a
    `.safetensors` of the same keys, a whole-CFM state dict, or an AudioCheckpoint already read.
    `kind`: 'music' or 'audio' when the caller needs that one (the other is refused with a clear
    error); None accepts either."""
    if isinstance(path_or_state_dict, AudioCheckpoint):
        ckpt = path_or_state_dict
        _check_kind(kind)
        if kind is not None and ckpt.kind is not None and ckpt.kind != kind:
            raise LuminaCheckpointError(f"this is a {KIND_NAMES[ckpt.kind]} checkpoint, not {KIND_NAMES[kind]}", source=ckpt.source)
    elif isinstance(path_or_state_dict, Mapping):
        ckpt = split_cfm_state_dict(path_or_state_dict, "state dict", kind)
    else:
        ckpt = read_audio_checkpoint(path_or_state_dict, kind)
    model = build_audio_dit(ckpt.dit, ckpt.source, dtype, device, **config_overrides)
    return model, ckpt


@dataclass(frozen=True)
class AudioRelease:
    """The files of a released model folder (None where the folder lacks one)."""

    kind: str
    root: Path
    dit: Path
    vae: Path | None
    vocoder_dir: Path | None
    clap: Path | None


def find_audio_release(root: str | os.PathLike, kind: str | None = None, *, require_all: bool = True) -> AudioRelease:
    """The released folder's parts (see the module doc). With `require_all`, a missing part the
    kind needs (VAE, vocoder `args.yml` + `best_netG.pt`, audio's CLAP weights) is an error naming it."""
    _check_kind(kind)
    base = Path(root)
    if not base.is_dir():
        raise LuminaCheckpointError("the model folder does not exist", source=str(base), hint="check the path")
    kinds = [k for k in KINDS if (base / RELEASE_DIRS[k][0]).is_dir()]
    if kind is None:
        if len(kinds) != 1:
            raise LuminaCheckpointError(
                "cannot tell the model: the folder has " + (" and ".join(f"{RELEASE_DIRS[k][0]}/" for k in kinds) or
                                                            "neither music_generation/ nor audio_generation/"),
                source=str(base), hint="pass kind='music' or kind='audio', or the released model folder",
            )
        kind = kinds[0]
    elif kind not in kinds:
        other = [k for k in kinds if k != kind]
        raise LuminaCheckpointError(
            f"no {RELEASE_DIRS[kind][0]}/ folder: " + (f"this is a {KIND_NAMES[other[0]]} folder" if other else "not a released model folder"),
            source=str(base), hint=f"pick the {KIND_NAMES[kind]} folder" + (f", or load it as kind='{other[0]}'" if other else ""),
        )
    dit = resolve_dit_checkpoint(base / RELEASE_DIRS[kind][0], kind)
    vae = base.joinpath(*VAE_FILE)
    voc = base / RELEASE_DIRS[kind][1]
    clap = base.joinpath(*CLAP_FILE)
    release = AudioRelease(
        kind=kind, root=base, dit=dit, vae=vae if vae.is_file() else None,
        vocoder_dir=voc if (voc / "args.yml").is_file() and (voc / "best_netG.pt").is_file() else None,
        clap=clap if clap.is_file() else None,
    )
    if require_all:
        missing = []
        if release.vae is None:
            missing.append(f"{'/'.join(VAE_FILE)} (the mel autoencoder)")
        if release.vocoder_dir is None:
            missing.append(f"{RELEASE_DIRS[kind][1]}/args.yml and {RELEASE_DIRS[kind][1]}/best_netG.pt (the BigVGAN vocoder)")
        if kind == "audio" and release.clap is None:
            missing.append(f"{'/'.join(CLAP_FILE)} (the CLAP text tower)")
        if missing:
            raise LuminaCheckpointError(
                f"the {KIND_NAMES[kind]} folder lacks " + "; ".join(missing), source=str(base),
                hint=f"download the whole {KIND_NAMES[kind]} release into this folder",
            )
    return release


__all__ = [
    "KINDS", "AudioCheckpoint", "AudioRelease", "kind_of_keys", "kind_of_path", "resolve_dit_checkpoint",
    "split_cfm_state_dict", "read_audio_checkpoint", "build_audio_dit", "load_audio_model", "find_audio_release",
]
