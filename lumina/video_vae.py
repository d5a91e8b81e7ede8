"""The CogVideoX VAE for Lumina-Video, through diffusers' `AutoencoderKLCogVideoX`, offline only.

Official facts (Alpha-VLLM/Lumina-Video generate.py, train.py, tools/pre_extract/pre_extract.py):
the VAE is CogVideoX-2b's (`THUDM/CogVideoX-2b`, subfolder `vae`), run in the sampling dtype
(bf16 by default); latents are `(posterior.mode() − 0) · 1.15258426` (shift 0, the mode, never a
sample) and decoding is `vae.decode(latent / 1.15258426)`, frames in [-1, 1]. Pixels and latents
are both laid out `(B, C, F, H, W)`, the layout of every 5-D model in this library. Videos have
4k + 1 frames (→ k + 1 latent frames), sizes are multiples of 8 (→ H/8 × W/8, 16 channels).
Training latents were encoded in independent chunks of 32 frames (`chunk_frames=32` here).

Decoding n latent frames gives 4(n − 1) + 1 frames for odd n and 4n for even n (diffusers decodes
two latent frames at a time); generate.py samples frames // 4 latent frames (64 frames → 16 → 64).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .errors import LuminaError, LuminaInputError

LUMINA_VIDEO_VAE_SCALE = 1.15258426  # official vae_scale["cogvideox"]
LUMINA_VIDEO_VAE_SHIFT = 0.0  # official vae_shift["cogvideox"]
OFFICIAL_CHUNK_FRAMES = 32  # pre_extract.py / train.py: torch.split(x, 32, dim=frames)


class LuminaVideoVAEError(LuminaError):
    """A VAE folder that cannot be used as Lumina-Video's CogVideoX VAE."""


def is_video_latent(x: object) -> bool:
    """True for a 5-D `(B, C, F, H, W)` latent (video VAE); False for a 4-D `(B, C, H, W)` image one."""
    return isinstance(x, Tensor) and x.dim() == 5


def valid_frame_counts(frames: int) -> tuple[int, int]:
    """The nearest valid CogVideoX frame counts 4k + 1 at or below and above `frames`."""
    below = max(1, 1 + (frames - 1) // 4 * 4)
    above = below + 4 if below < frames else below
    return below, above


def latent_frames_for(frames: int) -> int:
    """Latent frames for a 4k + 1 frame video: k + 1."""
    _check_frame_count(frames)
    return (frames - 1) // 4 + 1


def official_latent_frames(frames: int) -> int:
    """Lumina-Video generate.py's noise length, frames // 4 (96 → 24 latent frames, which the VAE
    decodes to 93); asked for a multiple of 4 so that nothing is silently dropped."""
    if frames < 4 or frames % 4:
        below = max(4, frames // 4 * 4)
        raise LuminaInputError(
            f"{frames} frames: the official mapping takes frames ÷ 4 latent frames; use a multiple of 4 "
            f"({below} or {below + 4 if below < frames else below})"
        )
    return frames // 4


def _check_frame_count(frames: int) -> None:
    if frames < 1 or (frames - 1) % 4:
        below, above = valid_frame_counts(frames)
        near = f"{below} or {above}" if below != above else f"{below}"
        raise LuminaInputError(
            f"{frames} frames: the CogVideoX VAE takes 4k + 1 frames (1, 5, 9, ..., 49, ...); "
            f"trim or pad the video to {near} frames"
        )


def frames_from_comfy(images: Tensor) -> Tensor:
    """ComfyUI IMAGE frames `(F, H, W, 3)` in [0, 1] → one video `(1, 3, F, H, W)` in [-1, 1]."""
    if images.dim() != 4 or images.shape[-1] != 3:
        raise LuminaInputError(f"frames of shape {tuple(images.shape)}: expected ComfyUI IMAGE frames (F, H, W, 3)")
    return (images.movedim(-1, 0).unsqueeze(0) * 2.0 - 1.0).float()


def frames_to_comfy(video: Tensor) -> Tensor:
    """A decoded video `(B, 3, F, H, W)` in [-1, 1] → ComfyUI IMAGE frames `(B·F, H, W, 3)` in [0, 1]."""
    return ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1).reshape(-1, *video.shape[-2:], 3)


@dataclass
class VideoVAE:
    """Encode/decode between pixel videos and Lumina-Video latents, both `(B, C, F, H, W)`."""

    vae: torch.nn.Module  # diffusers AutoencoderKLCogVideoX
    scaling_factor: float = LUMINA_VIDEO_VAE_SCALE
    shift_factor: float = LUMINA_VIDEO_VAE_SHIFT
    source: str = ""

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def set_tiling(self, on: bool) -> None:
        """Spatial tiles (less memory for large frames; seams blended, results differ slightly)."""
        self.vae.enable_tiling() if on else self.vae.disable_tiling()

    def set_slicing(self, on: bool) -> None:
        """One video of the batch at a time (less memory, identical results)."""
        self.vae.enable_slicing() if on else self.vae.disable_slicing()

    def _to_bcfhw(self, frames: Tensor) -> Tensor:
        if not isinstance(frames, Tensor) or frames.dim() != 5:
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            hint = (
                "; for one image use frames.unsqueeze(2) (a 1-frame video)"
                if isinstance(frames, Tensor) and frames.dim() == 4 else ""
            )
            raise LuminaInputError(f"video of shape {shape}: expected (B, 3, F, H, W) or (B, F, 3, H, W) in [-1, 1]{hint}")
        c_first, c_second = frames.shape[1] == 3, frames.shape[2] == 3
        if c_first and not c_second:
            return frames
        if c_second and not c_first:
            return frames.transpose(1, 2)
        if c_first and c_second:  # 3 frames of 3 channels: never a valid frame count
            _check_frame_count(3)
        raise LuminaInputError(f"video of shape {tuple(frames.shape)}: no RGB axis; expected (B, 3, F, H, W) or (B, F, 3, H, W)")

    @torch.inference_mode()
    def encode(self, frames: Tensor, chunk_frames: int | None = OFFICIAL_CHUNK_FRAMES) -> Tensor:
        """Pixels `(B, 3, F, H, W)` or `(B, F, 3, H, W)` in [-1, 1], F = 4k + 1, H and W multiples
        of 8 → latent `(B, 16, k + 1, H/8, W/8)` float32, scaled as the model was trained:
        `(mode − shift) · scale`. `chunk_frames=32` encodes independent 32-frame chunks like the
        official latent extraction; None encodes the whole video in one diffusers call."""
        x = self._to_bcfhw(frames)
        _check_frame_count(int(x.shape[2]))
        s = self.spatial_factor
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % s or w % s:
            fix = lambda n: f"{n // s * s} or {(n // s + 1) * s}" if n % s else str(n)  # noqa: E731
            raise LuminaInputError(
                f"frame size {w}x{h}: the CogVideoX VAE needs width and height divisible by {s}; "
                f"resize or crop to width {fix(w)}, height {fix(h)}"
            )
        x = x.to(device=self.device, dtype=self.dtype)
        chunks = [x] if not chunk_frames else list(torch.split(x, int(chunk_frames), dim=2))
        latents = [self.vae.encode(c).latent_dist.mode() for c in chunks]
        return ((torch.cat(latents, dim=2).float() - self.shift_factor) * self.scaling_factor)

    @torch.inference_mode()
    def decode(self, latent: Tensor) -> Tensor:
        """Latent `(B, 16, n, h, w)` → pixels `(B, 3, F, 8h, 8w)` float32 clamped to [-1, 1]; F =
        4(n − 1) + 1 for odd n, 4n for even n (diffusers' two-latent-frame chunks)."""
        if isinstance(latent, Tensor) and latent.dim() == 4:
            raise LuminaInputError(
                f"latent of shape {tuple(latent.shape)} is a 4-D (B, C, H, W) image latent; the video VAE "
                "decodes 5-D (B, C, F, H, W) latents: use latent.unsqueeze(2) for one frame of a video "
                "model, or decode an image model's latent with its image VAE"
            )
        if not is_video_latent(latent):
            shape = tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__
            raise LuminaInputError(f"latent of shape {shape}: expected a 5-D (B, C, F, H, W) video latent")
        if latent.shape[1] != self.latent_channels:
            raise LuminaInputError(
                f"latent with {latent.shape[1]} channels: the CogVideoX VAE decodes {self.latent_channels}-channel "
                "latents (Lumina-Video's); a 4-channel latent comes from an image model and needs its image VAE"
            )
        z = (latent.to(device=self.device, dtype=torch.float32) / self.scaling_factor + self.shift_factor).to(self.dtype)
        return self.vae.decode(z).sample.float().clamp(-1.0, 1.0)


def _vae_folder(folder: Path) -> Path:
    for candidate in (folder, folder / "vae"):  # the VAE folder itself, or a CogVideoX pipeline folder
        if (candidate / "config.json").is_file():
            return candidate
    raise LuminaVideoVAEError(
        f"{folder} is not a CogVideoX VAE folder: it needs config.json and the weights "
        "(download the vae/ folder of THUDM/CogVideoX-2b into it)"
    )


def load_video_vae(
    folder: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
    tiling: bool = True, slicing: bool = True, scaling_factor: float | None = None,
) -> VideoVAE:
    """CogVideoX's VAE from a local diffusers folder (or a pipeline folder with vae/), offline only.

    `scaling_factor=None` uses the official 1.15258426 (what Lumina-Video was trained with), warning
    when the folder's config says otherwise (e.g. CogVideoX-5b's 0.7)."""
    from diffusers import AutoencoderKLCogVideoX

    path = _vae_folder(Path(folder))
    try:
        class_name = json.loads((path / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError) as err:
        raise LuminaVideoVAEError(f"cannot read {path / 'config.json'}: {err}") from None
    if class_name != "AutoencoderKLCogVideoX":
        raise LuminaVideoVAEError(
            f"{path} holds a {class_name or 'unknown'} model, not AutoencoderKLCogVideoX; Lumina-Video needs "
            "CogVideoX-2b's VAE (THUDM/CogVideoX-2b, subfolder vae)"
        )
    try:
        vae = AutoencoderKLCogVideoX.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, KeyError, EnvironmentError) as err:
        raise LuminaVideoVAEError(f"cannot load the CogVideoX VAE in {path}: {err}") from None
    vae = vae.to(device).eval().requires_grad_(False)
    folder_scale = float(vae.config.scaling_factor)
    if scaling_factor is None:
        scaling_factor = LUMINA_VIDEO_VAE_SCALE
        if abs(folder_scale - scaling_factor) > 1e-6:
            warnings.warn(
                f"{path}: scaling_factor {folder_scale} in its config, but Lumina-Video was trained with "
                f"CogVideoX-2b's {scaling_factor}; using {scaling_factor} (pass scaling_factor= to override)",
                stacklevel=2,
            )
    out = VideoVAE(vae, float(scaling_factor), LUMINA_VIDEO_VAE_SHIFT, str(path))
    out.set_tiling(tiling)
    out.set_slicing(slicing)
    return out
