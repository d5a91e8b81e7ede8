"""Loader nodes: Lumina checkpoints (any released format) and local text-encoder folders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..lumina.checkpoints import load_model
from ..lumina.compile import compile_model
from ..lumina.prepack import prepack_model
from ..lumina.config import FAMILY_NAMES
from ..lumina.fp8 import FP8_DTYPES, store_fp8
from ..lumina.precision import auto_dtype
from ..lumina.text_encoders import TextEncoder, load_text_encoder
from . import bridge, paths

CATEGORY = "Lumina"
DTYPES = ["auto", "bf16", "fp32", "fp16", "fp8_e4m3fn"]
FP8_TOOLTIP = "fp8_e4m3fn: the blocks' linear weights stored in fp8 (half of bf16), computed in auto's dtype"
COMPILE_TOOLTIP = ("blocks: the transformer blocks run through torch.compile (inductor), compiled once at the first step "
                   "of each image size, then faster; needs a C++ compiler on CPU (Triton on GPU). cpu prepack: for fp32 "
                   "models run on the CPU, MKL packs each linear weight once instead of at every call (forwards 3-10% "
                   "faster here; the packed copies take 1.5-5x the weights' memory); blocks + cpu prepack: both, the packed "
                   "GEMMs inside the compiled blocks")
COMPILE_CHOICES = ["off", "blocks", "cpu prepack", "blocks + cpu prepack"]


def check_compile_choice(compile: str, dtype: torch.dtype, fp8: bool = False) -> None:
    """Refuse a `compile` choice the loader cannot honour, before any weight is read."""
    if compile not in COMPILE_CHOICES:
        raise ValueError(f"compile {compile!r}: choose one of {', '.join(COMPILE_CHOICES)}")
    if "cpu prepack" in compile:
        device = bridge.load_device_type()
        if device != "cpu":
            raise ValueError(f"compile {compile!r} is for models run on the CPU; this ComfyUI runs models on {device}: "
                             "choose off or blocks")
        if dtype != torch.float32 or fp8:
            raise ValueError(f"compile {compile!r} packs fp32 weights: set weight_dtype to fp32 (this load gives "
                             f"{'fp8 blocks' if fp8 else str(dtype).replace('torch.', '')})")


def speed_up(model, compile: str):
    """The loaders' (checked) `compile` choice applied: the model itself, lumina.compile_model's
    clone, or lumina.prepack_model's (clones share the weights)."""
    if compile in ("blocks", "blocks + cpu prepack"):
        print("[Lumina] blocks compiled with torch.compile at the first sampling step of each size (seconds to minutes)")
        return compile_model(model, prepack=compile == "blocks + cpu prepack")
    if compile == "cpu prepack":
        print("[Lumina] fp32 linear weights packed by MKL at the first sampling step (held beside the weights)")
        return prepack_model(model)
    return model


class LuminaModelLoader:
    """Loads Flag-DiT (Lumina-T2I) or Next-DiT (Lumina-Next) weights as a standard MODEL."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (paths.checkpoint_names(),),
                "weight_dtype": (DTYPES, {"default": "auto", "tooltip": "auto: bf16 on GPUs and on CPUs with native bf16 "
                                                                        "(avx512_bf16 / AMX), fp32 on other CPUs; " + FP8_TOOLTIP}),
            },
            "optional": {
                "ema": ("BOOLEAN", {"default": True, "tooltip": "prefer consolidated_ema.* when the folder has both"}),
                "sampling_shift": ("FLOAT", {"default": bridge.DEFAULT_SHIFT, "min": 0.1, "max": 100.0, "step": 0.1,
                                             "tooltip": "time shift seen by core KSampler schedulers"}),
                "compile": (COMPILE_CHOICES, {"default": "off", "tooltip": COMPILE_TOOLTIP}),
            },
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, ckpt_name: str, weight_dtype: str, ema: bool = True, sampling_shift: float = bridge.DEFAULT_SHIFT,
             compile: str = "off"):
        path = paths.checkpoint_path(ckpt_name)
        fp8 = weight_dtype in FP8_DTYPES
        dtype = bridge.unet_dtype_for("auto" if fp8 else weight_dtype)
        check_compile_choice(compile, dtype, fp8)
        # cast tensor by tensor while reading (fp8: the blocks' linear weights straight into fp8)
        model = load_model(path, dtype=dtype, ema=ema, fp8=weight_dtype if fp8 else None)
        stored = f"{weight_dtype} blocks, compute {dtype}" if fp8 else str(dtype)
        print(f"[Lumina] loaded {FAMILY_NAMES[model.family]} from {path} ({model.config.n_layers} layers, dim {model.config.dim}, {stored})")
        model = speed_up(model, compile)  # the MODEL may hold a clone (same weights)
        return (bridge.make_model_patcher(model, sampling_shift),)


@dataclass
class LuminaTextEncoderHandle:
    """What flows between the text-encoder loader and the encode node."""

    encoder: TextEncoder
    patcher: object  # comfy ModelPatcher around encoder.model

    def encode(self, prompts: list[str]):
        device = bridge.load_to_device(self.patcher)
        return self.encoder.encode(prompts, device=device)


class LuminaTextEncoderLoader:
    """A local Gemma-2B / LLaMA-2-7B (any transformers LM) folder, read like the official code."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (paths.text_encoder_names(),),
                "dtype": (DTYPES, {"default": "auto", "tooltip": FP8_TOOLTIP}),
                "convention": (["auto", "gemma", "llama"], {"default": "auto",
                               "tooltip": "auto: Gemma rules for Next-DiT, LLaMA rules for Flag-DiT, by the folder's model_type"}),
            },
            "optional": {
                "device": (["default", "cpu"], {"default": "default",
                           "tooltip": "cpu keeps the text encoder off the GPU (saves VRAM; encoding is a one-off per prompt)"}),
            },
        }

    RETURN_TYPES = ("LUMINA_TEXT_ENCODER",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, text_encoder: str, dtype: str, convention: str, device: str = "default"):
        path = paths.text_encoder_path(text_encoder)
        chosen = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
        if chosen is None:  # auto (and fp8's compute dtype): the official bf16 on GPUs; on CPUs bf16 where native, else fp32 (never fp16)
            import comfy.model_management as mm

            on_cpu = device == "cpu" or mm.text_encoder_device().type == "cpu"
            chosen = auto_dtype("cpu") if on_cpu else torch.bfloat16
        if device == "cpu" and chosen == torch.float16:
            raise ValueError("fp16 text encoders are for GPUs; with device cpu choose bf16 or fp32")
        encoder = load_text_encoder(path, dtype=chosen, device="cpu", convention=convention)
        if dtype in FP8_DTYPES:
            store_fp8(encoder.model, chosen, dtype)
        return (LuminaTextEncoderHandle(encoder, bridge.text_encoder_patcher(encoder.model, on_cpu=device == "cpu")),)
