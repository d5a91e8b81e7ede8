"""The tiny caption text encoder loads offline through lumina's loader and reads every caption."""

import torch

from lumina.text_encoders import load_text_encoder
from train.shapes import all_specs
from train.tiny_text_encoder import SPECIAL_TOKENS, build_text_encoder


def test_build_load_and_encode(tmp_path):
    folder = build_text_encoder(tmp_path / "te", seed=0)
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 1_000_000
    te = load_text_encoder(folder)
    assert te.convention.name == "gemma"
    assert te.hidden_size == 64
    tok = te.tokenizer
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.padding_side == "right"
    assert tok("a red circle")["input_ids"][0] == tok.bos_token_id  # BOS like Gemma's tokenizer

    captions = [s.caption() for s in all_specs()]
    ids, mask = te.tokenize(captions)
    assert (ids[:, 0] == tok.bos_token_id).all()
    assert not (ids == tok.unk_token_id).any()
    lengths = mask.sum(1)
    assert (lengths == torch.tensor([len(c.split()) + 1 for c in captions])).all()

    cond = te.encode(captions[:4] + [""])
    assert cond.cap_feats.shape == (5, ids.shape[1], 64)
    assert cond.cap_mask[-1].sum() == 1  # the empty prompt keeps its BOS: never an all-zero mask
    assert torch.isfinite(cond.cap_feats).all()
    # different captions give different features
    assert not torch.allclose(cond.cap_feats[0], cond.cap_feats[1])


def test_same_seed_same_features(tmp_path):
    caps = [s.caption() for s in all_specs()[:5]]
    feats = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        te = load_text_encoder(build_text_encoder(tmp_path / name, seed=seed))
        feats.append(te.encode(caps).cap_feats)
    assert torch.equal(feats[0], feats[1])
    assert not torch.allclose(feats[0], feats[2])
