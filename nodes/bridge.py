"""The only module that touches ComfyUI internals: a Lumina model as ComfyUI's standard MODEL.

A `LuminaBaseModel` (a `comfy.model_base.BaseModel`) holds our `LuminaDiT` as `diffusion_model`
inside a `ModelPatcher`, so ComfyUI's memory manager loads and offloads it, LoRA-style weight
patches apply, and core samplers (KSampler, SamplerCustom) can drive it through our flow
model-sampling object. Every time/sign conversion is a `lumina.flow` call.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling

from ..lumina import flow
from ..lumina.conditioning import Conditioning
from ..lumina.extrapolation import extrapolation_options
from ..lumina.features.interrupt import InterruptCheck
from ..lumina.guidance import official_cfg
from ..lumina.memory import check_sampling_fits, estimate_sampling_memory
from ..lumina.model import ForwardOptions, LuminaDiT, LuminaVideo
from ..lumina.model.audio_dit import AudioDiT
from ..lumina.precision import auto_dtype
from ..lumina.model.hooks import BatchRows, ForwardFeature, batch_rows
from ..lumina.sampling import VelocityWrapper
from ..lumina.video_vae import LUMINA_VIDEO_VAE_SCALE

PATCH_KEY = "lumina"  # the one transformer_options entry: a LuminaPatch
CAPTION_KEY = "lumina_caption"  # model cond: caption features with the mask as a last channel
DEFAULT_SHIFT = 4.0  # the official demos' time_shifting_factor


# Newer ComfyUI's ancestral/SDE samplers pick their rectified-flow formulas by isinstance(CONST).
_FLOW_BASES = (comfy.model_sampling.CONST,) if hasattr(comfy.model_sampling, "CONST") else ()


class LuminaFlowSampling(*_FLOW_BASES, torch.nn.Module):
    """ComfyUI model sampling for Lumina's flow: sigma = 1 − t, the model's output is −velocity
    and `denoised = x − sigma·output` (the CONST / rectified-flow rules of newer ComfyUI)."""

    def __init__(self, shift: float = DEFAULT_SHIFT) -> None:
        super().__init__()
        self.shift = shift
        t = torch.arange(1, 1001, dtype=torch.float32) / 1000  # sigma grid for core schedulers
        self.register_buffer("sigmas", flow.sigma_shift(t, shift))

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return timestep

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(flow.sigma_shift(torch.tensor(flow.sigma_from_t(percent)), self.shift))

    def calculate_input(self, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
        t = flow.t_from_sigma(sigma.reshape(-1))
        return flow.denoised_from_velocity(model_input, flow.velocity_from_comfy_output(model_output), t)

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor, max_denoise: bool = False) -> torch.Tensor:
        return flow.interpolate(noise, latent_image, flow.t_from_sigma(sigma.reshape(-1)))

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return latent


class CaptionCond(comfy.conds.CONDRegular):
    """Caption features (B, L, D) with their mask appended as channel D. Captions of different
    lengths batch together by right-padding with masked zeros, which changes nothing (unlike
    core's repeat-padding of cross-attention, which would change the pooled caption)."""

    def can_concat(self, other: "CaptionCond") -> bool:
        return self.cond.shape[2] == other.cond.shape[2]

    def concat(self, others: list["CaptionCond"]) -> torch.Tensor:
        conds = [self.cond] + [o.cond for o in others]
        length = max(c.shape[1] for c in conds)
        return torch.cat([F.pad(c, (0, 0, 0, length - c.shape[1])) for c in conds])


def pack_caption(cap_feats: torch.Tensor, cap_mask: torch.Tensor) -> torch.Tensor:
    return torch.cat([cap_feats.float(), cap_mask.to(cap_feats.device, torch.float32)[..., None]], dim=-1)


def unpack_caption(packed: torch.Tensor) -> Conditioning:
    return Conditioning(packed[..., :-1], packed[..., -1] > 0.5)


class PixelSpaceLatentFormat(comfy.latent_formats.LatentFormat):
    """Images in [-1, 1] are the model's own space: no scaling; previews show them as they are."""

    def __init__(self) -> None:
        self.scale_factor = 1.0
        self.latent_channels = 3
        self.latent_rgb_factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        self.taesd_decoder_name = None


class LuminaVideoLatentFormat(comfy.latent_formats.LatentFormat):
    """Lumina-Video's model space is the CogVideoX latent × 1.15258426 (the official factor); a
    LATENT holds the VAE's own space, so sampling scales in and out by it (no shift)."""

    latent_channels = 16
    latent_dimensions = 3

    def __init__(self) -> None:
        self.scale_factor = LUMINA_VIDEO_VAE_SCALE
        self.latent_rgb_factors = None  # no fast preview decoder: the progress bar still runs
        self.taesd_decoder_name = None


class LuminaAudioLatentFormat(comfy.latent_formats.LatentFormat):
    """Lumina-T2Music / T2Audio: a LATENT (batch, 20, frames) holds the DiT's own (scaled) space,
    what `lumina.sample_audio` returns and the Lumina Audio Decode node takes (the decoder divides by
    the checkpoint's scale_factor itself), so no scaling here."""

    latent_dimensions = 1

    def __init__(self, channels: int = 20) -> None:
        self.scale_factor = 1.0
        self.latent_channels = channels
        self.latent_rgb_factors = None  # no preview image of a mel latent: the progress bar still runs
        self.taesd_decoder_name = None


def latent_format_of(lumina_model: LuminaDiT | LuminaVideo | AudioDiT) -> comfy.latent_formats.LatentFormat:
    if isinstance(lumina_model, AudioDiT):
        return LuminaAudioLatentFormat(lumina_model.config.in_channels)
    if isinstance(lumina_model, LuminaVideo):
        return LuminaVideoLatentFormat()
    if lumina_model.config.vae_downsample == 1:
        return PixelSpaceLatentFormat()
    return comfy.latent_formats.SDXL()  # scale 0.13025, the official SDXL VAE factor


class _LuminaModelConfig:
    """The slice of a ComfyUI model config that BaseModel and the model manager read."""

    def __init__(self, lumina_model: LuminaDiT | LuminaVideo) -> None:
        self.unet_config = {"disable_unet_model_creation": True}
        self.latent_format = latent_format_of(lumina_model)
        self.manual_cast_dtype = None
        self.sampling_settings: dict = {}
        self.memory_usage_factor = 2.0
        self.custom_operations = None
        self.optimizations = {"fp8": False}
        self.lumina_config = lumina_model.config


class LuminaBaseModel(comfy.model_base.BaseModel):
    def __init__(self, lumina_model: LuminaDiT, shift: float = DEFAULT_SHIFT, device: torch.device | None = None) -> None:
        super().__init__(_LuminaModelConfig(lumina_model), comfy.model_base.ModelType.EPS, device=device)
        self.diffusion_model = lumina_model
        self.model_sampling = LuminaFlowSampling(shift)
        # core's diffusion models carry their input channels here, and newer core nodes read it
        # (ComfyUI 0.3.64's RenormCFG guides the first `in_channels` channels)
        if not hasattr(lumina_model, "in_channels") and hasattr(lumina_model.config, "in_channels"):
            lumina_model.in_channels = lumina_model.config.in_channels

    def get_dtype(self) -> torch.dtype:
        return self.diffusion_model.x_embedder.weight.dtype

    def default_options(self, x: torch.Tensor) -> ForwardOptions:
        """Without a patch, core samplers get what the official demo uses at this image size."""
        vae = self.diffusion_model.config.vae_downsample
        return extrapolation_options(self.diffusion_model.config, x.shape[-1] * vae, x.shape[-2] * vae, "auto")

    def memory_required(self, input_shape, cond_shapes=None, **kwargs) -> float:
        """What ComfyUI frees before sampling and how it batches cond/uncond: our estimate of one
        model call of this batch (weights excluded, as ComfyUI counts them itself)."""
        image_only(input_shape, "Lumina")
        estimate = estimate_sampling_memory(
            self.diffusion_model, tuple(input_shape), cfg_batch=False, count_weights=False,
            device=comfy.model_management.get_torch_device(),
        )
        return float(estimate.run_bytes)

    def _check_memory(self, x: torch.Tensor, caption: Conditioning) -> None:
        """Core samplers: refuse a run that cannot fit before its first forward (once per batch shape)."""
        key = _memory_key(x, caption)
        if key != getattr(self, "_memory_checked", None):
            check_sampling_fits(self.diffusion_model, tuple(x.shape), cfg_batch=False,
                                caption_tokens=caption.cap_feats.shape[1], device=x.device)
            self._memory_checked = key

    def extra_conds(self, **kwargs) -> dict:
        out = {}
        feats = kwargs.get("cross_attn")
        if feats is not None:
            mask = kwargs.get("attention_mask")
            if mask is None:
                mask = torch.ones(feats.shape[:2], dtype=torch.bool)
            out[CAPTION_KEY] = CaptionCond(pack_caption(feats, mask))
        return out

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        image_only(x.shape, "Lumina")
        if CAPTION_KEY not in kwargs:
            raise ValueError("this Lumina model needs conditioning from the Lumina Text Encode node")
        caption = unpack_caption(kwargs[CAPTION_KEY])
        patch = transformer_options.get(PATCH_KEY) or LuminaPatch()
        if patch.wrappers:
            warnings.warn(
                "Lumina Region-Adaptive Sampling applies to the Lumina Flow Sampler only; this core sampler runs every "
                "patch at every step", stacklevel=2,
            )
        options = patch.forward_options(
            self.default_options(x), comfy_batch_rows(x.shape[0], transformer_options.get("cond_or_uncond")),
            extra=(INTERRUPT_CHECK,),
        )
        self._check_memory(x, caption)
        dtype = self.get_dtype()
        t_lumina = flow.t_from_sigma(sigma.float())
        velocity = self.diffusion_model(x.to(dtype), t_lumina, caption.cap_feats.to(dtype), caption.cap_mask, options).float()
        return flow.denoised_from_velocity(x, velocity, t_lumina)


class LuminaVideoBaseModel(LuminaBaseModel):
    """A Lumina-Video model as a MODEL: ComfyUI loads, offloads and LoRA-patches it; the Lumina Flow
    Sampler runs its official guided call (core samplers cannot: see apply_model)."""

    def get_dtype(self) -> torch.dtype:
        return self.diffusion_model.dtype

    def memory_required(self, input_shape, cond_shapes=None, **kwargs) -> float:
        """Our estimate of one guided model call (the Flow Sampler's), weights excluded."""
        estimate = estimate_sampling_memory(
            self.diffusion_model, tuple(input_shape), cfg_batch=True, count_weights=False,
            device=comfy.model_management.get_torch_device(),
        )
        return float(estimate.run_bytes)

    def apply_model(self, *args, **kwargs):
        raise ValueError(
            "a Lumina-Video MODEL samples with the Lumina Flow Sampler: its guidance runs several captions and motion "
            "scores per step with a patch-size schedule, which core KSampler / SamplerCustom cannot drive"
        )


class LuminaAudioBaseModel(LuminaBaseModel):
    """A Lumina-T2Music / T2Audio 1-D Flag-DiT as a MODEL: ComfyUI loads and offloads it; the Lumina
    Flow Sampler runs its official CFM sampling. `audio_kind` ('music' / 'audio'), `sample_rate` and
    `samples_per_latent_frame` are set by the Lumina Audio Model Loader (they come with the decoder)."""

    audio_kind: str | None = None
    sample_rate: int = 16000
    samples_per_latent_frame: int = 512  # the released autoencoder (÷ 2) × vocoder hop 256

    def get_dtype(self) -> torch.dtype:
        return self.diffusion_model.dtype

    def memory_required(self, input_shape, cond_shapes=None, **kwargs) -> float:
        from ..lumina.audio_sampling import estimate_audio_sampling_bytes

        batch, frames = int(input_shape[0]), int(input_shape[-1])
        return float(estimate_audio_sampling_bytes(self.diffusion_model, batch, frames, 154, cfg_batch=True))

    def apply_model(self, *args, **kwargs):
        raise ValueError(
            "a Lumina-T2Music / Lumina-T2Audio MODEL samples with the Lumina Flow Sampler (its official CFM sampler "
            "and guidance), which core KSampler / SamplerCustom cannot drive"
        )


INTERRUPT_CHECK = InterruptCheck(comfy.model_management.throw_exception_if_processing_interrupted)
"""Cancel takes effect between transformer blocks, not only between steps."""


def check_finite_denoised(args: dict) -> torch.Tensor:
    """sampler_post_cfg_function on every Lumina MODEL: a NaN cfg or an overflowing model must fail
    the prompt, not save a black image."""
    denoised = args["denoised"]
    if not bool(torch.isfinite(denoised).all()):
        sigma = float(args["sigma"].reshape(-1)[0]) if torch.is_tensor(args["sigma"]) else args["sigma"]
        raise ValueError(
            f"Lumina: the guided prediction at sigma {sigma:.4f} contains NaN or infinite values; use a finite cfg, and "
            "bf16 or fp32 weights if the model was loaded in fp16"
        )
    return denoised


def _memory_key(x: torch.Tensor, caption: Conditioning) -> tuple:
    return tuple(x.shape), str(x.device), caption.cap_feats.shape[1]


def comfy_batch_rows(batch: int, cond_or_uncond: list[int] | None) -> BatchRows:
    """ComfyUI batches equal chunks of conditional (0) and unconditional (1) rows in the order
    `cond_or_uncond` lists them."""
    halves = tuple(c == 0 for c in cond_or_uncond) if cond_or_uncond else (True,)
    return batch_rows(batch // len(halves), halves)


@dataclass(frozen=True)
class LuminaPatch:
    """What the feature nodes put on a cloned MODEL, under one transformer_options key.

    options: forward options (resolution extrapolation), None = the official settings for the
    image size; features: per-call forward features (style-shared attention); wrappers: velocity
    wrappers around the model call (region-adaptive sampling; the Lumina Flow Sampler only)."""

    options: ForwardOptions | None = None
    features: tuple[ForwardFeature, ...] = ()
    wrappers: tuple[VelocityWrapper, ...] = ()

    def forward_options(self, default: ForwardOptions, rows: BatchRows | None = None, extra: tuple = ()) -> ForwardOptions:
        """The options of a model call: ours or `default`, with our features (then `extra`) and `rows`."""
        options = self.options or default
        return replace(options, features=options.features + tuple(extra) + self.features, rows=rows)

    def replacing(self, kind: type, item) -> tuple:
        """Our features with any of type `kind` replaced by `item` (a second node of a kind wins)."""
        return tuple(f for f in self.features if not isinstance(f, kind)) + (item,)


def load_device_type() -> str:
    """Where ComfyUI runs models ('cpu', 'cuda', 'mps', ...)."""
    return comfy.model_management.get_torch_device().type


def make_model_patcher(lumina_model: LuminaDiT | LuminaVideo | AudioDiT, shift: float = DEFAULT_SHIFT) -> comfy.model_patcher.ModelPatcher:
    """ComfyUI's standard MODEL around a lumina model (weights stay on the offload device until used)."""
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    kind = (LuminaAudioBaseModel if isinstance(lumina_model, AudioDiT)
            else LuminaVideoBaseModel if isinstance(lumina_model, LuminaVideo) else LuminaBaseModel)
    base = kind(lumina_model.to(offload_device), shift)
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=load_device, offload_device=offload_device)
    patcher.set_model_sampler_post_cfg_function(check_finite_denoised)
    return patcher


def any_lumina_model_of(model: comfy.model_patcher.ModelPatcher) -> LuminaDiT | LuminaVideo:
    """The Lumina model inside a MODEL of the Lumina Model Loader: an image family or Lumina-Video."""
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    if isinstance(inner, AudioDiT):
        raise ValueError(
            "this node works with image and video models; a Lumina-T2Music / T2Audio MODEL (Lumina Audio Model Loader) "
            "goes to the Lumina Flow Sampler with a Lumina Empty Audio Latent"
        )
    if not isinstance(inner, (LuminaDiT, LuminaVideo)):
        raise ValueError("this node needs a model from the Lumina Model Loader (got a different model type)")
    return inner


def audio_model_of(model: comfy.model_patcher.ModelPatcher) -> AudioDiT | None:
    """The 1-D Flag-DiT inside a MODEL of the Lumina Audio Model Loader, None for any other MODEL."""
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    return inner if isinstance(inner, AudioDiT) else None


def lumina_model_of(model: comfy.model_patcher.ModelPatcher) -> LuminaDiT:
    """The Flag-DiT / Next-DiT inside a MODEL, for the nodes that work with those families only."""
    inner = any_lumina_model_of(model)
    if isinstance(inner, LuminaVideo):
        raise ValueError(
            "this node works with Lumina-T2I / Lumina-Next models; a Lumina-Video MODEL goes straight to the Lumina "
            "Flow Sampler (with Lumina-Video Settings for motion and the multi-scale schedule)"
        )
    return inner


def patch_of(model: comfy.model_patcher.ModelPatcher) -> LuminaPatch:
    return model.model_options.get("transformer_options", {}).get(PATCH_KEY) or LuminaPatch()


def with_patch(model: comfy.model_patcher.ModelPatcher, **changes) -> comfy.model_patcher.ModelPatcher:
    """A clone whose LuminaPatch has `changes`; the input MODEL is left untouched."""
    clone = model.clone()
    options = clone.model_options.get("transformer_options", {})
    patch = replace(patch_of(model), **changes)
    clone.model_options = {**clone.model_options, "transformer_options": {**options, PATCH_KEY: patch}}
    return clone


def with_sampling_shift(model: comfy.model_patcher.ModelPatcher, shift: float) -> comfy.model_patcher.ModelPatcher:
    """A clone whose core-sampler schedule uses this time shift."""
    clone = model.clone()
    clone.add_object_patch("model_sampling", LuminaFlowSampling(shift))
    return clone


def official_cfg_function(args: dict) -> torch.Tensor:
    """sampler_cfg_function giving core samplers the official CFG (channels 0–2 guided, the rest
    conditional). The rule is per channel and affine, so it applies to denoised predictions as to
    velocities; ComfyUI expects the result as input − denoised."""
    return args["input"] - official_cfg(args["cond_denoised"], args["uncond_denoised"], args["cond_scale"])


def with_official_cfg(model: comfy.model_patcher.ModelPatcher) -> comfy.model_patcher.ModelPatcher:
    clone = model.clone()
    clone.set_model_sampler_cfg_function(official_cfg_function)
    return clone


def load_to_device(model: comfy.model_patcher.ModelPatcher) -> torch.device:
    """Let ComfyUI's memory manager place the model; returns the device it runs on."""
    comfy.model_management.load_models_gpu([model])
    return model.load_device


def preview_frame(latent: torch.Tensor) -> torch.Tensor:
    """ComfyUI's previewers take (B, C, h, w): a video latent (B, C, F, h, w) shows its middle frame."""
    return latent[:, :, latent.shape[2] // 2] if latent.ndim == 5 else latent


def image_only(shape, where: str) -> None:
    """Core samplers drive image latents only: a video latent is refused naming the Flow Sampler."""
    if len(shape) == 5:
        raise ValueError(
            f"{where}: this latent has {shape[2]} frames (a video latent); ComfyUI's core samplers (KSampler, "
            "SamplerCustom) take image latents with a Lumina model; sample video latents with the Lumina Flow Sampler"
        )


def preview_callback(model: comfy.model_patcher.ModelPatcher, steps: int):
    """Progress bar, latent previews and interrupt for our own step loop."""
    import latent_preview  # ComfyUI's top-level module

    preview = latent_preview.prepare_callback(model, steps)

    def callback(info) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        x0 = info.denoised if info.denoised is not None else info.x
        preview(info.step - 1, preview_frame(x0), preview_frame(info.x), info.total)

    return callback


class _ModuleHolder(torch.nn.Module):
    """A plain container for a transformers or diffusers model: newer ModelPatchers assign
    attributes such as `device` on the module they manage, a read-only property of both."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model


def text_encoder_patcher(module: torch.nn.Module, on_cpu: bool = False) -> comfy.model_patcher.ModelPatcher:
    load_device = torch.device("cpu") if on_cpu else comfy.model_management.text_encoder_device()
    return comfy.model_patcher.ModelPatcher(
        _ModuleHolder(module), load_device=load_device,
        offload_device=comfy.model_management.text_encoder_offload_device(),
    )


def vae_devices() -> tuple[torch.device, torch.device]:
    """(where ComfyUI runs VAEs, where it keeps them when idle)."""
    return comfy.model_management.vae_device(), comfy.model_management.vae_offload_device()


def vae_patcher(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """A VAE that ComfyUI's memory manager loads and offloads like its own."""
    load_device, offload_device = vae_devices()
    return comfy.model_patcher.ModelPatcher(_ModuleHolder(module), load_device=load_device, offload_device=offload_device)


def unet_dtype_for(choice: str) -> torch.dtype:
    """Weight dtype: explicit choices as given; auto is bf16 on CPUs that multiply bf16 natively
    (avx512_bf16 / AMX) and fp32 on other CPUs (lumina.precision), bf16 on GPUs that run it well,
    fp16 on the others."""
    fixed = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    device = comfy.model_management.get_torch_device()
    if choice == "fp16" and device.type == "cpu":
        raise ValueError("fp16 weights are for GPUs: on a CPU they run hundreds of times slower; choose bf16 or fp32")
    if choice in fixed:
        return fixed[choice]
    if device.type == "cpu":
        return auto_dtype(device)
    return torch.bfloat16 if comfy.model_management.should_use_bf16(device) else torch.float16
