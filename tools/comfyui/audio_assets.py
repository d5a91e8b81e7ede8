"""Tiny Lumina-T2Music / Lumina-T2Audio stacks in the released folder layouts, for the node and e2e
tests and the offline runs of the audio workflows (no downloads; seconds to build).

    models/lumina/tiny_lumina_t2music/  music_generation/119.ckpt  maa2/maa2.ckpt  bigvnat/{args.yml,best_netG.pt}
    models/lumina/tiny_lumina_t2audio/  audio_generation/324.ckpt  maa2/maa2.ckpt  bigvgan/{args.yml,best_netG.pt}
                                        CLAP/CLAP_weights_2022.pth
    models/text_encoders/tiny_flan_t5/      T5EncoderModel (d_model 32) + SentencePiece-style (Unigram) tokenizer
    models/text_encoders/tiny_t5_v1_1/      the same architecture, other weights (T2Audio's structured captions)
    models/text_encoders/tiny_bert/         BertModel (hidden 16) + WordPiece vocabulary (T2Audio's CLAP tower)

The CFM checkpoints are pickled the way PyTorch Lightning saves them (a dict with `state_dict`,
epoch, optimizer and scheduler entries) and hold tiny tensors under the real keys: the 1-D Flag-DiT
and the mel autoencoder of the official tiny goldens (tests/fixtures/golden/lumina_music_tiny:
context 32, 20 latent channels, 16 mel bins, time ÷ 2) plus `scale_factor` and the text stack under
`cond_stage_model.*` (music: `transformer.*` = FLAN-T5; audio: `caption_encoder.{base,projection}.*`
and `t5_transformer.*`), whose weights differ from the folders' as the fine-tuned ones do. The
vocoder is a random BigVGAN with hop 256 at 16 kHz, so lengths are the released ones
(31.25 latent frames per second: 10 s → 312 frames → 159 744 samples).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "fixtures" / "golden" / "lumina_music_tiny"
T5_WIDTH, BERT_WIDTH = 32, 16  # T5 width = the DiT's context_dim (32 in the goldens)
SAMPLE_RATE = 16000
WORDS = ("a an calm piano melody with soft drums and rain dog barks loudly in the distance genre jazz mood happy "
         "sound of street traffic music upbeat electronic dance birds singing water flowing all").split()
MUSIC_NAME, AUDIO_NAME = "tiny_lumina_t2music", "tiny_lumina_t2audio"
FLAN_NAME, T5_NAME, BERT_NAME = "tiny_flan_t5", "tiny_t5_v1_1", "tiny_bert"
VOCODER_ARGS = {  # hop 8·8·4 = 256 like the released vocoders; tiny channels
    "resblock": "1", "num_mels": 16, "upsample_rates": [8, 8, 4], "upsample_kernel_sizes": [16, 16, 8],
    "upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
    "activation": "snakebeta", "snake_logscale": True, "sampling_rate": SAMPLE_RATE,
}


def _fix_tokenizer_class(folder: Path) -> None:
    """transformers 5 writes "TokenizersBackend", which 4.x lacks; the generic fast class loads the
    same tokenizer.json in both (as assets.build_tokenizer does)."""
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2))


def build_t5_folder(folder: Path, seed: int):
    """A T5 encoder folder with a Unigram (SentencePiece-like) tokenizer that appends </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    _fix_tokenizer_class(folder)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(vocab), d_model=T5_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=True, pad_token_id=0, eos_token_id=1)
    model = T5EncoderModel(config).eval()
    model.save_pretrained(folder)
    return model


def build_bert_folder(folder: Path, seed: int):
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=BERT_WIDTH, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=128)).eval()
    model.save_pretrained(folder)
    return model


def _perturbed(module: torch.nn.Module, prefix: str, seed: int) -> dict[str, torch.Tensor]:
    """The module's weights moved a little (fine-tuned copies that differ from the folder's)."""
    g = torch.Generator().manual_seed(seed)
    return {prefix + k: (v + 0.02 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v.clone()
            for k, v in module.state_dict().items()}


def _projection(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"linear1.weight": torch.randn(T5_WIDTH, BERT_WIDTH, generator=g) / 4,
            "linear2.weight": torch.randn(T5_WIDTH, T5_WIDTH, generator=g) / 6,
            "layer_norm.weight": 1 + 0.1 * torch.randn(T5_WIDTH, generator=g),
            "layer_norm.bias": 0.1 * torch.randn(T5_WIDTH, generator=g)}


def save_lightning(path: Path, state_dict: dict[str, torch.Tensor], epoch: int) -> Path:
    """A CFM checkpoint laid out like PyTorch Lightning's (tensors and plain containers only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "global_step": 1000 * epoch, "pytorch-lightning_version": "1.7.7",
                "state_dict": OrderedDict(state_dict), "optimizer_states": [{"state": {}, "param_groups": [{"lr": 3e-6}]}],
                "lr_schedulers": [], "callbacks": {}}, path)
    return path


def _vocoder(folder: Path, seed: int) -> None:
    import yaml

    from lumina.vocoder import BigVGAN, VocoderConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.yml").write_text(yaml.safe_dump(VOCODER_ARGS))
    torch.manual_seed(seed)
    generator = BigVGAN(VocoderConfig.from_args(VOCODER_ARGS))
    torch.save({"generator": {k: v for k, v in generator.state_dict().items() if not k.endswith(".filter")}},
               folder / "best_netG.pt")


def _release(root: Path, kind: str, cfm: dict[str, torch.Tensor], text: dict[str, torch.Tensor], seed: int) -> Path:
    dit_dir, voc_dir = {"music": ("music_generation", "bigvnat"), "audio": ("audio_generation", "bigvgan")}[kind]
    save_lightning(root / dit_dir / ("119.ckpt" if kind == "music" else "324.ckpt"), {**cfm, **text},
                   epoch=119 if kind == "music" else 324)
    (root / "maa2").mkdir(parents=True, exist_ok=True)
    vae = {k[len("first_stage_model."):]: v for k, v in cfm.items() if k.startswith("first_stage_model.")}
    torch.save({"state_dict": vae}, root / "maa2" / "maa2.ckpt")
    _vocoder(root / voc_dir, seed)
    return root


def build_audio_assets(models_dir: Path) -> dict[str, Path]:
    """Both tiny releases and their text-encoder folders under `models_dir` (see the module doc)."""
    from safetensors.torch import load_file

    models_dir = Path(models_dir)
    text_dir, lumina_dir = models_dir / "text_encoders", models_dir / "lumina"
    flan = build_t5_folder(text_dir / FLAN_NAME, seed=11)
    t5 = build_t5_folder(text_dir / T5_NAME, seed=12)
    bert = build_bert_folder(text_dir / BERT_NAME, seed=13)
    cfm = load_file(str(GOLDEN / "cfm.safetensors"))
    music = _release(lumina_dir / MUSIC_NAME, "music", cfm, _perturbed(flan, "cond_stage_model.transformer.", 21), seed=31)
    proj = _projection(23)
    audio_text = {**_perturbed(bert, "cond_stage_model.caption_encoder.base.", 22),
                  **{f"cond_stage_model.caption_encoder.projection.{k}": v for k, v in proj.items()},
                  **_perturbed(t5, "cond_stage_model.t5_transformer.", 24)}
    audio = _release(lumina_dir / AUDIO_NAME, "audio", cfm, audio_text, seed=32)
    (audio / "CLAP").mkdir(parents=True, exist_ok=True)
    clap = {**{f"caption_encoder.base.{k}": v for k, v in bert.state_dict().items()},
            **{f"caption_encoder.projection.{k}": v for k, v in _projection(25).items()},
            "audio_encoder.base.conv.weight": torch.randn(4, 1, 3)}  # CLAP's audio tower: never read
    torch.save({"model": clap, "epoch": 45}, audio / "CLAP" / "CLAP_weights_2022.pth")
    return {"music": music, "audio": audio, "flan_t5": text_dir / FLAN_NAME, "t5_v1_1": text_dir / T5_NAME,
            "bert": text_dir / BERT_NAME}
