"""The 1-D mel autoencoder of Lumina-T2Music / Lumina-T2Audio (Make-An-Audio 2's `AutoencoderKL`).

A mel spectrogram (B, mel_bins, frames) is encoded to a diagonal Gaussian over a latent
(B, embed_dim, frames / 2**len(down_layers)) and decoded back. The diffusion model works on the
latent multiplied by `scale_factor` (`scale_by_std`: a 0-d buffer of the CFM checkpoint), so
`decode` divides by it first and `encode` multiplies by it last, like the official
`decode_first_stage` / `get_first_stage_encoding`.

The configuration is read from the state dict's shapes (nothing needs the YAML):
widths, levels, res-blocks per level, which levels downsample or attend, the latent widths and
the kernel sizes. Quirks of the official code kept here (they are in the released weights):
- the decoder's res-blocks are built without the configured kernel size, so they use kernel 3
  while the encoder's use `kernel_size` (5); conv_in / conv_out of both use `kernel_size`;
- the decoder has `num_res_blocks + 1` blocks per level and upsamples after level i when the
  encoder downsampled after level i - 1;
- downsampling pads one zero on the right, then a stride-2 kernel-3 convolution;
- the attention block is single-head over time with scale channels ** -0.5;
- log-variance is clamped to [-30, 20].
Module names equal the official ones, so `first_stage_model.*` (CFM checkpoint) or the bare keys
of `maa2/maa2.ckpt` load as they are.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LuminaCheckpointError, LuminaInputError

PREFIX = "first_stage_model."
GROUPS = 32  # GroupNorm(32, eps 1e-6) everywhere, as the official Normalize()


@dataclass(frozen=True)
class AudioVAEConfig:
    mel_bins: int  # encoder input channels (ddconfig.in_channels)
    out_mel_bins: int  # decoder output channels (ddconfig.out_ch)
    z_channels: int
    embed_dim: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    kernel_size: int  # encoder res-blocks and both conv_in / conv_out
    decoder_kernel_size: int = 3  # decoder res-blocks (official quirk: never given kernel_size)
    down_layers: tuple[int, ...] = (0,)
    encoder_attn_levels: tuple[int, ...] = ()
    decoder_attn_levels: tuple[int, ...] = ()

    @property
    def time_downsample(self) -> int:
        return 2 ** len(self.down_layers)


def _swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=1e-6, affine=True)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv1d(cout, cout, kernel, padding=kernel // 2)
        if cin != cout:
            self.nin_shortcut = nn.Conv1d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))  # dropout is 0 / eval in the released model
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class _Attention(nn.Module):
    """Single-head self-attention over time on 1x1-conv projections (residual)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv1d(channels, channels, 1)
        self.k = nn.Conv1d(channels, channels, 1)
        self.v = nn.Conv1d(channels, channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = (m(h).transpose(1, 2) for m in (self.q, self.k, self.v))  # (B, T, C)
        h = F.scaled_dot_product_attention(q, k, v)  # scale C ** -0.5, as the official bmm path
        return x + self.proj_out(h.transpose(1, 2))


class _Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1)))


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.block_1 = _ResBlock(channels, channels, kernel)
        self.attn_1 = _Attention(channels)
        self.block_2 = _ResBlock(channels, channels, kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    def __init__(self, blocks: list[nn.Module], attn: list[nn.Module], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)
        if resample is not None:
            self.add_module(name, resample)
        self._resample = name if resample is not None else None

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return getattr(self, self._resample)(x) if self._resample else x


class _Encoder(nn.Module):
    def __init__(self, c: AudioVAEConfig) -> None:
        super().__init__()
        k = c.kernel_size
        self.conv_in = nn.Conv1d(c.mel_bins, c.ch, k, padding=k // 2)
        self.down = nn.ModuleList()
        cin = c.ch
        for level, mult in enumerate(c.ch_mult):
            cout = c.ch * mult
            blocks = [_ResBlock(cin if i == 0 else cout, cout, k) for i in range(c.num_res_blocks)]
            attn = [_Attention(cout) for _ in blocks] if level in c.encoder_attn_levels else []
            down = _Downsample(cout) if level in c.down_layers else None
            self.down.append(_Level(blocks, attn, down, "downsample"))
            cin = cout
        self.mid = _Mid(cin, k)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv1d(cin, 2 * c.z_channels, k, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(_swish(self.norm_out(self.mid(h))))


class _Decoder(nn.Module):
    def __init__(self, c: AudioVAEConfig) -> None:
        super().__init__()
        k, kb = c.kernel_size, c.decoder_kernel_size
        cin = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv1d(c.z_channels, cin, k, padding=k // 2)
        self.mid = _Mid(cin, kb)
        up_after = {i + 1 for i in c.down_layers}
        levels: list[_Level] = []
        for level in reversed(range(len(c.ch_mult))):
            cout = c.ch * c.ch_mult[level]
            blocks = [_ResBlock(cin if i == 0 else cout, cout, kb) for i in range(c.num_res_blocks + 1)]
            attn = [_Attention(cout) for _ in blocks] if level in c.decoder_attn_levels else []
            up = _Upsample(cout) if level in up_after else None
            levels.insert(0, _Level(blocks, attn, up, "upsample"))
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv1d(cin, c.out_mel_bins, k, padding=k // 2)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(_swish(self.norm_out(h)))


@dataclass
class MelPosterior:
    """The encoder's diagonal Gaussian over the (unscaled) latent."""

    mean: Tensor
    logvar: Tensor  # clamped to [-30, 20]

    def sample(self, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        if noise is None:
            noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * noise


class AudioVAE(nn.Module):
    """Mel ↔ latent. `decode`/`encode` work in the diffusion model's (scaled) latent domain."""

    def __init__(self, config: AudioVAEConfig, scale_factor: float = 1.0) -> None:
        super().__init__()
        self.config = config
        self.scale_factor = float(scale_factor)
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)
        self.quant_conv = nn.Conv1d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv1d(config.embed_dim, config.z_channels, 1)

    @property
    def latent_channels(self) -> int:
        return self.config.embed_dim

    def _check(self, x: Tensor, channels: int, what: str) -> None:
        if x.ndim != 3 or x.shape[1] != channels:
            raise LuminaInputError(
                f"the audio autoencoder expects a {what} of shape (batch, {channels}, frames), got {tuple(x.shape)}"
            )

    def encode_posterior(self, mel: Tensor) -> MelPosterior:
        """The Gaussian over the unscaled latent of a mel (B, mel_bins, frames)."""
        self._check(mel, self.config.mel_bins, "mel spectrogram")
        p = next(self.parameters())
        moments = self.quant_conv(self.encoder(mel.to(device=p.device, dtype=p.dtype)))
        mean, logvar = moments.chunk(2, dim=1)
        return MelPosterior(mean, logvar.clamp(-30.0, 20.0))

    def encode(self, mel: Tensor, noise: Tensor | None = None, sample: bool = True,
               generator: torch.Generator | None = None) -> Tensor:
        """Scaled latent: scale_factor × (mean + std × noise), or × mean when `sample` is False."""
        post = self.encode_posterior(mel)
        z = post.sample(noise, generator) if sample else post.mean
        return self.scale_factor * z

    def decode(self, latent: Tensor) -> Tensor:
        """Mel (B, out_mel_bins, frames × 2**len(down_layers)) from a scaled latent (B, embed_dim, frames)."""
        self._check(latent, self.config.embed_dim, "latent")
        p = next(self.parameters())
        z = latent.to(device=p.device, dtype=p.dtype) / self.scale_factor
        return self.decoder(self.post_quant_conv(z))


# --- configuration from shapes ---------------------------------------------------------------------------


def _indices(keys: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def infer_audio_vae_config(state_dict: Mapping[str, Tensor], source: str = "state dict") -> AudioVAEConfig:
    """The autoencoder's configuration from its (unprefixed) state dict shapes."""
    sd = state_dict
    need = ["encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_in.weight",
            "decoder.conv_out.weight", "decoder.mid.block_1.conv1.weight", "post_quant_conv.weight", "quant_conv.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise LuminaCheckpointError(
            "it is not a Make-An-Audio 2 mel autoencoder (1-D AutoencoderKL)", source=source, keys=missing,
            hint="give the Lumina-T2Music / T2Audio checkpoint (first_stage_model.* keys) or maa2/maa2.ckpt",
        )
    keys = list(sd)
    ch, mel_bins, kernel = sd["encoder.conv_in.weight"].shape
    levels = _indices(keys, r"encoder\.down\.(\d+)\.")
    ch_mult = tuple(int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // int(ch) for i in levels)
    n_blocks = len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\."))
    z2 = sd["encoder.conv_out.weight"].shape[0]
    z_channels = int(sd["decoder.conv_in.weight"].shape[1])
    if z2 != 2 * z_channels:
        raise LuminaCheckpointError(
            f"encoder.conv_out gives {z2} channels, decoder.conv_in takes {z_channels}: only double_z autoencoders "
            "exist in the official code", source=source, hint="the file mixes two models; download it again",
        )
    return AudioVAEConfig(
        mel_bins=int(mel_bins),
        out_mel_bins=int(sd["decoder.conv_out.weight"].shape[0]),
        z_channels=z_channels,
        embed_dim=int(sd["post_quant_conv.weight"].shape[1]),
        ch=int(ch),
        ch_mult=ch_mult,
        num_res_blocks=n_blocks,
        kernel_size=int(kernel),
        decoder_kernel_size=int(sd["decoder.mid.block_1.conv1.weight"].shape[-1]),
        down_layers=tuple(i for i in levels if f"encoder.down.{i}.downsample.conv.weight" in sd),
        encoder_attn_levels=tuple(i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in sd),
        decoder_attn_levels=tuple(i for i in levels if f"decoder.up.{i}.attn.0.q.weight" in sd),
    )


def split_audio_vae_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float | None]:
    """(autoencoder weights without prefix, scale_factor or None) from a CFM checkpoint's state dict
    (`first_stage_model.*` + `scale_factor`) or a standalone autoencoder's (bare keys; its training
    loss / discriminator `loss.*` weights are dropped)."""
    scale = state_dict.get("scale_factor")
    scale_factor = float(scale) if isinstance(scale, Tensor) and scale.numel() == 1 else None
    if any(k.startswith(PREFIX) for k in state_dict):
        sd = {k[len(PREFIX):]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    else:
        sd = {k: v for k, v in state_dict.items() if k.split(".", 1)[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv")}
    return sd, scale_factor


def audio_vae_from_state_dict(
    state_dict: Mapping[str, Tensor], scale_factor: float | None = None, source: str = "state dict",
    dtype: torch.dtype = torch.float32,
) -> AudioVAE:
    """Build and load the autoencoder. `scale_factor` overrides the checkpoint's; a standalone
    autoencoder file has none, so it must then be given (it lives in the CFM checkpoint)."""
    sd, found = split_audio_vae_state_dict(state_dict)
    scale = scale_factor if scale_factor is not None else found
    if scale is None:
        raise LuminaCheckpointError(
            "it holds no scale_factor (the latent scale of the diffusion model)", source=source,
            hint="load the autoencoder from the Lumina-T2Music / T2Audio checkpoint, or pass scale_factor= read "
                 "from that checkpoint's 'scale_factor' entry",
        )
    if not (scale > 0 and scale == scale and scale != float("inf")):
        raise LuminaCheckpointError(f"scale_factor {scale} is not a positive finite number", source=source,
                                    hint="download the checkpoint again")
    config = infer_audio_vae_config(sd, source)
    vae = AudioVAE(config, scale)
    own = vae.state_dict()
    wrong = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if wrong or missing or unexpected:
        raise LuminaCheckpointError(
            "its autoencoder weights do not match the shapes they imply", source=source,
            keys=wrong + missing + unexpected, hint="the file is incomplete or of another model; download it again",
        )
    vae.load_state_dict(sd, strict=True)
    return vae.to(dtype).eval().requires_grad_(False)


def load_audio_vae(path: str | os.PathLike, scale_factor: float | None = None,
                   dtype: torch.dtype = torch.float32) -> AudioVAE:
    """The mel autoencoder from a CFM checkpoint (`*.ckpt`, `.safetensors`) or `maa2/maa2.ckpt`
    (then `scale_factor` comes from the CFM checkpoint). Pickles are read tensors-only."""
    from .audio_files import read_tensors

    sd = read_tensors(Path(path))
    return audio_vae_from_state_dict(sd, scale_factor, str(path), dtype)
