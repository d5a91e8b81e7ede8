"""Training configuration: dataclasses (every field documented) read from YAML, with CLI overrides.

Unknown keys and impossible values fail before any work starts, naming the key and the fix.
The architecture keys of [model] are `lumina.config.LuminaConfig`'s fields, documented there.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from lumina.config import LuminaConfig
from lumina.video_config import VIDEO_FAMILY, LuminaVideoConfig

SDXL_SCALE, SDXL_SHIFT = 0.13025, 0.0  # the official latent scaling (lumina_facts §3)


class ConfigError(ValueError):
    """A training config that cannot run."""


# LuminaConfig fields the run fills in itself rather than the config file.
FROM_TEXT_ENCODER = ("cap_feat_dim",)  # the text encoder's hidden size, known once it is loaded
# Training defaults where they differ from LuminaConfig's (the released 2B shapes): the small
# pixel-space Next-DiT of the demo (train/configs/shapes_demo.yaml), which trains on a CPU.
MODEL_DEFAULTS: dict[str, Any] = {
    "family": "next_dit",  # next_dit | flag_dit | lumina_video (a model.init_from Lumina-Video checkpoint sets it)
    "dim": 192,
    "n_layers": 6,
    "n_heads": 4,
    "n_kv_heads": 2,  # Next-DiT's grouped-query attention; ignored for flag_dit (see lumina_config)
    "patch_size": 4,
    "in_channels": 3,  # 3 for pixel space, 4 for SDXL-VAE latents
    "multiple_of": 32,  # SwiGLU width rounding (small for tiny models: 256 inflates them)
    "base_image_size": 32,  # training resolution in px (the extrapolation reference)
    "vae_downsample": 1,  # 1 = pixel space (identity "VAE"), 8 = SDXL VAE
}
# learn_sigma stays LuminaConfig's True: the official head width; the sigma half is never supervised.


def _with_lumina_fields(cls: type) -> type:
    """Make `cls` a dataclass whose fields are LuminaConfig's (but FROM_TEXT_ENCODER), defaulting to
    MODEL_DEFAULTS or else LuminaConfig's own default, followed by the fields `cls` declares.

    Derived rather than copied, so a field added to LuminaConfig is a `model.*` key at once and
    reaches the model without an edit here."""
    hints = get_type_hints(LuminaConfig)
    names = {f.name for f in dataclasses.fields(LuminaConfig)}
    if unknown := set(MODEL_DEFAULTS) - names:
        raise TypeError(f"MODEL_DEFAULTS names {sorted(unknown)}, which LuminaConfig no longer has")
    inherited: dict[str, Any] = {}
    for f in dataclasses.fields(LuminaConfig):
        if f.name in FROM_TEXT_ENCODER:
            continue
        if f.name in MODEL_DEFAULTS:
            default = field(default=MODEL_DEFAULTS[f.name])
        elif f.default is not MISSING or f.default_factory is not MISSING:
            default = field(default=f.default, default_factory=f.default_factory)
        else:
            raise TypeError(f"LuminaConfig.{f.name} has no default: give it a training default in MODEL_DEFAULTS")
        inherited[f.name] = hints[f.name]
        setattr(cls, f.name, default)
    cls.__annotations__ = {**inherited, **cls.__dict__.get("__annotations__", {})}
    return dataclass(cls)


@_with_lumina_fields
class ModelSection:
    """[model]: every LuminaConfig field except cap_feat_dim (see lumina/config.py; the defaults are
    MODEL_DEFAULTS, else LuminaConfig's), then the fine-tuning keys below."""

    init_from: str | None = None  # a checkpoint to fine-tune (any lumina.load_model form)
    lora_rank: int = 0  # > 0: train only LoRA adapters of this rank (peft) on attention and FFN projections
    lora_alpha: float | None = None  # LoRA scale alpha/rank; None = rank (scale 1)
    # family lumina_video (lumina.LuminaVideoConfig; a model.init_from checkpoint brings its own):
    # the multi-scale patch entries as [patch_size, f_patch_size] pairs (the released 2B: [2, 1],
    # [2, 2], [4, 2], named 1x2, 2x2, 2x4). patch_size is then the largest spatial patch (set from
    # these), learn_sigma/base_image_size/nextframe_token do not apply, and rope_theta takes the
    # released 256 unless set to another value than the image families' 10000.
    patches: list[list[int]] = field(default_factory=lambda: [[2, 1], [2, 2], [4, 2]])
    t_scale: float = 1000.0  # lumina_video: time embedder input scale (released 1000)
    motion_scale: float = 20.0  # lumina_video: motion embedder input scale (released 20)

    def lumina_config(self, cap_feat_dim: int) -> LuminaConfig | LuminaVideoConfig:
        """The LuminaConfig (LuminaVideoConfig for lumina_video) of a model trained from scratch with
        this section and that text encoder."""
        if self.family == VIDEO_FAMILY:
            return self.video_config(cap_feat_dim)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(LuminaConfig) if f.name not in FROM_TEXT_ENCODER}
        if self.family != "next_dit":
            # the official Flag-DiT is multi-head; the n_kv_heads default is meant for Next-DiT
            values["n_kv_heads"] = None
        return LuminaConfig(**values, cap_feat_dim=cap_feat_dim)

    def video_config(self, cap_feat_dim: int) -> LuminaVideoConfig:
        image_theta = next(f.default for f in dataclasses.fields(LuminaConfig) if f.name == "rope_theta")
        return LuminaVideoConfig(
            dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads, cap_feat_dim=cap_feat_dim, n_kv_heads=self.n_kv_heads,
            ffn_hidden=self.ffn_hidden, multiple_of=self.multiple_of, patches=tuple(tuple(p) for p in self.patches),
            in_channels=self.in_channels, qk_norm=self.qk_norm, norm_eps=self.norm_eps,
            rope_theta=LuminaVideoConfig.rope_theta if self.rope_theta == image_theta else self.rope_theta,
            t_scale=self.t_scale, motion_scale=self.motion_scale,
        )


# built-in procedural still images (pixel space, drawn from the seed): single shapes, two-object scenes
PROCEDURAL_IMAGES = ("shapes", "scenes")


@dataclass
class DataSection:
    # shapes (procedural, built in) | scenes (procedural two-object scenes, train/scenes.py) |
    # moving_shapes (procedural clips, built in) | folder (images +
    # same-name .txt captions; with frames > 1 video files and frame folders instead) | jsonl
    kind: str = "shapes"
    # the folder (kind folder) or the .jsonl manifest of {"image", "caption"} rows, with frames > 1
    # {"video", "caption"} rows (a video file or a frame folder) (kind jsonl)
    path: str | None = None
    image_size: int = 32  # px; the square side (shapes, or buckets off); with buckets the token budget: (image_size/unit)² tokens
    repeats: int = 64  # shapes / scenes: passes over the spec list per epoch
    caption_dropout: float = 0.1  # probability of an empty caption (for CFG)
    # Official aspect-ratio buckets for folder/jsonl (train/images.py): each image keeps its shape
    # at the image_size² pixel budget instead of losing its sides to a square crop (which can cut
    # away what the caption describes), hence on by default, as in the official training.
    # false: the square center crop resized to image_size (the shapes data is square either way).
    buckets: bool = True
    bucket_top_k: int = 4  # pick at random among the k buckets that fit an image's shape best, anew each epoch (official 4)
    max_aspect_ratio: float = 4.0  # the buckets' longest/shortest side limit (official 4)
    vae: str | None = None  # local diffusers AutoencoderKL folder (e.g. stabilityai/sdxl-vae); needed when model.vae_downsample > 1
    cache_dir: str | None = None  # `python -m train cache` writes latents + text features here; fit then trains from it
    # Clips (train/videos.py, train/clips.py). frames > 1: folder/jsonl items are video files
    # (PyAV) and folders of frame images (sorted by name), each a clip of `frames` frames; the
    # token budget becomes frames × (image_size/unit)² (train/clip_buckets.py).
    frames: int = 1  # pixel frames per clip (1 = images); 4k + 1 with a CogVideoX data.vae
    min_frames: int = 0  # with buckets, shorter clips train in shorter buckets down to this many frames; 0 = frames
    frame_stride: int = 1  # take every n-th frame of a clip
    fps: float = 0.0  # > 0: resample videos to this frame rate first (nearest frame; frame folders are taken as they are)
    # Several sources drawn by weight instead of kind/path (train/mixing.py): e.g. your folder plus
    # the shapes the model knew, [{kind: folder, path: my_concept, weight: 1}, {kind: shapes, weight: 1}];
    # kinds folder, jsonl, shapes, scenes, cache (a `python -m train cache` folder)
    sources: list[dict[str, Any]] = field(default_factory=list)
    # Lumina-Video's motion conditioning (train/video_objective.py). The official training reads a
    # per-clip score, the mean absolute UniMatch optical flow (px, between frames 0.5 s apart at
    # 320×576), from its metadata; that flow model is not shipped here, so a JSONL row gives it as
    # "motion_score" (or the official "unimatch_flow"), the moving shapes compute the same measure
    # exactly, and every other clip takes motion_score (default −1: no motion conditioning, the
    # model's unconditional motion path, which the official dropout trains too).
    motion_score: float = -1.0
    motion_dropout: float = 0.3  # the official chance that a clip's score is replaced by −1


@dataclass
class TextSection:
    encoder: str = ""  # a local transformers folder (lumina.text_encoders.load_text_encoder)
    convention: str = "auto"  # auto | gemma | llama


@dataclass
class OptimSection:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 2.0  # the official default
    batch_size: int = 64  # global batch (split over processes)
    steps: int = 2000
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # constant (the official) | cosine (decay to min_lr after warm-up)
    min_lr: float = 0.0  # the cosine schedule's final learning rate


@dataclass
class RunSection:
    out_dir: str = "runs/tiny"
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 (never fp16 on CPUs)
    # auto: what the launcher asks for (FSDP when `accelerate launch` has an FSDP config, else DDP
    # when there are several processes); ddp; fsdp: FULL_SHARD with one unit per transformer block
    # (train/distributed.py), also under a plain `accelerate launch --multi_gpu` or `torchrun`
    distributed: str = "auto"
    t_sampler: str = "uniform"  # uniform | lognorm | shift (lumina.flow.sample_t)
    t_shift: float = 1.0  # for t_sampler=shift
    # None (auto): 0.995 for full training, off for LoRA (a short LoRA run's EMA lags behind the
    # adapters); a value > 0 with model.lora_rank keeps an EMA of the adapters; 0 disables EMA
    ema_decay: float | None = None
    gradient_checkpointing: bool = False
    # the transformer blocks through torch.compile (lumina.compile_model): on 2 CPU cores a step of
    # the shapes demo takes ~0.8x its eager time after ~20 s of compiling (one process, no FSDP)
    compile: bool = False
    log_every: int = 25
    save_every: int = 500
    sample_every: int = 0  # validation images every N steps through lumina.sample (0: never)
    sample_prompts: list[str] = field(default_factory=list)  # their prompts (EMA weights when present)
    tensorboard: bool = False  # also log to out_dir/tensorboard
    progress: bool = True  # a progress bar (steps, speed, loss) on the main process's stderr
    resume: bool = True  # continue from out_dir/state if present
    # Lumina-Video (model.family lumina_video), as the official train.py: every step trains each
    # entry named here (f_patch x patch, e.g. [1x2, 2x2, 2x4]; empty = all of the model's entries)
    # on a global batch of its own, the gradients summed; each entry's times are run.t_sampler's
    # shifted by t / (t + s − s·t) with its own s (video_time_shifts, in order; empty = the
    # official pF·p: 1x2 → 2, 2x2 → 4, 2x4 → 8)
    video_entries: list[str] = field(default_factory=list)
    video_time_shifts: list[float] = field(default_factory=list)
    video_vd_weight: float = 1.0  # the official velocity-direction term: loss = MSE + w·(1 − cos(pred, target)) per clip
    video_sample_config: str = "f16F64R512"  # validation clips: this official sample config (20 steps, the finest trained entry)
    # ... with these of its fields changed (lumina.VideoSampleSettings: steps, time_shift, cfg, motion,
    # neg_motion, renorm, patch_comb), e.g. {motion: 0.15, neg_motion: -1} for data whose scores are small
    video_sample_settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    text: TextSection = field(default_factory=TextSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    text = str(hint)
    if value is None:
        return None
    if hint is bool or text == "bool":
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    for kind in (int, float):
        if hint is kind or text in (kind.__name__, f"{kind.__name__} | None"):
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where} must be a {kind.__name__}, got {value!r}") from None
    if "tuple" in text and isinstance(value, (list, tuple, str)):
        parts = value.split(",") if isinstance(value, str) else value
        return tuple(float(p) for p in parts)
    if "list" in text and isinstance(value, str):
        return [value]
    if isinstance(value, bool) and (hint is str or hint == (str | None) or text in ("str", "str | None")):
        return "yes" if value else "no"  # YAML 1.1 reads an unquoted no / off as False (run.mixed_precision: no)
    return value


def _fill(section: Any, values: dict[str, Any], name: str) -> None:
    hints = get_type_hints(type(section))
    known = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown config key {name}.{key}; valid keys of [{name}]: {', '.join(sorted(known))}")
        setattr(section, key, _coerce(value, hints[key], f"{name}.{key}"))


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (sections model/data/text/optim/run), then `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. optim.lr=3e-4")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote it, "
                              "e.g. 'run.sample_prompts=[a red circle, a blue square]'") from None
        if not isinstance(raw.setdefault(section, {}), dict):
            raise ConfigError(f"[{section}] must be a mapping of keys to values")
        raw[section][name] = value
    config = TrainConfig()
    sections = {f.name for f in dataclasses.fields(config)}
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown config section [{section}]; valid sections: {', '.join(sorted(sections))}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a mapping of keys to values")
        _fill(getattr(config, section), values, section)
    validate(config)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    """A config file's sections; a ConfigError naming the file (and the line of a YAML error)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read ({type(err).__name__}: {err})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML: {problem}{where}; fix the file "
                          "(sections model, data, text, optim, run, each a mapping of key: value)") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections (model, data, text, optim, run), "
                          f"not a {type(raw).__name__}")
    return raw


FULL_TRAINING_EMA = 0.995  # run.ema_decay's default without LoRA


def ema_decay(config: TrainConfig) -> float:
    """The EMA decay in force: run.ema_decay when set, else 0.995 (full training) or 0 (LoRA)."""
    if config.run.ema_decay is not None:
        return config.run.ema_decay
    return 0.0 if config.model.lora_rank > 0 else FULL_TRAINING_EMA


def validate(config: TrainConfig, world_size: int = 1) -> None:
    """Refuse impossible settings before any work starts."""
    m, d, o, r, t = config.model, config.data, config.optim, config.run, config.text
    resolve_family(config)
    if m.family not in ("next_dit", "flag_dit", VIDEO_FAMILY):
        raise ConfigError(f"model.family={m.family!r}: choose next_dit, flag_dit or lumina_video")
    if d.kind not in (*PROCEDURAL_IMAGES, "moving_shapes", "folder", "jsonl"):
        raise ConfigError(f"data.kind={d.kind!r}: choose shapes, scenes, moving_shapes, folder or jsonl")
    if d.kind in ("folder", "jsonl") and (not d.path or not Path(d.path).exists()):
        raise ConfigError(f"data.path={d.path!r} does not exist; point it at the image folder or the .jsonl manifest")
    if m.init_from and not Path(m.init_from).exists():
        raise ConfigError(f"model.init_from={m.init_from!r} does not exist; give the checkpoint to fine-tune "
                          "(a .safetensors file or a checkpoint folder), or unset it to train from scratch")
    if not m.init_from:  # LuminaConfig's own checks (head widths, RoPE axes); a fine-tune takes the checkpoint's
        try:
            lumina_config = m.lumina_config(cap_feat_dim=1)  # the encoder width is not known yet and nothing checks it
        except (ValueError, TypeError) as err:
            raise ConfigError(f"[model]: {err}") from None
        check_model_frames(lumina_config, config)
    if m.family == VIDEO_FAMILY:
        _validate_video(config)
    unit = m.patch_size * m.vae_downsample
    if d.image_size % unit:
        raise ConfigError(f"data.image_size={d.image_size} is not a multiple of patch_size × vae_downsample = {unit}")
    _validate_data(config)
    _validate_frames(config)
    check_sources(config)
    if o.batch_size < 1 or o.batch_size % world_size:
        raise ConfigError(f"optim.batch_size={o.batch_size} must be a positive multiple of the {world_size} process(es)")
    if o.steps < 1:
        raise ConfigError(f"optim.steps={o.steps} must be at least 1")
    if o.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"optim.lr_schedule={o.lr_schedule!r}: choose constant or cosine")
    if not 0.0 <= o.min_lr <= o.lr:
        raise ConfigError(f"optim.min_lr={o.min_lr} must be in [0, optim.lr={o.lr}]")
    if not 0.0 <= d.caption_dropout < 1.0:
        raise ConfigError(f"data.caption_dropout={d.caption_dropout} must be in [0, 1)")
    if r.mixed_precision not in ("no", "bf16"):
        raise ConfigError(f"run.mixed_precision={r.mixed_precision!r}: choose no or bf16 (fp16 is unusable on CPUs)")
    if r.distributed not in ("auto", "ddp", "fsdp"):
        raise ConfigError(f"run.distributed={r.distributed!r}: choose auto, ddp or fsdp")
    if r.t_sampler not in ("uniform", "lognorm", "shift"):
        raise ConfigError(f"run.t_sampler={r.t_sampler!r}: choose uniform, lognorm or shift")
    if r.ema_decay is not None and not 0.0 <= r.ema_decay < 1.0:
        raise ConfigError(f"run.ema_decay={r.ema_decay} must be in [0, 1) (unset: 0.995, or off for LoRA)")
    if r.compile and (r.gradient_checkpointing or r.distributed == "fsdp" or world_size > 1):
        raise ConfigError("run.compile=true trains one process without gradient checkpointing or FSDP: "
                          "unset run.compile, or run.gradient_checkpointing / the multi-process launch")
    if not t.encoder or not Path(t.encoder).is_dir():
        raise ConfigError(f"text.encoder={t.encoder!r} is not a folder; give a local transformers text-encoder folder")


def checkpoint_video_config(path: str | os.PathLike) -> LuminaVideoConfig | None:
    """The LuminaVideoConfig of a Lumina-Video checkpoint (any lumina.load_model path: the released
    folder with consolidated.00-of-01.pth and `_orig_mod.` keys, or our safetensors), read off its
    keys, shapes and metadata without loading the weights; None for another model's checkpoint."""
    import torch

    from lumina.checkpoints import CONFIG_METADATA_KEY, resolve_checkpoint_path
    from lumina.errors import LuminaError
    from lumina.video_config import infer_video_config, is_video_state_dict, strip_compile_prefix

    try:
        file = resolve_checkpoint_path(path)
        metadata: dict[str, str] = {}
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - a safe_open
                metadata = f.metadata() or {}
        elif file.suffix in (".pth", ".pt", ".bin", ".ckpt"):
            try:  # mapped, not read: the released 2B file is several GB
                sd = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                sd = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(sd, dict):
                return None
            shapes = {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}
        else:
            return None
        shapes = strip_compile_prefix(shapes)
        if not is_video_state_dict(shapes):
            return None
        saved = json.loads(metadata[CONFIG_METADATA_KEY]) if CONFIG_METADATA_KEY in metadata else None
        if isinstance(saved, dict) and saved.get("family") == VIDEO_FAMILY:
            return LuminaVideoConfig.from_dict(saved)
        return infer_video_config({k: torch.empty(s, device="meta") for k, s in shapes.items()}, str(file))
    except Exception as err:  # noqa: BLE001 - unreadable: the library's reader words the problem (truncated, not a checkpoint)
        why: Exception = err
        try:
            from lumina.checkpoints import read_state_dict

            read_state_dict(path)
        except LuminaError as reader_err:
            why = reader_err
        except Exception:  # noqa: BLE001 - keep the first error
            pass
        raise ConfigError(f"model.init_from={str(path)!r} cannot be loaded: {why}") from None


def resolve_family(config: TrainConfig) -> None:
    """model.family from a model.init_from checkpoint: a Lumina-Video checkpoint makes the run
    lumina_video (whatever model.family says); model.family=lumina_video with another model's
    checkpoint is refused."""
    m = config.model
    if not m.init_from or not Path(m.init_from).exists():
        return
    video = checkpoint_video_config(m.init_from)
    if video is not None:
        m.family = VIDEO_FAMILY
    elif m.family == VIDEO_FAMILY:
        raise ConfigError(f"model.family=lumina_video but model.init_from={m.init_from!r} is not a Lumina-Video checkpoint "
                          "(no all_x_embedder.<patch>-<f_patch> entries); give a Lumina-Video checkpoint, or unset "
                          "model.family to fine-tune that model as what it is")


def video_model_config(config: TrainConfig) -> LuminaVideoConfig:
    """The Lumina-Video config a run trains: the model.init_from checkpoint's, or model.*'s."""
    m = config.model
    if m.init_from:
        found = checkpoint_video_config(m.init_from)
        if found is None:
            raise ConfigError(f"model.init_from={m.init_from!r} is not a Lumina-Video checkpoint")
        return found
    try:
        return m.video_config(cap_feat_dim=1)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"[model]: {err} (model.patches is a list of [patch_size, f_patch_size] pairs)") from None


def entry_name(entry: tuple[int, int]) -> str:
    """The official name of a (patch_size, f_patch_size) entry: (2, 1) → '1x2' (f_patch x patch)."""
    return f"{entry[1]}x{entry[0]}"


def video_entries(config: TrainConfig, video: LuminaVideoConfig) -> list[tuple[tuple[int, int], float]]:
    """((patch_size, f_patch_size), time shift) of every entry the run trains, in order."""
    r = config.run
    have = {entry_name(e): e for e in video.patches}
    names = list(r.video_entries) or list(have)
    missing = [n for n in names if n not in have]
    if missing:
        raise ConfigError(f"run.video_entries names {', '.join(map(str, missing))}, which this Lumina-Video model lacks: it "
                          f"has {', '.join(have)} (f_patch x patch); pick among those or leave run.video_entries empty (all)")
    if len(set(names)) != len(names):
        raise ConfigError(f"run.video_entries={names} names an entry twice; list each once")
    shifts = list(r.video_time_shifts) or [float(have[n][0] * have[n][1]) for n in names]
    if len(shifts) != len(names) or any(not (isinstance(s, (int, float)) and s > 0) for s in shifts):
        raise ConfigError(f"run.video_time_shifts={list(r.video_time_shifts)} must give one positive shift per trained entry "
                          f"({', '.join(names)}), or be empty for the official pF·p")
    return [(have[n], float(s)) for n, s in zip(names, shifts, strict=True)]


def _validate_video(config: TrainConfig) -> None:
    """A Lumina-Video run: its model (new or model.init_from), entries, data and motion keys."""
    m, d, r = config.model, config.data, config.run
    video = video_model_config(config)
    # the size unit of buckets and crops: the largest spatial patch, so every entry cuts every clip
    m.patch_size = max(p for p, _ in video.patches)
    m.in_channels = video.in_channels
    video_entries(config, video)
    what = f"model.init_from={m.init_from!r} is a Lumina-Video checkpoint" if m.init_from else "model.family=lumina_video"
    if d.sources:
        raise ConfigError(f"{what}: data.sources mixes images only; give one clip data set (data.kind) instead")
    if d.frames == 1 or d.kind in PROCEDURAL_IMAGES:
        raise ConfigError(f"{what}, which trains on clips, but the data are images (data.kind={d.kind}, data.frames="
                          f"{d.frames}): set data.frames > 1 with clip data (data.kind moving_shapes, or a folder/jsonl of "
                          "videos; with a CogVideoX data.vae 4k + 1 frames, e.g. 5)")
    if m.vae_downsample != 1 and vae_temporal(d.vae) == 1 and d.vae:
        raise ConfigError(f"{what}, a video latent model, but data.vae={d.vae!r} is an image VAE: give the CogVideoX VAE "
                          "folder (AutoencoderKLCogVideoX, e.g. THUDM/CogVideoX-2b/vae)")
    if m.init_from:
        try:
            video.check_frames(f"data.frames={d.frames}", latent_frame_count(d.frames, vae_temporal(d.vae)))
        except ValueError as err:
            raise ConfigError(f"[model]: {err}") from None
    if r.t_sampler == "shift":
        raise ConfigError("run.t_sampler=shift: a Lumina-Video run shifts each entry's times by its own "
                          "run.video_time_shifts; choose uniform (the official) or lognorm")
    if not 0.0 <= d.motion_dropout <= 1.0:
        raise ConfigError(f"data.motion_dropout={d.motion_dropout} must be in [0, 1] (official 0.3)")
    if r.video_vd_weight < 0:
        raise ConfigError(f"run.video_vd_weight={r.video_vd_weight} must be ≥ 0 (official 1)")
    from lumina.video_sampling import SAMPLE_CONFIGS

    if r.video_sample_config not in SAMPLE_CONFIGS:
        raise ConfigError(f"run.video_sample_config={r.video_sample_config!r}: choose {', '.join(SAMPLE_CONFIGS)}")
    if not isinstance(r.video_sample_settings, dict):
        raise ConfigError(f"run.video_sample_settings={r.video_sample_settings!r} must be a mapping, e.g. {{motion: 0.15}}")
    from lumina.errors import LuminaError
    from lumina.video_sampling import video_sample_settings

    try:
        video_sample_settings(r.video_sample_config, **r.video_sample_settings).check_model(video)
    except (LuminaError, TypeError, ValueError) as err:
        raise ConfigError(f"run.video_sample_settings: {err}") from None


def _validate_data(config: TrainConfig) -> None:
    """The data section's checks: buckets, the VAE folder against the model, the cache."""
    m, d = config.model, config.data
    if d.bucket_top_k < 1:
        raise ConfigError(f"data.bucket_top_k={d.bucket_top_k} must be at least 1 (1 = always the best-fitting bucket)")
    if d.max_aspect_ratio < 1.0:
        raise ConfigError(f"data.max_aspect_ratio={d.max_aspect_ratio} must be at least 1 (official 4)")
    if d.cache_dir and d.kind in (*PROCEDURAL_IMAGES, "moving_shapes"):
        raise ConfigError(f"data.cache_dir is for folder/jsonl data; the {d.kind} data are drawn on the fly: unset data.cache_dir")
    if m.vae_downsample == 1:
        if d.vae:
            raise ConfigError(f"data.vae={d.vae!r} is set but model.vae_downsample=1 trains in pixel space; "
                              "unset data.vae, or set model.vae_downsample to the VAE's downsampling (8 for the SDXL VAE)")
        if m.in_channels != 3:
            raise ConfigError(f"model.in_channels={m.in_channels} but pixel-space images (model.vae_downsample=1) have 3 channels")
        return
    if not d.vae:
        raise ConfigError(f"data.vae is not set but model.vae_downsample={m.vae_downsample} trains in a VAE latent space; "
                          "set data.vae to a local diffusers AutoencoderKL folder (e.g. stabilityai/sdxl-vae)")
    channels, downsample, _, _ = vae_geometry(d.vae)
    if channels != m.in_channels:
        raise ConfigError(f"data.vae={d.vae!r} makes {channels}-channel latents but model.in_channels={m.in_channels}; "
                          f"set model.in_channels={channels}")
    if downsample != m.vae_downsample:
        raise ConfigError(f"data.vae={d.vae!r} downsamples by {downsample} but model.vae_downsample={m.vae_downsample}; "
                          f"set model.vae_downsample={downsample}")


def vae_temporal(folder: str | Path | None) -> int:
    """Frames per latent frame of data.vae: 4 for a CogVideoX video VAE (4k + 1 frames → k + 1),
    1 for an image AutoencoderKL (each frame encoded alone) or pixel space."""
    if not folder:
        return 1
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return 1  # vae_geometry reports the unreadable folder
    if config.get("_class_name") == "AutoencoderKLCogVideoX":
        return int(config.get("temporal_compression_ratio", 4))
    return 1


def latent_frame_count(frames: int, temporal: int) -> int:
    """Latent frames of a clip of `frames` pixel frames: k + 1 for 4k + 1 frames through CogVideoX."""
    return 1 + (frames - 1) // temporal if temporal > 1 else frames


def check_model_frames(lumina_config: LuminaConfig, config: TrainConfig) -> None:
    """A ConfigError unless the model can take the clips' latent frames (Next-DiT: head_dim % 6 for
    3-D RoPE; Flag-DiT: a [nextframe] token); also for a checkpoint read by model.init_from."""
    d = config.data
    frames = latent_frame_count(d.frames, vae_temporal(d.vae)) if d.kind not in PROCEDURAL_IMAGES else 1
    try:
        lumina_config.check_frames(f"data.frames={d.frames}", frames)
    except ValueError as err:  # LuminaInputError
        raise ConfigError(f"[model]: {err}") from None


def _validate_frames(config: TrainConfig) -> None:
    """The clip keys: counts, stride against fps, the CogVideoX 4k + 1 rule, which data takes frames."""
    d = config.data
    if d.frames < 1:
        raise ConfigError(f"data.frames={d.frames} must be at least 1 (1 = images)")
    if not 0 <= d.min_frames <= d.frames:
        raise ConfigError(f"data.min_frames={d.min_frames} must be in [0, data.frames={d.frames}] (0 = data.frames)")
    if d.frame_stride < 1:
        raise ConfigError(f"data.frame_stride={d.frame_stride} must be at least 1 (1 = every frame)")
    if d.fps < 0:
        raise ConfigError(f"data.fps={d.fps} must be ≥ 0 (0 = the videos' own frame rate)")
    if d.fps and d.frame_stride != 1:
        raise ConfigError(f"data.fps={d.fps} and data.frame_stride={d.frame_stride} both thin the frames out: "
                          "set one of them (data.frame_stride=1 or data.fps=0)")
    if d.frames > 1 and d.kind in PROCEDURAL_IMAGES:
        raise ConfigError(f"data.frames={d.frames}: the shapes data are still images; use data.kind=moving_shapes "
                          "(procedural clips) or a folder/jsonl of videos")
    temporal = vae_temporal(d.vae)
    if temporal > 1:
        for key, value in (("data.frames", d.frames), ("data.min_frames", d.min_frames)):
            if value and (value - 1) % temporal:
                below = 1 + (value - 1) // temporal * temporal
                raise ConfigError(f"{key}={value}: the CogVideoX VAE at data.vae={d.vae!r} takes {temporal}k + 1 frames; "
                                  f"set {key}={below} or {below + temporal}")


def vae_geometry(folder: str | Path) -> tuple[int, int, float, float]:
    """(latent channels, downsampling, scale, shift) of a diffusers AutoencoderKL folder, read from
    its config.json without loading any weights; a ConfigError naming data.vae if it is unusable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"data.vae={str(folder)!r} is not a folder; give a local diffusers AutoencoderKL folder "
                          "(e.g. stabilityai/sdxl-vae downloaded with its config.json and weights)")
    try:
        config = json.loads((folder / "config.json").read_text())
        channels, blocks = int(config["latent_channels"]), len(config["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"data.vae={str(folder)!r} has no readable AutoencoderKL config.json ({type(err).__name__}: {err})") from None
    scale = config.get("scaling_factor")
    shift = config.get("shift_factor")
    return channels, 2 ** (blocks - 1), float(SDXL_SCALE if scale is None else scale), float(SDXL_SHIFT if shift is None else shift)


# data.sources (train/mixing.py mixes them; their checks live here, before any work)
SOURCE_KINDS = ("folder", "jsonl", "shapes", "scenes", "cache")
SOURCE_KEYS = {"kind", "path", "weight", "repeats"}


def check_sources(config: TrainConfig) -> None:
    """data.sources' own checks (before any work): kinds, paths, weights, what cannot be mixed."""
    d = config.data
    if not d.sources:
        return
    if not isinstance(d.sources, list):
        raise ConfigError("data.sources must be a list of {kind, path, weight} entries")
    if d.path or d.cache_dir:
        raise ConfigError("data.sources replaces data.kind/data.path/data.cache_dir: list that data as a source "
                          "(e.g. {kind: folder, path: ..., weight: 1} or {kind: cache, path: ...}) and unset data.path/data.cache_dir")
    if d.frames > 1:
        raise ConfigError("data.sources mixes images only (data.frames=1); clips are not mixed yet: use one data.kind")
    for n, source in enumerate(d.sources, 1):
        where = f"data.sources[{n}]"
        if not isinstance(source, dict):
            raise ConfigError(f"{where} must be a mapping like {{kind: folder, path: my_images, weight: 1}}, got {source!r}")
        unknown = set(source) - SOURCE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(sorted(SOURCE_KEYS))}")
        kind = source.get("kind")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"{where}: kind={kind!r}; choose {', '.join(SOURCE_KINDS)}")
        if kind not in PROCEDURAL_IMAGES and (not source.get("path") or not Path(source["path"]).exists()):
            raise ConfigError(f"{where}: path={source.get('path')!r} does not exist; give the {kind} "
                              f"{'folder' if kind != 'jsonl' else 'manifest'} to draw from")
        weight = source.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConfigError(f"{where}: weight={weight!r} must be a number > 0 (the source's share of the draws)")
        if kind in PROCEDURAL_IMAGES and config.model.vae_downsample != 1:
            raise ConfigError(f"{where}: the shapes are pixel-space images; a latent model (model.vae_downsample="
                              f"{config.model.vae_downsample}) cannot mix them in")
