"""Small video files for the ingest and decode tests: good ones, and every kind of bad one.

Good videos encode the frame index in their brightness (`frame_level(i)`), so a test can tell
which source frame ended up in a clip after windowing, seeking and resampling.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np


def frame_level(index: int) -> int:
    """Grey level of frame `index` in videos written by `write_video` (distinct for 0..58)."""
    return 16 + 4 * index


def write_video(
    path: Path,
    frames: int = 20,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    *,
    gop: int = 12,
    faststart: bool = False,
    audio: bool = False,
) -> Path:
    """An H.264 MP4 whose frame i is grey `frame_level(i % 60)` with a white square at the left.

    The square (a quarter of the height, at x in [0, height/4)) marks the frame's left edge for
    crop and padding checks.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "bf": "0", "crf": "12", "preset": "ultrafast"}
        audio_stream = out.add_stream("aac", rate=16000) if audio else None
        side = max(2, height // 4)
        for i in range(frames):
            image = np.full((height, width, 3), frame_level(i % 60), dtype=np.uint8)
            image[:side, :side] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
        if audio_stream is not None:
            for i in range(4):
                chunk = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 16000, i * 1024
                out.mux(audio_stream.encode(chunk))
            out.mux(audio_stream.encode())
    return path


def write_audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(8):
            chunk = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 16000, i * 1024
            out.mux(stream.encode(chunk))
        out.mux(stream.encode())
    return path


def write_tiny_frames(path: Path) -> Path:
    """A Matroska file with 1x1-pixel FFV1 frames."""
    import av

    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1, 1, "bgr0"
        for _ in range(5):
            image = np.zeros((1, 1, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def write_unknown_codec(path: Path) -> Path:
    """A valid Matroska file whose video track names a codec no decoder knows (V_ZZZZ)."""
    import av

    tmp = path.with_name(path.name + ".src.mkv")
    with av.open(str(tmp), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for _ in range(3):
            image = np.zeros((48, 64, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    data = tmp.read_bytes()
    tmp.unlink()
    assert b"V_FFV1" in data
    path.write_bytes(data.replace(b"V_FFV1", b"V_ZZZZ"))
    return path


def write_undecodable(path: Path) -> Path:
    """An MP4 with a valid header and sample table but random bytes as its H.264 payload."""
    write_video(path, frames=20, faststart=True)
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat") + 4
    rng = random.Random(0)
    for i in range(start, len(data)):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))
    return path


def write_truncated(path: Path) -> Path:
    """An MP4 cut in the middle (its index is at the end, so the cut loses it)."""
    write_video(path, frames=30)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_truncated_faststart(path: Path) -> Path:
    """An MP4 with its index in front, cut in the middle: the header promises missing frames."""
    write_video(path, frames=30, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def write_no_frames(path: Path) -> Path:
    """A YUV4MPEG2 stream header (64x48) with no frame after it: frame count 0."""
    path.write_bytes(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg\n")
    return path


def write_huge_header(path: Path) -> Path:
    """A YUV4MPEG2 header claiming 16000x16000 frames, followed by a few bytes of one frame."""
    header = b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n"
    path.write_bytes(header + bytes(4096))
    return path


BAD_VIDEOS = {
    # name in the dataset -> (writer or None, expected reason substring)
    "zero_bytes.mp4": ("zero", "empty file"),
    "truncated.mp4": ("truncated", "cannot open video"),
    "truncated_faststart.mp4": ("truncated_faststart", "truncated file"),
    "text.mp4": ("text", "cannot open video"),
    "audio_only.mp4": ("audio_only", "no video stream"),
    "missing.mp4": (None, "file not found"),
    "one_pixel.mkv": ("tiny", "below ingest.min_side"),
    "unknown_codec.mkv": ("unknown_codec", "unsupported video codec"),
    "undecodable.mp4": ("undecodable", "cannot be decoded"),
    "no_frames.mp4": ("no_frames", "frame count 0"),
    "huge_header.mp4": ("huge", "exceeds ingest.max_pixels"),
}


def write_bad_videos(folder: Path) -> dict[str, str]:
    """Write every bad video of `BAD_VIDEOS` into `folder`; returns name -> expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    writers = {
        "zero": lambda p: p.write_bytes(b""),
        "truncated": write_truncated,
        "truncated_faststart": write_truncated_faststart,
        "text": lambda p: p.write_text("this is a text file, not a video\n"),
        "audio_only": write_audio_only,
        "tiny": write_tiny_frames,
        "unknown_codec": write_unknown_codec,
        "undecodable": write_undecodable,
        "no_frames": write_no_frames,
        "huge": write_huge_header,
    }
    for name, (kind, _) in BAD_VIDEOS.items():
        if kind is not None:
            writers[kind](folder / name)
    return {name: reason for name, (_, reason) in BAD_VIDEOS.items()}
