"""What goes into a shard set: the samples' members, the cut into shards, the index.

A shard set is one stage folder (see docs/SHARDS.md)::

    shards/<split>-<nnnnnn>.tar   the shards of each split, numbered from 0 in key order
    samples.parquet               one row per sample, in shard order: key, video_id, split,
                                  shard, then for clip shards label_id and where the `.smclip`
                                  member lies in its shard (smclip_offset, smclip_bytes), for
                                  field shards status and where `.fields.npy.gz` lies
                                  (fields_offset, fields_bytes; null without fields)
    index.json                    counts, class map, upstream versions, every shard's size and
                                  sha256; written last among the outputs

Clip samples hold `<key>.smclip` (the decode stage's clip file as it is: JPEG frames and
header, no re-encode), `<key>.json` (metadata) and `<key>.cls` (the label id in ASCII digits;
absent for unlabeled clips). Field samples hold `<key>.fields.npy.gz` (float16 `(F, T, Hc, Wc)`
saved with `np.save`, gzip-compressed: most cells are zero; absent when the clip has no fields)
and `<key>.fields.json`; the field shards have the clip shards' names, keys and order, so a
loader reads the two side by side.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .format import load_npy, sample_key

FORMAT = "signmae-shards/1"
SHARDS_DIR = "shards"
INDEX_NAME = "index.json"
SAMPLES_NAME = "samples.parquet"
SAMPLE_OVERHEAD = 3 * 1024  # bytes a sample counts beyond its clip: headers, metadata, label
CLIP_MEMBERS = ("smclip", "json", "cls")
FIELD_MEMBERS = ("fields.npy.gz", "fields.json")

# the member a reader fetches by byte range -> its samples.parquet columns (offset, size)
MEMBER_COLUMNS = {
    "smclip": ("smclip_offset", "smclip_bytes"),
    "fields.npy.gz": ("fields_offset", "fields_bytes"),
}
_SAMPLE_COLUMNS = [
    ("key", pa.string()),
    ("video_id", pa.string()),
    ("split", pa.string()),
    ("shard", pa.string()),
]
SAMPLES_SCHEMA = pa.schema(
    [*_SAMPLE_COLUMNS, ("label_id", pa.int32()),
     *((name, pa.int64()) for name in MEMBER_COLUMNS["smclip"])]
)
FIELD_SAMPLES_SCHEMA = pa.schema(
    [*_SAMPLE_COLUMNS, ("status", pa.string()),
     *((name, pa.int64()) for name in MEMBER_COLUMNS["fields.npy.gz"])]
)


# ---- the cut --------------------------------------------------------------------------------
def split_name(split: str | None) -> str:
    """The split as it appears in shard names (`unsplit` when the manifest has none)."""
    return sample_key(split) if split else "unsplit"


def shard_rel(split: str | None, index: int) -> str:
    """Path of a split's `index`-th shard in the stage folder."""
    return f"{SHARDS_DIR}/{split_name(split)}-{index:06d}.tar"


def cut(sizes: Sequence[int], max_samples: int, max_bytes: int) -> list[tuple[int, int]]:
    """Cut samples of these sizes (in order) into consecutive `[start, end)` shards: a shard
    closes at `max_samples` samples, or before the sample that would take it past
    `max_bytes`; a shard holds at least one sample."""
    ranges: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_samples or total + size > max_bytes):
            ranges.append((start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges


# ---- members --------------------------------------------------------------------------------
def clip_info(row: dict[str, Any], dataset: str, meta: Any) -> dict[str, Any]:
    """The `<key>.json` of a clip sample: the manifest's facts and the clip header's window,
    frame rate and size (`meta` is the clip's `ClipMeta`)."""
    return {
        "key": sample_key(row["video_id"]),
        "video_id": row["video_id"],
        "dataset": dataset,
        "split": row.get("split"),
        "signer": row.get("signer"),
        "label": row.get("label"),
        "label_id": row.get("label_id"),
        "window": list(meta.window),
        "fps": meta.fps,
        "source_fps": meta.source_fps,
        "num_frames": meta.num_frames,
        "size": [meta.height, meta.width],
    }


def field_info(video_id: str, version: str, names: Sequence[str], fields: np.ndarray | None,
               error: str | None) -> dict[str, Any]:
    """The `<key>.fields.json` of a field sample: the mask version and field names, and the
    array's shape, or why the clip has no fields."""
    info: dict[str, Any] = {
        "key": sample_key(video_id),
        "video_id": video_id,
        "mask_version": version,
        "field_names": list(names),
    }
    if fields is None:
        return {**info, "status": "failed", "error": error or "no fields"}
    return {**info, "status": "ok", "shape": list(fields.shape), "dtype": "float16"}


def sample_fields(sample: dict[str, Any]) -> np.ndarray | None:
    """A field sample's `(F, T, Hc, Wc)` float16 array, or None when the clip has no fields
    (raw bytes as `iter_shard_samples` gives them, or already decoded by a WebDataset reader)."""
    data = sample.get("fields.npy.gz")
    if data is None:
        return None
    if isinstance(data, np.ndarray):
        return data
    return load_npy(gzip.decompress(data))


# ---- the index ------------------------------------------------------------------------------
def shard_entry(rel: str, split: str | None, keys: Sequence[str], size: int, sha256: str
                ) -> dict[str, Any]:
    """One shard as the index lists it."""
    return {
        "path": rel,
        "split": split,
        "samples": len(keys),
        "bytes": size,
        "sha256": sha256,
        "first_key": keys[0] if keys else None,
        "last_key": keys[-1] if keys else None,
    }


def _count_order(item: tuple[str, int]) -> tuple[int, int, str]:
    """Class ids in numeric order, then other values, `null` last."""
    name = item[0]
    if name.isdigit():
        return (0, int(name), name)
    return (2 if name == "null" else 1, 0, name)


def split_counts(shards: Iterable[dict[str, Any]], samples: Iterable[dict[str, Any]],
                 count: str) -> dict[str, dict[str, Any]]:
    """Per split: samples, shards, bytes, and `counts`: the samples per value of `count`, a
    field of `samples` (`label_id` for clips: per class id, `null` for unlabeled; `status` for
    fields: `ok` or `failed`)."""
    splits: dict[str, dict[str, Any]] = {}
    for shard in shards:
        entry = splits.setdefault(split_name(shard["split"]),
                                  {"samples": 0, "shards": 0, "bytes": 0, "counts": Counter()})
        entry["shards"] += 1
        entry["bytes"] += shard["bytes"]
        entry["samples"] += shard["samples"]
    for sample in samples:
        value = sample.get(count)
        splits[split_name(sample["split"])]["counts"]["null" if value is None else str(value)] += 1
    return {
        name: {**entry, "counts": dict(sorted(entry["counts"].items(), key=_count_order))}
        for name, entry in sorted(splits.items())
    }


def build_index(kind: str, header: dict[str, Any], shards: list[dict[str, Any]],
                samples: list[dict[str, Any]], count: str) -> dict[str, Any]:
    """The `index.json` of a shard set: `header` (dataset, version, upstream versions, class
    map or field names), totals, samples per value of `count` (overall and per split) and every
    shard, in order."""
    counted = Counter("null" if s.get(count) is None else str(s[count]) for s in samples)
    return {
        "format": FORMAT,
        "kind": kind,
        **header,
        "samples": sum(s["samples"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "counted": count,
        "counts": dict(sorted(counted.items(), key=_count_order)),
        "splits": split_counts(shards, samples, count),
        "shards": shards,
    }


def member_location(members: dict[str, tuple[int, int]], ext: str) -> dict[str, int | None]:
    """The samples.parquet columns of member `ext` of one sample (`ShardWriter.members` entry):
    its data offset and size in the shard, None when the sample has no such member."""
    offset, size = members.get(ext, (None, None))
    names = MEMBER_COLUMNS[ext]
    return {names[0]: offset, names[1]: size}


def samples_table(rows: Iterable[dict[str, Any]], schema: pa.Schema = SAMPLES_SCHEMA) -> pa.Table:
    """`samples.parquet` of a clip shard set (`SAMPLES_SCHEMA`) or, with
    `FIELD_SAMPLES_SCHEMA`, of a field shard set: one row per sample in shard order."""
    rows = list(rows)
    return pa.Table.from_pydict(
        {name: [row.get(name) for row in rows] for name in schema.names}, schema=schema
    )
