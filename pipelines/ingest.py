"""`signmae run ingest`: read a dataset's layout, probe every video in parallel, write the manifest.

Output (see docs/INGEST.md)::

    <root>/<dataset>/ingest/classes.json              the dataset's class map, append-only
    <root>/<dataset>/ingest/<version>/videos.parquet  the manifest, one row per video
    <root>/<dataset>/ingest/<version>/classes.json    the class map this manifest was made with
    <root>/<dataset>/ingest/<version>/_stage.json     the stage record

`version = ingest_version(cfg, dataset)` (a hash of the dataset description and probe limits).
The record's input fingerprint covers the label files and every video's path, size and mtime:
a rerun with nothing changed returns at once; new or changed videos are probed, unchanged ones
reuse their earlier probe.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import fields
from typing import Any

from signmae_core.config import DatasetConfig, IngestConfig, PipelineConfig
from signmae_core.errors import InputError
from signmae_core.ingest import (
    STAGE,
    PlannedVideo,
    Probe,
    build_rows,
    ingest_config_hash,
    ingest_version,
    plan_videos,
    probe_video,
    sources_fingerprint,
)
from signmae_core.ingest.manifest import (
    CLASSES_NAME,
    MANIFEST_NAME,
    class_map_json,
    manifest_table,
    parse_class_map,
    read_manifest,
    write_manifest,
)
from signmae_core.store import ArtifactStore, StageRecord, atomic_output

from .progress import Progress, print_failures
from .ray_runtime import cluster_cpus, ensure_ray, map_bounded, one_thread_per_worker

CODE_VERSION = 1
SHARED_CLASSES_LOCK = "classes"


# ---- the stage ---------------------------------------------------------------------------------
def probe_task(path: str, limits: dict[str, Any]) -> dict[str, Any]:
    """Ray task: probe one video (see `signmae_core.ingest.probe`)."""
    one_thread_per_worker()
    return probe_video(path, IngestConfig.model_validate(limits)).to_dict()


def shared_classes_path(store: ArtifactStore, dataset: DatasetConfig) -> str:
    """The dataset's append-only class map, shared by every ingest version."""
    return f"{store.stage_dir(dataset.name, STAGE)}/{CLASSES_NAME}"


def read_shared_classes(store: ArtifactStore, dataset: DatasetConfig) -> list[str]:
    path = shared_classes_path(store, dataset)
    if not store.exists(path):
        return []
    try:
        return parse_class_map(store.read_bytes(path).decode("utf-8"))
    except ValueError as exc:
        raise InputError(f"class map {path} is damaged ({exc}); fix or delete it") from None


def _probe_cache(store: ArtifactStore, folder: str) -> dict[tuple, Probe]:
    """Probes of the videos that were ok in this version's previous manifest, by file key."""
    path = f"{folder}/{MANIFEST_NAME}"
    if not store.exists(path):
        return {}
    try:
        table = read_manifest(path, filesystem=store.fs)
    except Exception:  # noqa: BLE001 - an unreadable old manifest only means no cache
        return {}
    names = [f.name for f in fields(Probe)]
    cache = {}
    for row in table.to_pylist():
        if row.get("status") == "ok":
            key = (row["path"], row["file_bytes"], row["file_mtime_ns"])
            cache[key] = Probe(**{n: row.get(n) for n in names})
    return cache


def _probe_all(
    cfg: PipelineConfig, dataset: DatasetConfig, todo: list[PlannedVideo]
) -> dict[str, Probe]:
    probes: dict[str, Probe] = {}
    if not todo:
        return probes
    ensure_ray(cfg.ray)
    limits = cfg.ingest.model_dump(mode="json")
    progress = Progress(f"ingest {dataset.name}", len(todo))
    jobs = ((item.video_id, (str(item.abs_path), limits)) for item in todo)
    in_flight = cfg.ingest.max_in_flight or 2 * cluster_cpus()
    for key, result, error in map_bounded(probe_task, jobs, max_in_flight=in_flight):
        probe = Probe(**result) if error is None else Probe(error=f"probe crashed: {error}")
        probes[key] = probe
        progress.update("failed" if probe.error else "ok")
    return probes


def run(cfg: PipelineConfig, dataset: DatasetConfig, force: bool = False) -> StageRecord:
    """Ingest one dataset; returns the stage record (at once when already up to date)."""
    store = ArtifactStore.from_config(cfg.store)
    version = ingest_version(cfg, dataset)
    config_hash = ingest_config_hash(cfg, dataset)
    planned = plan_videos(dataset)
    inputs = {"sources": sources_fingerprint(dataset, planned)}
    if not force:
        record = store.is_up_to_date(
            dataset.name, STAGE, version, config_hash, CODE_VERSION, inputs
        )
        if record is not None:
            return record
    with store.open_stage(
        dataset.name,
        STAGE,
        version,
        config_hash=config_hash,
        code_version=CODE_VERSION,
        inputs=inputs,
    ) as writer:
        cache = {} if force else _probe_cache(store, writer.dir)
        probes = {
            item.video_id: cache[item.file_key()]
            for item in planned
            if item.probe_needed and item.file_key() in cache
        }
        todo = [item for item in planned if item.probe_needed and item.video_id not in probes]
        probes.update(_probe_all(cfg, dataset, todo))
        with store.lock(dataset.name, STAGE, SHARED_CLASSES_LOCK):
            classes = read_shared_classes(store, dataset)
            rows, extras, classes, added = build_rows(planned, probes, dataset, classes)
            if added or not store.exists(shared_classes_path(store, dataset)):
                with atomic_output(store, shared_classes_path(store, dataset)) as tmp:
                    tmp.write_text(class_map_json(classes), encoding="utf-8")
        with writer.output(MANIFEST_NAME, checksum=True) as tmp:
            write_manifest(tmp, manifest_table(rows, extras))
        with writer.output(CLASSES_NAME, checksum=True) as tmp:
            tmp.write_text(class_map_json(classes), encoding="utf-8")
        failures = Counter(_reason_kind(r["error"]) for r in rows if r["status"] == "failed")
        writer.counts.update(
            ok=sum(r["status"] == "ok" for r in rows),
            failed=sum(r["status"] == "failed" for r in rows),
            window_clamped=sum(bool(r["window_clamped"]) for r in rows),
            unlabeled=sum(r["label_id"] is None for r in rows),
            probed=len(todo),
            skipped=len(probes) - len(todo),
        )
        print_failures(f"ingest {dataset.name}", rows)
        return writer.commit(
            classes=len(classes), classes_added=len(added), failure_reasons=dict(failures)
        )


def _reason_kind(error: str | None) -> str:
    """A short failure category for the record: the reason up to its first number or colon."""
    text = error or "unknown"
    for stop in (":", "("):
        text = text.split(stop, 1)[0]
    return " ".join(text.split())[:60]


# ---- for downstream stages ---------------------------------------------------------------------
def current(
    cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore | None = None
) -> tuple[StageRecord, str]:
    """The completed ingest output for this config: `(record, manifest path in the store)`.

    Raises InputError when ingest has not run (or not finished) for this config.
    """
    store = store or ArtifactStore.from_config(cfg.store)
    version = ingest_version(cfg, dataset)
    record = store.require_record(
        dataset.name,
        STAGE,
        version,
        what=f"ingest output for dataset {dataset.name}",
        command=f"signmae run ingest --dataset {dataset.name}",
    )
    return record, f"{store.stage_dir(dataset.name, STAGE, version)}/{MANIFEST_NAME}"


def load_manifest(cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore | None = None):
    """The current manifest as an Arrow table (`.to_pandas()` for a DataFrame)."""
    store = store or ArtifactStore.from_config(cfg.store)
    _, path = current(cfg, dataset, store)
    return read_manifest(path, filesystem=store.fs)
