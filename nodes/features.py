"""Training-free feature nodes: regional prompts, style-shared batches, resolution extrapolation,
region-adaptive sampling, Context Drop, gate sparsity. Each clones what it changes; the math is in lumina.features and lumina.extrapolation."""

from __future__ import annotations

from ..lumina.extrapolation import EXTRAPOLATION_MODES, extrapolation_options
from ..lumina.features.compositional import grid_masks
from ..lumina.features.context_drop import ContextDrop
from ..lumina.features.gate_sparsity import GateSparsity, gate_report
from ..lumina.features.region_adaptive import METRICS, RegionAdaptive
from ..lumina.features.style_shared import SharedAttention
from ..lumina.flow import resolution_shift
from . import bridge
from .conditioning import conditioning_from, encode_texts, prompt_lines
from .loaders import CATEGORY
from .regions import GRID_KEY


class LuminaRegionalPrompts:
    """One prompt per line, laid out on a rows × cols grid (row-major); the global prompt (or, if
    empty, the regional prompts joined with spaces, like the official demo) steers the whole image.
    The output is core-style CONDITIONING (a global entry plus one masked entry per region), so it
    combines with ConditioningSetArea / ConditioningSetMask regions."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": ("LUMINA_TEXT_ENCODER",),
                "region_prompts": ("STRING", {"multiline": True, "default": "a red apple\na green pear"}),
                "rows": ("INT", {"default": 1, "min": 1, "max": 8}),
                "cols": ("INT", {"default": 2, "min": 1, "max": 8}),
                "global_prompt": ("STRING", {"multiline": True, "default": ""}),
                "negative_prompt": ("STRING", {"multiline": True, "default": ""}),
            }
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, text_encoder, region_prompts: str, rows: int, cols: int, global_prompt: str, negative_prompt: str):
        prompts = prompt_lines(region_prompts)
        if len(prompts) != rows * cols:
            raise ValueError(
                f"{len(prompts)} regional prompt line(s) for a {rows}×{cols} grid: write one prompt per line, "
                f"{rows * cols} in all, row by row"
            )
        global_prompt = global_prompt.strip() or " ".join(prompts)
        feats, mask = encode_texts(text_encoder, [global_prompt, negative_prompt, *prompts])
        masks = grid_masks(rows, cols, 64 * rows, 64 * cols)  # resolution-free: resized to the latent
        positive = conditioning_from(feats[:1], mask[:1])
        for i in range(len(prompts)):
            entry = conditioning_from(feats[2 + i : 3 + i], mask[2 + i : 3 + i])[0]
            entry[1]["mask"] = masks[i][None]
            entry[1]["mask_strength"] = 1.0
            entry[1]["set_area_to_bounds"] = False
            entry[1][GRID_KEY] = True  # a layout, valid for any image size
            positive.append(entry)
        return positive, conditioning_from(feats[1:2], mask[1:2])


class LuminaStyleShared:
    """Style-consistent batches: every item also attends to a reference item's keys and values."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "reference_index": ("INT", {"default": 0, "min": 0, "max": 63}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 10.0, "step": 0.05}),
                "start_layer": ("INT", {"default": 0, "min": 0, "max": 128}),
                "end_layer": ("INT", {"default": 128, "min": 0, "max": 128, "tooltip": "exclusive; clipped to the model's depth"}),
            },
            "optional": {
                "items": ("STRING", {"default": "", "tooltip": "comma-separated 0/1 per batch item (empty: all share)"}),
            },
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, reference_index: int, strength: float, start_layer: int, end_layer: int, items: str = ""):
        bridge.lumina_model_of(model)
        flags = _item_flags(items) if items.strip() else None
        if flags is not None and reference_index >= len(flags):
            raise ValueError(
                f"reference_index {reference_index} is outside the {len(flags)} items listed in items ({items!r}); "
                "items has one 0/1 flag per batch item"
            )
        shared = SharedAttention(reference=reference_index, items=flags, strength=strength, layers=(start_layer, end_layer))
        return (bridge.with_patch(model, features=bridge.patch_of(model).replacing(SharedAttention, shared)),)


class LuminaExtrapolation:
    """2K from a 1K model: the official extrapolation settings for a target size on a cloned model,
    plus the resolution-dependent time shift (connect it to the sampler's shift)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "width": ("INT", {"default": 2048, "min": 16, "max": 8192, "step": 16}),
                "height": ("INT", {"default": 2048, "min": 16, "max": 8192, "step": 16}),
                "mode": (list(EXTRAPOLATION_MODES), {"default": "auto"}),
                "proportional_attention": ("BOOLEAN", {"default": True}),
                "watershed": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05}),
                "base_shift": ("FLOAT", {"default": 4.0, "min": 0.1, "max": 100.0, "step": 0.1}),
            }
        }

    RETURN_TYPES = ("MODEL", "FLOAT")
    RETURN_NAMES = ("model", "shift")
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, width, height, mode, proportional_attention, watershed, base_shift):
        config = bridge.lumina_model_of(model).config
        options = extrapolation_options(config, width, height, mode, proportional_attention=proportional_attention, watershed=watershed)
        shift = resolution_shift(width, height, base_shift, config.base_image_size)
        return (bridge.with_sampling_shift(bridge.with_patch(model, options=options), shift), shift)


class LuminaRegionAdaptive:
    """Region-Adaptive Sampling (RAS) on a cloned Lumina model: at most steps the Lumina Flow
    Sampler recomputes only the patches in the model's focus and reuses the rest (1.7–1.8× faster
    at ratio 0.5 in benchmarks/region_adaptive.py on CPU). Core samplers ignore it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "sample_ratio": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 1.0, "step": 0.05,
                                 "tooltip": "share of patches recomputed at a sparse step; 1 = off"}),
                "start_step": ("INT", {"default": 4, "min": 1, "max": 1000,
                               "tooltip": "model calls (from 0) that run dense before the first sparse one"}),
                "reset_steps": ("STRING", {"default": "12,22",
                                "tooltip": "comma-separated model calls (from 0) that run dense to reset the error"}),
                "end_step": ("INT", {"default": -1, "min": -1, "max": 1000,
                             "tooltip": "last model call that may be sparse; -1 = to the end"}),
                "metric": (list(METRICS), {"default": "std"}),
                "high_ratio": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                               "tooltip": "share of the reused patches taken from the highest scores (reference: 1)"}),
                "starvation_scale": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0, "step": 0.01}),
                "skip_ramp": ("INT", {"default": 0, "min": -65536, "max": 65536,
                              "tooltip": "reused patches change by this every skip_ramp_every calls, centred on the run "
                                         "(reference example at 1024²: 256 every 4); 0 = a fixed number"}),
                "skip_ramp_every": ("INT", {"default": 0, "min": 0, "max": 1000}),
            }
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, sample_ratio, start_step, reset_steps, end_step, metric, high_ratio, starvation_scale,
              skip_ramp=0, skip_ramp_every=0):
        bridge.lumina_model_of(model)  # a clear error for a model that is not Lumina
        if 0 <= end_step < start_step:
            raise ValueError(
                f"end_step {end_step} is before start_step {start_step}: no model call could be sparse; "
                "set end_step to -1 (to the end) or at least start_step"
            )
        settings = RegionAdaptive(
            sample_ratio=sample_ratio, start_step=start_step, reset_steps=_step_list(reset_steps),
            end_step=None if end_step < 0 else end_step, metric=metric, high_ratio=high_ratio,
            starvation_scale=starvation_scale, skip_ramp=skip_ramp, skip_ramp_every=skip_ramp_every,
        )
        return (bridge.with_patch(model, wrappers=(settings,)),)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _item_flags(text: str) -> tuple[bool, ...]:
    parts = [p.strip().lower() for p in text.split(",")]
    unknown = [p for p in parts if p not in _TRUE + _FALSE]
    if unknown:
        raise ValueError(
            f"items {text!r}: {unknown[0]!r} is not a flag; write one 1 (shares) or 0 (does not) per batch item, "
            "comma-separated, like \"1,0,1\""
        )
    return tuple(p in _TRUE for p in parts)


def _step_list(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"reset_steps {text!r} must be comma-separated model-call numbers from 0, like \"12,22\" (or empty)")
    return tuple(int(p) for p in parts)


class LuminaContextDrop:
    """Lumina-Next's Context Drop on a cloned MODEL: self-attention keys and values pooled over
    ratio × ratio patches (queries keep every token), for speed at sizes above the trained one."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "ratio": ("INT", {"default": 0, "min": 0, "max": 8, "tooltip": (
                    "patches merged per side into one key/value; 0 = auto from the image size: 1 (off) at the "
                    "trained size, 2 at twice its side (the paper's setting: 75 % of the keys dropped)")}),
                "end_time": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "pool while t < end_time (t = 0 is noise, 1 the image); lower it to run the last steps dense")}),
            }
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, ratio: int, end_time: float):
        bridge.lumina_model_of(model)
        drop = ContextDrop(ratio=ratio or None, end_time=end_time)
        return (bridge.with_patch(model, features=bridge.patch_of(model).replacing(ContextDrop, drop)),)


class LuminaGateSparsity:
    """Skip the text cross-attention of heads whose learned gate is near zero (|tanh(gate)| below
    the threshold) on a cloned MODEL; the console says what it skips."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "threshold": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 1.0, "step": 0.005,
                              "tooltip": "heads with |tanh(gate)| below this skip their caption cross-attention; 0 = none"}),
            }
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, threshold: float):
        lumina_model = bridge.lumina_model_of(model)
        report = gate_report(lumina_model, threshold, tokens=4096, caption_tokens=128)
        print(f"[Lumina] gate sparsity {threshold}: {report['heads_skipped']:.0f}/{report['heads']:.0f} heads, "
              f"{report['layers_skipped']:.0f}/{report['layers']:.0f} whole layers skip their text cross-attention "
              f"({report['forward_flops_saved'] * 100:.1f} % of a 1024² forward's FLOPs)")
        sparsity = GateSparsity(threshold)
        return (bridge.with_patch(model, features=bridge.patch_of(model).replacing(GateSparsity, sparsity)),)
