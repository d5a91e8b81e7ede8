"""Lumina-T2Music / Lumina-T2Audio in the Lumina Flow Sampler: `lumina.sample_audio` behind the
sampler's widgets.

What the widgets mean here: seed (the official noise: item 0 = torch.randn after manual_seed),
steps (time-grid points, like the official `linspace(0, 1, steps)`: 40 → 39 model calls; with
step_convention 'model steps' one more point), solver (the official is euler), schedule
('uniform' is the official grid, with torchdyn's accumulated times; 'shift' / 'sigmoid' space the
steps like for the image models), cfg (v_u + cfg·(v_c − v_u) over [uncond; cond], 1 = off). The
negative is the empty caption from Lumina Audio Text Encode: real guidance, where the official
demos' CFG is a no-op. Official: music 40 steps cfg 5, audio 100 steps cfg 3, euler, uniform.
"""

from __future__ import annotations

from ..lumina.audio_checkpoints import KIND_NAMES
from ..lumina.audio_sampling import cfm_time_grid, sample_audio
from ..lumina.model.audio_dit import AudioDiT
from ..lumina.model.options import DEFAULT_OPTIONS
from ..lumina.sampling_settings import SamplingSettings
from . import bridge
from .audio import KIND_KEY
from .regions import caption_of


def _audio_grid(sampling: SamplingSettings):
    """The official CFM grid for the uniform schedule; any other schedule as for the image models."""
    if sampling.schedule == "uniform":
        points = sampling.steps if sampling.step_convention == "grid_points" else sampling.steps + 1
        return cfm_time_grid(points)
    return sampling.time_grid()


def _check_caption(entries: list, which: str, kind: str | None) -> None:
    if not entries:
        raise ValueError(f"{which} conditioning is empty; connect a Lumina Audio Text Encode output")
    if len(entries) > 1 or any(k in entries[0][1] for k in ("area", "mask")):
        raise ValueError(f"{which}: Lumina-T2Music / T2Audio take one caption; regional or combined conditioning is "
                         "for the image models")
    made_by = entries[0][1].get(KIND_KEY)
    if made_by is None:
        raise ValueError(
            f"{which} conditioning was not made by Lumina Audio Text Encode (an image model's text encoder?); encode "
            "the caption with the text_encoder output of the Lumina Audio Model Loader"
        )
    if kind is not None and made_by != kind:
        raise ValueError(f"{which} conditioning comes from the {KIND_NAMES[made_by]} text encoder but the MODEL is "
                         f"{KIND_NAMES[kind]}; use the text_encoder of the same Lumina Audio Model Loader")


def sample_lumina_audio(
    model, audio_model: AudioDiT, positive: list, negative: list, latent_image: dict, seed: int,
    sampling: SamplingSettings, *, denoise: float, start_time: float, video_settings,
) -> dict:
    """The Flow Sampler's audio path: an audio LATENT (batch, 20, frames) in, the sampled one out."""
    latent = latent_image["samples"]
    c = audio_model.config
    if latent.ndim != 3 or latent.shape[1] != c.in_channels:
        raise ValueError(
            f"a Lumina-T2Music / T2Audio model samples audio latents (batch, {c.in_channels}, frames), got shape "
            f"{tuple(latent.shape)}; make it with Lumina Empty Audio Latent"
        )
    if video_settings is not None:
        raise ValueError("Lumina-Video Settings apply to Lumina-Video models only; disconnect it for this model")
    if denoise < 1.0 or start_time >= 0.0:
        raise ValueError("Lumina-T2Music / T2Audio sampling starts from noise: set denoise to 1 and start_time to -1")
    if sampling.cfg_mode != "official":
        raise ValueError(f"cfg_mode {sampling.cfg_mode!r} is for Lumina-T2I / Lumina-Next; the audio models guide every "
                         "channel (official CFM rule): set cfg_mode to official")
    patch = bridge.patch_of(model)
    if patch.options is not None or patch.features or patch.wrappers:
        raise ValueError("a Lumina-T2Music / T2Audio MODEL takes none of the Lumina feature nodes (extrapolation, "
                         "style-shared attention, region-adaptive sampling); bypass them")
    kind = getattr(model.model, "audio_kind", None)
    _check_caption(positive, "positive", kind)
    _check_caption(negative, "negative", kind)
    cond, uncond = caption_of(positive[0]), caption_of(negative[0])
    if cond.cap_feats.shape[-1] != c.cap_feat_dim:
        raise ValueError(f"the captions are {cond.cap_feats.shape[-1]} wide but this model reads {c.cap_feat_dim}-wide "
                         "ones; use the text encoders of its own release")
    grid = _audio_grid(sampling)

    bridge.load_to_device(model)
    options = patch.forward_options(DEFAULT_OPTIONS, extra=(bridge.INTERRUPT_CHECK,))
    out = sample_audio(
        audio_model, cond.cap_feats, uncond.cap_feats, frames=int(latent.shape[2]), batch=int(latent.shape[0]),
        cfg=float(sampling.cfg), seed=seed, solver=sampling.solver, grid=grid, options=options,
        callback=bridge.preview_callback(model, len(grid) - 1),
    )
    return {**latent_image, "samples": out.cpu()}
