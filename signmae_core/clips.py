"""The clip format: standardized sign clips as JPEG frames in one file (see docs/CLIPS.md).

The decode stage makes a clip's frames with `decode_source(video, settings, ...)`, and so does
`signmae predict` for a new video, so the model sees the same pixels (JPEG round trip included).
Every stage after decode reads clips only through this module:

- `read_clip(path) -> (T, H, W, 3) uint8 RGB` and `read_frames(path, indices)` for random access;
- `read_clip_bytes(data) -> (ClipMeta, [JPEG bytes])` for a clip held in memory (a shard member);
- `read_clip_meta(path) -> ClipMeta`: fps, the source window and the source frame index of each
  clip frame, the source size, and the square crop box that maps source pixels to clip pixels;
- `source_to_clip` / `clip_to_source` map points between source and clip pixel coordinates;
- `read_source_frames(video, meta, size)` reads the same frames from the source video at another
  resolution with the same crop: a landmark found there at normalized position (u, v) is at
  (u, v) in the clip too.

File layout (little-endian)::

    8 bytes   magic  b"SMCLIP01"
    4 bytes   uint32 N, the length of the header
    N bytes   header: UTF-8 JSON {"meta": {...}, "frames": [[offset, length], ...]}
    ...       the frames: baseline JPEG files back to back; offsets count from the first byte
              after the header

The format was chosen by measurement against H.264 re-encoded at the clip size (bench
`bench/bench_clip_format.py`): it reads a frame at any position for the cost of one JPEG decode
(7x faster than H.264), reads whole clips 1.3-2.8x faster and encodes 4x faster, at 7-8x the
bytes of H.264 of the same quality (see docs/CLIPS.md).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from pydantic import BaseModel, Field

from signmae_core.ingest.source import (
    CropBox,
    SourceError,
    crop_box_for,
    read_source_indices,
    read_window,
    resample_indices,
)

if TYPE_CHECKING:
    from signmae_core.config import DecodeConfig

MAGIC = b"SMCLIP01"
CLIP_SUFFIX = ".smclip"
_PREFIX = struct.Struct("<8sI")
_MAX_HEADER_BYTES = 64 * 1024 * 1024


CLIPS_DIR = "clips"  # the decode stage's clip files, `<CLIPS_DIR>/<video_id><CLIP_SUFFIX>`
CLIP_TABLE = "clips.parquet"  # the decode stage's table: one row per ok manifest video


class ClipError(ValueError):
    """A clip file that is not in the clip format or is damaged."""


class ClipMeta(BaseModel):
    """What a clip is and where it came from; stored in the clip file's header."""

    video_id: str
    fps: float = Field(description="Frame rate of the clip (frames are resampled to it).")
    height: int
    width: int
    num_frames: int
    source_path: str = Field(description="Video path relative to the dataset root.")
    source_width: int
    source_height: int
    source_fps: float
    window: tuple[int, int] = Field(description="Source window [start, end), 0-based.")
    frame_indices: list[int] = Field(description="Source frame index of each clip frame.")
    crop_box: tuple[float, float, float] = Field(
        description="Square crop (x0, y0, side) in source pixels; may reach outside the frame."
    )
    frames_expected: int = Field(
        0,
        description="Frames the window should give at `fps` (more than num_frames when the "
        "stream ended early).",
    )
    jpeg_quality: int
    source_key: str = Field("", description="Hash of what the clip was made from (resume).")

    @property
    def box(self) -> CropBox:
        return CropBox(*self.crop_box)


# ---- writing ------------------------------------------------------------------------------------
def encode_jpeg(frame: np.ndarray, quality: int, bgr: bool = False) -> bytes:
    """`(H, W, 3)` uint8 RGB (or BGR with `bgr=True`) -> baseline JPEG bytes (4:2:0)."""
    import cv2

    image = frame if bgr else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ClipError("JPEG encoding failed")
    return buf.tobytes()


def decode_source(
    video: str | Path,
    settings: DecodeConfig,
    *,
    window: tuple[int, int],
    source_fps: float,
    source_size: tuple[int, int],
    bbox: Sequence[float] | None = None,
    video_id: str = "",
    source_path: str = "",
    source_key: str = "",
) -> tuple[list[bytes], ClipMeta]:
    """The decode stage's work on one video: its clip frames as stored, and the clip's metadata.

    The source frames of `window` (`[start, end)`, 0-based) are resampled from `source_fps` to
    `settings.fps` (at most `settings.max_frames`), cropped to the square of `settings.crop`
    (`bbox`: the dataset's person box, or None) in a `source_size = (width, height)` frame,
    resized to `settings.size` and JPEG-encoded at `settings.jpeg_quality`. Returns one JPEG per
    clip frame (decode with `decode_jpeg`: `(S, S, 3)` uint8 RGB) and the `ClipMeta`; raises
    `SourceError` when no frame can be decoded.
    """
    start, end = window
    width, height = source_size
    box = crop_box_for(width, height, settings.crop, bbox)
    expected = resample_indices(start, end, source_fps, settings.fps)
    indices, jpegs = [], []
    for index, image in read_window(
        video, start, end, out_fps=settings.fps, box=box, size=settings.size,
        max_frames=settings.max_frames, pixel_format="bgr24",
    ):
        indices.append(index)
        jpegs.append(encode_jpeg(image, settings.jpeg_quality, bgr=True))
    if not jpegs:
        raise SourceError("no frame of the window could be decoded")
    meta = ClipMeta(
        video_id=video_id,
        fps=settings.fps,
        height=settings.size,
        width=settings.size,
        num_frames=len(jpegs),
        source_path=source_path,
        source_width=width,
        source_height=height,
        source_fps=source_fps,
        window=(start, end),
        frame_indices=indices,
        crop_box=box.to_list(),
        frames_expected=min(len(expected), settings.max_frames),
        jpeg_quality=settings.jpeg_quality,
        source_key=source_key,
    )
    return jpegs, meta


def write_clip_jpegs(path: str | Path, jpegs: Sequence[bytes], meta: ClipMeta) -> int:
    """Write already encoded JPEG frames and `meta` as one clip file; returns its size in bytes."""
    if len(jpegs) != meta.num_frames or len(meta.frame_indices) != meta.num_frames:
        raise ClipError(
            f"clip {meta.video_id}: {len(jpegs)} frames, {len(meta.frame_indices)} indices, "
            f"num_frames {meta.num_frames}"
        )
    frames, offset = [], 0
    for data in jpegs:
        frames.append([offset, len(data)])
        offset += len(data)
    header = json.dumps(
        {"meta": meta.model_dump(mode="json"), "frames": frames},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    with open(path, "wb") as handle:
        handle.write(_PREFIX.pack(MAGIC, len(header)))
        handle.write(header)
        for data in jpegs:
            handle.write(data)
    return _PREFIX.size + len(header) + offset


def write_clip(
    path: str | Path, frames: Iterable[np.ndarray], meta: ClipMeta, quality: int | None = None
) -> int:
    """Encode `(H, W, 3)` uint8 RGB frames as JPEG and write one clip file; returns bytes.

    `frames` may be a generator: frames are encoded one at a time, so memory holds the JPEG
    bytes of one clip, not its pixels. `meta.num_frames` must equal the number of frames.
    """
    quality = meta.jpeg_quality if quality is None else quality
    jpegs = [encode_jpeg(frame, quality) for frame in frames]
    return write_clip_jpegs(path, jpegs, meta)


# ---- reading ------------------------------------------------------------------------------------
def _read_header(handle: BinaryIO, name: str) -> tuple[ClipMeta, list[list[int]], int]:
    prefix = handle.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise ClipError(f"{name}: not a clip file (too short)")
    magic, header_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ClipError(f"{name}: not a clip file (magic {magic!r})")
    if header_len > _MAX_HEADER_BYTES:
        raise ClipError(f"{name}: header of {header_len} bytes is implausible")
    raw = handle.read(header_len)
    if len(raw) < header_len:
        raise ClipError(f"{name}: truncated header")
    try:
        header = json.loads(raw.decode("utf-8"))
        meta = ClipMeta.model_validate(header["meta"])
        frames = [[int(o), int(n)] for o, n in header["frames"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ClipError(f"{name}: damaged header ({exc})") from None
    if len(frames) != meta.num_frames:
        raise ClipError(f"{name}: {len(frames)} frame entries for {meta.num_frames} frames")
    return meta, frames, _PREFIX.size + header_len


def read_clip_meta(source: str | Path | BinaryIO) -> ClipMeta:
    """The metadata of a clip (reads only the header)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            return _read_header(handle, str(source))[0]
    return _read_header(source, "clip")[0]


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> `(H, W, 3)` uint8 RGB."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ClipError("damaged JPEG frame")
    return image


def read_jpeg_bytes(path: str | Path, indices: Sequence[int] | None = None) -> list[bytes]:
    """The stored JPEG bytes of the frames at `indices` (all when None), without decoding.

    For consumers that decode elsewhere (a GPU JPEG decoder) or copy frames as they are.
    """
    with open(path, "rb") as handle:
        meta, frames, data_start = _read_header(handle, str(path))
        if indices is None:
            blob = handle.read()
            end = max((o + n for o, n in frames), default=0)
            if len(blob) < end:
                raise ClipError(f"{path}: truncated ({len(blob)} of {end} frame bytes)")
            return [blob[o : o + n] for o, n in frames]
        out = []
        for t in indices:
            if not -meta.num_frames <= t < meta.num_frames:
                raise IndexError(f"frame {t} out of range for a {meta.num_frames}-frame clip")
            offset, length = frames[t]
            handle.seek(data_start + offset)
            data = handle.read(length)
            if len(data) < length:
                raise ClipError(f"{path}: truncated at frame {t}")
            out.append(data)
        return out


def _parse_clip_bytes(data: bytes, name: str) -> tuple[ClipMeta, list[list[int]], int]:
    meta, frames, data_start = _read_header(io.BytesIO(data), name)
    end = max((o + n for o, n in frames), default=0)
    if len(data) - data_start < end:
        raise ClipError(f"{name}: truncated ({len(data) - data_start} of {end} frame bytes)")
    return meta, frames, data_start


def clip_bytes_meta(data: bytes, name: str = "clip") -> ClipMeta:
    """The metadata of a whole clip file held in memory, after checking that every frame's
    bytes are there; raises `ClipError` when it is damaged or truncated."""
    return _parse_clip_bytes(data, name)[0]


def read_clip_bytes(data: bytes, name: str = "clip") -> tuple[ClipMeta, list[bytes]]:
    """A whole clip file held in memory (e.g. a shard member) -> its metadata and the stored
    JPEG bytes of every frame, without decoding (decode them with `decode_jpeg`); raises
    `ClipError` when it is damaged or truncated (`name` is used in the message)."""
    meta, frames, start = _parse_clip_bytes(data, name)
    view = memoryview(data)
    return meta, [bytes(view[start + o : start + o + n]) for o, n in frames]


def _stack(images: list[np.ndarray], meta: ClipMeta) -> np.ndarray:
    if not images:
        return np.zeros((0, meta.height, meta.width, 3), dtype=np.uint8)
    return np.stack(images)


def read_clip(path: str | Path) -> np.ndarray:
    """All frames of a clip: `(T, H, W, 3)` uint8 RGB."""
    meta = read_clip_meta(path)
    return _stack([decode_jpeg(b) for b in read_jpeg_bytes(path)], meta)


def read_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Frames at `indices` (any order, repeats allowed): `(len(indices), H, W, 3)` uint8 RGB."""
    meta = read_clip_meta(path)
    return _stack([decode_jpeg(b) for b in read_jpeg_bytes(path, list(indices))], meta)


# ---- geometry -----------------------------------------------------------------------------------
def source_to_clip(points: np.ndarray, meta: ClipMeta) -> np.ndarray:
    """Map `(..., 2)` source-pixel `(x, y)` points to clip pixels (same shape, float64).

    Clip pixel = (source pixel - crop origin) * clip size / crop side. Points outside the crop
    map outside `[0, size)`.
    """
    x0, y0, side = meta.crop_box
    scale = np.array([meta.width / side, meta.height / side])
    return (np.asarray(points, dtype=np.float64) - np.array([x0, y0])) * scale


def crop_warp_matrix(x0: float, y0: float, scale_x: float, scale_y: float) -> np.ndarray:
    """The (2, 3) affine matrix for `cv2.warpAffine` that maps a crop starting at source pixel
    corner `(x0, y0)` to an output scaled by `(scale_x, scale_y)`.

    In corner coordinates `dst = (src - origin) * scale`; OpenCV works in pixel centres, where
    that reads `dst + 0.5 = (src + 0.5 - origin) * scale`.
    """
    return np.array(
        [
            [scale_x, 0.0, scale_x * (0.5 - x0) - 0.5],
            [0.0, scale_y, scale_y * (0.5 - y0) - 0.5],
        ],
        dtype=np.float64,
    )


def clip_to_source(points: np.ndarray, meta: ClipMeta) -> np.ndarray:
    """Inverse of `source_to_clip`: `(..., 2)` clip pixels -> source pixels."""
    x0, y0, side = meta.crop_box
    scale = np.array([side / meta.width, side / meta.height])
    return np.asarray(points, dtype=np.float64) * scale + np.array([x0, y0])


def source_video(dataset_root: str | Path, meta: ClipMeta) -> Path:
    """The source video of a clip: `meta.source_path` resolved inside the dataset root."""
    from signmae_core.ingest.adapters import resolve_inside

    path, _, error = resolve_inside(Path(dataset_root), meta.source_path)
    if error or path is None:
        raise ClipError(f"clip {meta.video_id}: source path {meta.source_path!r}: {error}")
    return path


def read_source_frames(
    video_path: str | Path, meta: ClipMeta, size: int, indices: Sequence[int] | None = None
) -> np.ndarray:
    """The clip's frames read again from the source video at `size x size`: `(T, size, size, 3)`.

    Same source frames (`meta.frame_indices`, or the clip frames at `indices`), same crop box:
    normalized coordinates (pixel / size) are identical in the result and in the clip, so
    landmarks found at a higher resolution apply to the clip directly. `video_path` is the
    source video (the dataset root joined with `meta.source_path`).
    """
    chosen = meta.frame_indices if indices is None else [meta.frame_indices[t] for t in indices]
    frames = [f for _, f in read_source_indices(video_path, chosen, box=meta.box, size=size)]
    if len(frames) != len(chosen):
        raise ClipError(
            f"{video_path}: {len(frames)} of {len(chosen)} source frames could be decoded"
        )
    return np.stack(frames) if frames else np.zeros((0, size, size, 3), dtype=np.uint8)
