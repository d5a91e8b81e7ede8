"""BigVGAN vocoder (mel → waveform) of Lumina-T2Music / Lumina-T2Audio, loaded from the released
`<dir>/args.yml` + `<dir>/best_netG.pt["generator"]`.

Why our own generator rather than NVIDIA's PyPI package `bigvgan` (2.4.1): its `BigVGAN` has the
same module names and reproduces the official outputs, but importing any of its modules runs
`bigvgan/__init__.py`, which imports `meldataset` (librosa) and `utils` (matplotlib) — training and
plotting dependencies (librosa alone brings numba/llvmlite, soundfile, scikit-learn, ...). Inference
needs none of them, so the ~100 lines of generator live here instead.

The official generator (Make-An-Audio 2's `models/vocoder/bigvgan`, = BigVGAN v1):
conv_pre (k7) → per stage i: ConvTranspose1d(C/2^i → C/2^(i+1), k_i, stride u_i, pad (k_i-u_i)/2),
then the mean of `len(resblock_kernel_sizes)` AMP blocks run on the same input → anti-aliased
Snake/SnakeBeta → conv_post (k7, 1 channel) → tanh. Every activation is wrapped in an
anti-aliased 2× up / activation / 2× down (12-tap Kaiser-windowed sinc, replicate padding).
The released weights keep weight normalisation (`weight_g`, `weight_v`; the official code never
removes it): the effective weight g·v/‖v‖ (norm over every axis but 0, which is the input-channel
axis of a transposed convolution) is computed once here at load time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LuminaCheckpointError, LuminaInputError

if TYPE_CHECKING:
    from .audio_vae import AudioVAE

DEFAULT_SAMPLE_RATE = 16000  # the released demos' --sample_rate, used when args.yml has no sampling_rate


@dataclass(frozen=True)
class VocoderConfig:
    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    resblock: str = "1"
    activation: str = "snakebeta"
    snake_logscale: bool = True
    sampling_rate: int = DEFAULT_SAMPLE_RATE

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)

    @classmethod
    def from_args(cls, args: Mapping[str, Any], source: str = "args.yml") -> "VocoderConfig":
        """From the fields of BigVGAN's args.yml (training-only fields are ignored)."""
        need = ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                "resblock_kernel_sizes", "resblock_dilation_sizes")
        missing = [k for k in need if k not in args]
        if missing:
            raise LuminaCheckpointError(
                f"it lacks the BigVGAN fields {', '.join(missing)}", source=source,
                hint="use the args.yml shipped next to best_netG.pt (bigvnat/ or bigvgan/ folder)",
            )
        activation = str(args.get("activation", "snakebeta"))
        resblock = str(args.get("resblock", "1"))
        if activation not in ("snake", "snakebeta") or resblock not in ("1", "2"):
            raise LuminaCheckpointError(
                f"activation {activation!r} / resblock {resblock!r} is not a BigVGAN generator "
                "(activation snake|snakebeta, resblock 1|2)", source=source, hint="check that this is BigVGAN's args.yml",
            )
        rate = args.get("sampling_rate", DEFAULT_SAMPLE_RATE)
        return cls(
            num_mels=int(args["num_mels"]),
            upsample_rates=tuple(int(u) for u in args["upsample_rates"]),
            upsample_kernel_sizes=tuple(int(k) for k in args["upsample_kernel_sizes"]),
            upsample_initial_channel=int(args["upsample_initial_channel"]),
            resblock_kernel_sizes=tuple(int(k) for k in args["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in args["resblock_dilation_sizes"]),
            resblock=resblock, activation=activation,
            snake_logscale=bool(args.get("snake_logscale", True)),
            sampling_rate=int(rate),
        )


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """The (1, 1, kernel_size) low-pass filter of BigVGAN's alias-free resampling (sum 1)."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    if kernel_size % 2 == 0:
        time = torch.arange(-half, half) + 0.5
    else:
        time = torch.arange(kernel_size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).view(1, 1, kernel_size)


class _Snake(nn.Module):
    """x + 1/β · sin²(αx) per channel (β = α for plain Snake); log-scale parameters are exp'ed."""

    def __init__(self, channels: int, beta: bool, logscale: bool) -> None:
        super().__init__()
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        if beta:
            self.beta = nn.Parameter(init.clone())
        self.logscale = logscale

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha.view(1, -1, 1)
        b = self.beta.view(1, -1, 1) if hasattr(self, "beta") else a
        if self.logscale:
            a, b = torch.exp(a), torch.exp(b)
        return x + (1.0 / (b + 1e-9)) * torch.sin(x * a).pow(2)


class _Upsample2x(nn.Module):
    def __init__(self, kernel_size: int = 12) -> None:
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, kernel_size))
        self.pad = kernel_size // 2 - 1
        self.crop_left = self.pad * 2 + (kernel_size - 2) // 2
        self.crop_right = self.pad * 2 + (kernel_size - 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = 2 * F.conv_transpose1d(x, self.filter.expand(c, -1, -1), stride=2, groups=c)
        return x[..., self.crop_left: x.shape[-1] - self.crop_right]


class _LowPass(nn.Module):
    def __init__(self, kernel_size: int = 12) -> None:
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, kernel_size))
        even = kernel_size % 2 == 0
        self.pads = (kernel_size // 2 - int(even), kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, self.pads, mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=2, groups=c)


class _Downsample2x(nn.Module):
    def __init__(self, kernel_size: int = 12) -> None:
        super().__init__()
        self.lowpass = _LowPass(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class _AntiAliased(nn.Module):
    """2× upsample → activation → 2× downsample (official `Activation1d`)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.upsample = _Upsample2x()
        self.act = act
        self.downsample = _Downsample2x()

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class _AMPBlock(nn.Module):
    """AMP block: type "1" = for each dilation x += c2(a2(c1(a1(x)))) (c2 undilated);
    type "2" = for each dilation x += c(a(x))."""

    def __init__(self, c: VocoderConfig, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        conv = lambda d: nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))  # noqa: E731
        act = lambda: _AntiAliased(_Snake(channels, c.activation == "snakebeta", c.snake_logscale))  # noqa: E731
        self.two_convs = c.resblock == "1"
        if self.two_convs:
            self.convs1 = nn.ModuleList(conv(d) for d in dilations)
            self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
            self.activations = nn.ModuleList(act() for _ in range(2 * len(dilations)))
        else:
            self.convs = nn.ModuleList(conv(d) for d in dilations)
            self.activations = nn.ModuleList(act() for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        if self.two_convs:
            acts = self.activations
            for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
                x = x + c2(acts[2 * i + 1](c1(acts[2 * i](x))))
        else:
            for conv, act in zip(self.convs, self.activations):
                x = x + conv(act(x))
        return x


class BigVGAN(nn.Module):
    """Mel (B, num_mels, frames) → waveform (B, 1, frames × hop_length) in [-1, 1]."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        if len(c.upsample_rates) != len(c.upsample_kernel_sizes) or len(c.resblock_kernel_sizes) != len(c.resblock_dilation_sizes):
            raise LuminaCheckpointError(
                "its upsample_rates / upsample_kernel_sizes or resblock_kernel_sizes / resblock_dilation_sizes "
                "differ in length", source="args.yml", hint="use the args.yml shipped with best_netG.pt",
            )
        ch0 = c.upsample_initial_channel
        self.conv_pre = nn.Conv1d(c.num_mels, ch0, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(ch0 // 2**i, ch0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)])
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            _AMPBlock(c, ch0 // 2 ** (i + 1), k, d)
            for i in range(len(c.upsample_rates))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)
        )
        ch = ch0 // 2 ** len(c.upsample_rates)
        self.activation_post = _AntiAliased(_Snake(ch, c.activation == "snakebeta", c.snake_logscale))
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3)

    @property
    def sample_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, mel: Tensor) -> Tensor:
        if mel.ndim != 3 or mel.shape[1] != self.config.num_mels:
            raise LuminaInputError(
                f"the vocoder expects a mel spectrogram of shape (batch, {self.config.num_mels}, frames), got {tuple(mel.shape)}"
            )
        w = self.conv_pre.weight
        x = self.conv_pre(mel.to(device=w.device, dtype=w.dtype))
        n = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up[0](x)
            blocks = self.resblocks[i * n: (i + 1) * n]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / n
        return torch.tanh(self.conv_post(self.activation_post(x)))


def fold_weight_norm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`name.weight_g` / `name.weight_v` pairs → `name.weight` = g · v / ‖v‖ (norm over all axes but 0);
    other entries are kept. The norm is taken in float32 at least."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith(".weight_g"):
            continue
        if key.endswith(".weight_v"):
            base = key[: -len("_v")]
            g = state_dict.get(base + "_g")
            if g is None:
                raise LuminaCheckpointError("a weight-norm weight_v has no weight_g", source="best_netG.pt", keys=[key],
                                            hint="the file is incomplete; download it again")
            v = value.float()
            norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
            out[base] = (g.float() * v / norm).to(value.dtype)
        else:
            out[key] = value
    return out


def vocoder_from_state_dict(
    config: VocoderConfig, state_dict: Mapping[str, Tensor], source: str = "best_netG.pt",
    dtype: torch.dtype = torch.float32,
) -> BigVGAN:
    """Build the generator and load its weights (weight-norm pairs or plain weights). The alias-free
    filters are taken from the file when it has them (they equal the computed ones)."""
    sd = fold_weight_norm(state_dict)
    model = BigVGAN(config)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith(".filter")]  # filters: computed when absent
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise LuminaCheckpointError(
            "its generator weights do not match args.yml", source=source, keys=wrong + missing + unexpected,
            hint="args.yml and best_netG.pt must come from the same vocoder folder (bigvnat/ or bigvgan/)",
        )
    model.load_state_dict(sd, strict=False)
    return model.to(dtype).eval().requires_grad_(False)


def read_vocoder_args(path: str | os.PathLike) -> dict[str, Any]:
    """BigVGAN's args.yml as plain data (yaml.safe_load: no tags, no code)."""
    import yaml  # PyYAML: a dependency of transformers (and of ComfyUI)

    path = Path(path)
    if not path.is_file():
        raise LuminaCheckpointError("the vocoder has no args.yml", source=str(path.parent),
                                    hint="the vocoder folder needs args.yml next to best_netG.pt")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LuminaCheckpointError(f"it is not valid YAML ({str(err).splitlines()[0]})", source=str(path),
                                    hint="use the args.yml shipped with the vocoder") from None
    if not isinstance(data, dict):
        raise LuminaCheckpointError("it is not a mapping of BigVGAN settings", source=str(path),
                                    hint="use the args.yml shipped with the vocoder")
    return data


def load_vocoder(folder: str | os.PathLike, dtype: torch.dtype = torch.float32,
                 sample_rate: int | None = None) -> BigVGAN:
    """The vocoder of a released folder (`bigvnat/` for music, `bigvgan/` for audio): `args.yml`
    and `best_netG.pt` (its `generator` entry, read tensors-only). The sample rate is args.yml's
    `sampling_rate` unless `sample_rate` is given."""
    from dataclasses import replace

    from .audio_files import read_tensors

    folder = Path(folder)
    if not folder.is_dir():
        raise LuminaCheckpointError("the vocoder folder does not exist", source=str(folder),
                                    hint="give the folder holding args.yml and best_netG.pt (bigvnat/ or bigvgan/)")
    weights = folder / "best_netG.pt"
    if not weights.is_file():
        raise LuminaCheckpointError("the vocoder folder has no best_netG.pt", source=str(folder),
                                    hint="download best_netG.pt of the released bigvnat/ (music) or bigvgan/ (audio) folder")
    config = VocoderConfig.from_args(read_vocoder_args(folder / "args.yml"), str(folder / "args.yml"))
    if sample_rate is not None:
        config = replace(config, sampling_rate=int(sample_rate))
    return vocoder_from_state_dict(config, read_tensors(weights, "generator"), str(weights), dtype)


@dataclass
class AudioDecoder:
    """Diffusion latent → waveform: ÷ scale_factor → mel autoencoder → BigVGAN (the official
    `decode_first_stage` then `vocoder.vocode`, batched)."""

    vae: "AudioVAE"
    vocoder: BigVGAN

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sample_rate

    @property
    def samples_per_latent_frame(self) -> int:
        return self.vae.config.time_downsample * self.vocoder.hop_length

    def latent_frames_for_seconds(self, seconds: float) -> int:
        """Latent frames for a clip length, rounded down like the official 10 s → 312 (16 kHz, hop
        256, mel frames halved by the autoencoder). The DiT's max_len bounds it further."""
        if not seconds > 0:
            raise LuminaInputError(f"audio length must be more than 0 seconds, got {seconds}")
        return max(1, int(seconds * self.sample_rate // self.samples_per_latent_frame))

    def __post_init__(self) -> None:
        if self.vae.config.out_mel_bins != self.vocoder.config.num_mels:
            raise LuminaCheckpointError(
                f"the autoencoder decodes {self.vae.config.out_mel_bins} mel bins but the vocoder takes "
                f"{self.vocoder.config.num_mels}", source="vocoder",
                hint="use the vocoder released with this model (bigvnat/ for music, bigvgan/ for audio)",
            )

    @torch.inference_mode()
    def latent_to_mel(self, latent: Tensor) -> Tensor:
        return self.vae.decode(latent)

    @torch.inference_mode()
    def __call__(self, latent: Tensor) -> Tensor:
        """(B, embed_dim, frames) scaled latent → (B, 1, frames × samples_per_latent_frame) float32 in [-1, 1]."""
        return mel_to_waveform(self.vocoder, self.vae.decode(latent))


def mel_to_waveform(vocoder: BigVGAN, mel: Tensor) -> Tensor:
    """(B, num_mels, frames) mel → (B, 1, frames × hop) float32 waveform in [-1, 1]."""
    with torch.inference_mode():
        return vocoder(mel).float()


def latent_to_waveform(vae: "AudioVAE", vocoder: BigVGAN, latent: Tensor) -> tuple[Tensor, int]:
    """(waveform (B, 1, T) float32 in [-1, 1], sample rate) of a sampled latent."""
    decoder = AudioDecoder(vae, vocoder)
    return decoder(latent), decoder.sample_rate


def load_audio_decoder(
    checkpoint: Mapping[str, Tensor] | object, vocoder_folder: str | os.PathLike, vae_file: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> AudioDecoder:
    """The decoder of a released model: the autoencoder from the CFM checkpoint's state dict
    (`first_stage_model.*`, `scale_factor`), or — when the checkpoint has no autoencoder — from
    `vae_file` (`maa2/maa2.ckpt`) with the checkpoint's scale_factor; the vocoder from its folder.
    `checkpoint` may also be a split checkpoint (`lumina.audio_checkpoints.AudioCheckpoint`:
    `first_stage` weights and `scale_factor`)."""
    from .audio_vae import audio_vae_from_state_dict, load_audio_vae, split_audio_vae_state_dict

    if hasattr(checkpoint, "first_stage") and hasattr(checkpoint, "scale_factor"):
        weights, scale = dict(getattr(checkpoint, "first_stage")), getattr(checkpoint, "scale_factor")
        checkpoint = dict(weights, **({"scale_factor": torch.tensor(scale)} if scale is not None else {}))
    else:
        weights, scale = split_audio_vae_state_dict(checkpoint)
    if weights:
        vae = audio_vae_from_state_dict(checkpoint, dtype=dtype, source="the diffusion checkpoint")
    elif vae_file is not None:
        if scale is None:
            raise LuminaCheckpointError(
                "it holds no scale_factor", source="the diffusion checkpoint",
                hint="give the Lumina-T2Music / T2Audio checkpoint (it stores scale_factor beside the DiT)",
            )
        vae = load_audio_vae(vae_file, scale_factor=scale, dtype=dtype)
    else:
        raise LuminaCheckpointError(
            "it holds no mel autoencoder (first_stage_model.*)", source="the diffusion checkpoint",
            hint="give the autoencoder file too (maa2/maa2.ckpt of the release)",
        )
    return AudioDecoder(vae, load_vocoder(vocoder_folder, dtype=dtype))
