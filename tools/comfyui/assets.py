"""Tiny, offline model assets for a ComfyUI workspace (the e2e and node tests, the node-overhead
benchmark), built in seconds.

Everything is generated from seeds (no downloads) into a models folder laid out the way the
workspace's extra_model_paths yaml wires it (workspace.py):

    models/
      lumina/tiny_next_dit.safetensors        Next-DiT, dim 64, 2 layers, cap_feat_dim 64 (official keys)
      lumina/tiny_next_dit_diffusers/         the same weights as a diffusers LuminaNextDiT2DModel folder
      lumina/tiny_flag_dit.safetensors        Flag-DiT, dim 64, 2 layers, cap_feat_dim 96 (official keys)
      lumina/not_lumina.safetensors           SD-UNet-like keys: for "this is not a Lumina file" tests
      lumina/tiny_lumina_video/               Lumina-Video, dim 64, 2 layers, 16 channels, patch entries 1x2 2x2 2x4,
                                              cap_feat_dim 64, in the released form (consolidated.00-of-01.pth
                                              with torch.compile key segments + a pickled model_args.pth)
      text_encoders/tiny_gemma/               GemmaForCausalLM (hidden 64) + word-level tokenizer (adds <bos>)
      text_encoders/tiny_gemma2/              Gemma2ForCausalLM (hidden 64), same tokenizer: Lumina-Video's convention
      text_encoders/tiny_llama/               LlamaForCausalLM (hidden 96) + word-level tokenizer (adds <bos>)
      LLM/tiny_gemma, LLM/tiny_llama          symlinks to the two folders above
      vae_approx/taesdxl_{encoder,decoder}.safetensors   random TAESD-XL: core VAELoader name "taesdxl"
      vae/tiny_cogvideox/                     diffusers AutoencoderKLCogVideoX: 16 latent channels, 8× spatial, 4× temporal
      checkpoints/                            empty (see `sdxl_vae_random` for an opt-in full-size SDXL VAE)

The text-encoder folders load offline with `AutoTokenizer/AutoModel.from_pretrained(folder,
local_files_only=True)` (AutoModelForCausalLM too). Next-DiT pairs with tiny_gemma (64 = Gemma
hidden size), Flag-DiT with tiny_llama (96), Lumina-Video with tiny_gemma2 and tiny_cogvideox.

This module imports torch, transformers and the repository's `lumina` library, never ComfyUI.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# -- configuration of the tiny models (tests may import these) --------------------------------------

NEXT_DIT_KWARGS = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, cap_feat_dim=64, multiple_of=16)
FLAG_DIT_KWARGS = dict(dim=64, n_layers=2, n_heads=4, cap_feat_dim=96, multiple_of=16)
GEMMA_HIDDEN = 64
LUMINA_VIDEO_KWARGS = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, cap_feat_dim=GEMMA_HIDDEN, multiple_of=16,
                           patches=((2, 1), (2, 2), (4, 2)), in_channels=16)
COGVIDEOX_VAE_NAME = "tiny_cogvideox"
LLAMA_HIDDEN = 96
TAESD_VAE_NAME = "taesdxl"  # the name core VAELoader lists once both TAESD-XL halves are in vae_approx/
SEED = 1234

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
# The caption vocabulary: the procedural shapes captions of the tiny-model experiments plus a few
# everyday words, so prompts like "a photo of a red cat" tokenize without <unk>.
CAPTION_WORDS = (
    "a an the of at in on with and or photo picture image painting drawing render of "
    "small medium large big tiny huge "
    "red green blue yellow orange purple pink black white gray brown cyan magenta "
    "circle square triangle star heart ring cross dot line "
    "top bottom left right center middle corner side "
    "cat dog bird fish tree house car flower mountain sky sea sun moon city person face "
    "background foreground bright dark light shadow colorful simple detailed "
    "high quality low blurry best worst style art "
    ", . ! ? - :"
).split()


@dataclass
class TinyAssets:
    """Paths of the built assets plus the names ComfyUI lists them under."""

    models_dir: Path
    next_dit: Path
    next_dit_diffusers: Path
    flag_dit: Path
    not_lumina: Path
    gemma: Path
    llama: Path
    taesdxl_encoder: Path
    taesdxl_decoder: Path
    lumina_video: Path | None = None
    gemma2: Path | None = None
    cogvideox: Path | None = None
    vae_name: str = TAESD_VAE_NAME
    build_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def name(self, path: Path) -> str:
        """The name ComfyUI shows for a file or folder: its path relative to its model folder
        (e.g. 'tiny_next_dit.safetensors', 'tiny_gemma'), with '/' separators."""
        rel = Path(path).resolve().relative_to(self.models_dir.resolve())
        return Path(*rel.parts[1:]).as_posix()


# -- helpers --------------------------------------------------------------------------------------

def _generator(offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + offset)


@torch.no_grad()
def init_small_normal(module: nn.Module, seed_offset: int = 0, std: float = 0.05) -> nn.Module:
    """Deterministic weights: norms ≈ 1, biases and matrices small normal, gates clearly nonzero.

    Every parameter (including the ones a model leaves uninitialised or zero, like Lumina's gates
    and pad token) gets a value from one seeded generator, in named_parameters() order."""
    g = _generator(seed_offset)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gate":
            value = 0.5 * noise
        elif "norm" in name and leaf == "weight" and p.ndim == 1:
            value = 1.0 + 0.1 * noise
        else:
            value = std * noise
        p.copy_(value.to(p.dtype))
    return module


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


# -- Lumina checkpoints -----------------------------------------------------------------------------

def build_lumina(family: str, seed_offset: int = 0):
    import lumina

    kwargs = NEXT_DIT_KWARGS if family == "next_dit" else FLAG_DIT_KWARGS
    model = lumina.build_model(lumina.LuminaConfig(family, **kwargs))
    return init_small_normal(model, seed_offset).eval()


def write_not_lumina(path: Path) -> Path:
    """A small safetensors file with SD-UNet (ldm) key names and shapes: valid file, wrong model."""
    g = _generator(99)
    shapes = {
        "model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
        "model.diffusion_model.input_blocks.0.0.bias": (32,),
        "model.diffusion_model.time_embed.0.weight": (128, 32),
        "model.diffusion_model.time_embed.0.bias": (128,),
        "model.diffusion_model.middle_block.1.proj_in.weight": (32, 32),
        "model.diffusion_model.out.0.weight": (32,),
        "model.diffusion_model.out.2.weight": (4, 32, 3, 3),
        "model.diffusion_model.out.2.bias": (4,),
    }
    return _save_safetensors({k: torch.randn(s, generator=g) for k, s in shapes.items()}, path)


def write_lumina_video(folder: Path, seed_offset: int = 5) -> Path:
    """A tiny Lumina-Video in the released form: `consolidated.00-of-01.pth` whose layer keys carry
    torch.compile's `_orig_mod.` segment, beside a pickled `model_args.pth` (never read by the pack)."""
    import argparse

    from lumina.model import LuminaVideo
    from lumina.video_config import LuminaVideoConfig

    model = init_small_normal(LuminaVideo(LuminaVideoConfig(**LUMINA_VIDEO_KWARGS)), seed_offset)
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"_orig_mod.{k}" if k.startswith("layers.") else k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, folder / "consolidated.00-of-01.pth")
    torch.save(argparse.Namespace(model="MultiScaleNextDiT_tiny", rope_theta=256.0), folder / "model_args.pth")
    return folder / "consolidated.00-of-01.pth"


def tiny_cogvideox():
    """A random diffusers AutoencoderKLCogVideoX with Lumina-Video's 16 latent channels (seeded)."""
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=16, layers_per_block=1, norm_num_groups=2,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        temporal_compression_ratio=4, sample_height=96, sample_width=80,
    ).eval()


# -- text encoders --------------------------------------------------------------------------------------

def build_tokenizer(folder: Path, max_length: int = 128):
    """A word-level tokenizer over CAPTION_WORDS, saved as a PreTrainedTokenizerFast.

    Ids follow Gemma: <pad>=0, <eos>=1, <bos>=2, <unk>=3. Lower-cased, split on whitespace and
    punctuation; every encoding starts with <bos> (like Gemma's and LLaMA's tokenizers), so an
    empty prompt still has one unmasked token."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(CAPTION_WORDS))
    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos = vocab["<bos>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        pad_token="<pad>", model_max_length=max_length, padding_side="right",
    )
    fast.save_pretrained(str(folder))
    # transformers 5 writes "TokenizersBackend", a class 4.x lacks; the generic fast class loads
    # the same tokenizer.json in both.
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["add_bos_token"] = True
    cfg["add_eos_token"] = False
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return vocab


def build_text_encoder(kind: str, folder: Path, seed_offset: int = 0) -> Path:
    """tiny_gemma (GemmaForCausalLM, hidden 64), tiny_gemma2 (Gemma2ForCausalLM, hidden 64) or tiny_llama
    (LlamaForCausalLM, hidden 96)."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(folder)
    ids = dict(pad_token_id=vocab["<pad>"], eos_token_id=vocab["<eos>"], bos_token_id=vocab["<bos>"])
    if kind == "gemma":
        config = transformers.GemmaConfig(
            vocab_size=len(vocab), hidden_size=GEMMA_HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256, **ids,
        )
        cls = transformers.GemmaForCausalLM
    elif kind == "gemma2":
        config = transformers.Gemma2Config(
            vocab_size=len(vocab), hidden_size=GEMMA_HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256, **ids,
        )
        cls = transformers.Gemma2ForCausalLM
    elif kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=len(vocab), hidden_size=LLAMA_HIDDEN, intermediate_size=192, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
            tie_word_embeddings=True, **ids,  # tied: AutoModel then loads it without an "unexpected lm_head" report
        )
        cls = transformers.LlamaForCausalLM
    else:
        raise ValueError(kind)
    torch.manual_seed(SEED + seed_offset)  # transformers' own (seeded) init: normal(0.02), norms neutral
    model = cls(config).eval()
    model.save_pretrained(str(folder))
    return folder


# -- TAESD-XL (core VAELoader's "taesdxl") --------------------------------------------------------------
# The architecture of comfy/taesd/taesd.py (madebyollin's TAESD), rebuilt with plain torch so the key
# names match: Sequential indices, Block.conv.{0,2,4}, Block.skip.

def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Block(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()


class _Clamp(nn.Module):
    pass


def taesd_encoder(c: int = 64) -> nn.Sequential:
    return nn.Sequential(
        _conv(3, c), _Block(c, c),
        _conv(c, c, stride=2, bias=False), _Block(c, c), _Block(c, c), _Block(c, c),
        _conv(c, c, stride=2, bias=False), _Block(c, c), _Block(c, c), _Block(c, c),
        _conv(c, c, stride=2, bias=False), _Block(c, c), _Block(c, c), _Block(c, c),
        _conv(c, 4),
    )


def taesd_decoder(c: int = 64) -> nn.Sequential:
    return nn.Sequential(
        _Clamp(), _conv(4, c), nn.ReLU(),
        _Block(c, c), _Block(c, c), _Block(c, c), nn.Upsample(scale_factor=2), _conv(c, c, bias=False),
        _Block(c, c), _Block(c, c), _Block(c, c), nn.Upsample(scale_factor=2), _conv(c, c, bias=False),
        _Block(c, c), _Block(c, c), _Block(c, c), nn.Upsample(scale_factor=2), _conv(c, c, bias=False),
        _Block(c, c), _conv(c, 3),
    )


def write_taesdxl(vae_approx_dir: Path) -> tuple[Path, Path]:
    """Random-weight taesdxl_encoder/decoder.safetensors (≈ 4.6 MB each): loads as VAE 'taesdxl'."""
    out = []
    for i, (name, builder) in enumerate((("encoder", taesd_encoder), ("decoder", taesd_decoder))):
        module = builder()
        init_small_normal(module, 50 + i, std=0.04)
        out.append(_save_safetensors(module.state_dict(), vae_approx_dir / f"taesdxl_{name}.safetensors"))
    return out[0], out[1]


# -- the full SDXL-architecture VAE (opt-in, cached) ------------------------------------------------------

SDXL_VAE_FILE = "sdxl_vae_random.safetensors"
SDXL_VAE_VERSION = "v1"  # bump when the recipe changes: the cache key includes it


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "comfyui-lumina-t2x"


def sdxl_vae_random(vae_dir: Path) -> Path:
    """A random-weight SDXL-architecture AutoencoderKL (diffusers key names, fp16, ~160 MB) that core
    VAELoader accepts. Built once (~10 s) into the user cache, then linked into `vae_dir`."""
    cached = cache_dir() / f"sdxl_vae_random-{SDXL_VAE_VERSION}.safetensors"
    if not cached.exists():
        from diffusers import AutoencoderKL

        torch.manual_seed(SEED)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=1024, scaling_factor=0.13025,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
        )
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        _save_safetensors({k: v.half() for k, v in vae.state_dict().items()}, tmp)
        os.replace(tmp, cached)  # atomic: a concurrent or interrupted build never leaves half a file
    vae_dir.mkdir(parents=True, exist_ok=True)
    link = vae_dir / SDXL_VAE_FILE
    if not link.exists():
        link.symlink_to(cached)
    return link


# -- everything -------------------------------------------------------------------------------------------

MODEL_SUBDIRS = ("lumina", "text_encoders", "LLM", "vae", "vae_approx", "checkpoints")


def build_all(models_dir: Path) -> TinyAssets:
    """Build every default asset into `models_dir` (≈ 5 s on 2 CPU cores, most of it importing diffusers)."""
    import lumina

    start = time.perf_counter()
    models_dir = Path(models_dir)
    for sub in MODEL_SUBDIRS:
        (models_dir / sub).mkdir(parents=True, exist_ok=True)
    lumina_dir = models_dir / "lumina"

    next_dit = build_lumina("next_dit", seed_offset=1)
    next_path = lumina.save_official(next_dit, lumina_dir / "tiny_next_dit.safetensors")
    diffusers_path = lumina.save_diffusers(next_dit, lumina_dir / "tiny_next_dit_diffusers")
    flag_path = lumina.save_official(build_lumina("flag_dit", seed_offset=2), lumina_dir / "tiny_flag_dit.safetensors")
    not_lumina = write_not_lumina(lumina_dir / "not_lumina.safetensors")

    video_path = write_lumina_video(lumina_dir / "tiny_lumina_video")

    gemma = build_text_encoder("gemma", models_dir / "text_encoders" / "tiny_gemma", seed_offset=3)
    llama = build_text_encoder("llama", models_dir / "text_encoders" / "tiny_llama", seed_offset=4)
    gemma2 = build_text_encoder("gemma2", models_dir / "text_encoders" / "tiny_gemma2", seed_offset=6)
    cogvideox = models_dir / "vae" / COGVIDEOX_VAE_NAME
    tiny_cogvideox().save_pretrained(str(cogvideox))
    for folder in (gemma, llama, gemma2):
        (models_dir / "LLM" / folder.name).symlink_to(folder, target_is_directory=True)

    enc, dec = write_taesdxl(models_dir / "vae_approx")
    from .audio_assets import build_audio_assets  # Lumina-T2Music / T2Audio releases (audio_assets.py)

    audio = build_audio_assets(models_dir)
    return TinyAssets(
        models_dir=models_dir, next_dit=Path(next_path), next_dit_diffusers=Path(diffusers_path),
        flag_dit=Path(flag_path), not_lumina=not_lumina, gemma=gemma, llama=llama,
        taesdxl_encoder=enc, taesdxl_decoder=dec, lumina_video=video_path, gemma2=gemma2, cogvideox=cogvideox,
        build_seconds=time.perf_counter() - start, extra={"audio": audio},
    )


def substitute_tiny(graph: dict, assets: "TinyAssets", prefix: str, side_divisor: int = 16, steps: int = 3) -> dict:
    """An API workflow with the tiny files in place of the released ones, sides ÷ side_divisor and
    few steps: what the e2e tests and the offline demo run."""
    g = json.loads(json.dumps(graph))
    names = {
        "Lumina-Next-SFT/consolidated.00-of-01.safetensors": assets.name(assets.next_dit),
        "Lumina-T2I/consolidated.00-of-01.safetensors": assets.name(assets.flag_dit),
        "gemma-2b": assets.name(assets.gemma), "Llama-2-7b-hf": assets.name(assets.llama),
        "sdxl_vae.safetensors": assets.vae_name,
        "Lumina-Video-f24R960/consolidated.00-of-01.pth": assets.name(assets.lumina_video),
        "gemma-2-2b": assets.name(assets.gemma2), "CogVideoX-2b-vae": COGVIDEOX_VAE_NAME,
    }
    audio = assets.extra.get("audio")
    if audio:  # the released Lumina-T2Music / T2Audio folders and their text encoders
        names.update({"Lumina-T2Music": assets.name(audio["music"]), "Lumina-T2Audio": assets.name(audio["audio"]),
                      "flan-t5-large": assets.name(audio["flan_t5"]), "t5-v1_1-large": assets.name(audio["t5_v1_1"]),
                      "bert-base-uncased": assets.name(audio["bert"])})
    for node in g.values():
        inputs = node["inputs"]
        for key in ("ckpt_name", "text_encoder", "vae_name", "model_folder", "t5_encoder", "bert_encoder"):
            if isinstance(inputs.get(key), str):
                inputs[key] = names.get(inputs[key], inputs[key])
        if node["class_type"] in ("LuminaEmptyLatent", "LuminaExtrapolation", "ConditioningSetArea"):
            for key in ("width", "height", "x", "y"):
                if key in inputs:
                    inputs[key] //= side_divisor
        if node["class_type"] == "LuminaEmptyVideoLatent":  # 64×32 px, 8 frames (2 latent frames, 5 decoded)
            inputs.update(preset="custom", width=64, height=32, frames=8)
        if node["class_type"] == "LuminaFlowSampler":
            inputs["steps"] = steps
        if node["class_type"] in ("SaveImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "LuminaSaveAudio", "SaveAudio"):
            inputs["filename_prefix"] = prefix
    return g


if __name__ == "__main__":  # python tools/comfyui/assets.py OUT_DIR: build the assets for a manual look
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `lumina`
    built = build_all(Path(sys.argv[1]))
    print(f"built in {built.build_seconds:.2f} s into {built.models_dir}")

