"""The manifest (`videos.parquet`), stable video ids, frame windows and the class map.

See docs/INGEST.md for the column list; `MANIFEST_FIELDS` below is the schema's source of truth.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

MANIFEST_NAME = "videos.parquet"
CLASSES_NAME = "classes.json"

# name, type, meaning. Columns the label file brings beyond these follow as strings.
MANIFEST_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("video_id", pa.string(), "stable id: the dataset's own id, else derived from the path"),
    ("path", pa.string(), "video path relative to the dataset root (POSIX)"),
    ("uri", pa.string(), "absolute path of the video (null when the path was rejected)"),
    ("label", pa.string(), "class label as written in the label file (null: unlabeled)"),
    ("label_id", pa.int32(), "index in the class map (null: unlabeled / pretraining only)"),
    ("signer", pa.string(), "signer id (null when unknown)"),
    ("split", pa.string(), "train / val / test / unlabeled / ..."),
    ("frame_start", pa.int64(), "sign window start, 0-based frame index (inclusive)"),
    ("frame_end", pa.int64(), "sign window end, 0-based frame index (exclusive)"),
    ("window_clamped", pa.bool_(), "the given window overlapped the video's end and was clamped"),
    ("bbox", pa.list_(pa.float64()), "person box (x0, y0, x1, y1) in source pixels, or null"),
    ("container", pa.string(), "container format (FFmpeg's name)"),
    ("codec", pa.string(), "video codec (FFmpeg's name)"),
    ("width", pa.int32(), "frame width in pixels"),
    ("height", pa.int32(), "frame height in pixels"),
    ("fps", pa.float64(), "average frame rate"),
    ("frame_count", pa.int64(), "frames in the stream"),
    ("frame_count_source", pa.string(), "header, or counted (packets demuxed)"),
    ("duration_s", pa.float64(), "stream duration in seconds"),
    ("rotation", pa.int32(), "display rotation in degrees from the file (recorded, not applied)"),
    ("has_audio", pa.bool_(), "the file has an audio stream"),
    ("file_bytes", pa.int64(), "file size in bytes"),
    ("file_mtime_ns", pa.int64(),
     "file modification time (ns) when this content was probed (a touched file keeps it)"),
    ("file_sha256", pa.string(), "sha256 of the file's bytes (null when it could not be read)"),
    ("status", pa.string(), "ok or failed"),
    ("error", pa.string(), "why the video failed (null when ok)"),
]
MANIFEST_COLUMNS = [name for name, _, _ in MANIFEST_FIELDS]

MAX_VIDEO_ID = 200  # characters of a video id, given or derived: `<id>.smclip` stays a file name
_ID_HASH = 8  # hex digits of the path's sha1 that a sanitized or shortened id ends with
_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PART_OK = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def stable_video_id(rel_path: str) -> str:
    """A video id derived from a path relative to the dataset root, stable across runs.

    `train/0001.mp4` -> `train__0001`: the path without its suffix, folders joined by `__`. When
    a part has characters other than letters, digits, `-` and single inner `_`, the id becomes a
    sanitized form plus 8 hex digits of the path's sha1 (`Do Not.mp4` -> `Do_Not-5c2a...`), so
    ids stay unique, dot-free and safe as file names and WebDataset keys. An id that would be
    longer than `MAX_VIDEO_ID` (the cap of given ids) is cut and ends with the same 8 hex digits.
    """
    stem = rel_path.rsplit(".", 1)[0] if "." in rel_path.rsplit("/", 1)[-1] else rel_path
    parts = [p for p in stem.split("/") if p]
    joined = "__".join(parts)
    clean = bool(parts) and all(_PART_OK.match(p) and not p.endswith("_") for p in parts)
    if clean and len(joined) <= MAX_VIDEO_ID:
        return joined
    digest = hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:_ID_HASH]
    if clean:  # only too long
        cleaned = joined[: MAX_VIDEO_ID - _ID_HASH - 1].rstrip("_-")
    else:
        cleaned = _UNSAFE.sub("_", joined).strip("_-")[:80]
    return f"{cleaned}-{digest}" if cleaned else digest


def check_video_id(video_id: str) -> str | None:
    """The reason a dataset-given video id is unusable, or None when it is fine."""
    if not _ID_OK.match(video_id) or len(video_id) > MAX_VIDEO_ID:
        return (f"video_id {video_id[:MAX_VIDEO_ID]!r} must be letters, digits, '_' or '-' "
                f"(at most {MAX_VIDEO_ID})")
    return None


def resolve_window(
    start: int | None, end: int | None, frame_count: int
) -> tuple[int, int, bool, str | None]:
    """Clamp a 0-based, end-exclusive window to a video of `frame_count` frames.

    `start=None` means 0, `end=None` the end of the video. Returns `(start, end, clamped,
    error)`: a window that overlaps the video is clamped to it (`clamped=True`); one that lies
    wholly outside it, or is empty, is an error.
    """
    given_start = 0 if start is None else start
    given_end = frame_count if end is None else end
    if given_end <= given_start:
        return given_start, given_end, False, f"empty window [{given_start}, {given_end})"
    if given_start >= frame_count or given_end <= 0:
        return (
            given_start,
            given_end,
            False,
            f"window [{given_start}, {given_end}) lies outside the video's {frame_count} frames",
        )
    new_start, new_end = max(0, given_start), min(frame_count, given_end)
    return new_start, new_end, (new_start, new_end) != (given_start, given_end), None


# ---- the table ----------------------------------------------------------------------------------
def manifest_table(rows: list[dict], extra_columns: Iterable[str] = ()) -> pa.Table:
    """Rows (dicts with the manifest columns, plus `extra` string columns) -> an Arrow table."""
    fields = [pa.field(n, t, metadata={"description": d}) for n, t, d in MANIFEST_FIELDS]
    extra = list(extra_columns)
    note = {"description": "from the label file"}
    fields += [pa.field(n, pa.string(), metadata=note) for n in extra]
    schema = pa.schema(fields)
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def write_manifest(path: str | Path, table: pa.Table) -> None:
    """Write the manifest as one Parquet file (zstd), rows sorted by video_id."""
    table = table.sort_by("video_id")
    pq.write_table(table, str(path), compression="zstd")


def read_manifest(path: str | Path, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """The manifest as an Arrow table (`.to_pandas()` for a DataFrame)."""
    return pq.read_table(str(path), filesystem=filesystem)


# ---- the class map ------------------------------------------------------------------------------
def class_map_json(classes: list[str]) -> str:
    """The class map file's text: `{"classes": [label for label_id 0, 1, ...]}`."""
    return json.dumps({"classes": classes}, ensure_ascii=False, indent=1) + "\n"


def parse_class_map(text: str) -> list[str]:
    data = json.loads(text)
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError('class map must be {"classes": [str, ...]}')
    if len(set(classes)) != len(classes):
        raise ValueError("class map has duplicate labels")
    return classes


def extend_classes(classes: list[str], labels: Iterable[str]) -> tuple[list[str], list[str]]:
    """Append labels not yet in `classes` (new ones in sorted order); never renumber.

    Returns `(classes, added)`. Existing labels keep their index forever, so label ids stay
    valid across incremental ingests; labels that disappear from the dataset keep their slot.
    """
    known = set(classes)
    added = sorted({label for label in labels if label not in known})
    return classes + added, added
