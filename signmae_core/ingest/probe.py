"""Probing videos with PyAV: container facts, limits against hostile files, one test decode.

`probe_video(path, limits)` never raises for a bad file: it returns a `Probe` whose `error` says
why the video cannot be used (the manifest's failed-row reason). Checks run cheapest first, and
every limit is checked from the header before a single frame is decoded, so a file claiming a
65,000-pixel-wide frame or a ten-hour duration is rejected without decoding it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from signmae_core.config import IngestConfig
from signmae_core.store import sha256_file

from .source import SourceError, error_reason, open_video, stream_fps

# Packets read while looking for the first decodable frame before giving up.
_FIRST_FRAME_PACKETS = 300


@dataclass
class Probe:
    """What PyAV says about one video file; `error` is None when the video is usable."""

    error: str | None = None
    file_bytes: int | None = None
    file_mtime_ns: int | None = None
    file_sha256: str | None = None
    container: str | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frame_count: int | None = None
    frame_count_source: str | None = None  # "header" (it matched the packets) or "counted"
    rotation: int | None = None  # display rotation in degrees (recorded, not applied)
    duration_s: float | None = None
    has_audio: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def file_facts(path: Path) -> tuple[int, int] | None:
    """`(bytes, mtime_ns)` of a file, or None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def probe_video(path: str | Path, limits: IngestConfig) -> Probe:
    """Probe one video file; see the module docstring. Reads headers, decodes one frame."""
    path = Path(path)
    probe = Probe()
    facts = file_facts(path)
    if facts is None or not path.is_file():
        probe.error = "file not found"
        return probe
    probe.file_bytes, probe.file_mtime_ns = facts
    if probe.file_bytes == 0:
        probe.error = "empty file (0 bytes; a failed download?)"
        return probe
    if probe.file_bytes > limits.max_file_bytes:
        probe.error = (
            f"file of {probe.file_bytes} bytes exceeds ingest.max_file_bytes "
            f"({limits.max_file_bytes})"
        )
        return probe
    try:
        probe.file_sha256 = sha256_file(path)
    except OSError as exc:
        probe.error = f"cannot read file: {exc.strerror or exc}"
        return probe
    try:
        container, stream = open_video(path)
    except SourceError as exc:
        probe.error = str(exc)
        return probe
    except Exception as exc:  # noqa: BLE001 - any library failure on a hostile file is a reason
        probe.error = f"cannot open video: {type(exc).__name__}: {exc}"[:300]
        return probe
    try:
        probe.error = _read_facts(container, stream, probe, limits)
    except Exception as exc:  # noqa: BLE001 - any library failure on a hostile file is a reason
        probe.error = f"probe failed: {type(exc).__name__}: {exc}"[:300]
    finally:
        container.close()
    return probe


def _read_facts(container, stream, probe: Probe, limits: IngestConfig) -> str | None:
    """Fill `probe` from the open container; return the reason the video is unusable, if any."""
    probe.container = container.format.name
    probe.has_audio = bool(container.streams.audio)
    codec = stream.codec_context
    probe.codec = codec.name if codec is not None else None
    if not probe.codec:
        return "unsupported video codec (no decoder)"
    probe.width, probe.height = int(codec.width or 0), int(codec.height or 0)
    if probe.width <= 0 or probe.height <= 0:
        return "the header gives no frame size"
    if probe.width * probe.height > limits.max_pixels:
        return (
            f"frame size {probe.width}x{probe.height} exceeds ingest.max_pixels "
            f"({limits.max_pixels})"
        )
    if min(probe.width, probe.height) < limits.min_side:
        size = f"{probe.width}x{probe.height}"
        return f"frame size {size} is below ingest.min_side ({limits.min_side})"
    probe.fps = stream_fps(stream) or None
    probe.duration_s = _duration(container, stream)
    if probe.duration_s is not None and probe.duration_s > limits.max_duration_s:
        return (
            f"duration {probe.duration_s:.0f} s exceeds ingest.max_duration_s "
            f"({limits.max_duration_s:.0f})"
        )
    counted = _count_packets(container, stream)
    container.seek(0)
    header = int(stream.frames or 0)
    if header > counted:
        return f"truncated file: {counted} of the {header} frames in its header are present"
    probe.frame_count = counted
    probe.frame_count_source = "header" if header == counted else "counted"
    if probe.fps is None and probe.duration_s and probe.frame_count:
        probe.fps = probe.frame_count / probe.duration_s
    if probe.duration_s is None and probe.fps and probe.frame_count:
        probe.duration_s = probe.frame_count / probe.fps
    if probe.fps is None or probe.fps <= 0:
        return "the frame rate is unknown"
    if not probe.frame_count:
        return "the video has no frames (frame count 0)"
    return _check_first_frame(container, stream, probe)


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _count_packets(container, stream) -> int:
    """Frames present in the file, counted by demuxing (reads the file, decodes nothing).

    Checked against the header's count: a download cut short keeps its header but loses packets.
    """
    return sum(1 for packet in container.demux(stream) if packet.size)


def _check_first_frame(container, stream, probe: Probe) -> str | None:
    """Decode the first frame: proves the stream decodes and that the header's size is real."""
    import av

    packets = 0
    try:
        for packet in container.demux(stream):
            packets += 1
            for frame in packet.decode():
                probe.rotation = int(getattr(frame, "rotation", 0) or 0)
                if (frame.width, frame.height) != (probe.width, probe.height):
                    return (
                        f"header says {probe.width}x{probe.height} but frames are "
                        f"{frame.width}x{frame.height}"
                    )
                return None
            if packets >= _FIRST_FRAME_PACKETS:
                break
    except av.FFmpegError as exc:
        return f"video stream cannot be decoded: {error_reason(exc)}"
    return f"video stream cannot be decoded (no frame in the first {packets} packets)"
