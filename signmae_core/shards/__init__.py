"""WebDataset shards of clips and mask fields: format, layout and reading (see docs/SHARDS.md).

No Ray or Prefect here: `pipelines/shard.py` applies this to a dataset's stage outputs, and a
training loader reads the shards back with `iter_shard_samples` (or any WebDataset reader).
"""

from .format import (
    ShardWriter,
    canonical_json,
    gzip_bytes,
    iter_shard_samples,
    load_npy,
    npy_bytes,
    sample_key,
    sample_layout,
    video_id_of,
)
from .layout import (
    CLIP_MEMBERS,
    FIELD_MEMBERS,
    FIELD_SAMPLES_SCHEMA,
    FORMAT,
    INDEX_NAME,
    MEMBER_COLUMNS,
    SAMPLE_OVERHEAD,
    SAMPLES_NAME,
    SHARDS_DIR,
    build_index,
    clip_info,
    cut,
    field_info,
    member_location,
    sample_fields,
    samples_table,
    shard_entry,
    shard_rel,
    split_name,
)

__all__ = [
    "CLIP_MEMBERS",
    "FIELD_MEMBERS",
    "FIELD_SAMPLES_SCHEMA",
    "FORMAT",
    "INDEX_NAME",
    "MEMBER_COLUMNS",
    "SAMPLES_NAME",
    "SAMPLE_OVERHEAD",
    "SHARDS_DIR",
    "ShardWriter",
    "build_index",
    "canonical_json",
    "clip_info",
    "cut",
    "field_info",
    "gzip_bytes",
    "iter_shard_samples",
    "load_npy",
    "member_location",
    "npy_bytes",
    "sample_fields",
    "sample_key",
    "sample_layout",
    "samples_table",
    "shard_entry",
    "shard_rel",
    "split_name",
    "video_id_of",
]
