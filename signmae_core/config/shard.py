"""WebDataset shards of the decoded clips and of the mask fields (see docs/SHARDS.md)."""

from __future__ import annotations

from pydantic import Field

from .base import Section, runtime_field


class ShardConfig(Section):
    """How `signmae run shard` cuts each split into shards; the field shards follow the same cut.

    A split's samples, sorted by key, fill shards in order: a shard closes when it holds
    `max_samples` samples or when the next sample would take it past `max_bytes` (a sample
    counts its clip bytes plus 3 KiB for its tar headers, metadata and label:
    `signmae_core.shards.SAMPLE_OVERHEAD`; a single larger sample gets a shard of its own).
    """

    max_samples: int = Field(1000, ge=1, description="Most samples in one shard.")
    max_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="Target size of one shard in bytes (clip bytes)."
    )
    workers: int = runtime_field(
        4, ge=1, description="Shards written at the same time (threads: the work is I/O)."
    )
