"""The space the model is trained in: pixels (model.vae_downsample = 1, the identity) or the latents
of a diffusers AutoencoderKL such as the SDXL VAE (fp32; latent = (sample − shift)·scale, scale
0.13025 and shift 0 unless the VAE's config.json says otherwise).

Images become a `LatentDist` per item, a diagonal Gaussian in the scaled latent space; every step
draws a fresh sample from it with that step's seeded generators, as the official training calls
`latent_dist.sample()` each step. Pixels are a distribution with no spread. A cache
(train/cache.py) stores the distributions, so training from it needs no VAE at all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from lumina import flow

from .config import TrainConfig, vae_geometry, vae_temporal
from .images import variable_sizes
from .objective import draw_noise_and_t


@dataclass
class LatentDist:
    """One item's latent distribution (already scaled): a draw is mean + std·ε; std None = exact."""

    mean: Tensor  # (C, h, w), or (C, F, h, w) for a clip
    std: Tensor | None = None

    def to(self, device: torch.device | str) -> LatentDist:
        return LatentDist(self.mean.to(device), None if self.std is None else self.std.to(device))


class PixelSpace:
    """The identity "VAE" of pixel-space models; also passes a cache's stored distributions on."""

    def distributions(self, items: list, device: torch.device | str) -> list[LatentDist]:
        return [x.to(device) if isinstance(x, LatentDist) else LatentDist(x.to(device)) for x in items]


class VAESpace(PixelSpace):
    """A frozen fp32 diffusers AutoencoderKL; images of one size are encoded together, without grad."""

    def __init__(self, folder: str | Path, device: torch.device | str = "cpu") -> None:
        from diffusers import AutoencoderKL

        self.channels, self.downsample, self.scale, self.shift = vae_geometry(folder)
        self.vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True, torch_dtype=torch.float32)
        self.vae = self.vae.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, images: list[Tensor]) -> list[LatentDist]:
        """(3, H, W) images in [-1, 1] → their scaled latent distributions, in order; (3, F, H, W)
        clips are encoded frame by frame (an image VAE has no time axis) into (C, F, h, w)."""
        device = next(self.vae.parameters()).device
        out: list[LatentDist | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            groups[tuple(image.shape)].append(i)
        for shape, ids in groups.items():
            x = torch.stack([images[i] for i in ids]).to(device, torch.float32)
            if len(shape) == 4:  # (N, 3, F, H, W) → (N·F, 3, H, W)
                x = rearrange(x, "n c f h w -> (n f) c h w")
            dist = self.vae.encode(x).latent_dist
            mean, std = (dist.mean - self.shift) * self.scale, dist.std * self.scale
            if len(shape) == 4:
                mean, std = (rearrange(t, "(n f) c h w -> n c f h w", n=len(ids)) for t in (mean, std))
            for j, i in enumerate(ids):
                out[i] = LatentDist(mean[j], std[j])
        return out

    def distributions(self, items: list, device: torch.device | str) -> list[LatentDist]:
        todo = [i for i, x in enumerate(items) if not isinstance(x, LatentDist)]
        encoded = dict(zip(todo, self.encode([items[i] for i in todo]), strict=True)) if todo else {}
        return [encoded[i].to(device) if i in encoded else items[i].to(device) for i in range(len(items))]


class VideoVAESpace(VAESpace):
    """The frozen CogVideoX VAE of Lumina-Video (lumina.video_vae, fp32): (3, F, H, W) clips with
    F = 4k + 1 → (C, k + 1, h, w) latents. Like the official training it keeps the posterior's
    mode (no spread), scaled by the official 1.15258426."""

    def __init__(self, folder: str | Path, device: torch.device | str = "cpu") -> None:
        from lumina.video_vae import load_video_vae

        self.video = load_video_vae(folder, dtype=torch.float32, device=device)
        self.channels, self.downsample = self.video.latent_channels, self.video.spatial_factor
        self.scale, self.shift = self.video.scaling_factor, self.video.shift_factor

    @torch.no_grad()
    def encode(self, clips: list[Tensor]) -> list[LatentDist]:
        """(3, F, H, W) clips in [-1, 1], F = 4k + 1 → their scaled latents (exact), in order."""
        out: list[LatentDist | None] = [None] * len(clips)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, clip in enumerate(clips):
            if clip.dim() != 4:
                raise ValueError(f"the CogVideoX VAE encodes (3, F, H, W) clips, got shape {tuple(clip.shape)}; "
                                 "set data.frames to 4k + 1 (e.g. 5) for video data")
            groups[tuple(clip.shape)].append(i)
        for ids in groups.values():
            latents = self.video.encode(torch.stack([clips[i] for i in ids]))
            for j, i in enumerate(ids):
                out[i] = LatentDist(latents[j].clone())  # clone: out of inference mode for autograd
        return out


def build_latent_space(config: TrainConfig, device: torch.device | str = "cpu") -> PixelSpace:
    """The VAE for latent models, unless the run trains from a cache (data.cache_dir: then
    train.data.build_dataset reads the cache, whose items hold the latents already)."""
    if config.model.vae_downsample == 1 or config.data.cache_dir:
        return PixelSpace()
    if vae_temporal(config.data.vae) > 1:
        return VideoVAESpace(config.data.vae, device)
    return VAESpace(config.data.vae, device)


def draw_latents(
    dists: list[LatentDist], generator: torch.Generator, config: TrainConfig, mine: slice,
) -> tuple[Tensor | list[Tensor], Tensor | list[Tensor], Tensor]:
    """(data, noise, t) for this process's items of the step's global batch.

    Every random number comes from the step's generator (seeded by run seed and step), so all
    processes and a resumed run draw the same ones. Same-size data (the shapes, square crops)
    draws the global batch's noise in one tensor, then the times, exactly as before buckets
    existed (so earlier runs, e.g. the committed demo model, still reproduce bit for bit), then
    the VAE samples' ε. Bucketed data of mixed sizes draws the times, then one seed per item of the
    global batch: its generator draws the item's noise, then its ε. Mixed sizes are returned as
    lists of (C, h, w) tensors for the model's list input (the official [PAD]-token path).
    """
    batch, sampler, shift = config.optim.batch_size, config.run.t_sampler, config.run.t_shift
    if not variable_sizes(config):
        shape = tuple(dists[0].mean.shape)
        noise, t = draw_noise_and_t((batch, *shape), generator, sampler, shift)
        data = torch.stack([d.mean for d in dists])
        if any(d.std is not None for d in dists):
            eps = torch.randn((batch, *shape), generator=generator, dtype=torch.float32)[mine].to(data.device)
            data = data + torch.stack([torch.zeros_like(d.mean) if d.std is None else d.std for d in dists]) * eps
        return data, noise[mine], t[mine]
    t = flow.sample_t(sampler, batch, shift=shift, generator=generator)
    seeds = torch.randint(2**62, (batch,), generator=generator)[mine].tolist()
    data, noises = [], []
    for dist, seed in zip(dists, seeds, strict=True):
        g = torch.Generator().manual_seed(seed)
        noises.append(torch.randn(dist.mean.shape, generator=g, dtype=torch.float32))
        if dist.std is None:
            data.append(dist.mean)
        else:
            data.append(dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g, dtype=torch.float32).to(dist.mean.device))
    return data, noises, t[mine]
