"""Caption encoders of Lumina-T2Music / T2Audio (lumina.audio_text) on tiny random T5 / BERT models
built here (no downloads), against a direct computation written from the official
`FrozenFLANEmbedder` / `FrozenCLAPFLANEmbedder` (lumina_*/models/encoders/modules.py): tokenizer
call with padding="max_length", max_length=77, truncation; no attention mask to the encoders;
CLAP projection LN(l1 + l2(gelu(l1))) on every BERT token; CLAP ++ T5 along the tokens."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import BertModel, T5EncoderModel

from lumina.audio_text import (
    LuminaAudioTextError, checkpoint_text_kind, cond_stage_weights, load_audio_text_encoder, load_music_text_encoder,
)
from lumina.errors import LuminaCheckpointError
# the tiny folders the goldens were made on, rebuilt the same way (seeded)
from tools.make_audio_text_golden import BERT_WIDTH, T5_WIDTH
from tools.make_audio_text_golden import bert_folder as _bert_folder
from tools.make_audio_text_golden import t5_folder as _t5_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio_text")
    return {"flan": _t5_folder(root / "flan-t5-large", 1), "t5": _t5_folder(root / "t5-v1_1-large", 2),
            "bert": _bert_folder(root / "bert-base-uncased")}


def _projection(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"linear1.weight": torch.randn(T5_WIDTH, BERT_WIDTH, generator=g) / 3,
            "linear2.weight": torch.randn(T5_WIDTH, T5_WIDTH, generator=g) / 4,
            "layer_norm.weight": 1 + 0.1 * torch.randn(T5_WIDTH, generator=g),
            "layer_norm.bias": 0.1 * torch.randn(T5_WIDTH, generator=g)}


def _official_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    # the exact official tokenizer call
    return tokenizer(texts, truncation=True, max_length=77, return_length=True, return_overflowing_tokens=False,
                     padding="max_length", return_tensors="pt")["input_ids"]


def _official_projection(h: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    e1 = h @ p["linear1.weight"].T
    e2 = F.gelu(e1) @ p["linear2.weight"].T  # dropout: eval
    return F.layer_norm(e1 + e2, (e1.shape[-1],), p["layer_norm.weight"], p["layer_norm.bias"], 1e-5)


def _randomised(model: torch.nn.Module, prefix: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {prefix + k: torch.randn(v.shape, generator=g) * 0.2 + v for k, v in model.state_dict().items()}


CAPTIONS = ["a calm piano melody with soft drums", "dog barks loudly in the distance"]
STRUCTS = ["<sound&all> of rain", "<sound&all> of street traffic and dog"]


def test_music_encoder_equals_the_official_flan_embedder(folders):
    enc = load_music_text_encoder(folders["flan"])
    ref_model = T5EncoderModel.from_pretrained(folders["flan"]).eval()
    ids = _official_ids(enc.t5.tokenizer, CAPTIONS)
    with torch.no_grad():
        ref = ref_model(input_ids=ids).last_hidden_state
    cond = enc.encode(CAPTIONS)
    assert cond.cap_feats.shape == (2, 77, T5_WIDTH) and enc.width == T5_WIDTH
    assert torch.equal(cond.cap_feats, ref)
    assert bool(cond.cap_mask.all())  # the DiT sees every token, padding included, like the official model
    # padding features are part of the context: without a mask they differ from a masked run
    mask = enc.t5.tokenize(CAPTIONS)[1]
    with torch.no_grad():
        masked = ref_model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    assert not torch.allclose(masked, ref)
    assert ids[0, :8].tolist()[-1] == 1 and ids[0, 8:].eq(0).all()  # "</s>" then pad id 0 up to 77


def test_music_checkpoint_weights_replace_the_folders(folders):
    base = T5EncoderModel.from_pretrained(folders["flan"]).eval()
    ckpt = _randomised(base, "cond_stage_model.transformer.", 5)
    ckpt["model.diffusion_model.proj_in.weight"] = torch.zeros(4, 20)
    enc = load_music_text_encoder(folders["flan"], checkpoint=ckpt)
    base.load_state_dict(cond_stage_weights(ckpt, "transformer"))
    with torch.no_grad():
        ref = base(input_ids=_official_ids(enc.t5.tokenizer, CAPTIONS[:1])).last_hidden_state
    assert torch.equal(enc.encode(CAPTIONS[0]).cap_feats, ref)
    bad = {"cond_stage_model.transformer.shared.weight": torch.zeros(7, T5_WIDTH)}
    with pytest.raises(LuminaCheckpointError, match="do not fit"):
        load_music_text_encoder(folders["flan"], checkpoint=bad)


def _clap_file(path: Path, bert: BertModel, proj: dict[str, torch.Tensor]) -> Path:
    """CLAP_weights_2022.pth under the official key names (caption_encoder.base = transformers'
    BertModel with pooler, an old persistent position_ids buffer; the audio tower beside it)."""
    sd = {f"caption_encoder.base.{k}": v for k, v in bert.state_dict().items()}
    sd["caption_encoder.base.embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    sd["caption_encoder.base.pooler.dense.weight"] = torch.zeros(BERT_WIDTH, BERT_WIDTH)
    sd["caption_encoder.base.pooler.dense.bias"] = torch.zeros(BERT_WIDTH)
    sd.update({f"caption_encoder.projection.{k}": v for k, v in proj.items()})
    sd["audio_encoder.base.conv_block1.conv1.weight"] = torch.zeros(4, 1, 3, 3)
    torch.save({"model": sd, "optimizer": {}, "epoch": 44}, path)
    return path


def _official_audio(bert: BertModel, proj: dict, t5: T5EncoderModel, bert_tok, t5_tok, caps, structs) -> torch.Tensor:
    with torch.no_grad():
        z = _official_projection(bert(input_ids=_official_ids(bert_tok, caps)).last_hidden_state, proj)
        z2 = t5(input_ids=_official_ids(t5_tok, structs)).last_hidden_state
    return torch.concat([z, z2], dim=1)


def test_audio_encoder_equals_the_official_clap_flan_embedder_with_clap_weights(folders, tmp_path: Path):
    folder_bert = BertModel.from_pretrained(folders["bert"], add_pooling_layer=False).eval()
    clap_bert = BertModel(folder_bert.config, add_pooling_layer=False).eval()
    clap_bert.load_state_dict({k: v.clone() for k, v in _randomised(folder_bert, "", 9).items()})
    proj = _projection(4)
    clap = _clap_file(tmp_path / "CLAP_weights_2022.pth", clap_bert, proj)
    enc = load_audio_text_encoder(folders["bert"], folders["t5"], clap_weights=clap)
    t5 = T5EncoderModel.from_pretrained(folders["t5"]).eval()
    ref = _official_audio(clap_bert, proj, t5, enc.clap.tokenizer, enc.t5.tokenizer, CAPTIONS, STRUCTS)
    cond = enc.encode(CAPTIONS, STRUCTS)
    assert cond.cap_feats.shape == (2, 154, T5_WIDTH) and bool(cond.cap_mask.all())
    assert (cond.cap_feats - ref).abs().max().item() <= 1e-6
    # the CLAP file's BERT (not the folder's) is the one in use
    for k, v in clap_bert.state_dict().items():
        assert torch.equal(enc.clap.model.state_dict()[k], v), k
    # one caption and one structured caption, as the official demo's batch of 1
    single = enc.encode(CAPTIONS[1], STRUCTS[1])
    assert (single.cap_feats[0] - ref[1]).abs().max().item() <= 1e-6


def test_audio_checkpoint_weights_win_like_the_official_load_order(folders, tmp_path: Path):
    bert = BertModel.from_pretrained(folders["bert"], add_pooling_layer=False).eval()
    t5 = T5EncoderModel.from_pretrained(folders["t5"]).eval()
    clap = _clap_file(tmp_path / "clap.pth", bert, _projection(4))
    ckpt = _randomised(bert, "cond_stage_model.caption_encoder.base.", 11)
    ckpt.update({f"cond_stage_model.caption_encoder.projection.{k}": v for k, v in _projection(12).items()})
    ckpt.update(_randomised(t5, "cond_stage_model.t5_transformer.", 13))
    ckpt["scale_factor"] = torch.tensor(0.5)
    for clap_weights in (clap, None):
        enc = load_audio_text_encoder(folders["bert"], folders["t5"], clap_weights=clap_weights, checkpoint=ckpt)
        bert.load_state_dict(cond_stage_weights(ckpt, "caption_encoder.base"))
        t5.load_state_dict(cond_stage_weights(ckpt, "t5_transformer"))
        ref = _official_audio(bert, _projection(12), t5, enc.clap.tokenizer, enc.t5.tokenizer, CAPTIONS, STRUCTS)
        assert (enc.encode(CAPTIONS, STRUCTS).cap_feats - ref).abs().max().item() <= 1e-6


def test_audio_empty_captions_are_the_unconditional_input(folders, tmp_path: Path):
    bert = BertModel.from_pretrained(folders["bert"], add_pooling_layer=False).eval()
    enc = load_audio_text_encoder(folders["bert"], folders["t5"], clap_weights=_clap_file(tmp_path / "c.pth", bert, _projection(4)))
    t5 = T5EncoderModel.from_pretrained(folders["t5"]).eval()
    ref = _official_audio(bert, _projection(4), t5, enc.clap.tokenizer, enc.t5.tokenizer, [""], [""])
    assert (enc.encode("", "").cap_feats - ref).abs().max().item() <= 1e-6


def test_unknown_words_and_truncation_are_reported(folders):
    enc = load_music_text_encoder(folders["flan"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc.encode(["a calm zebra melody", " ".join(["piano"] * 90)])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "'zebra' (prompt 1)" in messages[0]
    assert "caption 2 is 91 FLAN-T5 tokens long" in messages[0] and "first 77" in messages[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc.encode(CAPTIONS)
    assert not caught


def test_bad_inputs_and_files_are_clear(folders, tmp_path: Path):
    with pytest.raises(LuminaCheckpointError, match="CLAP text projection has no weights"):
        load_audio_text_encoder(folders["bert"], folders["t5"])
    with pytest.raises(LuminaAudioTextError, match="no config.json"):
        load_music_text_encoder(tmp_path)
    not_clap = tmp_path / "other.pth"
    torch.save({"model": {"audio_encoder.x": torch.zeros(1)}}, not_clap)
    with pytest.raises(LuminaCheckpointError, match="no CLAP text encoder"):
        load_audio_text_encoder(folders["bert"], folders["t5"], clap_weights=not_clap)
    bert = BertModel.from_pretrained(folders["bert"], add_pooling_layer=False)
    wide = {k: torch.zeros(2 * T5_WIDTH, BERT_WIDTH) if k == "linear1.weight" else v for k, v in _projection(1).items()}
    with pytest.raises(LuminaCheckpointError, match="maps 8 -> 32"):
        load_audio_text_encoder(folders["bert"], folders["t5"], clap_weights=_clap_file(tmp_path / "w.pth", bert, wide))
    enc = load_audio_text_encoder(folders["bert"], folders["t5"], clap_weights=_clap_file(tmp_path / "c.pth", bert, _projection(1)))
    with pytest.raises(LuminaAudioTextError, match="2 captions but 1 structured"):
        enc.encode(CAPTIONS, STRUCTS[:1])


def test_a_checkpoint_of_the_other_model_is_refused(folders, tmp_path: Path):
    music = {"cond_stage_model.transformer.shared.weight": torch.zeros(3, T5_WIDTH), "scale_factor": torch.tensor(1.0)}
    audio = {"cond_stage_model.t5_transformer.shared.weight": torch.zeros(3, T5_WIDTH),
             "cond_stage_model.caption_encoder.projection.linear1.weight": torch.zeros(T5_WIDTH, BERT_WIDTH)}
    assert (checkpoint_text_kind(music), checkpoint_text_kind(audio), checkpoint_text_kind({"scale_factor": torch.ones(())})) == (
        "music", "audio", None)
    bert = BertModel.from_pretrained(folders["bert"], add_pooling_layer=False)
    clap = _clap_file(tmp_path / "c.pth", bert, _projection(1))
    with pytest.raises(LuminaCheckpointError, match="Lumina-T2Music .* not a Lumina-T2Audio"):
        load_audio_text_encoder(folders["bert"], folders["t5"], clap_weights=clap, checkpoint=music)
    with pytest.raises(LuminaCheckpointError, match="Lumina-T2Audio .* not a Lumina-T2Music"):
        load_music_text_encoder(folders["flan"], checkpoint=audio)


# --- goldens of the official encoders (tools/make_audio_text_golden.py) -------------------------------------

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "lumina_audio_text_tiny"


def _golden_case(name: str) -> tuple[dict, torch.Tensor]:
    import json

    from safetensors.torch import load_file

    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    return manifest["tensors"][name], load_file(str(GOLDEN / "tensors.safetensors"))[name]


@pytest.mark.parametrize("case", ["pair", "empty", "long"])
def test_audio_encoder_reproduces_the_official_clap_flan_embedder(case: str):
    """Official FrozenCLAPFLANEmbedder.encode with the checkpoint's cond_stage_model.* loaded over the
    folders (the CLAP file holds other weights: the official encoder never loads it)."""
    from safetensors.torch import load_file

    info, expected = _golden_case(f"audio.{case}")
    enc = load_audio_text_encoder(GOLDEN / "bert-base-uncased", GOLDEN / "t5-v1_1-large",
                                  clap_weights=GOLDEN / "CLAP_weights_2022.pth",
                                  checkpoint=load_file(str(GOLDEN / "audio_checkpoint.safetensors")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long case is truncated (and reported)
        got = enc.encode(info["ori_caption"], info["struct_caption"]).cap_feats
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("case", ["pair", "empty", "long"])
def test_music_encoder_reproduces_the_official_flan_embedder(case: str):
    from safetensors.torch import load_file

    info, expected = _golden_case(f"music.{case}")
    enc = load_music_text_encoder(GOLDEN / "flan-t5-large", checkpoint=load_file(str(GOLDEN / "music_checkpoint.safetensors")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = enc.encode(info["text"]).cap_feats
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


def test_the_folders_alone_do_not_give_the_official_features():
    # guards the goldens: the checkpoint's weights matter (they differ from the folders' and CLAP's)
    info, expected = _golden_case("audio.pair")
    enc = load_audio_text_encoder(GOLDEN / "bert-base-uncased", GOLDEN / "t5-v1_1-large",
                                  clap_weights=GOLDEN / "CLAP_weights_2022.pth")
    assert (enc.encode(info["ori_caption"], info["struct_caption"]).cap_feats - expected).abs().max().item() > 1e-2


def test_a_t5_folder_with_only_spiece_model_and_no_sentencepiece_says_what_to_do(tmp_path: Path):
    """google/t5-v1_1-large ships spiece.model; without the sentencepiece package transformers
    cannot read it (and says something about tiktoken): the error names both ways out."""
    import importlib.util

    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed: spiece.model can be read")
    from transformers.utils import sentencepiece_model_pb2_new as pb

    proto = pb.ModelProto()
    for piece, score, kind in [("<pad>", 0.0, 3), ("</s>", 0.0, 3), ("<unk>", 0.0, 2), ("▁a", -1.0, 1)]:
        p = proto.pieces.add()
        p.piece, p.score, p.type = piece, score, kind
    proto.trainer_spec.model_type = 1
    folder = _t5_folder(tmp_path / "t5-v1_1-large", 2)
    (folder / "tokenizer.json").unlink()
    (folder / "spiece.model").write_bytes(proto.SerializeToString())
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "extra_ids": 0}')
    with pytest.raises(LuminaAudioTextError, match="tokenizer.json .* sentencepiece"):
        load_music_text_encoder(folder)


def test_checkpoint_may_be_split_already():
    """The text weights as a whole CFM state dict, without `cond_stage_model.`, or as the
    `cond_stage` of a split checkpoint (lumina.audio_checkpoints.AudioCheckpoint) give one result."""
    import types

    from safetensors.torch import load_file

    info, expected = _golden_case("audio.pair")
    whole = load_file(str(GOLDEN / "audio_checkpoint.safetensors"))
    stripped = {k[len("cond_stage_model."):]: v for k, v in whole.items()}
    for checkpoint in (stripped, types.SimpleNamespace(cond_stage=stripped, first_stage={}, scale_factor=None)):
        assert checkpoint_text_kind(checkpoint) == "audio"
        enc = load_audio_text_encoder(GOLDEN / "bert-base-uncased", GOLDEN / "t5-v1_1-large", checkpoint=checkpoint)
        assert (enc.encode(info["ori_caption"], info["struct_caption"]).cap_feats - expected).abs().max().item() <= 1e-5
    music = {k[len("cond_stage_model."):]: v for k, v in load_file(str(GOLDEN / "music_checkpoint.safetensors")).items()}
    with pytest.raises(LuminaCheckpointError, match="Lumina-T2Music"):
        load_audio_text_encoder(GOLDEN / "bert-base-uncased", GOLDEN / "t5-v1_1-large", checkpoint=music)
