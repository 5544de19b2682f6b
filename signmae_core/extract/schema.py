"""The extraction output: one Parquet row per clip with per-frame arrays (docs/EXTRACT.md).

Why one row per clip: the clip is the unit of work, of failure and of reading. A failed clip is a
row with `status = "failed"` and its `error`; a clip in which no hand was found is an ordinary
`ok` row whose per-frame `*_found` flags are all false. Every consumer (mask maps, keypoint
baselines, `signmae inspect`) reads whole clips, and the per-frame arrays of a clip are contiguous
in Arrow, so a clip becomes `(T, 21, 3)` numpy arrays without a per-frame loop.

Coordinates are normalized clip coordinates: `u = x / clip_width`, `v = y / clip_height` with
`(0, 0)` the top-left corner of the clip and `(1, 1)` the bottom-right corner (pixel `i` spans
`[i / W, (i + 1) / W)`); to get clip pixels with `(0, 0)` at the centre of the top-left pixel,
use `u * W - 0.5`. They are the same whatever resolution the landmarks were found at.
Missing values (a hand not found in a frame) are NaN.

`read_extraction(path, video_ids)` reads the raw table (pandas and DuckDB read the same files);
`iter_clips` / `load_clip` give `ClipExtraction` objects with numpy arrays.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from signmae_core.parts import PART_LABELS_TEXT

from .encoding import ENCODING, decode_part_maps, encode_part_maps

NUM_HAND_LANDMARKS = 21
NUM_POSE_LANDMARKS = 33
HAND_WIDTH = NUM_HAND_LANDMARKS * 3  # (u, v, z) per landmark
POSE_WIDTH = NUM_POSE_LANDMARKS * 4  # (u, v, z, visibility) per landmark
SCHEMA_VERSION = 1
METADATA_KEY = b"signmae.extract"

STATUS_OK = "ok"
STATUS_FAILED = "failed"


def _frames(value_type: pa.DataType) -> pa.DataType:
    return pa.list_(value_type)


SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "ok" or "failed"
        pa.field("error", pa.string()),  # why a clip failed; null when ok
        pa.field("backend", pa.string(), nullable=False),  # "mediapipe" or "oracle"
        pa.field("frames_from", pa.string()),  # "clip", "source" or "ground_truth"
        pa.field("num_frames", pa.int32(), nullable=False),  # T (0 for a failed clip)
        pa.field("fps", pa.float32()),
        pa.field("clip_width", pa.int32()),  # the stored clip the coordinates refer to
        pa.field("clip_height", pa.int32()),
        pa.field("extract_width", pa.int32()),  # the frames the backend saw
        pa.field("extract_height", pa.int32()),
        pa.field("seg_width", pa.int32()),  # part map size
        pa.field("seg_height", pa.int32()),
        pa.field("left_hand", _frames(pa.list_(pa.float32(), HAND_WIDTH))),
        pa.field("right_hand", _frames(pa.list_(pa.float32(), HAND_WIDTH))),
        pa.field("left_found", _frames(pa.bool_())),
        pa.field("right_found", _frames(pa.bool_())),
        pa.field("left_score", _frames(pa.float32())),
        pa.field("right_score", _frames(pa.float32())),
        pa.field("pose", _frames(pa.list_(pa.float32(), POSE_WIDTH))),
        pa.field("pose_found", _frames(pa.bool_())),
        pa.field("pose_score", _frames(pa.float32())),
        pa.field("face_box", _frames(pa.list_(pa.float32(), 4))),  # (u0, v0, u1, v1)
        pa.field("face_found", _frames(pa.bool_())),
        pa.field("face_score", _frames(pa.float32())),
        pa.field("person_found", _frames(pa.bool_())),
        pa.field("part_maps", _frames(pa.binary())),  # one encoded part map per frame
        pa.field("part_encoding", pa.string()),
        pa.field("left_frames", pa.int32()),  # frames with the left hand found
        pa.field("right_frames", pa.int32()),
        pa.field("hand_frames", pa.int32()),  # frames with at least one hand found
        pa.field("second_look_hands", pa.int32()),  # hands found by the pose-guided second look
        pa.field("seconds", pa.float32()),  # wall time the worker spent on the clip
        pa.field("cpu_seconds", pa.float32()),  # CPU time of the worker process on the clip
        pa.field("clip_key", pa.string()),  # what the clip was made from (decode's source_key)
    ]
)

_CONVENTIONS = {
    "schema_version": SCHEMA_VERSION,
    "row": "one clip; per-frame arrays have num_frames entries",
    "coordinates": "normalized clip coordinates: u = x / clip_width, v = y / clip_height, "
    "(0,0) top-left corner; NaN when not found",
    "hands": "left/right are the signer's anatomical hands; 21 MediaPipe Hands landmarks "
    "as (u, v, z) flattened; z is MediaPipe's relative depth (wrist origin, scale of u)",
    "pose": "33 MediaPipe Pose landmarks as (u, v, z, visibility) flattened",
    "part_labels": PART_LABELS_TEXT,
    "part_encoding": ENCODING,
}


class ExtractionError(ValueError):
    """Extraction output that does not follow the schema, or a clip that is not in it."""


@dataclass
class ClipExtraction:
    """Keypoints and part maps of one clip (T frames), in normalized clip coordinates.

    left_hand, right_hand: (T, 21, 3) float32 (u, v, z); NaN in frames where the hand was not
        found. Left and right are the signer's anatomical hands.
    left_score, right_score: (T,) float32 confidence of each hand, 0 where not found.
    pose: (T, 33, 4) float32 (u, v, z, visibility); NaN where no pose was found.
    pose_score: (T,) float32 mean visibility of the upper-body landmarks, 0 where not found.
    face_box: (T, 4) float32 (u0, v0, u1, v1) of the face region; NaN where not found.
    face_score: (T,) float32, 0 where not found.
    person_found: (T,) bool, the person segmentation found someone.
    part_maps: (T, Hs, Ws) uint8 labels {0 bg, 1 body, 2 face, 3 left hand, 4 right hand}.
    """

    video_id: str
    left_hand: np.ndarray
    right_hand: np.ndarray
    left_score: np.ndarray
    right_score: np.ndarray
    pose: np.ndarray
    pose_score: np.ndarray
    face_box: np.ndarray
    face_score: np.ndarray
    person_found: np.ndarray
    part_maps: np.ndarray
    backend: str = "mediapipe"
    frames_from: str = "clip"
    fps: float = 0.0
    clip_width: int = 0
    clip_height: int = 0
    extract_width: int = 0
    extract_height: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    clip_key: str = ""
    second_look_hands: int = 0  # hands (frame x side) found by the pose-guided second look

    @property
    def num_frames(self) -> int:
        return int(self.left_hand.shape[0])

    @property
    def left_found(self) -> np.ndarray:
        """(T,) bool, the left hand was found."""
        return ~np.isnan(self.left_hand[:, 0, 0])

    @property
    def right_found(self) -> np.ndarray:
        """(T,) bool, the right hand was found."""
        return ~np.isnan(self.right_hand[:, 0, 0])

    @property
    def pose_found(self) -> np.ndarray:
        return ~np.isnan(self.pose[:, 0, 0])

    @property
    def face_found(self) -> np.ndarray:
        return ~np.isnan(self.face_box[:, 0])

    @property
    def hands(self) -> np.ndarray:
        """(T, 2, 21, 3) float32: hand 0 the left, hand 1 the right (NaN where not found)."""
        return np.stack([self.left_hand, self.right_hand], axis=1)

    def hands_px(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """(T, 2, 21, 2) float32 hand (x, y) in pixels of a `width x height` grid (default the
        clip), (0, 0) the centre of the top-left pixel; NaN where not found."""
        width = width or self.clip_width
        height = height or self.clip_height
        scale = np.array([width, height], dtype=np.float32)
        return self.hands[..., :2] * scale - 0.5

    def validate(self) -> None:
        """Raise `ExtractionError` when the arrays' shapes do not agree with each other."""
        t = self.num_frames
        expected = {
            "left_hand": (t, NUM_HAND_LANDMARKS, 3),
            "right_hand": (t, NUM_HAND_LANDMARKS, 3),
            "left_score": (t,),
            "right_score": (t,),
            "pose": (t, NUM_POSE_LANDMARKS, 4),
            "pose_score": (t,),
            "face_box": (t, 4),
            "face_score": (t,),
            "person_found": (t,),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ExtractionError(f"{name} has shape {getattr(self, name).shape}, not {shape}")
        if self.part_maps.ndim != 3 or self.part_maps.shape[0] != t:
            raise ExtractionError(f"part_maps has shape {self.part_maps.shape}, not (T, Hs, Ws)")


def empty_extraction(video_id: str, num_frames: int, seg_size: tuple[int, int]) -> ClipExtraction:
    """A clip of `num_frames` frames where nothing was found (all NaN, zero scores)."""
    t = num_frames
    nan = np.float32(np.nan)
    return ClipExtraction(
        video_id=video_id,
        left_hand=np.full((t, NUM_HAND_LANDMARKS, 3), nan, np.float32),
        right_hand=np.full((t, NUM_HAND_LANDMARKS, 3), nan, np.float32),
        left_score=np.zeros(t, np.float32),
        right_score=np.zeros(t, np.float32),
        pose=np.full((t, NUM_POSE_LANDMARKS, 4), nan, np.float32),
        pose_score=np.zeros(t, np.float32),
        face_box=np.full((t, 4), nan, np.float32),
        face_score=np.zeros(t, np.float32),
        person_found=np.zeros(t, bool),
        part_maps=np.zeros((t, seg_size[0], seg_size[1]), np.uint8),
    )


# ---- rows -> Arrow -------------------------------------------------------------------------------
def ok_row(clip: ClipExtraction) -> dict[str, Any]:
    """The Parquet row of a successfully extracted clip (a dict of column name -> value)."""
    clip.validate()
    left_found, right_found = clip.left_found, clip.right_found
    return {
        "video_id": clip.video_id,
        "status": STATUS_OK,
        "error": None,
        "backend": clip.backend,
        "frames_from": clip.frames_from,
        "num_frames": clip.num_frames,
        "fps": float(clip.fps),
        "clip_width": int(clip.clip_width),
        "clip_height": int(clip.clip_height),
        "extract_width": int(clip.extract_width),
        "extract_height": int(clip.extract_height),
        "seg_width": int(clip.part_maps.shape[2]),
        "seg_height": int(clip.part_maps.shape[1]),
        "left_hand": clip.left_hand.astype(np.float32).reshape(clip.num_frames, HAND_WIDTH),
        "right_hand": clip.right_hand.astype(np.float32).reshape(clip.num_frames, HAND_WIDTH),
        "left_found": left_found,
        "right_found": right_found,
        "left_score": clip.left_score.astype(np.float32),
        "right_score": clip.right_score.astype(np.float32),
        "pose": clip.pose.astype(np.float32).reshape(clip.num_frames, POSE_WIDTH),
        "pose_found": clip.pose_found,
        "pose_score": clip.pose_score.astype(np.float32),
        "face_box": clip.face_box.astype(np.float32),
        "face_found": clip.face_found,
        "face_score": clip.face_score.astype(np.float32),
        "person_found": clip.person_found.astype(bool),
        "part_maps": encode_part_maps(clip.part_maps),
        "part_encoding": ENCODING,
        "left_frames": int(left_found.sum()),
        "right_frames": int(right_found.sum()),
        "hand_frames": int((left_found | right_found).sum()),
        "second_look_hands": int(clip.second_look_hands),
        "seconds": float(clip.seconds),
        "cpu_seconds": float(clip.cpu_seconds),
        "clip_key": clip.clip_key,
    }


def failed_row(
    video_id: str, error: str, backend: str, seconds: float = 0.0, clip_key: str = ""
) -> dict[str, Any]:
    """The row of a clip that could not be extracted: status "failed", the reason, no frames."""
    row: dict[str, Any] = {name: None for name in SCHEMA.names}
    row.update(
        video_id=video_id,
        status=STATUS_FAILED,
        error=" ".join(str(error).split())[:500] or "unknown error",
        backend=backend,
        num_frames=0,
        seconds=float(seconds),
        clip_key=clip_key,
    )
    return row


def _list_column(values: list[Any], field: pa.Field) -> pa.Array:
    """Per-row numpy arrays (or None) -> one Arrow list array of `field.type`."""
    item_type = field.type.value_type
    offsets = [0]
    parts: list[Any] = []
    mask = []
    for value in values:
        if value is None:
            offsets.append(offsets[-1])
            mask.append(True)
            continue
        parts.append(value)
        offsets.append(offsets[-1] + len(value))
        mask.append(False)
    if pa.types.is_fixed_size_list(item_type):
        width = item_type.list_size
        flat = (
            np.concatenate([np.asarray(p, np.float32).reshape(-1) for p in parts])
            if parts
            else np.zeros(0, np.float32)
        )
        items: pa.Array = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)
    elif pa.types.is_binary(item_type):
        items = pa.array([b for p in parts for b in p], pa.binary())
    else:
        flat = np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros(0)
        items = pa.array(flat, item_type)
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), items, mask=pa.array(mask, pa.bool_())
    )


def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows from `ok_row` / `failed_row` -> a table with `SCHEMA`, sorted by video_id."""
    rows = sorted(rows, key=lambda r: r["video_id"])
    columns = []
    for field in SCHEMA:
        values = [row[field.name] for row in rows]
        if pa.types.is_list(field.type):
            columns.append(_list_column(values, field))
        else:
            columns.append(pa.array(values, field.type))
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    metadata = {METADATA_KEY: json.dumps(_CONVENTIONS, sort_keys=True).encode()}
    return table.replace_schema_metadata(metadata)


def write_part(path: str | Path, rows: Sequence[dict[str, Any]]) -> int:
    """Write rows as one Parquet file (zstd); returns the number of rows."""
    table = rows_to_table(rows)
    pq.write_table(table, str(path), compression="zstd", row_group_size=16)
    return table.num_rows


# ---- reading -------------------------------------------------------------------------------------
def part_files(path_or_dir: str | Path) -> list[Path]:
    """The Parquet files of an extraction output: a file, or every `*.parquet` under a folder
    whose name does not start with `.` or `_` (temporaries and records)."""
    path = Path(path_or_dir)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ExtractionError(f"no extraction output at {path}")
    return sorted(
        p
        for p in path.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )


def store_part_files(path_or_dir: str, filesystem: pafs.FileSystem) -> list[str]:
    """`part_files` of a file or folder on a pyarrow filesystem (e.g. an object store)."""
    info = filesystem.get_file_info(path_or_dir)
    if info.type == pafs.FileType.File:
        return [path_or_dir]
    if info.type != pafs.FileType.Directory:
        raise ExtractionError(f"no extraction output at {path_or_dir}")
    infos = filesystem.get_file_info(pafs.FileSelector(path_or_dir, recursive=True))
    base = path_or_dir.rstrip("/") + "/"
    return sorted(
        i.path for i in infos
        if i.type == pafs.FileType.File and i.path.endswith(".parquet")
        and not any(part.startswith((".", "_")) for part in i.path[len(base):].split("/"))
    )


def read_extraction(
    path_or_dir: str | Path,
    video_ids: Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
    only_ok: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> pa.Table:
    """The extraction table of a file or an output folder, optionally only some clips.

    `video_ids` filters rows (pushed down to Parquet statistics); `columns` selects columns
    (`video_id` is always included); `only_ok` drops failed clips. `filesystem`: read
    `path_or_dir` through it (a store's filesystem, e.g. S3); None: a local path.
    """
    if filesystem is None:
        files = [str(f) for f in part_files(path_or_dir)]
    else:
        files = store_part_files(str(path_or_dir), filesystem)
    if not files:
        return SCHEMA.empty_table()
    dataset = pads.dataset(files, format="parquet", schema=SCHEMA, filesystem=filesystem)
    condition = None
    if video_ids is not None:
        condition = pc.field("video_id").isin(pa.array(list(video_ids), pa.string()))
    if only_ok:
        ok = pc.field("status") == STATUS_OK
        condition = ok if condition is None else condition & ok
    wanted = None
    if columns is not None:
        wanted = ["video_id"] + [c for c in columns if c != "video_id"]
    return dataset.to_table(columns=wanted, filter=condition)


def _per_row(column: pa.ChunkedArray, trailing: tuple[int, ...], dtype: Any) -> list[np.ndarray]:
    """A list<...> column -> per-row numpy arrays of shape (len, *trailing)."""
    array = column.combine_chunks()
    lengths = array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    values = array.flatten()
    if pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    flat = values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    flat = flat.reshape((-1, *trailing)) if trailing else flat
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [flat[bounds[i] : bounds[i + 1]] for i in range(len(lengths))]


def table_to_clips(table: pa.Table) -> Iterator[ClipExtraction]:
    """`ClipExtraction` objects of the ok rows of a full extraction table."""
    ok = table.filter(pc.equal(table.column("status"), STATUS_OK))
    if ok.num_rows == 0:
        return
    unknown = set(ok.column("part_encoding").to_pylist()) - {ENCODING}
    if unknown:
        raise ExtractionError(f"unknown part map encoding {sorted(unknown)} (known: {ENCODING})")
    hand = (NUM_HAND_LANDMARKS, 3)
    arrays = {
        "left_hand": _per_row(ok.column("left_hand"), hand, np.float32),
        "right_hand": _per_row(ok.column("right_hand"), hand, np.float32),
        "left_score": _per_row(ok.column("left_score"), (), np.float32),
        "right_score": _per_row(ok.column("right_score"), (), np.float32),
        "pose": _per_row(ok.column("pose"), (NUM_POSE_LANDMARKS, 4), np.float32),
        "pose_score": _per_row(ok.column("pose_score"), (), np.float32),
        "face_box": _per_row(ok.column("face_box"), (4,), np.float32),
        "face_score": _per_row(ok.column("face_score"), (), np.float32),
        "person_found": _per_row(ok.column("person_found"), (), bool),
    }
    scalars = ok.select(
        [
            "video_id",
            "backend",
            "frames_from",
            "fps",
            "clip_width",
            "clip_height",
            "extract_width",
            "extract_height",
            "seg_width",
            "seg_height",
            "seconds",
            "cpu_seconds",
            "clip_key",
            "second_look_hands",
        ]
    ).to_pylist()
    maps = ok.column("part_maps").to_pylist()
    for i, info in enumerate(scalars):
        yield ClipExtraction(
            video_id=info["video_id"],
            part_maps=decode_part_maps(maps[i], info["seg_height"], info["seg_width"]),
            backend=info["backend"],
            frames_from=info["frames_from"],
            fps=info["fps"],
            clip_width=info["clip_width"],
            clip_height=info["clip_height"],
            extract_width=info["extract_width"],
            extract_height=info["extract_height"],
            seconds=info["seconds"],
            cpu_seconds=info["cpu_seconds"] or 0.0,
            clip_key=info["clip_key"] or "",
            second_look_hands=info["second_look_hands"] or 0,
            **{name: values[i] for name, values in arrays.items()},
        )


def iter_clips(
    path_or_dir: str | Path, video_ids: Iterable[str] | None = None, batch_clips: int = 64
) -> Iterator[ClipExtraction]:
    """The ok clips of an extraction output as `ClipExtraction`s, reading `batch_clips` rows
    at a time (bounded memory)."""
    files = part_files(path_or_dir)
    wanted = None if video_ids is None else set(video_ids)
    for file in files:
        parquet = pq.ParquetFile(str(file))
        for batch in parquet.iter_batches(batch_size=batch_clips):
            table = pa.Table.from_batches([batch])
            if wanted is not None:
                keep = pc.is_in(table.column("video_id"), pa.array(sorted(wanted), pa.string()))
                table = table.filter(keep)
            yield from table_to_clips(table)


def load_clip(
    path_or_dir: str | Path, video_id: str, filesystem: pafs.FileSystem | None = None
) -> ClipExtraction:
    """One clip's extraction; `ExtractionError` when it is absent or failed (with the reason).
    `filesystem` as in `read_extraction`."""
    table = read_extraction(path_or_dir, [video_id], filesystem=filesystem)
    if table.num_rows == 0:
        raise ExtractionError(f"clip {video_id!r} is not in the extraction output")
    row = table.slice(0, 1)
    if row.column("status")[0].as_py() != STATUS_OK:
        raise ExtractionError(f"clip {video_id!r} failed extraction: {row.column('error')[0]}")
    return next(table_to_clips(row))


def written_rows(path_or_dir: str | Path) -> dict[Path, dict[str, tuple[str, str]]]:
    """Per part file: video_id -> (status, clip_key) of its rows (for resuming a stage)."""
    out: dict[Path, dict[str, tuple[str, str]]] = {}
    for file in part_files(path_or_dir):
        table = pq.read_table(str(file), columns=["video_id", "status", "clip_key"])
        out[file] = {
            video_id: (status, key or "")
            for video_id, status, key in zip(
                table.column("video_id").to_pylist(),
                table.column("status").to_pylist(),
                table.column("clip_key").to_pylist(),
                strict=True,
            )
        }
    return out
