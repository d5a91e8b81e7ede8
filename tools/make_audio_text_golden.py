"""Make tests/fixtures/golden/lumina_audio_text_tiny: outputs of the OFFICIAL caption encoders of
Lumina-T2Audio (`FrozenCLAPFLANEmbedder.encode`) and Lumina-T2Music (`FrozenFLANEmbedder.forward`)
on tiny seeded-random BERT / T5 models.

The official modules cannot be imported as committed (lumina_audio's `FrozenCLAPFLANEmbedder.__init__`
reads its config through `files("ldm")`, a package that does not exist there, and both build their
models from the hub). So the unmodified bodies of `encode` / `forward` and of CLAP's `Projection`
class are taken from the official source by AST (nothing else of those files runs) and run on an
object holding what `__init__` plus the demo's `load_state_dict(ckpt, strict=False)` would leave:
`AutoModel` BERT and `T5EncoderModel`s loaded from the tiny folders, then overwritten by the
checkpoint's `cond_stage_model.*` entries, the tokenizers of the folders, max_length 77, CPU.

    python tools/make_audio_text_golden.py --mirror <a git clone (bare or not) of Alpha-VLLM/Lumina-T2X>

The official CLAP file `CLAP_weights_2022.pth` is read but never loaded by the official encoder; the
fixture's copy holds different weights, so a test shows that the checkpoint's weights are the ones
that count.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import subprocess
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModel, BertConfig, BertModel, BertTokenizer, PreTrainedTokenizerFast, T5Config, T5EncoderModel

COMMIT = "1c606962f95899da711633ee3a333d21c753e2d9"
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden" / "lumina_audio_text_tiny"
WORDS = ("a calm piano melody with soft drums and rain dog barks loudly in the distance "
         "genre jazz mood happy <sound&all> of street traffic birds sing at dawn").split()
T5_WIDTH, BERT_WIDTH = 16, 8
CASES = {  # name -> (captions, structured captions); the empty pair is the demo's unconditional input
    "pair": (["a calm piano melody with soft drums", "dog barks loudly in the distance"],
             ["<sound&all> of rain", "<sound&all> of street traffic and dog"]),
    "empty": ("", ""),
    "long": ([" ".join(["birds sing at dawn"] * 30)], [" ".join(["<sound&all> of rain"] * 40)]),
}


def _official(mirror: Path, path: str) -> tuple[str, str]:
    text = subprocess.run(["git", "-C", str(mirror), "show", f"{COMMIT}:{path}"], check=True,
                          capture_output=True, text=True).stdout
    return text, hashlib.sha256(text.encode()).hexdigest()


def _extract(source: str, filename: str, cls: str, method: str | None) -> object:
    """The class (method None) or one method of it, compiled alone from the official source."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            target = node if method is None else next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == method)
            ns: dict = {"torch": torch, "nn": nn, "F": F}
            exec(compile(ast.Module(body=[target], type_ignores=[]), filename, "exec"), ns)  # noqa: S102 - official code, by design
            return ns[target.name]
    raise LookupError(f"{cls}.{method} not in {filename}")


def t5_folder(path: Path, seed: int) -> Path:
    """A tiny random T5 encoder folder (Unigram tokenizer that appends </s>) over WORDS; tests rebuild the same."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(seed)
    T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=T5_WIDTH, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                            feed_forward_proj="gated-gelu", is_encoder_decoder=True)).save_pretrained(path)
    return path


def bert_folder(path: Path) -> Path:
    """A tiny random BERT folder (WordPiece over WORDS)."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(path)
    torch.manual_seed(3)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=BERT_WIDTH, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=128)).save_pretrained(path)
    return path


def _perturbed(sd: dict[str, torch.Tensor], prefix: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {prefix + k: (v + 0.2 * torch.randn(v.shape, generator=gen)).contiguous() for k, v in sd.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, required=True, help="bare git mirror of Alpha-VLLM/Lumina-T2X")
    args = parser.parse_args()
    audio_src, audio_sha = _official(args.mirror, "lumina_audio/models/encoders/modules.py")
    music_src, music_sha = _official(args.mirror, "lumina_music/models/encoders/modules.py")
    clap_src, clap_sha = _official(args.mirror, "lumina_audio/models/encoders/CLAP/clap.py")
    encode = _extract(audio_src, "lumina_audio/models/encoders/modules.py", "FrozenCLAPFLANEmbedder", "encode")
    forward = _extract(music_src, "lumina_music/models/encoders/modules.py", "FrozenFLANEmbedder", "forward")
    Projection = _extract(clap_src, "lumina_audio/models/encoders/CLAP/clap.py", "Projection", None)

    OUT.mkdir(parents=True, exist_ok=True)
    for sub, make in (("flan-t5-large", lambda p: t5_folder(p, 1)), ("t5-v1_1-large", lambda p: t5_folder(p, 2)),
                      ("bert-base-uncased", bert_folder)):
        make(OUT / sub)

    gen = torch.Generator().manual_seed(19)
    bert = AutoModel.from_pretrained(OUT / "bert-base-uncased").eval()  # official TextEncoder.base (with pooler)
    t5 = T5EncoderModel.from_pretrained(OUT / "t5-v1_1-large").eval()
    flan = T5EncoderModel.from_pretrained(OUT / "flan-t5-large").eval()
    projection = Projection(BERT_WIDTH, T5_WIDTH).eval()  # official CLAP Projection, d_proj = T5 width here

    # CLAP_weights_2022.pth: caption_encoder.* of the CLAP release (read but never loaded officially)
    clap_sd = _perturbed(bert.state_dict(), "caption_encoder.base.", gen)
    clap_sd["caption_encoder.base.embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    clap_sd.update(_perturbed(projection.state_dict(), "caption_encoder.projection.", gen))
    torch.save({"model": clap_sd}, OUT / "CLAP_weights_2022.pth")

    # the audio checkpoint's cond_stage_model.* (what the demo's load_state_dict puts in the encoders)
    audio_ckpt = _perturbed(bert.state_dict(), "cond_stage_model.caption_encoder.base.", gen)
    audio_ckpt.update(_perturbed(projection.state_dict(), "cond_stage_model.caption_encoder.projection.", gen))
    audio_ckpt.update(_perturbed(t5.state_dict(), "cond_stage_model.t5_transformer.", gen))
    audio_ckpt.pop("cond_stage_model.t5_transformer.encoder.embed_tokens.weight")  # tied to shared; one copy
    music_ckpt = _perturbed(flan.state_dict(), "cond_stage_model.transformer.", gen)
    music_ckpt.pop("cond_stage_model.transformer.encoder.embed_tokens.weight")
    save_file(audio_ckpt, str(OUT / "audio_checkpoint.safetensors"))
    save_file(music_ckpt, str(OUT / "music_checkpoint.safetensors"))

    def strip(sd: dict, prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

    bert.load_state_dict(strip(audio_ckpt, "cond_stage_model.caption_encoder.base."), strict=False)
    projection.load_state_dict(strip(audio_ckpt, "cond_stage_model.caption_encoder.projection."))
    t5.load_state_dict(strip(audio_ckpt, "cond_stage_model.t5_transformer."), strict=False)
    flan.load_state_dict(strip(music_ckpt, "cond_stage_model.transformer."), strict=False)

    from transformers import AutoTokenizer

    audio = types.SimpleNamespace(
        clap_tokenizer=AutoTokenizer.from_pretrained(OUT / "bert-base-uncased"),
        t5_tokenizer=AutoTokenizer.from_pretrained(OUT / "t5-v1_1-large"),
        caption_encoder=types.SimpleNamespace(base=bert, projection=projection),
        t5_transformer=t5, max_length=77, device="cpu")
    music = types.SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(OUT / "flan-t5-large"), transformer=flan,
                                  max_length=77, device="cpu")
    tensors, described = {}, {}
    with torch.no_grad():
        for name, (caps, structs) in CASES.items():
            tensors[f"audio.{name}"] = encode(audio, {"ori_caption": caps, "struct_caption": structs}).contiguous()
            described[f"audio.{name}"] = {"call": "FrozenCLAPFLANEmbedder.encode(self, {'ori_caption': caps, 'struct_caption': structs})",
                                          "ori_caption": caps, "struct_caption": structs,
                                          "shape": list(tensors[f"audio.{name}"].shape)}
            tensors[f"music.{name}"] = forward(music, caps).contiguous()
            described[f"music.{name}"] = {"call": "FrozenFLANEmbedder.forward(self, caps)", "text": caps,
                                          "shape": list(tensors[f"music.{name}"].shape)}
    save_file(tensors, str(OUT / "tensors.safetensors"))
    manifest = {
        "name": "lumina_audio_text_tiny",
        "description": __doc__.strip().splitlines()[0],
        "official_source": {"repository": "github:Alpha-VLLM/Lumina-T2X", "commit": COMMIT, "files": {
            "lumina_audio/models/encoders/modules.py": {"sha256": audio_sha, "used": "FrozenCLAPFLANEmbedder.encode"},
            "lumina_music/models/encoders/modules.py": {"sha256": music_sha, "used": "FrozenFLANEmbedder.forward"},
            "lumina_audio/models/encoders/CLAP/clap.py": {"sha256": clap_sha, "used": "Projection"}}},
        "how": (__doc__ or "").strip(),
        "files": {
            "bert-base-uncased/, t5-v1_1-large/, flan-t5-large/": "tiny transformers folders (tokenizer + config + weights)",
            "CLAP_weights_2022.pth": "{'model': caption_encoder.* under the CLAP key names} (never loaded by the official encoder)",
            "audio_checkpoint.safetensors": "cond_stage_model.caption_encoder.{base,projection}.*, cond_stage_model.t5_transformer.*",
            "music_checkpoint.safetensors": "cond_stage_model.transformer.*",
            "tensors.safetensors": "official encoder outputs, see 'tensors'",
        },
        "tensors": described,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
