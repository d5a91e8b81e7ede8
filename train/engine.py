"""The training loop on accelerate: one CPU, DDP or FSDP alike.

Determinism: the data order comes from (seed, epoch), and every step's noise, times and caption
dropout from a generator seeded by (seed, step, rank); a resumed run therefore repeats the
uninterrupted one exactly from the saved model, optimizer and EMA.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

import lumina
from lumina.checkpoints import save_official
from lumina.compile import compile_model
from lumina.errors import LuminaError
from lumina.text_encoders import load_text_encoder

from . import checkpointing
from .caption_check import dataset_report, quiet_tokenizer
from .config import (
    PROCEDURAL_IMAGES,
    ConfigError,
    TrainConfig,
    check_model_frames,
    ema_decay,
    entry_name,
    latent_frame_count,
    vae_temporal,
    validate,
)
from .data import BatchPlan, build_dataset, dataset_captions, dataset_summary, load_batch
from .distributed import (
    before_load_state,
    fsdp_units,
    gathered,
    is_fsdp,
    make_accelerator,
    prepare_ema,
    uses_fsdp,
)
from .latents import build_latent_space, draw_latents
from .lora import add_lora, merged_state_dict, save_lora
from .objective import flow_matching_loss
from .sample import png_arrays, sample_images, sample_video_clips, save_animation
from .video_objective import (
    drop_motion,
    entry_times,
    item_motion_scores,
    lumina_video_loss,
    new_video_model,
    training_entries,
    whole_temporal_patches,
)

log = logging.getLogger("train")


def build_model(config: TrainConfig, cap_feat_dim: int) -> lumina.LuminaDiT | lumina.LuminaVideo:
    if config.model.init_from:
        try:
            model = lumina.load_model(config.model.init_from, dtype=torch.float32)
        except LuminaError as err:  # missing, truncated, not a Lumina model: the message names the file and the fix
            raise ConfigError(f"model.init_from={config.model.init_from!r} cannot be loaded: {err}") from None
        if model.config.cap_feat_dim != cap_feat_dim:
            raise ConfigError(f"model.init_from={config.model.init_from!r} reads {model.config.cap_feat_dim}-wide caption "
                              f"features but text.encoder={config.text.encoder!r} gives {cap_feat_dim}: use the text encoder "
                              "the model was trained with (Lumina-Video: Gemma-2-2B, 2304; Next-DiT: Gemma-2B, 2048)")
        return model
    if config.model.family == "lumina_video":
        return new_video_model(config, cap_feat_dim)
    lumina_config = config.model.lumina_config(cap_feat_dim)
    torch.manual_seed(config.run.seed)
    model = lumina.build_model(lumina_config)
    init_weights(model)
    return model


def trainable_model(config: TrainConfig, cap_feat_dim: int) -> tuple[torch.nn.Module, torch.nn.Module | None, list[torch.nn.Parameter]]:
    """(model, EMA copy or None, trainable parameters) as `fit` trains them: LoRA adapters when
    model.lora_rank > 0, per-block gradient checkpointing when asked.

    A LoRA run under bf16 mixed precision keeps its frozen base weights in bf16: they need no fp32
    master copy, and autocast would otherwise save a bf16 cast of every weight for the backward
    pass on top of the fp32 original (together 3× the bf16 size of the base model)."""
    model = build_model(config, cap_feat_dim)
    lora = config.model.lora_rank > 0
    if lora:
        torch.manual_seed(config.run.seed)  # peft draws lora_A at random: the same on every process and run
        model = add_lora(model, config.model.lora_rank, config.model.lora_alpha)
        # (not under FSDP: a unit flattens its tensors into one flat parameter of one dtype, and
        # FSDP's own mixed precision computes in bf16)
        if config.run.mixed_precision == "bf16" and not uses_fsdp(config):
            for p in model.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
    if config.run.gradient_checkpointing:
        for layer in model.layers:
            layer.forward = _checkpointed(layer.forward)
    ema = make_ema(model) if ema_decay(config) > 0 else None
    return model, ema, [p for p in model.parameters() if p.requires_grad]


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    """The EMA copy: fp32 averages of the trainable tensors. A LoRA model's frozen base weights
    never change, so the copy shares them instead of holding a second base model."""
    ema = copy.deepcopy(model).requires_grad_(False)
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.data = p.data.detach().float().clone() if p.requires_grad else p.data
    return ema


def init_weights(model: lumina.LuminaDiT) -> None:
    """The official initialisation: xavier linears, N(0, 0.02) embedders and special tokens, and
    zero for every adaLN modulation, the final projection and the cross-attention gates."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    for p in model.t_embedder.mlp.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.02)
    torch.nn.init.zeros_(model.cap_embedder[1].weight)
    for name, p in model.named_parameters():
        if "adaLN_modulation" in name or name.startswith("final_layer.linear") or name.endswith("attention.gate"):
            torch.nn.init.zeros_(p)
        elif name in ("pad_token", "eol_token", "nextframe_token"):
            torch.nn.init.normal_(p, std=0.02)


class CaptionCache:
    """Text features per caption, computed once by the frozen encoder (captions repeat a lot)."""

    def __init__(self, encoder) -> None:
        self.encoder, self.cache = encoder, {}

    def __call__(self, captions: list[str], device: torch.device) -> lumina.Conditioning:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            enc = self.encoder.encode(missing)
            for i, caption in enumerate(missing):
                n = int(enc.cap_mask[i].sum())
                self.cache[caption] = (enc.cap_feats[i, :n].float().cpu(), n)
        longest = max(self.cache[c][1] for c in captions)
        dim = self.cache[captions[0]][0].shape[-1]
        feats = torch.zeros(len(captions), longest, dim)
        mask = torch.zeros(len(captions), longest, dtype=torch.bool)
        for i, caption in enumerate(captions):
            f, n = self.cache[caption]
            feats[i, :n], mask[i, :n] = f, True
        return lumina.Conditioning(feats.to(device), mask.to(device))


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            if p.requires_grad:  # LoRA: the adapters (the shared frozen weights are the model's own)
                e.lerp_(p.detach().float(), 1 - decay)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then constant (the official) or a cosine decay to optim.min_lr at the last step."""
    o = config.optim
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.lr_schedule == "constant":
        return o.lr
    progress = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
    return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(config: TrainConfig, accelerator=None) -> Path:
    """Train; returns the output folder (checkpoints/, state/, config.yaml, log.jsonl)."""
    out = Path(config.run.out_dir)
    accelerator = accelerator or make_accelerator(config)
    validate(config, accelerator.num_processes)
    if is_fsdp(accelerator) and config.model.lora_rank > 0 and ema_decay(config) > 0:
        raise ConfigError(f"run.ema_decay={config.run.ema_decay} with model.lora_rank under FSDP: an EMA of LoRA adapters "
                          "is kept on one process or under DDP only; unset run.ema_decay (LoRA default: no EMA) or set it to 0")
    out.mkdir(parents=True, exist_ok=True)
    if config.run.tensorboard:
        accelerator.init_trackers("tensorboard")
    if accelerator.is_main_process:
        (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    encoder = load_text_encoder(config.text.encoder, dtype=torch.float32, device=accelerator.device, convention=config.text.convention)
    captions = CaptionCache(encoder)
    model, ema, trainable = trainable_model(config, encoder.hidden_size)
    if accelerator.is_main_process:
        total, count = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in trainable)
        log.info("training %s of %s parameters (%.2f%%)%s%s", f"{count:,}", f"{total:,}", 100 * count / max(1, total),
                 f", LoRA rank {config.model.lora_rank}" if config.model.lora_rank > 0 else "",
                 f", EMA {ema_decay(config)}" if ema is not None else ", no EMA")
    if config.model.init_from:  # a fine-tuned checkpoint's own config must take the clips' frames
        check_model_frames(model.config, config)
    optimizer = torch.optim.AdamW(trainable, lr=config.optim.lr, betas=tuple(config.optim.betas),
                                  weight_decay=config.optim.weight_decay)
    if config.run.compile:  # a clone sharing every parameter (state-dict keys unchanged); the EMA stays eager
        model = compile_model(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = prepare_ema(accelerator, ema)  # FSDP: sharded like the model, saved with the state
    log.info("training on %s", describe_processes(accelerator))
    if is_fsdp(accelerator):
        log.info("FSDP units (root ''): %s", fsdp_units(model))
    dataset = build_dataset(config)
    if accelerator.is_main_process:
        report_data(config, dataset, encoder)
    latent_space = build_latent_space(config, accelerator.device)  # no VAE when training from a cache
    captions.cache = getattr(dataset, "caption_features", captions.cache)  # a cache's stored text features

    step = _resume(config, out, accelerator, model, ema)
    if step >= config.optim.steps:  # nothing to do: say so rather than exit silently
        log.warning("%s already finished: it holds step %d and optim.steps=%d. To train longer, raise optim.steps "
                    "(e.g. optim.steps=%d continues from step %d); to start over, set run.resume=false or a new run.out_dir",
                    out, step, config.optim.steps, step + max(step, 1), step)
        return out
    world, rank = accelerator.num_processes, accelerator.process_index
    local = config.optim.batch_size // world
    plan = BatchPlan(dataset, config.optim.batch_size, config.run.seed)  # a ConfigError without one full batch
    log_file = out / "log.jsonl"
    started = time.perf_counter()
    model.train()
    bar = tqdm(total=config.optim.steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (config.run.progress and accelerator.is_main_process))
    mine = slice(rank * local, (rank + 1) * local)
    entries = training_entries(config, accelerator.unwrap_model(model)) if config.model.family == "lumina_video" else None
    if entries is not None:
        log.info("Lumina-Video entries trained each step (time shift): %s",
                 ", ".join(f"{entry_name(e)} ({s:g})" for e, s in entries))
    while step < config.optim.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        entry_losses: dict[str, float] = {}
        # Lumina-Video: each entry its own global batch (plan batch step·K + k), loss and backward
        for k, (entry, shift) in enumerate(entries or [(None, 1.0)]):
            draw = step if entries is None else step * len(entries) + k
            epoch, batch_ids = plan.at(draw)
            items = load_batch(dataset, batch_ids[mine], epoch)
            # every random number of the step is drawn for the global batch from (seed, step): all
            # processes agree, and a resumed or single-process run draws the very same numbers
            g = torch.Generator().manual_seed(config.run.seed * 1_000_003 + draw)
            dropped = (torch.rand(config.optim.batch_size, generator=g) < config.data.caption_dropout)[mine]
            # images → latent distributions (VAE, no grad) → this step's draws; mixed sizes as lists
            latents, noise, t = draw_latents(latent_space.distributions([x for x, _ in items], accelerator.device), g, config, mine)
            with quiet_tokenizer():  # the dataset's captions were reported once at start-up
                cond = captions(["" if drop else c for drop, (_, c) in zip(dropped.tolist(), items, strict=True)], accelerator.device)
            if entry is None:
                with accelerator.autocast():
                    loss = flow_matching_loss(model, latents, noise, t, cond.cap_feats, cond.cap_mask)
                accelerator.backward(loss)
                continue
            scores = item_motion_scores(dataset, batch_ids, config.data.motion_score)
            motion = drop_motion(scores, config.data.motion_dropout, g)[mine]
            latents, noise = whole_temporal_patches(latents, entry[1]), whole_temporal_patches(noise, entry[1])
            with accelerator.autocast():
                loss = lumina_video_loss(model, latents, noise, entry_times(t, shift), cond.cap_feats, cond.cap_mask,
                                         motion, entry, config.run.video_vd_weight)
            accelerator.backward(loss)  # the official: one backward per entry, the gradients summed
            entry_losses[f"loss_{entry_name(entry)}"] = loss.item()
        if entries is not None:  # logged: the entries' mean (each entry's own as loss_<entry>)
            loss = torch.tensor(sum(entry_losses.values()) / len(entry_losses))
        # all parameters (frozen ones have no grad): under FSDP this is the sharded model's global norm
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema_update(ema, accelerator.unwrap_model(model), ema_decay(config))
        step += 1
        bar.update(1)
        if accelerator.is_main_process and (step % config.run.log_every == 0 or step == config.optim.steps):
            record = {"step": step, "loss": loss.item(), **entry_losses, "grad_norm": float(grad_norm),
                      "lr": lr_at(step - 1, config), "seconds": round(time.perf_counter() - started, 2)}
            with log_file.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if config.run.tensorboard:
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            log.info("step %d loss %.4f", step, record["loss"])
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        if config.run.sample_every and step % config.run.sample_every == 0:
            net = sampling_model(config, accelerator, model, ema)  # every process: a collective under FSDP
            if accelerator.is_main_process:
                validation_images(config, net, encoder, out / "samples" / f"step_{step:07d}")
        if step % config.run.save_every == 0 or step == config.optim.steps:
            save(config, out, accelerator, model, ema, step)
    bar.close()
    return out


def sampling_model(config: TrainConfig, accelerator, model, ema) -> lumina.LuminaDiT | None:
    """The weights validation samples (EMA when kept). Under FSDP every process must call this: the
    shards are gathered into a full copy on the main process (None elsewhere)."""
    source = ema if ema is not None else model
    if not is_fsdp(accelerator):
        return accelerator.unwrap_model(source)
    full = gathered(accelerator, source)
    if not accelerator.is_main_process:
        return None
    raw = accelerator.unwrap_model(model)
    if config.model.lora_rank > 0:  # the adapters' (or their EMA's) deltas merged into the base
        full = merged_state_dict(raw, full)
    return lumina.load_model(full, dtype=torch.float32, device=accelerator.device, config=raw.config)


@torch.inference_mode()
def validation_images(config: TrainConfig, model: lumina.LuminaDiT, encoder, stem: Path) -> Path:
    """Sample the configured prompts (train.sample.sample_images: Euler, CFG 4): a PNG row for
    pixel-space models, with frames (data.frames > 1) an animated WEBP of the clips side by side;
    the latents as safetensors otherwise (decode them with the run's VAE)."""
    import numpy as np
    from PIL import Image

    prompts = config.run.sample_prompts or [""]
    side = config.data.image_size // config.model.vae_downsample
    frames = latent_frame_count(config.data.frames, vae_temporal(config.data.vae)) if config.data.kind not in PROCEDURAL_IMAGES else 1
    with quiet_tokenizer():  # the prompts were reported once at start-up
        if config.model.family == "lumina_video":  # lumina.sample_video: an official sample config, the finest trained entry
            finest = min((e for e, _ in training_entries(config, model)), key=lambda e: e[0] * e[0] * e[1])
            changes = {"steps": 20, "patch_comb": entry_name(finest), **config.run.video_sample_settings}
            images = sample_video_clips(model, encoder, prompts, frames, side, side, seed=config.run.seed,
                                        config_name=config.run.video_sample_config, **changes)
        else:
            images = sample_images(model, encoder, prompts, side, side, seed=config.run.seed, frames=frames)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if config.model.vae_downsample != 1:
        save_file({"latents": images.contiguous().cpu()}, str(stem.with_suffix(".safetensors")))
        return stem.with_suffix(".safetensors")
    if images.dim() == 5:
        return save_animation(images, stem.with_suffix(".webp"))
    Image.fromarray(np.concatenate(list(png_arrays(images)), axis=1)).save(stem.with_suffix(".png"))
    return stem.with_suffix(".png")


def describe_processes(accelerator) -> str:
    """'1 process on cpu (no distribution)', '2 processes on cpu (DDP), this is rank 1' or
    '... (FSDP, sharded)': the line a person reads at start-up."""
    from accelerate.utils import DistributedType

    n, kind = accelerator.num_processes, accelerator.distributed_type
    mode = ("no distribution" if kind == DistributedType.NO else "FSDP, sharded" if kind == DistributedType.FSDP
            else f"DDP, {kind.value}" if n > 1 else kind.value)
    where = f"{n} process{'es' if n > 1 else ''} on {accelerator.device.type} ({mode})"
    return where + (f", this is rank {accelerator.process_index}" if n > 1 else "")


def report_data(config: TrainConfig, dataset, encoder) -> None:
    """Start-up: how many items and captions were found, and (once for the whole caption set)
    which words the text encoder does not know or which captions it cuts."""
    captions = dataset_captions(dataset)
    log.info("%s", dataset_summary(dataset, captions, config.data.frames))
    for n, source in enumerate(getattr(dataset, "datasets", []), 1):  # data.sources: each source and its share
        share = 100 * dataset.slots[n - 1] / len(dataset)
        log.info("  data.sources[%d] %s (%.0f%% of the draws): %s", n, dataset.names[n - 1], share,
                 dataset_summary(source, dataset_captions(source), config.data.frames))
    for problem in (dataset_report(encoder, captions, f"data captions ({'data.sources' if config.data.sources else config.data.path or config.data.kind})"),
                    dataset_report(encoder, config.run.sample_prompts, "run.sample_prompts")):
        if problem:
            log.warning("%s", problem)


def _checkpointed(forward):
    from torch.utils.checkpoint import checkpoint

    def wrapped(x, ctx, layer=0):
        return checkpoint(forward, x, ctx, layer, use_reentrant=False)

    return wrapped


def save(config: TrainConfig, out: Path, accelerator, model, ema, step: int) -> None:
    """Resumable state (state/) plus loadable official-layout checkpoints (checkpoints/latest/),
    each written to a staging folder, sealed and swapped in (train/checkpointing.py): a kill at any
    moment leaves the previous or the new version complete, never a mix. Every process calls this."""
    state = out / "state"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpointing.prepare(state)
    accelerator.wait_for_everyone()  # the empty staging folder exists before anyone writes into it
    staging = checkpointing.staging(state)
    accelerator.save_state(str(staging))
    checkpointing.sync_tree(staging)  # each process its own files (on a shared file system only the writer's fsync counts)
    full = gathered(accelerator, model)  # on the main process under FSDP
    ema_full = gathered(accelerator, ema) if ema is not None else None
    accelerator.wait_for_everyone()  # every process's files are written and synced
    if accelerator.is_main_process:
        if ema is not None:
            save_file({k: v.contiguous().cpu() for k, v in ema_full.items()}, str(staging / "ema.safetensors"))
        checkpointing.seal(staging, step, processes=accelerator.num_processes)
        checkpointing.commit(state)
    export_latest(config, out, accelerator, model, ema, step, full, ema_full)
    accelerator.wait_for_everyone()


def export_latest(config: TrainConfig, out: Path, accelerator, model, ema, step: int,
                  full: dict[str, torch.Tensor] | None = None, ema_full: dict[str, torch.Tensor] | None = None) -> None:
    """checkpoints/latest/: the official-layout weights (and the LoRA) of `step`, swapped in whole.
    Every process calls this (the weights are gathered under FSDP unless given)."""
    if full is None:
        full = gathered(accelerator, model)
        ema_full = gathered(accelerator, ema) if ema is not None else None
    if not accelerator.is_main_process:
        return
    latest = out / "checkpoints" / "latest"
    staging = checkpointing.prepare(latest)
    raw = accelerator.unwrap_model(model)
    if config.model.lora_rank > 0:  # the adapters for ComfyUI's LoraLoader, and the merged model
        save_lora(raw, staging / "lora.safetensors", full)
        save_official(merged_state_dict(raw, full), staging / "consolidated.00-of-01.safetensors", raw.config)
    else:
        save_official(full, staging / "consolidated.00-of-01.safetensors", raw.config)
    if ema is not None and config.model.lora_rank > 0:  # the EMA of the adapters: its LoRA and merged model
        save_lora(raw, staging / "lora_ema.safetensors", ema_full)
        save_official(merged_state_dict(raw, ema_full), staging / "consolidated_ema.00-of-01.safetensors", raw.config)
    elif ema is not None:
        save_official(ema_full, staging / "consolidated_ema.00-of-01.safetensors", raw.config)
    checkpointing.seal(staging, step)
    checkpointing.commit(latest)


RESTART = "or start over with run.resume=false (this overwrites {out}) or a new run.out_dir"


def _resume(config: TrainConfig, out: Path, accelerator, model, ema) -> int:
    """The step to continue from: the newest complete state/ loaded into the model, optimizer and
    EMA (0 without one). Also re-exports checkpoints/latest when a kill left it behind the state,
    and trims log.jsonl to the steps done. A damaged state without a complete one to fall back on
    raises CheckpointError naming the file."""
    if not config.run.resume:
        return 0
    state = out / "state"
    # the main process repairs and verifies (renames, checksums); the others learn the verdict
    verdict: tuple[int | None, bool, bool, str | None] = (None, True, False, None)  # (step, verified, latest current, error)
    if accelerator.is_main_process:
        try:
            found = checkpointing.recover(state, fix=f"restore that file, {RESTART.format(out=out)}")
            step = found.step if found is not None else None
            if found is not None and not found.verified:
                log.warning("%s was written by an older version without checksums: it cannot be verified", state)
            verdict = (step, found is None or found.verified, step is not None and _latest_step(out) == step, None)
        except checkpointing.CheckpointError as err:
            verdict = (None, True, False, str(err))
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        verdict = tuple(broadcast_object_list([verdict])[0])
    step, verified, latest_current, error = verdict
    if error is not None:
        raise checkpointing.CheckpointError(error)
    if accelerator.is_main_process:
        checkpointing.trim_log(out / "log.jsonl", step or 0)
    if step is None:
        return 0
    before_load_state(accelerator)
    try:
        accelerator.load_state(str(state))
        if ema is not None and not is_fsdp(accelerator) and (state / "ema.safetensors").is_file():  # FSDP: load_state did
            ema.load_state_dict(load_file(str(state / "ema.safetensors")))
    except Exception as err:  # noqa: BLE001 - a state that does not fit this run's model or optimizer
        why = ("Was it saved with another model, LoRA or distribution setting? Use the config it was saved with"
               if verified else "It was written by an older version without checksums and may be damaged: restore it")
        raise checkpointing.CheckpointError(
            f"cannot resume from {state} (step {step}): {type(err).__name__}: {str(err).strip()[:500]}. "
            f"{why}, {RESTART.format(out=out)}") from None
    if not latest_current:  # killed between the state's swap and the export's: export this step again
        log.warning("re-exporting %s for step %d", out / "checkpoints" / "latest", step)
        export_latest(config, out, accelerator, model, ema, step)
    accelerator.wait_for_everyone()
    log.info("resumed from step %d", step)
    return step


def _latest_step(out: Path) -> int | None:
    """The step of the complete checkpoints/latest (after repairing an interrupted swap), or None."""
    try:
        found = checkpointing.recover(out / "checkpoints" / "latest")
    except checkpointing.CheckpointError as err:  # damaged: it is exported again from the state
        log.warning("%s", err)
        return None
    return found.step if found is not None else None


__all__ = ["fit", "build_model", "trainable_model", "init_weights", "flow_matching_loss"]
