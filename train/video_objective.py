"""The Lumina-Video family (`lumina.model.lumina_video.LuminaVideo`) in `fit`: its initialisation,
its data draws and its loss, as the official Alpha-VLLM/Lumina-Video train.py trains it.

The official recipe (train.py, transport/, train_exps/f8F32R256):
- every step trains each configured patch entry ("task": its (patch_size, f_patch_size)) on a
  global batch of its own, each entry's loss backpropagated and the gradients summed into one
  optimizer step (task_ratio 4:4:4 trains all of them every step). `run.video_entries` lists the
  entries (empty: all of the model's), and entry k of step s takes the data plan's batch
  s·K + k, so no two entries see the same batch;
- times uniform in [0, 1] (snr_type uniform), then shifted by t / (t + s − s·t) with the entry's
  own s (released: 1x2 → 2, 2x2 → 4, 2x4 → 8, i.e. pF·p; `run.video_time_shifts`): coarse
  entries learn the noisy end, where the multi-scale sampler uses them;
- clips keep a whole number of temporal patches (latent frames cut to a multiple of f_patch,
  like the official `x[:, :F // pF * pF]`); one-frame latents pass as images (the model repeats
  the frame pF times and returns frame 0, the official loss mask);
- loss per clip = MSE(pred, target) + vd_weight · (1 − cos(pred, target)) over the whole clip
  (vd_weight 1 in the released run), averaged over the batch;
- caption dropout: the empty caption, which the lumina_video text convention turns into the
  system prompt alone, as the official (probability data.caption_dropout; official 0.2);
- motion: the clip's score (its metadata's "unimatch_flow"), replaced by −1 (no motion
  conditioning) with probability data.motion_dropout (official 0.3). The official score is the
  mean absolute UniMatch optical flow; that model is not shipped here, so scores come from the
  data (train.config DataSection.motion_score documents where).
Every random number of an entry's step comes from one generator seeded by (run seed, s·K + k),
so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lumina import flow
from lumina.model.lumina_video import LuminaVideo
from lumina.video_config import LuminaVideoConfig

from .config import ConfigError, TrainConfig, video_entries, video_model_config


def fitting_entries(config: LuminaVideoConfig, frames: int, height: int, width: int) -> list[tuple[int, int]]:
    """The (patch_size, f_patch_size) entries that can cut a (frames, height, width) latent."""
    return [(p, pf) for p, pf in config.patches if height % p == 0 and width % p == 0 and (frames == 1 or frames % pf == 0)]


def init_video_weights(model: LuminaVideo) -> None:
    """The official initialisation (models/model.py): xavier linears with zero biases, N(0, 0.02)
    time and motion embedders with the motion embedder's output layer zero (motion starts with no
    effect), and zero for the caption projection, every adaLN modulation, each final projection
    and the cross-attention gates."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    for embedder in (model.t_embedder, model.motion_embedder):
        for p in embedder.mlp.parameters():
            if p.ndim == 2:
                torch.nn.init.normal_(p, std=0.02)
    torch.nn.init.zeros_(model.motion_embedder.mlp[2].weight)
    for name, p in model.named_parameters():
        if (name.startswith("cap_embedder.1.") or "adaLN_modulation" in name or ".linear." in name and name.startswith("all_final_layer")
                or name.endswith("attention.gate")):
            torch.nn.init.zeros_(p)
    torch.nn.init.normal_(model.pad_token, std=0.02)


def new_video_model(config: TrainConfig, cap_feat_dim: int) -> LuminaVideo:
    """A new Lumina-Video model of model.* (seeded by run.seed), officially initialised."""
    video = video_model_config(config).with_(cap_feat_dim=cap_feat_dim)
    torch.manual_seed(config.run.seed)
    model = LuminaVideo(video)
    init_video_weights(model)
    return model


def drop_motion(scores: Tensor, probability: float, generator: torch.Generator) -> Tensor:
    """The scores with each replaced by −1 (no motion conditioning) with `probability`."""
    dropped = torch.rand(scores.shape, generator=generator) < probability
    return scores.float().masked_fill(dropped.to(scores.device), -1.0)


def item_motion_scores(dataset, ids: list[int], default: float) -> Tensor:
    """The items' motion scores: the data set's own (`motion_score(index)`, None for none), else `default`."""
    score = getattr(dataset, "motion_score", None)
    values = [score(i) if score is not None else None for i in ids]
    return torch.tensor([default if v is None else float(v) for v in values], dtype=torch.float32)


def whole_temporal_patches(x: Tensor | list[Tensor], f_patch: int) -> Tensor:
    """(B, C, F, H, W) latents (or a list of one shape) cut to a multiple of f_patch frames; one
    frame stays one frame (an image). A ConfigError when a clip is shorter than one patch."""
    if not isinstance(x, Tensor):
        x = torch.stack(list(x))  # a batch holds one bucket, hence one shape
    frames = x.shape[2]
    if frames == 1 or frames % f_patch == 0:
        return x
    if frames < f_patch:
        raise ConfigError(f"a batch of clips has {frames} latent frames, fewer than the temporal patch {f_patch}: raise "
                          f"data.min_frames (0 = data.frames) so every clip has 1 or at least {f_patch} latent frames")
    return x[:, :, : frames // f_patch * f_patch]


def lumina_video_loss(
    model: torch.nn.Module, data: Tensor, noise: Tensor, t: Tensor, cap_feats: Tensor, cap_mask: Tensor,
    motion_score: Tensor, entry: tuple[int, int], vd_weight: float = 0.0,
) -> Tensor:
    """The official per-clip loss of (B, C, F, H, W) latents through one patch entry (patch_size,
    f_patch_size): MSE between the predicted and the true velocity (lumina.flow), plus vd_weight ·
    (1 − their cosine similarity over the clip), averaged over the batch."""
    noise, t = noise.to(data.device, data.dtype), t.to(data.device)
    x_t = flow.interpolate(noise, data, t)
    target = flow.velocity_target(noise, data).float().flatten(1)
    pred = model(x_t, t, cap_feats, cap_mask, motion_score.to(data.device), entry[0], entry[1]).float().flatten(1)
    loss = ((pred - target) ** 2).mean(dim=1)
    if vd_weight > 0:
        loss = loss + vd_weight * (1 - F.cosine_similarity(pred, target, dim=1))
    return loss.mean()


def training_entries(config: TrainConfig, model: LuminaVideo) -> list[tuple[tuple[int, int], float]]:
    """((patch_size, f_patch_size), time shift) of the entries `fit` trains each step."""
    return video_entries(config, model.config)


def entry_times(t: Tensor, shift: float) -> Tensor:
    """The entry's training times: run.t_sampler's draws shifted by t / (t + s − s·t) (lumina.flow)."""
    return flow.time_shift(t, shift)


__all__ = [
    "drop_motion", "entry_times", "fitting_entries", "init_video_weights", "item_motion_scores", "lumina_video_loss",
    "new_video_model", "training_entries", "whole_temporal_patches",
]
