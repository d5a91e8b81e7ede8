"""`python -m train export`: a trained model as an official single-file checkpoint (our config in
the safetensors metadata) or a diffusers `LuminaNextDiT2DModel` folder; a LoRA run as its kohya
LoRA file, or with --merge-lora as the merged model.

    python -m train export runs/x --to official --out x.safetensors
    python -m train export runs/x --to diffusers --dtype bf16 --no-ema --out x-diffusers/
    python -m train export runs/lora --out my_lora.safetensors            # the kohya file for LoraLoader
    python -m train export runs/lora --no-ema --out my_lora.safetensors   # the raw adapters, not their EMA
    python -m train export runs/lora --merge-lora --to official --out merged.safetensors
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lumina.checkpoints import save_diffusers, save_official
from lumina.errors import LuminaError

from .sample import CLIError, find_source, load, pick_weights

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LORA_FILE = "lora.safetensors"
LORA_EMA_FILE = "lora_ema.safetensors"  # the adapters' EMA (a LoRA run with run.ema_decay > 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a run folder, its checkpoints/latest, or any checkpoint lumina.load_model reads")
    parser.add_argument("--to", choices=["official", "diffusers"], help="the model format (not needed for a LoRA file)")
    parser.add_argument("--out", required=True, help="official: a .safetensors file or a folder; diffusers: a folder; LoRA: a file or folder")
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                        help="EMA weights (default: EMA when the checkpoint has them)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="tensor dtype written (default %(default)s)")
    parser.add_argument("--merge-lora", action="store_true", help="a LoRA run: write the model with the adapters merged in")


def _is_kohya(file: Path) -> bool:
    if file.suffix != ".safetensors":
        return False
    try:
        with safe_open(str(file), framework="pt") as f:
            return any(k.startswith("lora_unet_") for k in f.keys())  # noqa: SIM118 - a safe_open, not a dict
    except Exception:  # noqa: BLE001 - not readable as safetensors: not a LoRA file, let load_model explain
        return False


def _lora_paths(weights: Path) -> tuple[Path | None, Path]:
    """(the kohya LoRA file or None, where the model weights are)."""
    if weights.is_dir():
        return (weights / LORA_FILE if (weights / LORA_FILE).is_file() else None), weights
    if _is_kohya(weights):
        return weights, weights.parent
    return None, weights


def _pick_lora(weights: Path, lora: Path, ema: bool | None) -> Path:
    """A run folder's LoRA file: the adapters' EMA when it has one (ema None) or as asked."""
    if not weights.is_dir():  # a LoRA file named directly is exported as it is
        return lora
    averaged = weights / LORA_EMA_FILE
    if ema and not averaged.is_file():
        raise CLIError(f"--ema: {weights} has no EMA LoRA ({LORA_EMA_FILE}; train with run.ema_decay > 0); drop --ema")
    return averaged if ema is not False and averaged.is_file() else lora


# the official MultiScaleNextDiT constructors of the released shapes (models/model.py), by our preset
OFFICIAL_VIDEO_MODELS = {"lumina-video-2b": "MultiScaleNextDiT_2B", "lumina-video-2b-gqa": "MultiScaleNextDiT_2B_GQA",
                         "lumina-video-4b-gqa": "MultiScaleNextDiT_4B_GQA"}


def save_video_official(model, out: Path) -> Path:
    """A Lumina-Video model in its released form: a folder with consolidated.00-of-01.pth (plain
    official-named tensors, read by lumina.load_model with weights_only and by the official code)
    and model_args.pth (the argparse Namespace the official generate.py reads; lumina.load_model
    never opens it). A path ending in .safetensors gets one file with our config instead.

    The folder form carries no config of ours, so its shape-free values (rope_theta, t_scale,
    motion_scale) must be the released ones that lumina.load_model assumes."""
    import argparse as _argparse

    from lumina.video_config import VIDEO_PRESETS, LuminaVideoConfig

    config = model.config
    if out.suffix == ".safetensors":
        return save_official(model, out, config)
    released = {k: getattr(LuminaVideoConfig, k) for k in ("rope_theta", "t_scale", "motion_scale")}
    changed = {k: getattr(config, k) for k, v in released.items() if getattr(config, k) != v}
    if changed:
        raise CLIError(f"--out {out}: the released folder form cannot carry {changed} (lumina.load_model reads such a folder "
                       f"with the released {released}); give --out NAME.safetensors, which keeps the model's config")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: the released form is a folder; give a folder, or a .safetensors file name")
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out / "consolidated.00-of-01.pth")
    preset = next((name for name, c in VIDEO_PRESETS.items()
                   if c.with_(cap_feat_dim=config.cap_feat_dim, patches=config.patches) == config.with_(ffn_hidden=None)
                   and c.hidden_dim == config.hidden_dim), None)
    args = _argparse.Namespace(
        model=OFFICIAL_VIDEO_MODELS.get(preset), patch_sizes=[p for p, _ in config.patches],
        f_patch_sizes=[f for _, f in config.patches], qk_norm=config.qk_norm, rope_theta=config.rope_theta,
        t_scale=config.t_scale, motion_scale=config.motion_scale,
        # not official arguments: the shape, for a model no official constructor builds
        dim=config.dim, n_layers=config.n_layers, n_heads=config.n_heads, n_kv_heads=config.n_kv_heads,
        in_channels=config.in_channels, cap_feat_dim=config.cap_feat_dim,
    )
    torch.save(args, out / "model_args.pth")
    return out / "consolidated.00-of-01.pth"


def run(args) -> int:
    source = find_source(args.source)
    lora, weights = _lora_paths(source.weights)
    out = Path(args.out)
    if args.merge_lora and lora is None:
        raise CLIError(f"--merge-lora: {source.weights} is not a LoRA run (it has no {LORA_FILE}); drop --merge-lora")
    if lora is not None and not args.merge_lora:
        if args.to is not None:  # never write a LoRA under a model format's name
            raise CLIError(f"--to {args.to}: {lora} is a LoRA (kohya format, for ComfyUI's LoraLoaderModelOnly); add "
                           f"--merge-lora to export the merged model as {args.to}, or drop --to to export the LoRA file")
        lora = _pick_lora(source.weights, lora, args.ema)
        target = out if out.suffix == ".safetensors" else out / LORA_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        if args.dtype == "fp32":
            shutil.copyfile(lora, target)
        else:
            with safe_open(str(lora), framework="pt") as f:
                metadata = f.metadata()
            tensors = {k: v.to(DTYPES[args.dtype]) if v.is_floating_point() else v for k, v in load_file(lora).items()}
            save_file(tensors, str(target), metadata=metadata)
        print(target)
        return 0
    if args.to is None:
        raise CLIError("--to is required: --to official (one .safetensors file) or --to diffusers (a folder)")
    if lora is not None and not any(weights.glob("consolidated*.safetensors")):
        raise CLIError(f"--merge-lora: {weights} has no merged model (consolidated.00-of-01.safetensors) next to {lora.name}")
    file = pick_weights(weights, args.ema)
    model = load(file, DTYPES[args.dtype], "cpu", args.ema)
    if model.family == "lumina_video":
        if args.to == "diffusers":
            raise CLIError(f"--to diffusers: {file} is a Lumina-Video model, and diffusers has no Lumina-Video model format; "
                           "use --to official (a folder: the released consolidated.00-of-01.pth form; a .safetensors file: "
                           "one file with our config)")
        written = save_video_official(model, out)
        print(written)
        return 0
    try:
        if args.to == "official":
            written = save_official(model, out, model.config)
        else:
            if out.suffix == ".safetensors" or out.is_file():
                raise CLIError(f"--out {out}: --to diffusers writes a folder (config.json + diffusion_pytorch_model.safetensors)")
            written = save_diffusers(model, out, model.config)
    except LuminaError as err:
        raise CLIError(str(err)) from None
    print(written)
    return 0
