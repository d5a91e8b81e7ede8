"""ComfyUI nodes: thin adapters over `lumina`; `bridge` is the only module touching ComfyUI internals."""

from .audio import LuminaAudioDecode, LuminaAudioModelLoader, LuminaAudioTextEncode, LuminaEmptyAudioLatent
from .audio_save import LuminaSaveAudio
from .conditioning import LuminaBatchTextEncode, LuminaTextEncode
from .features import LuminaContextDrop, LuminaExtrapolation, LuminaGateSparsity, LuminaRegionAdaptive, LuminaRegionalPrompts, LuminaStyleShared
from .latents import LuminaEmptyLatent, LuminaEmptyVideoLatent
from .loaders import LuminaModelLoader, LuminaTextEncoderLoader
from .paths import register_folders
from .pixel_space import LuminaPixelSpaceVAE
from .sampling import LuminaFlowSampler, LuminaMidpointSampler, LuminaOfficialCFG, LuminaScheduler
from .video import LuminaVideoVAEDecode, LuminaVideoVAEEncode, LuminaVideoVAELoader
from .video_sampling import LuminaVideoSettings

register_folders()

NODE_CLASS_MAPPINGS = {
    "LuminaModelLoader": LuminaModelLoader,
    "LuminaTextEncoderLoader": LuminaTextEncoderLoader,
    "LuminaTextEncode": LuminaTextEncode,
    "LuminaBatchTextEncode": LuminaBatchTextEncode,
    "LuminaEmptyLatent": LuminaEmptyLatent,
    "LuminaEmptyVideoLatent": LuminaEmptyVideoLatent,
    "LuminaFlowSampler": LuminaFlowSampler,
    "LuminaScheduler": LuminaScheduler,
    "LuminaMidpointSampler": LuminaMidpointSampler,
    "LuminaOfficialCFG": LuminaOfficialCFG,
    "LuminaRegionalPrompts": LuminaRegionalPrompts,
    "LuminaStyleShared": LuminaStyleShared,
    "LuminaExtrapolation": LuminaExtrapolation,
    "LuminaRegionAdaptive": LuminaRegionAdaptive,
    "LuminaPixelSpaceVAE": LuminaPixelSpaceVAE,
    "LuminaVideoVAELoader": LuminaVideoVAELoader,
    "LuminaVideoVAEDecode": LuminaVideoVAEDecode,
    "LuminaVideoVAEEncode": LuminaVideoVAEEncode,
    "LuminaVideoSettings": LuminaVideoSettings,
    "LuminaContextDrop": LuminaContextDrop,
    "LuminaGateSparsity": LuminaGateSparsity,
    "LuminaAudioModelLoader": LuminaAudioModelLoader,
    "LuminaAudioTextEncode": LuminaAudioTextEncode,
    "LuminaEmptyAudioLatent": LuminaEmptyAudioLatent,
    "LuminaAudioDecode": LuminaAudioDecode,
    "LuminaSaveAudio": LuminaSaveAudio,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LuminaModelLoader": "Lumina Model Loader",
    "LuminaTextEncoderLoader": "Lumina Text Encoder Loader",
    "LuminaTextEncode": "Lumina Text Encode",
    "LuminaBatchTextEncode": "Lumina Batch Text Encode",
    "LuminaEmptyLatent": "Lumina Empty Latent",
    "LuminaEmptyVideoLatent": "Lumina Empty Video Latent",
    "LuminaFlowSampler": "Lumina Flow Sampler",
    "LuminaScheduler": "Lumina Scheduler (SIGMAS)",
    "LuminaMidpointSampler": "Lumina Midpoint Sampler (SAMPLER)",
    "LuminaOfficialCFG": "Lumina Official CFG",
    "LuminaRegionalPrompts": "Lumina Regional Prompts",
    "LuminaStyleShared": "Lumina Style Shared Attention",
    "LuminaExtrapolation": "Lumina Resolution Extrapolation",
    "LuminaRegionAdaptive": "Lumina Region-Adaptive Sampling",
    "LuminaPixelSpaceVAE": "Lumina Pixel Space VAE",
    "LuminaVideoVAELoader": "Lumina Video VAE Loader",
    "LuminaVideoVAEDecode": "Lumina Video VAE Decode",
    "LuminaVideoVAEEncode": "Lumina Video VAE Encode",
    "LuminaVideoSettings": "Lumina-Video Settings",
    "LuminaContextDrop": "Lumina Context Drop",
    "LuminaGateSparsity": "Lumina Gate Sparsity",
    "LuminaAudioModelLoader": "Lumina Audio Model Loader",
    "LuminaAudioTextEncode": "Lumina Audio Text Encode",
    "LuminaEmptyAudioLatent": "Lumina Empty Audio Latent",
    "LuminaAudioDecode": "Lumina Audio Decode",
    "LuminaSaveAudio": "Lumina Save Audio",
}
