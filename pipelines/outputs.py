"""Readers of finished stage outputs, through the plan: the one way to find a stage's files.

Stages, commands and benches read upstream outputs here, never by importing the stage module
that wrote them. Each reader asks the plan for the finished, intact output (an `InputError`
naming the command that makes it otherwise) and turns a file that cannot be read into an
`InputError` that names the file and the command that repairs it, in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from signmae_core.clips import CLIP_TABLE
from signmae_core.errors import InputError
from signmae_core.ingest.class_groups import CLASS_GROUPS_NAME, parse_class_groups
from signmae_core.ingest.manifest import CLASSES_NAME, MANIFEST_NAME, parse_class_map, read_manifest

from .dag import Plan, StageOutput

T = TypeVar("T")
FIELDS_DIR = "fields"  # the masks stage's field files, one per extraction part file


def readable(plan: Plan, stage: str, dataset: str | None, path: str, read: Callable[[], T]) -> T:
    """`read()`, with any failure turned into one line naming `path` and the repair command."""
    try:
        return read()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - Arrow, OS and format errors all mean damage
        command = plan.command(plan.key(stage, dataset))
        reason = " ".join(str(exc).split())[:200]
        raise InputError(f"cannot read {path} ({type(exc).__name__}: {reason}): "
                         f"run `{command} --force` to rebuild it") from None


def manifest(plan: Plan, dataset: str) -> pa.Table:
    """The dataset's manifest (`videos.parquet`), one row per video."""
    out = plan.output("ingest", dataset)
    path = out.path(MANIFEST_NAME)
    return readable(plan, "ingest", dataset, path,
                    lambda: read_manifest(path, filesystem=plan.store.fs))


def class_names(plan: Plan, dataset: str) -> list[str]:
    """The class map the dataset's manifest was made with (label id -> name)."""
    out = plan.output("ingest", dataset)
    path = out.path(CLASSES_NAME)
    return readable(plan, "ingest", dataset, path,
                    lambda: parse_class_map(plan.store.read_bytes(path).decode("utf-8")))


def class_groups(plan: Plan, dataset: str) -> list[dict[str, Any]]:
    """The class groups the dataset declares (`[{"kind", "classes"}]`, labels as in the class
    map; docs/INGEST.md), as ingest checked and copied them; [] when it declares none."""
    out = plan.output("ingest", dataset)
    if not any(o.path == CLASS_GROUPS_NAME for o in out.record.outputs):
        return []
    path = out.path(CLASS_GROUPS_NAME)
    return readable(plan, "ingest", dataset, path,
                    lambda: parse_class_groups(plan.store.read_bytes(path).decode("utf-8"), path))


def clip_rows(plan: Plan, dataset: str) -> list[dict[str, Any]]:
    """The decode stage's table (`clips.parquet`): one row per ok manifest video, with the
    clip path made absolute in `clip_path` (None for failed rows)."""
    out = plan.output("decode", dataset)
    path = out.path(CLIP_TABLE)
    table = readable(plan, "decode", dataset, path,
                     lambda: pq.read_table(path, filesystem=plan.store.fs))
    rows = table.to_pylist()
    for row in rows:
        row["clip_path"] = out.path(row["clip"]) if row.get("clip") else None
    return rows


def field_paths(plan: Plan, dataset: str) -> list[str]:
    """The mask field files of the dataset's mask version (paths in the store)."""
    out = plan.output("masks", dataset)
    return [out.path(o.path) for o in out.record.outputs if o.path.startswith(f"{FIELDS_DIR}/")]


def field_reader(plan: Plan, dataset: str) -> Any:
    """A random-access `FieldReader` over the dataset's mask fields."""
    from signmae_core.masking.storage import FieldReader

    paths = field_paths(plan, dataset)
    return readable(plan, "masks", dataset, ", ".join(paths) or "(no field files)",
                    lambda: FieldReader(paths, filesystem=plan.store.fs))


def extraction(plan: Plan, dataset: str) -> StageOutput:
    """The extraction output in a local folder (read it with
    `signmae_core.extract.read_extraction(folder)`): the stage folder itself for a local root,
    a local copy of its part files for an object-store root (`ArtifactStore.local_copy`,
    fetched once per record). Ray tasks read the store's folder through its filesystem
    instead (`plan.output("extract", dataset)`, `read_extraction(..., filesystem=...)`)."""
    out = plan.output("extract", dataset)
    if plan.store.is_local:
        return out
    folder = readable(plan, "extract", dataset, out.folder,
                      lambda: plan.store.local_copy(out.folder, out.record))
    return StageOutput(out.record, str(folder))


def shard_index(plan: Plan, dataset: str, stage: str = "shard") -> tuple[str, dict[str, Any]]:
    """A finished shard set (`shard` or `shard_fields`): its folder in the store and its
    `index.json` (docs/SHARDS.md)."""
    import json

    from signmae_core.shards import INDEX_NAME

    out = plan.output(stage, dataset)
    path = out.path(INDEX_NAME)
    index = readable(plan, stage, dataset, path,
                     lambda: json.loads(plan.store.read_bytes(path).decode("utf-8")))
    return out.folder, index


def shard_samples(plan: Plan, dataset: str) -> list[dict[str, Any]]:
    """The clip shard set's `samples.parquet`: key, video_id, split, shard, label_id per
    sample."""
    from signmae_core.shards import SAMPLES_NAME

    out = plan.output("shard", dataset)
    path = out.path(SAMPLES_NAME)
    table = readable(plan, "shard", dataset, path,
                     lambda: pq.read_table(path, filesystem=plan.store.fs))
    return table.to_pylist()
