"""Lumina-T2Music and Lumina-T2Audio as ComfyUI nodes: the released folder → MODEL (sampled by the
Lumina Flow Sampler, see audio_sampling.py), caption encoders, an empty audio latent sized in
seconds, and the decoder (mel autoencoder + BigVGAN) → core AUDIO
`{"waveform": (batch, channels, samples) float in [-1, 1], "sample_rate": int}`, which core Save
Audio / Preview Audio take where the ComfyUI has them (they need torchaudio) and Lumina Save Audio
writes everywhere.

Latent space: an audio LATENT (batch, 20, frames) holds what `lumina.sample_audio` returns (the
DiT's scaled space); Lumina Audio Decode gives it to `lumina.vocoder.AudioDecoder` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..lumina.audio_checkpoints import KIND_NAMES, find_audio_release, load_audio_model
from ..lumina.audio_sampling import AUDIO_SAMPLE_DEFAULTS, latent_frames_for_seconds
from ..lumina.audio_text import AudioTextEncoder, MusicTextEncoder, load_audio_text_encoder, load_music_text_encoder
from ..lumina.conditioning import Conditioning
from ..lumina.vocoder import AudioDecoder, load_audio_decoder
from . import bridge, paths
from .loaders import CATEGORY, COMPILE_CHOICES, COMPILE_TOOLTIP, check_compile_choice, speed_up

TEXT_TYPE = "LUMINA_AUDIO_TEXT_ENCODER"
DECODER_TYPE = "LUMINA_AUDIO_DECODER"
KIND_KEY = "lumina_audio"  # on CONDITIONING entries: which model's text stack made them ('music' / 'audio')
MODEL_TYPES = {"auto": None, "Lumina-T2Music": "music", "Lumina-T2Audio": "audio"}
DTYPES = ["auto", "fp32", "bf16", "fp16"]
NONE = "none"
MAX_SECONDS = 3600.0  # the widget's bound; the model's positions set the real one (checked in the node)


def _defaults_text() -> str:
    m, a = AUDIO_SAMPLE_DEFAULTS["music"], AUDIO_SAMPLE_DEFAULTS["audio"]
    return f"official: Lumina-T2Music {m.steps} steps cfg {m.cfg:g}, Lumina-T2Audio {a.steps} steps cfg {a.cfg:g}"


@dataclass
class LuminaAudioTextHandle:
    """What flows from the loader to Lumina Audio Text Encode: the model's caption encoders."""

    kind: str  # "music" | "audio"
    encoder: MusicTextEncoder | AudioTextEncoder
    patcher: object  # comfy ModelPatcher around the encoder modules

    def encode(self, captions: list[str], structured: list[str]) -> Conditioning:
        device = bridge.load_to_device(self.patcher)
        if self.kind == "music":
            return self.encoder.encode(captions, device=device)
        return self.encoder.encode(captions, structured, device=device)


def _text_modules(encoder: MusicTextEncoder | AudioTextEncoder) -> torch.nn.Module:
    if isinstance(encoder, MusicTextEncoder):
        return torch.nn.ModuleList([encoder.t5.model])
    return torch.nn.ModuleList([encoder.clap.model, encoder.projection, encoder.t5.model])


def _kind_of(model) -> str | None:
    return getattr(model.model, "audio_kind", None)


def audio_model_of(model, node: str):
    """(the AudioDiT, the MODEL's base model) of a Lumina Audio Model Loader MODEL, else a clear error."""
    inner = bridge.audio_model_of(model)
    if inner is None:
        raise ValueError(f"{node}: connect the MODEL of the Lumina Audio Model Loader (this MODEL is not Lumina-T2Music / "
                         "Lumina-T2Audio)")
    return inner, model.model


class LuminaAudioModelLoader:
    """A released Lumina-T2Music / Lumina-T2Audio folder, as it is downloaded: the DiT as a MODEL, its
    caption encoders (with the checkpoint's fine-tuned text weights) and its decoder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_folder": (paths.audio_model_names(), {"tooltip": (
                    "a released folder in models/lumina: Lumina-T2Music (music_generation/119.ckpt, maa2/maa2.ckpt, "
                    "bigvnat/) or Lumina-T2Audio (audio_generation/324.ckpt, maa2/, bigvgan/, CLAP/CLAP_weights_2022.pth)")}),
                "model_type": (list(MODEL_TYPES), {"default": "auto", "tooltip": "auto: told by the folder; naming one "
                               "refuses a folder of the other"}),
                "t5_encoder": (paths.text_encoder_names_of(("t5",)), {"tooltip": (
                    "a T5 folder in models/text_encoders: google/flan-t5-large for Lumina-T2Music, google/t5-v1_1-large "
                    "for Lumina-T2Audio (its structured captions)")}),
                "bert_encoder": ([NONE] + paths.text_encoder_names_of(("bert",)), {"default": NONE, "tooltip": (
                    "Lumina-T2Audio only: the bert-base-uncased folder (CLAP's text tower; its weights come from "
                    "CLAP_weights_2022.pth and the checkpoint); none for Lumina-T2Music")}),
                "weight_dtype": (DTYPES, {"default": "auto", "tooltip": "the DiT's weights: auto is bf16 on GPUs and "
                                 "on CPUs with native bf16, fp32 on other CPUs; the decoder stays fp32"}),
            },
            "optional": {
                "compile": (COMPILE_CHOICES, {"default": "off", "tooltip": COMPILE_TOOLTIP.replace("image size", "length")}),
            },
        }

    RETURN_TYPES = ("MODEL", TEXT_TYPE, DECODER_TYPE)
    RETURN_NAMES = ("MODEL", "text_encoder", "decoder")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model_folder: str, model_type: str, t5_encoder: str, bert_encoder: str = NONE,
             weight_dtype: str = "auto", compile: str = "off"):
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r}: choose one of {', '.join(MODEL_TYPES)}")
        if weight_dtype not in DTYPES:
            raise ValueError(f"weight_dtype {weight_dtype!r}: choose one of {', '.join(DTYPES)}")
        release = find_audio_release(paths.audio_model_path(model_folder), MODEL_TYPES[model_type])
        kind = release.kind
        if kind == "audio" and bert_encoder == NONE:
            raise ValueError("Lumina-T2Audio needs bert_encoder: the bert-base-uncased folder in models/text_encoders "
                             "(CLAP's text tower)")
        if kind == "music" and bert_encoder != NONE:
            raise ValueError(f"bert_encoder {bert_encoder!r} is for Lumina-T2Audio; set it to none for Lumina-T2Music "
                             "(its captions go through FLAN-T5 only)")
        dtype = bridge.unet_dtype_for(weight_dtype)
        check_compile_choice(compile, dtype)
        dit, ckpt = load_audio_model(release.dit, kind=kind, dtype=dtype)
        decoder = load_audio_decoder(ckpt, release.vocoder_dir, release.vae)
        text_dtype = torch.float32 if dtype == torch.float32 else torch.bfloat16  # T5 overflows in fp16
        t5_path = paths.text_encoder_path(t5_encoder)
        if kind == "music":
            encoder = load_music_text_encoder(t5_path, checkpoint=ckpt, dtype=text_dtype)
        else:
            encoder = load_audio_text_encoder(paths.text_encoder_path(bert_encoder), t5_path, release.clap,
                                              checkpoint=ckpt, dtype=text_dtype)
        del ckpt  # the checkpoint's text and autoencoder tensors now live in the encoders and the decoder
        dit = speed_up(dit, compile)  # a clone (same weights) where compile asks for one
        model = bridge.make_model_patcher(dit)
        model.model.audio_kind = kind
        model.model.sample_rate = decoder.sample_rate
        model.model.samples_per_latent_frame = decoder.samples_per_latent_frame
        decoder.comfy_patcher = bridge.vae_patcher(torch.nn.ModuleList([decoder.vae, decoder.vocoder]))
        handle = LuminaAudioTextHandle(kind, encoder, bridge.text_encoder_patcher(_text_modules(encoder)))
        print(f"[Lumina] loaded {KIND_NAMES[kind]} from {release.root} ({dit.config.n_layers} blocks, dim "
              f"{dit.config.dim}, {dtype}; {decoder.sample_rate} Hz, at most "
              f"{dit.config.max_len * decoder.samples_per_latent_frame / decoder.sample_rate:.1f} s)")
        return (model, handle, decoder)


class LuminaAudioTextEncode:
    """Captions for Lumina-T2Music (the prompt, FLAN-T5) or Lumina-T2Audio (the caption through CLAP and
    the structured caption through T5); the negative is the empty caption the models were trained to
    drop to (real CFG: the official demos' CFG is a no-op, their unconditional becomes the prompt)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (TEXT_TYPE,),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "what to hear, e.g. 'an upbeat jazz "
                           "piano melody with soft drums' (music) or 'a dog barks in the distance' (audio)"}),
                "structured_caption": ("STRING", {"multiline": True, "default": "", "tooltip": (
                    "Lumina-T2Audio only (leave empty for music): the caption as '<event& all>' pairs, e.g. "
                    "'<dog barking& all>@<wind blowing& all>' — what the official demo asks a chat model to write")}),
            },
            "optional": {
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": (
                    "empty (default) = the empty caption, the unconditional the models were trained with")}),
            },
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, text_encoder, prompt: str, structured_caption: str, negative_prompt: str = ""):
        if not isinstance(text_encoder, LuminaAudioTextHandle):
            raise ValueError("Lumina Audio Text Encode: connect the text_encoder output of the Lumina Audio Model Loader "
                             f"(got {type(text_encoder).__name__})")
        if text_encoder.kind == "music" and structured_caption.strip():
            raise ValueError("structured_caption is for Lumina-T2Audio; leave it empty for Lumina-T2Music (its prompt "
                             "is the only caption)")
        enc = text_encoder.encode([prompt, negative_prompt], [structured_caption, ""])
        feats, mask = enc.cap_feats.float().cpu(), enc.cap_mask.cpu()
        tag = {KIND_KEY: text_encoder.kind}
        return ([[feats[:1], {"attention_mask": mask[:1], **tag}]], [[feats[1:], {"attention_mask": mask[1:], **tag}]])


class LuminaEmptyAudioLatent:
    """An empty (batch, 20, frames) audio LATENT of `seconds` for the Lumina Flow Sampler (rounded down
    to whole latent frames: 10 s → 312 with the released models)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "the Lumina Audio Model Loader's MODEL: its frame rate and its longest audio"}),
                "seconds": ("FLOAT", {"default": 10.0, "min": 0.0, "max": MAX_SECONDS, "step": 0.1, "tooltip": (
                    "audio length (official 10 s); at most what the model's 1000 positions allow (about 32 s)")}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(self, model, seconds: float, batch_size: int):
        dit, base = audio_model_of(model, "Lumina Empty Audio Latent")
        frames = latent_frames_for_seconds(float(seconds), sample_rate=base.sample_rate, hop=base.samples_per_latent_frame,
                                           downsample=1, max_len=dit.config.max_len)
        return ({"samples": torch.zeros(int(batch_size), dit.config.in_channels, frames)},)


class LuminaAudioDecode:
    """An audio LATENT → AUDIO: the mel autoencoder, then the BigVGAN vocoder (mono, the model's rate)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "decoder": (DECODER_TYPE,)}}

    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, samples: dict, decoder: AudioDecoder):
        if not isinstance(decoder, AudioDecoder):
            raise ValueError("Lumina Audio Decode: connect the decoder output of the Lumina Audio Model Loader "
                             f"(got {type(decoder).__name__})")
        latent = samples["samples"] if isinstance(samples, dict) else samples
        if not isinstance(latent, torch.Tensor):
            raise ValueError(f"Lumina Audio Decode: samples must be a LATENT, got {type(latent).__name__}")
        channels = decoder.vae.config.embed_dim
        if latent.ndim != 3 or latent.shape[1] != channels:
            kind = {4: " (an image latent)", 5: " (a video latent)"}.get(latent.ndim, "")
            raise ValueError(
                f"Lumina Audio Decode: the LATENT has shape {tuple(latent.shape)}{kind}; it decodes audio latents "
                f"(batch, {channels}, frames) from Lumina Empty Audio Latent + Lumina Flow Sampler"
            )
        patcher = getattr(decoder, "comfy_patcher", None)
        if patcher is not None:
            bridge.load_to_device(patcher)
        waveform = decoder(latent.float())
        return ({"waveform": waveform.float().cpu(), "sample_rate": int(decoder.sample_rate)},)
