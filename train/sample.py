"""Images from a trained model through `lumina.sample`: training's validation images and
`python -m train sample` share `sample_images`.

    python -m train sample runs/x --prompt "a red circle" --prompt "a blue square" --size 64x32
    python -m train sample model.safetensors --encoder te/ --prompts-file prompts.txt --vae sdxl-vae/ --out pics/

Every prompt is sampled alone from the noise of --seed, exactly as `lumina.sample` samples that
one prompt (prompt and negative prompt encoded together, `seeded_noise`): one seed gives one image
here, in the library and in the Lumina Flow Sampler node with the same settings. The defaults are
training's validation sampler (20 model steps, Euler, shift 1, standard CFG 4); --official takes
`lumina.sample`'s own defaults (30 grid points, Euler, shift 4, official CFG 4); any flag given
overrides either. The folder gets samples.json: each file's full prompt, seed and settings.

The checkpoint is a run folder (its config.yaml gives the text encoder), its checkpoints/latest, or
any file or folder `lumina.load_model` reads. Pixel-space models write PNGs (with --frames N > 1
animated WEBPs); latent models write their latents as .safetensors, or PNGs decoded by a local
diffusers AutoencoderKL (--vae). A Lumina-Video model samples clips through `lumina.sample_video`
with an official sample config (--video-config, default f16F64R512; --steps and --cfg change it):
animated WEBPs in pixel space, latents otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import lumina
from lumina.checkpoints import resolve_checkpoint_path
from lumina.errors import LuminaCheckpointError, LuminaError
from lumina.pixels import to_uint8
from lumina.text_encoders import LuminaTextEncoderError, load_text_encoder

from .config import ConfigError, vae_geometry

from .caption_check import dataset_report, prompts_report, quiet_tokenizer

# training's validation sampler: the official Euler steps without time shift, standard CFG 4
DEFAULTS = {"steps": 20, "step_convention": "model_steps", "cfg": 4.0, "cfg_mode": "standard", "solver": "euler",
            "shift": 1.0}
# `lumina.sample`'s own defaults (lumina.SamplingSettings()): --official
LIBRARY = {k: getattr(lumina.SamplingSettings(), k) for k in DEFAULTS}


@torch.inference_mode()
def sample_images(
    model: lumina.LuminaDiT, encoder, prompts: Sequence[str], height: int, width: int, *, seed: int = 0,
    steps: int = DEFAULTS["steps"], cfg: float = DEFAULTS["cfg"], solver: str = DEFAULTS["solver"],
    shift: float = DEFAULTS["shift"], frames: int = 1, negative: str = "",
    step_convention: str = DEFAULTS["step_convention"], cfg_mode: str = DEFAULTS["cfg_mode"],
) -> torch.Tensor:
    """(N, C, height, width) fp32 model-space samples (pixels in [-1, 1] or scaled latents), one per
    prompt; height and width are in model units (px / vae_downsample). frames > 1: (N, C, frames,
    height, width) clips, frames in model units too (latent frames). The model's train/eval mode
    is restored.

    Each prompt is its own `lumina.sample` call, [prompt, negative] encoded as one batch, with
    `seeded_noise` of `seed`: bit for bit what the library (and the Flow Sampler node) gives for
    that prompt and seed, which one batched call would not (its rows get other noise and round
    differently)."""
    was_training = model.training
    model.eval()
    shape = (1, model.config.in_channels, *((frames,) if frames > 1 else ()), height, width)
    try:
        out = []
        for prompt in prompts:
            cond, uncond = prompt_pair(encoder, prompt, negative)
            out.append(lumina.sample(model, cond, uncond, shape, seed=seed, steps=steps, step_convention=step_convention,
                                     solver=solver, shift=shift, cfg=cfg, cfg_mode=cfg_mode))
        return torch.cat(out)
    finally:
        model.train(was_training)


def prompt_pair(encoder, prompt: str, negative: str) -> tuple[lumina.Conditioning, lumina.Conditioning]:
    """(cond, uncond) of one prompt, encoded together with its negative as one batch (what the
    library's callers and the Flow Sampler do, so the features round alike)."""
    both = encoder.encode([prompt, negative])
    return (lumina.Conditioning(both.cap_feats[:1], both.cap_mask[:1]),
            lumina.Conditioning(both.cap_feats[1:], both.cap_mask[1:]))


@torch.inference_mode()
def sample_video_clips(
    model: lumina.LuminaVideo, encoder, prompts: Sequence[str], frames: int, height: int, width: int, *, seed: int = 0,
    config_name: str = "f16F64R512", negative: str = "", **changes: Any,
) -> torch.Tensor:
    """(N, C, frames, height, width) fp32 model-space clips of a Lumina-Video model, one per prompt,
    each its own `lumina.sample_video` call with the official sample config `config_name` (any
    field changed by `changes`, e.g. steps=20, patch_comb="1x2") from the noise of `seed`; sizes
    in model units. The model's train/eval mode is restored."""
    settings = lumina.video_sample_settings(config_name, **changes)
    was_training = model.training
    model.eval()
    try:
        out = []
        for prompt in prompts:
            cond, uncond = prompt_pair(encoder, prompt, negative)
            out.append(lumina.sample_video(model, cond, uncond, (1, model.config.in_channels, frames, height, width),
                                           settings, seed=seed))
        return torch.cat(out)
    finally:
        model.train(was_training)


def png_arrays(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] → (N, H, W, 3) uint8 numpy, what PIL saves (lumina.pixels.to_uint8)."""
    return to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()


def save_animation(clips: torch.Tensor, path: str | Path, fps: float = 8.0) -> Path:
    """(N, 3, F, H, W) clips in [-1, 1] → one lossless animated WEBP of F frames showing the N
    clips side by side (loops forever; any browser plays it)."""
    from PIL import Image

    arrays = to_uint8(clips).permute(2, 3, 0, 4, 1).cpu().numpy()  # (F, H, N, W, 3)
    f, h, n, w, _ = arrays.shape
    frames = [Image.fromarray(a.reshape(h, n * w, 3)) for a in arrays]
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0, lossless=True)
    return path


# -- finding what to load ---------------------------------------------------------------------
class CLIError(Exception):
    """A bad invocation: reported on stderr with exit code 2."""


@dataclass
class Source:
    weights: Path  # the folder or file to read
    run: Path | None  # the training run it belongs to, if any
    run_config: dict[str, Any]  # that run's config.yaml ({} when none)


def find_source(path: str | Path) -> Source:
    """A run folder, its checkpoints/latest (or a file in it), or any lumina.load_model path."""
    path = Path(path)
    if not path.exists():
        raise CLIError(f"{path}: no such file or folder (give a run folder, its checkpoints/latest, or a checkpoint)")
    weights = path / "checkpoints" / "latest" if (path / "checkpoints" / "latest").is_dir() else path
    run = None
    for candidate in (path, *list(path.resolve().parents)[:3]):
        if (candidate / "config.yaml").is_file() and (candidate / "checkpoints").is_dir():
            run = candidate
            break
    config = {}
    if run is not None:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    return Source(weights, run, config)


def pick_weights(weights: Path, ema: bool | None) -> Path:
    """The weights file: EMA when present (ema None), or exactly EMA / non-EMA as asked."""
    try:
        file = resolve_checkpoint_path(weights, ema=ema is not False)
    except LuminaCheckpointError as err:
        raise CLIError(str(err)) from None
    if weights.is_dir() and ema is not None and ("_ema." in file.name) != ema:
        which = "no EMA weights (consolidated_ema.*)" if ema else "only EMA weights"
        raise CLIError(f"{weights} has {which}; drop --{'ema' if ema else 'no-ema'}")
    return file


def load(file: Path, dtype: torch.dtype | None, device: str = "cpu", ema: bool | None = None) -> lumina.LuminaDiT:
    try:  # ema matters for .pth training checkpoints that nest both
        return lumina.load_model(file, dtype=dtype, device=device, ema=ema is not False)
    except LuminaError as err:
        raise CLIError(str(err)) from None


# -- the command -----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder, its checkpoints/latest, or any checkpoint lumina.load_model reads")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for more)")
    parser.add_argument("--prompts-file", help="a text file with one prompt per line")
    parser.add_argument("--encoder", help="local text-encoder folder (default: the run's text.encoder)")
    parser.add_argument("--out", help="output folder (default: <run>/samples/cli, or ./samples)")
    parser.add_argument("--negative", default="", help="negative prompt (default: empty, as in training's caption dropout)")
    parser.add_argument("--official", action="store_true",
                        help="lumina.sample's defaults: 30 grid points, shift 4, official CFG 4 (flags given still override)")
    parser.add_argument("--steps", type=int, help=f"steps (default {DEFAULTS['steps']}; --official: {LIBRARY['steps']})")
    parser.add_argument("--step-convention", choices=["model_steps", "grid_points"],
                        help="model_steps: N model steps; grid_points: N points = N-1 steps, the official count "
                             f"(default {DEFAULTS['step_convention']}; --official: {LIBRARY['step_convention']})")
    parser.add_argument("--cfg", type=float, help=f"CFG scale (default {DEFAULTS['cfg']})")
    parser.add_argument("--cfg-mode", choices=["standard", "official"],
                        help="standard: every channel guided; official: channels 0-2 only "
                             f"(default {DEFAULTS['cfg_mode']}; --official: {LIBRARY['cfg_mode']})")
    parser.add_argument("--shift", type=float, help=f"time shift (default {DEFAULTS['shift']}; --official and released models: 4)")
    parser.add_argument("--seed", type=int, default=0, help="the noise seed; every prompt starts from it (default 0)")
    parser.add_argument("--size", help="WxH in px (default: the model's base_image_size, square)")
    parser.add_argument("--frames", type=int, default=1,
                        help="frames per sample (model frames: latent frames of latent models); > 1 writes animated WEBPs")
    parser.add_argument("--fps", type=float, default=8.0, help="the WEBPs' frame rate (default %(default)s)")
    parser.add_argument("--solver", help="euler, midpoint, heun, rk4, dopri5 (default euler)")
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                        help="EMA weights (default: EMA when the checkpoint has them)")
    parser.add_argument("--vae", help="latent models: a local diffusers AutoencoderKL folder to decode PNGs with")
    parser.add_argument("--video-config", default="f16F64R512",
                        help="Lumina-Video models: the official sample config (lumina.SAMPLE_CONFIGS; default %(default)s); "
                             "--steps and --cfg (its first value) change it")


def _size(text: str | None, config: lumina.LuminaConfig) -> tuple[int, int]:
    unit = config.pixel_unit
    if text is None:
        return config.base_image_size, config.base_image_size
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise CLIError(f"--size {text!r}: write it as WxH in px, e.g. --size 64x32")
    width, height = int(match[1]), int(match[2])
    if width < unit or height < unit or width % unit or height % unit:
        raise CLIError(f"--size {text}: width and height must be positive multiples of {unit} px "
                       f"(patch_size {config.patch_size} × vae_downsample {config.vae_downsample})")
    return width, height


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        file = Path(args.prompts_file)
        if not file.is_file():
            raise CLIError(f"--prompts-file {file}: no such file")
        prompts += [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise CLIError("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def settings(args) -> dict[str, Any]:
    """The sampler settings of this call: training's defaults or --official's, then the flags given."""
    base = LIBRARY if args.official else DEFAULTS
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}


def write_index(out: Path, rows: list[dict[str, Any]]) -> Path:
    """samples.json: file name → full prompt, seed and settings (file names cut prompts at 48 characters)."""
    path = out / "samples.json"
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return path


def _slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:48] or "empty"


def _decoder(folder: str, channels: int, device: str):
    """latents → images in [-1, 1] with a diffusers AutoencoderKL (scaling from its config.json)."""
    try:
        vae_channels, _, scale, shift = vae_geometry(folder)
    except ConfigError as err:
        raise CLIError(f"--vae {folder}: {err}") from None
    if vae_channels != channels:
        raise CLIError(f"--vae {folder} decodes {vae_channels}-channel latents but the model makes {channels}")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32).to(device).eval()

    @torch.inference_mode()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        return vae.decode(latents.to(device) / scale + shift).sample.float()

    return decode


def _run_video(args, source: Source, prompts: list[str], model, file: Path, encoder_folder: str, text: dict,
               device: str) -> int:
    """`sample` for a Lumina-Video model: clips through lumina.sample_video with an official sample
    config; pixel-space models write animated WEBPs, latent models their latents (decode them with
    the CogVideoX VAE, e.g. the Lumina Video VAE Decode node)."""
    from safetensors.torch import save_file

    from lumina.video_sampling import scaled_cfg

    down = int((source.run_config.get("model") or {}).get("vae_downsample", 8))
    unit = max(p for p, _ in model.config.patches) * down
    if args.size is None:
        side = (source.run_config.get("data") or {}).get("image_size")
        if side is None:
            raise CLIError("--size WxH is required: the checkpoint is not in a run folder whose config.yaml names data.image_size")
        width = height = int(side)
    else:
        match = re.fullmatch(r"(\d+)[xX](\d+)", args.size.strip())
        if not match:
            raise CLIError(f"--size {args.size!r}: write it as WxH in px, e.g. --size 64x32")
        width, height = int(match[1]), int(match[2])
    if width < unit or height < unit or width % unit or height % unit:
        raise CLIError(f"--size {width}x{height}: width and height must be positive multiples of {unit} px "
                       f"(the largest patch {unit // down} × vae_downsample {down})")
    try:
        model.config.check_frames(f"--frames {args.frames}", args.frames)
        encoder = load_text_encoder(encoder_folder, dtype=torch.float32, device=device, convention=text.get("convention", "auto"))
        base = lumina.video_sample_settings(args.video_config)
        changes: dict[str, Any] = {}
        if args.steps is not None:
            changes["steps"] = args.steps
        if args.cfg is not None:
            changes["cfg"] = scaled_cfg(base.cfg, args.cfg)
        settings = base.with_(**changes)
        settings.check_model(model.config)
    except (lumina.LuminaError, LuminaTextEncoderError) as err:
        raise CLIError(str(err)) from None
    if encoder.hidden_size != model.config.cap_feat_dim:
        raise CLIError(f"--encoder {encoder_folder} gives {encoder.hidden_size}-wide features but the model "
                       f"expects {model.config.cap_feat_dim}; use the encoder it was trained with")
    problem = prompts_report(encoder, prompts)
    if problem:
        print(f"warning: {problem}", file=sys.stderr)
    try:
        with quiet_tokenizer():
            clips = sample_video_clips(model, encoder, prompts, args.frames, height // down, width // down, seed=args.seed,
                                       config_name=args.video_config, negative=args.negative, **changes)
    except lumina.LuminaError as err:
        raise CLIError(str(err)) from None
    out = Path(args.out) if args.out else (source.run / "samples" / "cli" if source.run else Path("samples"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"weights: {file}", file=sys.stderr)
    paths = []
    for i, prompt in enumerate(prompts):
        stem = out / f"{i:03d}_{_slug(prompt)}"
        if down == 1:
            paths.append(save_animation(clips[i : i + 1], stem.with_suffix(".webp"), fps=args.fps))
        else:
            save_file({"latents": clips[i : i + 1].contiguous().cpu()}, str(stem.with_suffix(".safetensors")),
                      metadata={"prompt": prompt})
            paths.append(stem.with_suffix(".safetensors"))
    for path in paths:
        print(path)
    common = {"negative": args.negative, "seed": args.seed, "video_config": args.video_config, **changes,
              "width": width, "height": height, "frames": args.frames, "weights": str(file)}
    index = write_index(out, [{"file": p.name, "prompt": prompt, **{k: str(v) if k == "cfg" else v for k, v in common.items()}}
                              for p, prompt in zip(paths, prompts, strict=True)])
    print(f"index: {index}", file=sys.stderr)
    return 0


def run(args) -> int:
    from PIL import Image
    from safetensors.torch import save_file

    source = find_source(args.checkpoint)
    prompts = _prompts(args)
    text = source.run_config.get("text") or {}
    encoder_folder = args.encoder or text.get("encoder")
    if not encoder_folder:
        raise CLIError("--encoder is required: the checkpoint is not in a run folder whose config.yaml names text.encoder")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    file = pick_weights(source.weights, args.ema)
    model = load(file, torch.float32, device, args.ema)
    if model.family == "lumina_video":
        return _run_video(args, source, prompts, model, file, encoder_folder, text, device)
    width, height = _size(args.size, model.config)
    try:
        encoder = load_text_encoder(encoder_folder, dtype=torch.float32, device=device, convention=text.get("convention", "auto"))
    except LuminaTextEncoderError as err:
        raise CLIError(f"--encoder: {err}") from None
    if encoder.hidden_size != model.config.cap_feat_dim:
        raise CLIError(f"--encoder {encoder_folder} gives {encoder.hidden_size}-wide features but the model "
                       f"expects {model.config.cap_feat_dim}; use the encoder it was trained with")
    if args.frames < 1:
        raise CLIError(f"--frames {args.frames}: give at least 1 (1 = images)")
    try:
        model.config.check_frames(f"--frames {args.frames}", args.frames)
    except lumina.LuminaError as err:
        raise CLIError(str(err)) from None
    if args.frames > 1 and args.vae and model.config.vae_downsample != 1:
        raise CLIError("--vae decodes images; drop --vae to write the clips' latents (decode them with their video VAE, "
                       "e.g. the Lumina Video VAE Decode node)")
    decode = _decoder(args.vae, model.config.in_channels, device) if args.vae and model.config.vae_downsample != 1 else None
    down = model.config.vae_downsample
    chosen = settings(args)
    for problem in (prompts_report(encoder, prompts), dataset_report(encoder, [args.negative], "--negative")):
        if problem:  # once for this call's prompts, with the words (not once per prompt)
            print(f"warning: {problem}", file=sys.stderr)
    try:
        with quiet_tokenizer():
            samples = sample_images(model, encoder, prompts, height // down, width // down, seed=args.seed,
                                    frames=args.frames, negative=args.negative, **chosen)
    except lumina.LuminaError as err:
        raise CLIError(str(err)) from None
    out = Path(args.out) if args.out else (source.run / "samples" / "cli" if source.run else Path("samples"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"weights: {file}", file=sys.stderr)
    common = {"negative": args.negative, "seed": args.seed, **chosen, "width": width, "height": height,
              "frames": args.frames, "weights": str(file)}
    paths = []
    if down != 1 and decode is None:
        for i, prompt in enumerate(prompts):
            path = out / f"{i:03d}_{_slug(prompt)}.safetensors"
            save_file({"latents": samples[i : i + 1].contiguous().cpu()}, str(path), metadata={"prompt": prompt})
            paths.append(path)
    elif samples.dim() == 5:  # pixel-space clips
        for i, prompt in enumerate(prompts):
            paths.append(save_animation(samples[i : i + 1], out / f"{i:03d}_{_slug(prompt)}.webp", fps=args.fps))
    else:
        pixels = png_arrays(samples if decode is None else decode(samples))
        for i, prompt in enumerate(prompts):
            path = out / f"{i:03d}_{_slug(prompt)}.png"
            Image.fromarray(pixels[i]).save(path)
            paths.append(path)
    for path in paths:
        print(path)
    index = write_index(out, [{"file": p.name, "prompt": prompt, **common} for p, prompt in zip(paths, prompts, strict=True)])
    print(f"index: {index}", file=sys.stderr)
    return 0
