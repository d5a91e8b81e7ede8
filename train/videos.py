"""Reading clips: video files through PyAV and folders of frame images (sorted by name).

`probe` looks at a clip without decoding it (a video's packet timestamps, a folder's image
headers), so a data set of clips can be bucketed before any frame is read; `frame_indices` picks
the frames a clip offers under data.frame_stride or data.fps; `read_frames` decodes just those.
Every problem is a `ClipError`: one line naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif"}
FRAME_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
REENCODE = "re-encode it (e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`) or remove it"


class ClipError(ValueError):
    """A clip that cannot be used: the message names the file and the fix."""


@dataclass(frozen=True)
class ClipInfo:
    """What `probe` learns about a clip without decoding it."""

    path: Path
    width: int
    height: int
    times: tuple[float, ...]  # presentation time in s of every frame, in order (frame folders: 0, 1, 2, ...)
    is_video: bool
    pts: tuple[int, ...] = ()  # videos: every frame's timestamp in the stream's time base, in order (for seeking)

    @property
    def count(self) -> int:
        return len(self.times)


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def frame_files(folder: Path) -> list[Path]:
    """A frame folder's images, sorted by name (frame_0002.png before frame_0010.png: zero-pad the numbers)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS)


def probe(path: str | Path) -> ClipInfo:
    """A video file's or frame folder's size and frame times; a ClipError when it cannot be read
    or (frame folders) its frames differ in size."""
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    if not path.is_file():
        raise ClipError(f"{path}: no such video file or frame folder; fix the path or remove the item")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: has no video stream; {REENCODE}")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            base = stream.time_base
            # the demuxer reads packets without decoding them: one per frame, in decode order
            pts = sorted(int(p.pts) for p in container.demux(stream) if p.pts is not None and p.size)
    except ClipError:
        raise
    except Exception as err:  # noqa: BLE001 - av raises many error types for broken files
        raise ClipError(f"{path}: cannot be read as a video ({type(err).__name__}: {str(err).strip()[:200]}); {REENCODE}") from None
    if not pts or width <= 0 or height <= 0:
        raise ClipError(f"{path}: holds no video frames; {REENCODE}")
    return ClipInfo(path, width, height, tuple(float((t - pts[0]) * base) for t in pts), True, tuple(pts))


def _probe_folder(folder: Path) -> ClipInfo:
    from PIL import Image

    files = frame_files(folder)
    if not files:
        raise ClipError(f"{folder}: a frame folder without frame images; put {' '.join(sorted(FRAME_EXTENSIONS))} files in it")
    sizes = []
    for file in files:
        try:
            with Image.open(file) as img:  # reads the header only
                sizes.append(img.size)
        except Exception as err:  # noqa: BLE001 - any unreadable image
            raise ClipError(f"{file}: cannot be read as an image ({type(err).__name__}); replace or remove this frame") from None
        if sizes[-1] != sizes[0]:
            w0, h0 = sizes[0]
            raise ClipError(f"{folder}: frame {file.name} is {sizes[-1][0]}×{sizes[-1][1]} px but {files[0].name} is "
                            f"{w0}×{h0} px; a clip's frames must share one size: resize them all to {w0}×{h0}")
    width, height = sizes[0]
    return ClipInfo(folder, width, height, tuple(float(i) for i in range(len(files))), False)


def frame_indices(info: ClipInfo, stride: int = 1, fps: float = 0.0) -> list[int]:
    """The frames the clip offers: every `stride`-th, or (fps > 0, videos) the frame nearest each
    tick of a 1/fps clock starting at the first frame (frames repeat when fps exceeds the video's)."""
    if fps <= 0 or not info.is_video:
        return list(range(0, info.count, stride))
    times = np.asarray(info.times)
    if len(times) == 1:
        return [0]
    # the clip lasts until half a source frame after its last frame starts
    end = times[-1] + float(np.median(np.diff(times))) / 2
    ticks = np.arange(int(np.ceil(end * fps - 1e-9))) / fps  # every tick before the end
    right = np.clip(np.searchsorted(times, ticks), 1, len(times) - 1)
    nearest = np.where(np.abs(times[right - 1] - ticks) <= np.abs(times[right] - ticks), right - 1, right)
    return nearest.tolist()


def too_short(info: ClipInfo, available: int, needed: int, stride: int, fps: float) -> ClipError:
    """The error of a clip that offers fewer frames than a training clip needs."""
    how = f" at data.fps={fps}" if fps and info.is_video else (f" at data.frame_stride={stride}" if stride > 1 else "")
    fix = "lower data.frames (or data.min_frames with buckets)"
    if stride > 1:
        fix += ", lower data.frame_stride"
    elif fps and info.is_video:
        fix += ", raise data.fps"
    return ClipError(f"{info.path}: offers {available} frame(s){how} but a clip needs {needed}; {fix}, or remove the clip")


def read_frames(info: ClipInfo, indices: list[int]):
    """The frames at `indices` (into the clip's frames in presentation order), as RGB PIL images."""
    from PIL import Image

    if not info.is_video:
        files = frame_files(info.path)
        out = []
        for i in indices:
            with Image.open(files[i]) as img:
                out.append(img.convert("RGB"))
        return out
    try:
        found = _seek_and_decode(info, indices)
        if found is None:  # frames without timestamps, or a seek that missed: decode from the start
            found = _decode_from_start(info, indices)
    except Exception as err:  # noqa: BLE001 - a file that probed well but fails to decode
        raise ClipError(f"{info.path}: cannot be decoded ({type(err).__name__}: {str(err).strip()[:200]}); {REENCODE}") from None
    if len(found) < len(set(indices)):
        raise ClipError(f"{info.path}: decoded {len(found)} of the {len(set(indices))} frames its packets promise; {REENCODE}")
    return [found[i] for i in indices]


def _seek_and_decode(info: ClipInfo, indices: list[int]) -> dict | None:
    """{index: image} decoded from the keyframe before the first wanted frame (a clip late in a
    long video does not decode everything before it); None when timestamps do not match up."""
    import av

    by_pts = {info.pts[i]: i for i in indices}
    last = max(by_pts)
    found = {}
    with av.open(str(info.path)) as container:
        stream = container.streams.video[0]
        container.seek(min(by_pts), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                return None
            if frame.pts in by_pts:
                found[by_pts[frame.pts]] = frame.to_image().convert("RGB")
            if frame.pts >= last:
                break
    return found if len(found) == len(by_pts) else None


def _decode_from_start(info: ClipInfo, indices: list[int]) -> dict:
    import av

    wanted, last, found = set(indices), max(indices), {}
    with av.open(str(info.path)) as container:
        for i, frame in enumerate(container.decode(video=0)):  # presentation order
            if i in wanted:
                found[i] = frame.to_image().convert("RGB")
            if i >= last:
                break
    return found


__all__ = ["ClipError", "ClipInfo", "VIDEO_EXTENSIONS", "frame_files", "frame_indices", "probe", "read_frames", "too_short"]
