"""Sampling nodes: the exact official sampler, and a schedule/sampler pair for core SamplerCustom."""

from __future__ import annotations

import comfy.samplers

from ..lumina import flow
from ..lumina.extrapolation import EXTRAPOLATION_MODES, extrapolation_options
from ..lumina.flow import SCHEDULES, time_grid
from ..lumina.guidance import CFG_MODES
from ..lumina.editing import ImageStart, trim_grid
from ..lumina.sampling import sample
from ..lumina.sampling_settings import SamplingSettings
from ..lumina.model import LuminaVideo
from ..lumina.solvers import SOLVERS
from . import bridge
from .video_sampling import SETTINGS_TYPE, sample_lumina_video
from .audio_sampling import sample_lumina_audio
from .loaders import CATEGORY
from .regions import caption_of, split_regions

CONVENTIONS = {"grid points (official)": "grid_points", "model steps": "model_steps"}


class LuminaFlowSampler:
    """Solves the flow ODE like the official demos: same grid, solver, CFG and seed → same latent.
    Video latents (batch, C, frames, h, w) pass to `lumina.sample` as they are; previews show the
    middle frame."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "seed": ("INT", {"default": 1, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 1000,
                          "tooltip": "official: 30 (Lumina-T2I / Next); Lumina-T2Music 40 and Lumina-T2Audio 100 "
                                     "(euler, uniform schedule)"}),
                "step_convention": (list(CONVENTIONS), {"default": "grid points (official)"}),
                "solver": (list(SOLVERS), {"default": "midpoint"}),
                "schedule": (list(SCHEDULES), {"default": "shift"}),
                "shift": ("FLOAT", {"default": 4.0, "min": 0.1, "max": 100.0, "step": 0.1}),
                "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1,
                        "tooltip": "official: 4 (Lumina-T2I / Next); Lumina-T2Music 5, Lumina-T2Audio 3 (real CFG "
                                   "against the empty caption; the official audio demos' CFG is a no-op)"}),
                "cfg_mode": (list(CFG_MODES), {"default": "official"}),
                "extrapolation": (list(EXTRAPOLATION_MODES), {"default": "auto",
                                  "tooltip": "auto: the official demo's RoPE scaling and proportional attention for the image size; "
                                             "a model patched by a Lumina extrapolation node keeps its own settings"}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                            "tooltip": "below 1: start from the latent (official img2img strength)"}),
            },
            "optional": {
                "start_time": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.01,
                               "tooltip": "0..1: start from the latent at time λ (Lumina-T2X editing, paper default 0.2); -1: use denoise"}),
                "normalize_latent": ("BOOLEAN", {"default": False,
                                     "tooltip": "channel-wise latent normalisation before editing (style edits)"}),
                "sigmoid_scale": ("FLOAT", {"default": 4.0, "min": 0.1, "max": 50.0, "step": 0.1,
                                  "tooltip": "sigmoid schedule only: larger = steps denser at both ends (our parameterisation)"}),
                "video_settings": (SETTINGS_TYPE, {"tooltip": "Lumina-Video models: motion, guidance end, renorm and the "
                                                              "multi-scale patch schedule (Lumina-Video Settings)"}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model, positive, negative, latent_image, seed, steps, step_convention, solver, schedule, shift,
               cfg, cfg_mode, extrapolation, denoise, start_time=-1.0, normalize_latent=False, sigmoid_scale=4.0,
               video_settings=None):
        settings = SamplingSettings(
            steps=steps, solver=solver, schedule=schedule, shift=shift, sigmoid_scale=sigmoid_scale,
            step_convention=CONVENTIONS[step_convention], cfg=cfg, cfg_mode=cfg_mode,
        )
        if not negative:
            raise ValueError("negative conditioning is empty; connect a Lumina Text Encode output")
        audio_model = bridge.audio_model_of(model)
        if audio_model is not None:
            return (sample_lumina_audio(model, audio_model, positive, negative, latent_image, seed, settings,
                                        denoise=denoise, start_time=start_time, video_settings=video_settings),)
        if latent_image["samples"].ndim == 3:
            raise ValueError(
                f"latent of shape {tuple(latent_image['samples'].shape)} is not an image latent (batch, 4, h, w) or a "
                "video latent: it is an audio latent; sample it with a Lumina Audio Model Loader MODEL (Lumina-T2Music / "
                "Lumina-T2Audio), or connect an image / video latent"
            )
        inner = bridge.any_lumina_model_of(model)
        if isinstance(inner, LuminaVideo):
            return (sample_lumina_video(
                model, inner, positive, negative, latent_image, seed, settings, denoise=denoise, start_time=start_time,
                normalize_latent=normalize_latent, video_settings=video_settings,
            ),)
        if video_settings is not None:
            raise ValueError("Lumina-Video Settings apply to Lumina-Video models only; disconnect it for this model")
        lumina_model = bridge.lumina_model_of(model)
        latent = latent_image["samples"]
        if latent.ndim not in (4, 5):
            raise ValueError(
                f"latent of shape {tuple(latent.shape)} is not an image latent (batch, 4, h, w) or a video latent "
                "(batch, 4, frames, h, w); connect a Lumina Empty Latent, Empty Video Latent or VAE Encode output"
            )
        if latent.ndim == 5 and bridge.patch_of(model).wrappers:
            raise ValueError(
                f"Lumina Region-Adaptive Sampling runs on image latents only, and this latent has {latent.shape[2]} "
                "frames; bypass the Region-Adaptive node for video (or sample an image latent)"
            )
        factor = lumina_model.config.vae_downsample
        height, width = latent.shape[-2] * factor, latent.shape[-1] * factor  # (batch, C, [frames,] h, w)
        cond, regions = split_regions(positive, latent.shape[-2], latent.shape[-1], factor)
        patch = bridge.patch_of(model)
        options = patch.forward_options(
            extrapolation_options(lumina_model.config, width, height, extrapolation),
            extra=(bridge.INTERRUPT_CHECK,) + (() if regions is None else (regions,)),
        )

        bridge.load_to_device(model)
        latent_format = model.model.latent_format
        start = None
        if start_time >= 0.0 or denoise < 1.0:
            image = latent_format.process_in(latent.float())
            timing = dict(start_time=start_time) if start_time >= 0.0 else dict(strength=denoise)
            start = ImageStart(image, normalize=normalize_latent, **timing)
        out = sample(
            lumina_model, cond, caption_of(negative[0]), None if start else latent.shape, settings, start=start,
            seed=seed, options=options, wrappers=patch.wrappers,  # sample() draws the official noise after its memory check
            callback=bridge.preview_callback(model, len(settings.time_grid()) - 1),  # solver steps, for the progress bar
        )
        return ({**latent_image, "samples": latent_format.process_out(out.cpu())},)


class LuminaScheduler:
    """SIGMAS of the official time grid (sigma = 1 − t) for core SamplerCustom: with the core
    'euler' sampler and a Lumina Official CFG model this reproduces the official Euler sampler."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "steps": ("INT", {"default": 30, "min": 1, "max": 1000}),
                "step_convention": (list(CONVENTIONS), {"default": "grid points (official)"}),
                "schedule": (list(SCHEDULES), {"default": "shift"}),
                "shift": ("FLOAT", {"default": 4.0, "min": 0.1, "max": 100.0, "step": 0.1}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
            "optional": {
                "sigmoid_scale": ("FLOAT", {"default": 4.0, "min": 0.1, "max": 50.0, "step": 0.1,
                                  "tooltip": "sigmoid schedule only: larger = steps denser at both ends (our parameterisation)"}),
            },
        }

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = CATEGORY

    def get_sigmas(self, steps, step_convention, schedule, shift, denoise, sigmoid_scale=4.0):
        grid = time_grid(steps, schedule, shift, convention=CONVENTIONS[step_convention], sigmoid_scale=sigmoid_scale)
        if denoise < 1.0:
            grid = trim_grid(grid, denoise)
        return (flow.sigma_from_t(grid).float(),)


def _midpoint_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """The official midpoint rule as a k-diffusion-style sampler over ComfyUI's denoised model.

    Both evaluations of a step happen at σ > 0, where the velocity follows exactly from the
    denoised prediction (denoised = x + σ·v, lumina.flow), so no division by σ = 0 ever occurs.
    """
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s0, s1 = sigmas[i], sigmas[i + 1]
        t0, t1 = flow.t_from_sigma(s0), flow.t_from_sigma(s1)
        half = 0.5 * (t1 - t0)
        d0 = model(x, s0 * s_in, **extra_args)
        v0 = (d0 - x) / s0
        x_mid = x + v0 * half
        s_mid = flow.sigma_from_t(t0 + half)
        v_mid = (model(x_mid, s_mid * s_in, **extra_args) - x_mid) / s_mid
        x = x + (t1 - t0) * v_mid
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s0, "sigma_hat": s0, "denoised": d0})
    return x


class LuminaMidpointSampler:
    """SAMPLER for core SamplerCustom: the official midpoint solver (core has Euler already)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = CATEGORY

    def get_sampler(self):
        return (comfy.samplers.KSAMPLER(_midpoint_sampler),)


class LuminaOfficialCFG:
    """Patches a Lumina MODEL so core samplers apply the official CFG (channels 0–2 guided)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model):
        bridge.lumina_model_of(model)
        return (bridge.with_official_cfg(model),)
