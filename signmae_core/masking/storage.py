"""On-disk format of mask fields: Parquet files, one row per clip, keyed by `video_id`.

Columns (see docs/MASKS.md):

| column | type | meaning |
| --- | --- | --- |
| `video_id` | string | the manifest's clip id |
| `status` | string | `ok` or `failed` |
| `error` | string | why the clip failed (null when ok) |
| `num_frames` | int32 | T, frames of the stored clip |
| `grid_h`, `grid_w` | int32 | Hc, Wc, cells of the field grid |
| `fields` | binary | float16 little-endian, C order, shape (F, T, Hc, Wc); null when failed |

The field names (the F axis, in order), the cell size and the stored clip size are in the file's
schema metadata under `signmae.masks` (JSON). The fields column is zstd-compressed (most cells
are zero) and row groups are small, so one clip is read without reading the whole file.
Decoding one row by hand: `np.frombuffer(row.fields, "<f2").reshape(F, T, Hc, Wc)`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .fields import FIELD_NAMES

METADATA_KEY = b"signmae.masks"
ROW_GROUP_SIZE = 16
FIELD_DTYPE = np.dtype("<f2")

SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("num_frames", pa.int32()),
        ("grid_h", pa.int32()),
        ("grid_w", pa.int32()),
        ("fields", pa.binary()),
    ]
)


@dataclass
class FieldRow:
    """One clip's row: fields (F, T, Hc, Wc) float16 when ok, or an error when failed."""

    video_id: str
    fields: np.ndarray | None = None
    error: str | None = None

    def checked_fields(self) -> np.ndarray | None:
        """The fields as a C-ordered little-endian float16 array, shape checked (None: failed)."""
        if self.fields is None:
            return None
        array = np.ascontiguousarray(self.fields, dtype=FIELD_DTYPE)
        if array.ndim != 4 or array.shape[0] != len(FIELD_NAMES):
            raise ValueError(f"fields must be ({len(FIELD_NAMES)}, T, Hc, Wc), got {array.shape}")
        return array


def _fields_column(arrays: list[np.ndarray | None]) -> pa.Array:
    """The binary `fields` column built from one buffer (no per-row bytes objects)."""
    valid = [a is not None for a in arrays]
    lengths = np.array([a.nbytes if a is not None else 0 for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    chunks = [a.reshape(-1).view(np.uint8) for a in arrays if a is not None]
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    validity = pa.array(valid, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(
        pa.binary(),
        len(arrays),
        [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=valid.count(False),
    )


def write_field_file(path: str | Path, rows: Iterable[FieldRow], metadata: dict[str, Any]) -> int:
    """Write rows to one Parquet file at a local `path`; returns the number of rows."""
    rows = list(rows)
    meta = {"field_names": list(FIELD_NAMES), "dtype": "float16", "axes": "F,T,Hc,Wc", **metadata}
    schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    arrays = [row.checked_fields() for row in rows]

    def shape(axis: int) -> pa.Array:
        return pa.array([a.shape[axis] if a is not None else None for a in arrays], pa.int32())

    columns = {
        "video_id": pa.array([row.video_id for row in rows], pa.string()),
        "status": pa.array(["ok" if a is not None else "failed" for a in arrays], pa.string()),
        "error": pa.array(
            [
                None if a is not None else (row.error or "unknown error")
                for row, a in zip(rows, arrays, strict=True)
            ],
            pa.string(),
        ),
        "num_frames": shape(1),
        "grid_h": shape(2),
        "grid_w": shape(3),
        "fields": _fields_column(arrays),
    }
    table = pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)
    pq.write_table(
        table,
        str(path),
        compression="zstd",  # most cells are zero: about 50x smaller than raw float16
        use_dictionary=["video_id", "status", "error"],  # never the field bytes,
        write_statistics=["video_id", "status", "num_frames"],  # nor min/max of the bytes
        row_group_size=ROW_GROUP_SIZE,
    )
    return table.num_rows


def decode_fields(blob: bytes, num_frames: int, grid_h: int, grid_w: int) -> np.ndarray:
    """The bytes of the `fields` column -> (F, T, Hc, Wc) float16 (a read-only view)."""
    shape = (len(FIELD_NAMES), num_frames, grid_h, grid_w)
    return np.frombuffer(blob, dtype=FIELD_DTYPE).reshape(shape)


@dataclass
class _Location:
    file: int
    row_group: int
    row: int


@dataclass
class FieldReader:
    """Random access to mask fields by `video_id` over a set of field files.

    Opening reads only the `video_id` and `status` columns; `get` reads one row group (of
    `ROW_GROUP_SIZE` clips) and keeps the last few in a small cache. Safe to share between
    loader threads (the cache is locked) and to pickle into loader processes (open files and
    the cache are not part of the pickled state).
    """

    paths: Sequence[str]
    filesystem: pafs.FileSystem = field(default_factory=pafs.LocalFileSystem)
    cache_row_groups: int = 4

    def __post_init__(self) -> None:
        self._index: dict[str, _Location] = {}
        self._failed: dict[str, str] = {}
        self.metadata: dict[str, Any] = {}
        for file_number, path in enumerate(self.paths):
            parquet = self._open(path)
            if not self.metadata:
                raw = parquet.schema_arrow.metadata or {}
                self.metadata = json.loads(raw.get(METADATA_KEY, b"{}"))
            for group in range(parquet.num_row_groups):
                columns = parquet.read_row_group(group, columns=["video_id", "status", "error"])
                rows = zip(*(columns[c].to_pylist() for c in columns.column_names), strict=True)
                for row, (video_id, status, error) in enumerate(rows):
                    if status == "ok":
                        self._index[video_id] = _Location(file_number, group, row)
                    else:
                        self._failed[video_id] = error or "failed"
        self._cache: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self._files: dict[int, pq.ParquetFile] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        state["_files"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _open(self, path: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.filesystem.open_input_file(path))

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def video_ids(self) -> list[str]:
        return sorted(self._index)

    @property
    def failed(self) -> dict[str, str]:
        """video_id -> error for clips whose fields could not be computed."""
        return dict(self._failed)

    def get(self, video_id: str) -> np.ndarray | None:
        """Fields (F, T, Hc, Wc) float16 of a clip, or None when the clip has none."""
        location = self._index.get(video_id)
        if location is None:
            return None
        key = (location.file, location.row_group)
        with self._lock:
            table = self._cache.get(key)
            if table is None:
                parquet = self._files.get(location.file)
                if parquet is None:  # opened once per process: the footer is parsed once
                    parquet = self._files[location.file] = self._open(self.paths[location.file])
                table = parquet.read_row_group(location.row_group)
                self._cache[key] = table
                while len(self._cache) > self.cache_row_groups:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
        row = {
            name: table[name][location.row].as_py()
            for name in ("fields", "num_frames", "grid_h", "grid_w")
        }
        return decode_fields(row["fields"], row["num_frames"], row["grid_h"], row["grid_w"])
