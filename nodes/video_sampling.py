"""Lumina-Video in the Lumina Flow Sampler: its settings node and the sampler's Lumina-Video path.

The Flow Sampler's own widgets keep their meaning for Lumina-Video — seed, steps (grid points),
schedule and shift, solver (the official one is euler), cfg (the guidance scale), denoise /
start_time (video-to-video) — and the Lumina-Video Settings node adds what only this family has:
the motion scores, when guidance stops, the renormalisation, and the patch-size schedule
(multi-scale sampling). Without a settings node the f24F96R960 config's values apply.
"""

from __future__ import annotations

from ..lumina.editing import ImageStart
from ..lumina.model import ForwardOptions, LuminaVideo
from ..lumina.sampling_settings import SamplingSettings
from ..lumina.video_sampling import (
    SAMPLE_CONFIGS, VideoSampleSettings, format_schedule, parse_schedule, sample_video, scaled_cfg, video_sample_settings,
)
from . import bridge
from .loaders import CATEGORY
from .regions import split_regions, caption_of

DEFAULT_CONFIG = "f24F96R960"
SETTINGS_TYPE = "LUMINA_VIDEO_SETTINGS"


def _official_values(name: str) -> str:
    s = SAMPLE_CONFIGS[name]
    cfg = s.cfg if isinstance(s.cfg, (int, float)) else s.cfg[0]
    return f"{name}: steps {s.steps}, shift {s.time_shift:g}, cfg {cfg:g}"


class LuminaVideoSettings:
    """Lumina-Video's own sampling settings for the Lumina Flow Sampler."""

    @classmethod
    def INPUT_TYPES(cls):
        base = SAMPLE_CONFIGS[DEFAULT_CONFIG]
        return {
            "required": {
                "preset": (["custom"] + list(SAMPLE_CONFIGS), {"default": DEFAULT_CONFIG, "tooltip": (
                    "an official sample config: it sets every value below (they are read only with 'custom'). "
                    "Set the Flow Sampler to its steps / shift / cfg as well (euler): "
                    + "; ".join(_official_values(n) for n in SAMPLE_CONFIGS))}),
                "patch_schedule": ("STRING", {"default": format_schedule(base.patch_comb), "tooltip": (
                    "patch sizes over time, '<temporal>x<spatial>' from t = 0 then 'time: size' switches, e.g. "
                    "'2x4; 0.03: 2x2; 0.125: 1x2' (multi-scale: coarse patches early, ~2× faster); '1x2' = full detail")}),
                "motion_score": ("FLOAT", {"default": float(base.motion), "min": -1.0, "max": 100.0, "step": 0.1,
                                 "tooltip": "how much motion to ask for (official 6); negative: no motion conditioning"}),
                "negative_motion": ("FLOAT", {"default": 2.0, "min": -1.0, "max": 100.0, "step": 0.1,
                                    "tooltip": "the negative caption's motion score until negative_motion_until, then "
                                               "motion_score (official: 2 until t = 0.05)"}),
                "negative_motion_until": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 1.0, "step": 0.005}),
                "cfg_until": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.005,
                              "tooltip": "guidance (the Flow Sampler's cfg) runs until this time, then stops "
                                         "(official 0.2 at R960, 0.4 at R512; 1 = to the end)"}),
                "renorm": ("FLOAT", {"default": float(base.renorm), "min": -1.0, "max": 100.0, "step": 0.1,
                           "tooltip": "cap the guided velocity's norm at renorm × the conditional one's; ≤ 0: off"}),
            }
        }

    RETURN_TYPES = (SETTINGS_TYPE,)
    FUNCTION = "settings"
    CATEGORY = CATEGORY

    def settings(self, preset: str, patch_schedule: str, motion_score: float, negative_motion: float,
                 negative_motion_until: float, cfg_until: float, renorm: float) -> tuple[VideoSampleSettings]:
        if preset != "custom":
            return (video_sample_settings(preset),)
        until = float(negative_motion_until)
        return (video_sample_settings(
            DEFAULT_CONFIG,
            patch_comb=parse_schedule(patch_schedule),
            motion=float(motion_score),
            neg_motion=(float(negative_motion), (until, float(motion_score))) if until > 0 else float(motion_score),
            cfg=(1.0, (float(cfg_until), 0.0)),  # the scale is the Flow Sampler's cfg (scaled_cfg)
            renorm=float(renorm),
        ),)


def _refuse_image_features(model, positive, latent) -> None:
    """Lumina-Video takes no image-model feature: name the node to bypass instead of ignoring it."""
    patch = bridge.patch_of(model)
    if patch.options is not None or patch.features or patch.wrappers:
        raise ValueError(
            "a Lumina-Video MODEL takes none of the Lumina feature nodes (resolution extrapolation, style-shared "
            "attention, region-adaptive sampling); bypass them between the Model Loader and the Flow Sampler"
        )
    _, regions = split_regions(positive, latent.shape[-2], latent.shape[-1])
    if regions is not None:
        raise ValueError("regional prompts are for Lumina-T2I / Lumina-Next models; encode one prompt for Lumina-Video")


def sample_lumina_video(
    model, video_model: LuminaVideo, positive: list, negative: list, latent_image: dict, seed: int,
    sampling: SamplingSettings, *, denoise: float, start_time: float, normalize_latent: bool,
    video_settings: VideoSampleSettings | None,
) -> dict:
    """The Flow Sampler's Lumina-Video path: LATENT in (VAE space), LATENT out."""
    latent = latent_image["samples"]
    config = video_model.config
    if latent.ndim != 5:
        raise ValueError(
            f"a Lumina-Video model samples video latents (batch, {config.in_channels}, frames, h, w), got shape "
            f"{tuple(latent.shape)}; make it with Lumina Empty Video Latent (model connected) or Lumina Video VAE Encode"
        )
    where = f"the latent {tuple(latent.shape)}"
    config.check_latent(where, latent.shape[1], latent.shape[3], latent.shape[4])
    config.check_frames(where, latent.shape[2])
    if sampling.cfg_mode != "official":
        raise ValueError(
            f"cfg_mode {sampling.cfg_mode!r} is for Lumina-T2I / Lumina-Next; Lumina-Video guides with its own official "
            "rule (every channel, renormalised): set cfg_mode to official"
        )
    _refuse_image_features(model, positive, latent)
    settings = (video_settings or video_sample_settings(DEFAULT_CONFIG)).with_(
        cfg=scaled_cfg((video_settings or SAMPLE_CONFIGS[DEFAULT_CONFIG]).cfg, sampling.cfg)
    )
    settings.check_model(config)
    grid = sampling.time_grid()  # steps, schedule and shift of the Flow Sampler (shift: the official formula)

    bridge.load_to_device(model)
    latent_format = model.model.latent_format
    start = None
    if start_time >= 0.0 or denoise < 1.0:
        timing = dict(start_time=start_time) if start_time >= 0.0 else dict(strength=denoise)
        start = ImageStart(latent_format.process_in(latent.float()), normalize=normalize_latent, **timing)
    options = bridge.patch_of(model).forward_options(ForwardOptions(), extra=(bridge.INTERRUPT_CHECK,))
    out = sample_video(
        video_model, caption_of(positive[0]), caption_of(negative[0]), tuple(latent.shape), settings, seed=seed,
        start=start, solver=sampling.solver, grid=grid, options=options,
        callback=bridge.preview_callback(model, len(grid) - 1),
    )
    return {**latent_image, "samples": latent_format.process_out(out.cpu())}
