"""data.sources: several sources drawn by weight (train/mixing.py), deterministic from the seed,
with a resumed run drawing exactly what the uninterrupted one drew."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from builders import TINY, write_images
from safetensors.torch import load_file

from train.config import ConfigError, load_config
from train.data import build_dataset
from train.engine import fit


def _config(encoder: str, *extra: str):
    return load_config(None, [*TINY, "run.progress=false", f"text.encoder={encoder}", "data.buckets=false", *extra])


@pytest.fixture()
def folder(tmp_path) -> Path:
    return write_images(tmp_path / "mine", [(16, 16)] * 6)


def test_weights_share_the_draws_and_every_item_comes_before_a_repeat(encoder, folder):
    sources = f"data.sources=[{{kind: folder, path: {folder}, weight: 1}}, {{kind: shapes, weight: 3, repeats: 1}}]"
    mixed = build_dataset(_config(encoder, sources))
    shapes = len(mixed.datasets[1])
    total = 6 + shapes
    assert mixed.slots == [round(total / 4), round(total * 3 / 4)] and len(mixed) == sum(mixed.slots)
    drawn = [mixed.locate(i, epoch) for epoch in range(3) for i in range(len(mixed))]
    counts = Counter(s for s, _ in drawn)
    assert counts[0] / len(drawn) == pytest.approx(0.25, abs=0.01)
    mine = [j for s, j in drawn if s == 0]
    for start in range(0, len(mine) - 5, 6):  # the folder is gone through whole, then again in a new order
        assert sorted(mine[start : start + 6]) == list(range(6))
    again = build_dataset(_config(encoder, sources))
    assert [again.locate(i, 2) for i in range(len(again))] == [mixed.locate(i, 2) for i in range(len(mixed))]
    image, caption = mixed.item(0, 0)
    assert image.shape == (3, 16, 16) and caption == (folder / f"img{mixed.locate(0, 0)[1]:03d}.txt").read_text()


def test_fit_on_mixed_sources_resumes_exactly_and_says_each_share(encoder, folder, tmp_path, caplog):
    from train.cache import build_cache

    other = write_images(tmp_path / "other", [(16, 16)] * 8, seed=1)
    cache = tmp_path / "cache"
    build_cache(_config(encoder, "data.kind=folder", f"data.path={other}", f"data.cache_dir={cache}"))
    sources = (f"data.sources=[{{kind: folder, path: {folder}, weight: 2}}, {{kind: cache, path: {cache}}}, "
               "{kind: shapes, weight: 1, repeats: 1}]")
    caplog.set_level(logging.INFO, logger="train")
    straight = fit(_config(encoder, sources, f"run.out_dir={tmp_path / 'a'}", "optim.steps=4", "run.save_every=4"))
    assert "  data.sources[1] folder " in caplog.text and "(50% of the draws): found 6 images with 6 captions" in caplog.text
    assert f"  data.sources[2] cache {cache} (25% of the draws): found 8 images" in caplog.text
    fit(_config(encoder, sources, f"run.out_dir={tmp_path / 'b'}", "optim.steps=2", "run.save_every=2"))
    resumed = fit(_config(encoder, sources, f"run.out_dir={tmp_path / 'b'}", "optim.steps=4", "run.save_every=2"))
    for name in ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors"):
        a, b = load_file(straight / "checkpoints" / "latest" / name), load_file(resumed / "checkpoints" / "latest" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("sources, message", [
    ("[{kind: video, path: x}]", r"data.sources\[1\]: kind='video'; choose folder, jsonl, shapes, scenes, cache"),
    ("[{kind: shapes}, {kind: folder, path: /nope}]", r"data.sources\[2\]: path='/nope' does not exist"),
    ("[{kind: shapes, weight: 0}]", r"data.sources\[1\]: weight=0 must be a number > 0"),
    ("[{kind: shapes, share: 2}]", r"data.sources\[1\]: unknown key\(s\) share; valid keys: kind, path, repeats, weight"),
    ("[shapes]", r"data.sources\[1\] must be a mapping like \{kind: folder"),
])
def test_bad_sources_name_the_entry_and_the_fix(encoder, sources, message):
    with pytest.raises(ConfigError, match=message):
        _config(encoder, f"data.sources={sources}")


def test_sources_replace_data_path(encoder, folder):
    with pytest.raises(ConfigError, match="data.sources replaces data.kind/data.path/data.cache_dir"):
        _config(encoder, "data.kind=folder", f"data.path={folder}", "data.sources=[{kind: shapes}]")
