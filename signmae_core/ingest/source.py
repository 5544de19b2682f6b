"""Reading a sign's frame window from a source video: seek, resample, square crop, resize.

Used by the decode stage (standardized clips) and by stages that want the source window at a
higher resolution (keypoint extraction): both read through `read_window`, so the same crop box
and the same source frame indices give pixel-aligned results at any output size.

Conventions (see docs/CLIPS.md):
- frame indices are 0-based positions in decode order of the video stream;
- a window is `[start, end)` (end exclusive);
- a crop box is a square `(x0, y0, side)` in source pixels; it may reach outside the frame, and
  what lies outside is filled with black (padding).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# Seek only when the window starts this far into the video; before that, decoding from the
# start is as cheap as a seek and gives exact frame indices.
SEEK_THRESHOLD_S = 2.0


class SourceError(RuntimeError):
    """A source video that cannot be read (the message is the failed row's reason)."""


@dataclass(frozen=True)
class CropBox:
    """A square region of the source frame, in source pixels; may extend past the frame."""

    x0: float
    y0: float
    side: float

    def to_list(self) -> list[float]:
        return [self.x0, self.y0, self.side]


def crop_box_for(
    width: int, height: int, mode: str, bbox: tuple[float, float, float, float] | None = None
) -> CropBox:
    """The square crop of a `width x height` frame for a crop `mode`.

    - `pad`: the whole frame, centred in a square of side `max(width, height)` (black bars);
    - `center`: the centred square of side `min(width, height)` (cuts the long side);
    - `bbox_or_pad`: the bbox `(x0, y0, x1, y1)` grown to a square around its centre (its long
      side), when a valid bbox is given; otherwise `pad`.
    """
    if mode == "bbox_or_pad" and bbox is not None:
        x0, y0, x1, y1 = (float(v) for v in bbox)
        x0, y0 = max(0.0, x0), max(0.0, y0)
        x1, y1 = min(float(width), x1), min(float(height), y1)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            side = max(x1 - x0, y1 - y0)
            return CropBox((x0 + x1 - side) / 2, (y0 + y1 - side) / 2, side)
    if mode == "center":
        side = float(min(width, height))
    else:
        side = float(max(width, height))
    return CropBox((width - side) / 2, (height - side) / 2, side)


def resample_indices(start: int, end: int, src_fps: float, out_fps: float | None) -> list[int]:
    """Source frame indices in `[start, end)` that make a clip at `out_fps`.

    Output frame j shows the source frame on screen at time j / out_fps after the window start
    (`start + floor(j * src_fps / out_fps)`), so a 30 fps window resampled to 25 fps keeps its
    duration. `out_fps=None` keeps every frame.
    """
    count = end - start
    if count <= 0:
        return []
    if out_fps is None or not src_fps or abs(src_fps - out_fps) < 1e-6:
        return list(range(start, end))
    n_out = max(1, round(count * out_fps / src_fps))
    step = src_fps / out_fps
    return [start + min(count - 1, int(math.floor(j * step + 1e-6))) for j in range(n_out)]


def stream_fps(stream) -> float:
    """Frame rate of a PyAV video stream (average, else guessed, else base rate); 0 if unknown."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def open_video(path: str | Path):
    """Open a video with PyAV, tolerant of non-UTF-8 metadata; returns `(container, stream)`.

    The decoder runs on one thread: parallelism comes from running one video per worker.
    """
    import av

    try:
        container = av.open(str(path), metadata_errors="replace")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(f"cannot open video: {error_reason(exc)}") from None
    if not container.streams.video:
        container.close()
        raise SourceError("no video stream in the file")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        codec_tag = getattr(stream, "codec_tag", "") or "unknown"
        container.close()
        raise SourceError(f"unsupported video codec ({codec_tag}): no decoder")
    stream.thread_type = "SLICE"
    stream.codec_context.thread_count = 1
    return container, stream


def error_reason(exc: BaseException) -> str:
    """A one-line reason: FFmpeg's message without its errno and file name."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return " ".join(str(text).split())[:300]


@dataclass(frozen=True)
class Placement:
    """Where the visible part of a crop box comes from and where it goes in the output.

    `source` is `(x0, y0, x1, y1)` in whole source pixels (the box clipped to the frame);
    `target` is `(x, y, width, height)` in the `size x size` output; the rest is black.
    """

    source: tuple[int, int, int, int]
    target: tuple[int, int, int, int]


def placement(width: int, height: int, box: CropBox, size: int) -> Placement:
    """The visible part of `box` in a `width x height` frame and its place in the output."""
    scale = size / box.side
    x0, y0 = int(math.floor(max(0.0, box.x0))), int(math.floor(max(0.0, box.y0)))
    x1 = int(math.ceil(min(float(width), box.x0 + box.side)))
    y1 = int(math.ceil(min(float(height), box.y0 + box.side)))
    if x1 <= x0 or y1 <= y0:
        raise SourceError(f"crop box {box.to_list()} lies outside the {width}x{height} frame")
    dst_x = min(size - 1, max(0, int(round((x0 - box.x0) * scale))))
    dst_y = min(size - 1, max(0, int(round((y0 - box.y0) * scale))))
    dst_w = max(1, min(size - dst_x, int(round((x1 - x0) * scale))))
    dst_h = max(1, min(size - dst_y, int(round((y1 - y0) * scale))))
    return Placement((x0, y0, x1, y1), (dst_x, dst_y, dst_w, dst_h))


class FrameResizer:
    """Crop to a box, resize to `size x size` and pad: one FFmpeg filter graph per clip.

    `crop` (no copy) -> `scale` (area interpolation, converting to RGB in the same pass) ->
    `pad` (black) on decoded `av.VideoFrame`s; returns `(size, size, 3)` uint8 arrays in
    `pixel_format` order (rgb24 or bgr24). The graph is rebuilt if the stream changes size.
    """

    def __init__(self, box: CropBox | None, size: int, pixel_format: str = "rgb24") -> None:
        self.box, self.size, self.pixel_format = box, size, pixel_format
        self._key: tuple | None = None
        self._graph = None

    def __call__(self, frame) -> np.ndarray:
        key = (frame.width, frame.height, frame.format.name)
        if key != self._key:
            self._graph, self._key = self._build(frame), key
        try:
            self._graph.push(frame)
            return self._graph.pull().to_ndarray()
        except Exception as exc:  # noqa: BLE001 - FFmpeg or PyAV errors on odd frames
            raise SourceError(f"cannot crop and resize a frame: {error_reason(exc)}") from None

    def _build(self, frame):
        from av.filter import Graph

        box = self.box or crop_box_for(frame.width, frame.height, "pad")
        place = placement(frame.width, frame.height, box, self.size)
        x0, y0, x1, y1 = place.source
        dst_x, dst_y, dst_w, dst_h = place.target
        graph = Graph()
        chain = [
            graph.add_buffer(
                width=frame.width,
                height=frame.height,
                format=frame.format.name,
                time_base=frame.time_base or Fraction(1, 25),
            ),
            graph.add("crop", f"{x1 - x0}:{y1 - y0}:{x0}:{y0}:exact=1"),
            graph.add("scale", f"{dst_w}:{dst_h}:flags=area"),
            graph.add("format", self.pixel_format),
            graph.add("pad", f"{self.size}:{self.size}:{dst_x}:{dst_y}:black"),
            graph.add("buffersink"),
        ]
        for upstream, downstream in zip(chain, chain[1:], strict=False):
            upstream.link_to(downstream)
        graph.configure()
        return graph


def crop_resize(frame, box: CropBox, size: int, pixel_format: str = "rgb24") -> np.ndarray:
    """One decoded `av.VideoFrame` cropped to `box`, resized and padded: `(size, size, 3)`.

    For many frames of one clip use a `FrameResizer` (it builds its filter graph once).
    """
    return FrameResizer(box, size, pixel_format)(frame)


def iter_window_frames(container, stream, start: int, end: int) -> Iterator[tuple[int, object]]:
    """Yield `(index, av.VideoFrame)` for the decodable frames with index in `[start, end)`.

    Decoding stops at `end`: a 49-frame sign at the start of a 4,232-frame video decodes 49
    frames. A window starting more than `SEEK_THRESHOLD_S` in seeks to the keyframe before it;
    frame indices after a seek come from timestamps (`round((t - t_first) * fps)`), which is
    exact for constant-frame-rate video. Without a seek they are decode-order counts.
    """
    import av

    fps = stream_fps(stream)
    seeked = False
    time_base = stream.time_base
    first_pts = stream.start_time or 0
    if fps and start / fps > SEEK_THRESHOLD_S and time_base:
        target = first_pts + int((start - 0.5) / fps / time_base)
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
            seeked = True
        except av.FFmpegError:
            container.seek(0, stream=stream)
    index = -1
    try:
        for frame in container.decode(stream):
            if seeked and frame.pts is not None:
                index = int(round((frame.pts - first_pts) * time_base * fps))
            else:
                index += 1
            if index >= end:
                return
            if index >= start:
                yield index, frame
    except av.FFmpegError as exc:
        if index < start:
            raise SourceError(f"video stream cannot be decoded: {error_reason(exc)}") from None
        # A stream that breaks mid-window keeps the frames decoded so far (counted by the caller).


def read_window(
    path: str | Path,
    start: int,
    end: int,
    *,
    out_fps: float | None,
    box: CropBox | None,
    size: int,
    max_frames: int | None = None,
    pixel_format: str = "rgb24",
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream `(source_index, frame)` pairs of the window `[start, end)` resampled to `out_fps`.

    `frame` is `(size, size, 3)` uint8 (`pixel_format` rgb24 or bgr24), cropped to `box`
    (`None`: the whole frame padded to a square) and resized. At most `max_frames` frames (the
    first ones: the clip keeps its frame rate). Raises `SourceError` when the file cannot be
    opened or not one frame of the window decodes; a stream that ends early yields fewer frames.
    """
    container, stream = open_video(path)
    try:
        wanted = resample_indices(start, end, stream_fps(stream), out_fps)
        if max_frames is not None:
            wanted = wanted[:max_frames]
        yield from _read_indices(container, stream, wanted, box, size, pixel_format)
    finally:
        container.close()


def read_source_indices(
    path: str | Path,
    indices: list[int],
    *,
    box: CropBox | None,
    size: int,
    pixel_format: str = "rgb24",
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream `(source_index, frame)` for explicit, non-decreasing source frame `indices`."""
    container, stream = open_video(path)
    try:
        yield from _read_indices(container, stream, indices, box, size, pixel_format)
    finally:
        container.close()


def _read_indices(
    container,
    stream,
    wanted: list[int],
    box: CropBox | None,
    size: int,
    pixel_format: str,
) -> Iterator[tuple[int, np.ndarray]]:
    if not wanted:
        return
    if any(b < a for a, b in zip(wanted, wanted[1:], strict=False)):
        raise ValueError("source frame indices must be non-decreasing")
    repeats: dict[int, int] = {}
    for index in wanted:
        repeats[index] = repeats.get(index, 0) + 1
    produced = 0
    resize = FrameResizer(box, size, pixel_format)
    for index, frame in iter_window_frames(container, stream, wanted[0], wanted[-1] + 1):
        count = repeats.get(index, 0)
        if not count:
            continue  # decoded (needed for the next frames) but not kept: never converted
        image = resize(frame)
        for _ in range(count):
            produced += 1
            yield index, image
    if produced == 0:
        raise SourceError(
            f"no frame of the window [{wanted[0]}, {wanted[-1] + 1}) could be decoded"
        )
