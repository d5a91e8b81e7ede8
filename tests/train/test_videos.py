"""Reading clips (train/videos.py, train/clips.py): videos written by PyAV itself and PNG frame
folders, frame stride and fps resampling, captions found like images', and one-line errors naming
the file and the fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import FRAMES_TINY, moving_frames, write_frame_folder, write_video

from train.clips import CaptionedClips, folder_clips, jsonl_clips
from train.config import ConfigError, load_config
from train.data import build_dataset
from train.videos import ClipError, frame_indices, probe, read_frames

pytest.importorskip("av")


def brightness(images) -> list[float]:
    return [float(np.asarray(im, dtype=np.float32).mean()) for im in images]


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_video_reads_back_in_order(tmp_path, suffix):
    frames = moving_frames(6)
    info = probe(write_video(tmp_path / f"clip{suffix}", frames, fps=8))
    assert (info.width, info.height, info.count, info.is_video) == (32, 32, 6, True)
    assert info.times == pytest.approx([i / 8 for i in range(6)], abs=1e-3)
    decoded = read_frames(info, [0, 2, 5])
    assert [im.size for im in decoded] == [(32, 32)] * 3
    # lossy codecs: compare each decoded frame with the source frames, it is nearest its own
    for index, image in zip([0, 2, 5], decoded):
        errors = [np.abs(np.asarray(image, np.float32) - f.astype(np.float32)).mean() for f in frames]
        assert int(np.argmin(errors)) == index


def test_a_frame_folder_is_its_images_sorted_by_name(tmp_path):
    from PIL import Image

    frames = moving_frames(5)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in reversed(range(5)):  # written last to first: names, not creation order, decide
        Image.fromarray(frames[i]).save(folder / f"f{i:02d}.png")
    (folder / "notes.txt").write_text("not a frame")
    info = probe(folder)
    assert (info.count, info.is_video, info.width) == (5, False, 32)
    decoded = read_frames(info, [4, 1])
    assert [np.array_equal(np.asarray(im), frames[i]) for im, i in zip(decoded, [4, 1])] == [True, True]  # PNG: lossless


def test_stride_and_fps_resampling(tmp_path):
    info = probe(write_video(tmp_path / "clip.mp4", moving_frames(12), fps=12))  # 1 s at 12 fps
    assert frame_indices(info, stride=3) == [0, 3, 6, 9]
    assert frame_indices(info, fps=4) == [0, 3, 6, 9]  # the frame nearest every 1/4 s up to the last frame (11/12 s)
    doubled = frame_indices(info, fps=24)  # ticks 0 .. 11/12 s every 1/24 s: each frame about twice
    assert len(doubled) == 23 and doubled == sorted(doubled) and set(doubled) == set(range(12))
    folder = probe(write_frame_folder(tmp_path / "frames", moving_frames(5)))
    assert frame_indices(folder, stride=2) == [0, 2, 4] and frame_indices(folder, fps=30) == [0, 1, 2, 3, 4]


def test_unreadable_video_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(ClipError) as info:
        probe(bad)
    message = str(info.value)
    assert "\n" not in message and str(bad) in message and "re-encode it" in message


def test_mixed_frame_sizes_name_the_frame_and_the_size(tmp_path):
    from PIL import Image

    folder = write_frame_folder(tmp_path / "clip", moving_frames(3))
    Image.fromarray(moving_frames(1, 24, 32)[0]).save(folder / "frame_001.png")
    with pytest.raises(ClipError) as info:
        probe(folder)
    assert str(info.value) == (f"{folder}: frame frame_001.png is 24×32 px but frame_000.png is 32×32 px; a clip's "
                               "frames must share one size: resize them all to 32×32")


def clip_folder(root: Path) -> Path:
    """Two videos and a frame folder with captions, an uncaptioned video, a loose image."""
    write_video(root / "a.mp4", moving_frames(8, seed=1))
    (root / "a.txt").write_text("a square moving right")
    write_video(root / "sub" / "b.webm", moving_frames(6, 40, 24, seed=2))
    (root / "sub" / "b.txt").write_text("a wide one")
    write_frame_folder(root / "c", moving_frames(4, seed=3), caption="frames of c")
    write_video(root / "nocaption.mp4", moving_frames(4))
    write_frame_folder(root / "loose", moving_frames(1))  # a folder without loose.txt: not a clip
    return root


def test_folder_and_jsonl_find_captions_like_images(tmp_path):
    root = clip_folder(tmp_path / "data")
    assert [(p.relative_to(root).as_posix(), c) for p, c in folder_clips(root)] == [
        ("a.mp4", "a square moving right"), ("c", "frames of c"), ("sub/b.webm", "a wide one")]
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text(json.dumps({"video": "data/a.mp4", "caption": "x"}) + "\nnot json\n"
                        + json.dumps({"video": str(root / "c"), "caption": "y"}) + "\n")
    assert [(p, c) for p, c in jsonl_clips(manifest)] == [(root / "a.mp4", "x"), (root / "c", "y")]


def test_short_and_broken_clips_are_left_out_with_a_warning(tmp_path, caplog):
    root = clip_folder(tmp_path / "data")
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    (root / "broken.txt").write_text("broken")
    items = folder_clips(root)
    with caplog.at_level(logging.WARNING, logger="train.clips"):
        clips = CaptionedClips(items, frames=5, side=16, stride=1)
    assert sorted(p.name for p, _ in clips.items) == ["a.mp4", "b.webm"] and clips.skipped == 2
    short = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"skipping clip: {root / 'c'}:")]
    assert short == [f"skipping clip: {root / 'c'}: offers 4 frame(s) but a clip needs 5; lower data.frames "
                     "(or data.min_frames with buckets), or remove the clip"]
    with pytest.raises(ConfigError, match=r"none of its 4 clip\(s\) can be used .*offers 4 frame\(s\) at data.frame_stride=2 .*lower data.frame_stride"):
        CaptionedClips(items, frames=5, side=16, stride=2, source="data")


def test_square_clips_without_buckets(tmp_path, encoder):
    root = clip_folder(tmp_path / "data")
    config = load_config(None, [*FRAMES_TINY, "data.kind=folder", f"data.path={root}", "data.buckets=false",
                                f"text.encoder={encoder}"])
    dataset = build_dataset(config)
    assert isinstance(dataset, CaptionedClips) and len(dataset) == 3
    for index in range(3):
        clip, caption = dataset.item(index, epoch=0)
        assert clip.shape == (3, 4, 16, 16) and clip.dtype == torch.float32 and -1 <= clip.min() <= clip.max() <= 1
    # a's 8 frames: the start is drawn per epoch, frames stay consecutive and in order
    starts = set()
    for epoch in range(6):
        clip, _ = dataset.item(0, epoch)
        means = clip.mean(dim=(0, 2, 3))
        assert bool((means[1:] > means[:-1]).all())  # moving_frames brighten frame by frame
        starts.add(round(float(means[0]), 2))
    assert len(starts) > 1


def test_no_clips_is_a_config_error(tmp_path, encoder):
    (tmp_path / "empty").mkdir()
    config = load_config(None, [*FRAMES_TINY, "data.kind=folder", f"data.path={tmp_path / 'empty'}", f"text.encoder={encoder}"])
    with pytest.raises(ConfigError, match="holds no clip with a same-name .txt caption"):
        build_dataset(config)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_frames_late_in_a_video_decode_as_from_the_start(tmp_path, suffix, monkeypatch):
    import train.videos

    info = probe(write_video(tmp_path / f"long{suffix}", moving_frames(40), fps=8, gop=8))  # keyframes 0, 8, ..., 32
    wanted = [31, 33, 35, 39]
    sought = train.videos._seek_and_decode(info, wanted)
    assert sought is not None  # the fast path found every frame by its timestamp
    sequential = train.videos._decode_from_start(info, wanted)
    assert all(np.array_equal(np.asarray(sought[i]), np.asarray(sequential[i])) for i in wanted)
    assert [np.asarray(im).tobytes() for im in read_frames(info, wanted)] == [np.asarray(sequential[i]).tobytes() for i in wanted]
    monkeypatch.setattr(train.videos, "_seek_and_decode", lambda info, indices: None)  # the fallback alone
    assert len(read_frames(info, wanted)) == 4
