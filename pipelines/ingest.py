"""`signmae run ingest`: read a dataset's layout, probe every video in parallel, write the manifest.

Output (see docs/INGEST.md)::

    <root>/<dataset>/ingest/classes.json              the dataset's class map, append-only
    <root>/<dataset>/ingest/<version>/videos.parquet  the manifest, one row per video
    <root>/<dataset>/ingest/<version>/classes.json    the class map this manifest was made with
    <root>/<dataset>/ingest/<version>/class_groups.json  the dataset's class groups, when it
                                                      declares them (checked against the map)
    <root>/<dataset>/ingest/<version>/_stage.json     the stage record

The version hashes the dataset description (not where it lives) and the probe limits (see
`pipelines.dag`). The record's input fingerprint covers the label files and every video's path,
size and mtime: a rerun with nothing changed returns at once; new or changed videos are probed,
unchanged ones reuse their earlier probe.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import fields
from typing import Any

from signmae_core.config import DatasetConfig, IngestConfig
from signmae_core.errors import InputError
from signmae_core.ingest import (
    STAGE,
    PlannedVideo,
    Probe,
    build_rows,
    plan_videos,
    probe_video,
)
from signmae_core.ingest.class_groups import (
    CLASS_GROUPS_NAME,
    check_class_groups,
    class_groups_json,
    read_class_groups,
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
from signmae_core.store import ArtifactStore, atomic_output, sha256_file

from .execute import StageContext, StageResult
from .progress import Progress
from .ray_runtime import cluster_cpus, ensure_ray, map_bounded, one_thread_per_worker

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


def _earlier_rows(store: ArtifactStore, folder: str) -> dict[str, dict[str, Any]]:
    """The rows of this version's previous manifest, by video id (empty when there is none)."""
    path = f"{folder}/{MANIFEST_NAME}"
    if not store.exists(path):
        return {}
    try:
        table = read_manifest(path, filesystem=store.fs)
    except Exception:  # noqa: BLE001 - an unreadable old manifest only means no cache
        return {}
    return {row["video_id"]: row for row in table.to_pylist()}


def _probe_cache(earlier: dict[str, dict[str, Any]]) -> dict[tuple, Probe]:
    """Probes of the videos that were ok in the previous manifest, by path and size.

    A probe is reused when the file still has its size and either its mtime or its sha256
    (`_cached_probe`). Failed rows are probed again (a failure may have been transient).
    """
    names = [f.name for f in fields(Probe)]
    return {(row["path"], row["file_bytes"]): Probe(**{n: row.get(n) for n in names})
            for row in earlier.values() if row.get("status") == "ok"}


def _keep_earlier_mtimes(rows: list[dict[str, Any]], earlier: dict[str, dict[str, Any]]
                         ) -> list[dict[str, Any]]:
    """Each row that is its earlier row but for the file's mtime, replaced by the earlier row.

    A failed video is probed again on every run; when it fails the same way, its row keeps the
    earlier mtime, so a touched failed file (like a touched ok one, `_cached_probe`) leaves the
    manifest byte for byte the same and nothing downstream reruns.
    """
    kept = []
    for row in rows:
        old = earlier.get(row["video_id"])
        same = old is not None and all(
            old.get(k) == v for k, v in row.items() if k != "file_mtime_ns")
        if same and "file_mtime_ns" in row:
            row = {**row, "file_mtime_ns": old["file_mtime_ns"]}
        kept.append(row)
    return kept


def _cached_probe(cache: dict[tuple, Probe], item: PlannedVideo) -> Probe | None:
    """The earlier probe of this video's file if its content is unchanged: the same mtime, or a
    new mtime and the same sha256 (a touched file).

    A touched file keeps its earlier row, mtime included, so the manifest comes out byte for
    byte the same and nothing downstream reruns for a copy or a checkout that reset mtimes. A
    row from before `file_sha256` is probed again to get one.
    """
    probe = cache.get((item.rel_path, item.file_bytes))
    if probe is None or probe.file_sha256 is None or item.abs_path is None:
        return None
    if probe.file_mtime_ns == item.file_mtime_ns:
        return probe
    try:
        return probe if sha256_file(item.abs_path) == probe.file_sha256 else None
    except OSError:
        return None


def _probe_all(ctx: StageContext, todo: list[PlannedVideo]) -> dict[str, Probe]:
    probes: dict[str, Probe] = {}
    if not todo:
        return probes
    ensure_ray(ctx.cfg.ray)
    limits = ctx.cfg.ingest.model_dump(mode="json")
    progress = Progress(ctx.label, len(todo))
    jobs = ((item.video_id, (str(item.abs_path), limits)) for item in todo)
    in_flight = ctx.cfg.ingest.max_in_flight or 2 * cluster_cpus()
    for key, result, error in map_bounded(probe_task, jobs, max_in_flight=in_flight):
        probe = Probe(**result) if error is None else Probe(error=f"probe crashed: {error}")
        probes[key] = probe
        progress.update("failed" if probe.error else "ok")
    return probes


def _update_shared_classes(
    store: ArtifactStore,
    dataset: DatasetConfig,
    planned: list[PlannedVideo],
    probes: dict[str, Probe],
) -> tuple[list[dict[str, Any]], list[str], list[str], list[str]]:
    """Manifest rows, with the dataset's append-only class map extended under its lock."""
    with store.lock(dataset.name, STAGE, SHARED_CLASSES_LOCK):
        classes = read_shared_classes(store, dataset)
        rows, extras, classes, added = build_rows(planned, probes, dataset, classes)
        if added or not store.exists(shared_classes_path(store, dataset)):
            with atomic_output(store, shared_classes_path(store, dataset)) as tmp:
                tmp.write_text(class_map_json(classes), encoding="utf-8")
    return rows, extras, classes, added


def compute(ctx: StageContext) -> StageResult:
    """Ingest one dataset: probe what changed, write the manifest and the class map."""
    store, dataset, writer = ctx.store, ctx.dataset, ctx.writer
    planned = plan_videos(dataset)
    groups = read_class_groups(dataset.root)  # a bad file fails before anything is probed
    earlier = {} if ctx.force else _earlier_rows(store, writer.dir)
    cache = _probe_cache(earlier)
    probes: dict[str, Probe] = {}
    for item in planned:
        probe = _cached_probe(cache, item) if item.probe_needed else None
        if probe is not None:
            probes[item.video_id] = probe
    todo = [item for item in planned if item.probe_needed and item.video_id not in probes]
    probes.update(_probe_all(ctx, todo))
    rows, extras, classes, added = _update_shared_classes(store, dataset, planned, probes)
    rows = _keep_earlier_mtimes(rows, earlier)
    mtimes = {item.video_id: item.file_mtime_ns for item in planned}
    touched = sum("file_mtime_ns" in row and row["file_mtime_ns"] != mtimes[row["video_id"]]
                  for row in rows)
    with writer.output(MANIFEST_NAME, checksum=True) as tmp:
        write_manifest(tmp, manifest_table(rows, extras))
    with writer.output(CLASSES_NAME, checksum=True) as tmp:
        tmp.write_text(class_map_json(classes), encoding="utf-8")
    _write_class_groups(ctx, groups, classes)
    failures = Counter(_reason_kind(r["error"]) for r in rows if r["status"] == "failed")
    counts = {
        "window_clamped": sum(bool(r["window_clamped"]) for r in rows),
        "unlabeled": sum(r["label_id"] is None for r in rows),
        "probed": len(todo),
        "skipped": len(probes) - len(todo),
        "touched": touched,
    }
    extra = {"classes": len(classes), "classes_added": len(added),
             "failure_reasons": dict(failures)}
    return StageResult(rows=rows, counts=counts, extra=extra)


def _write_class_groups(ctx: StageContext, groups: list[dict[str, Any]] | None,
                        classes: list[str]) -> None:
    """Copy the dataset's class groups into the output (after checking their labels against
    the class map), so evaluation reads them through the plan. A dataset without the file
    leaves none (a copy from an earlier run of this version is removed)."""
    if groups is None:
        stale = ctx.writer.path(CLASS_GROUPS_NAME)
        if ctx.store.exists(stale):
            ctx.store.fs.delete_file(stale)
        return
    check_class_groups(groups, classes)
    with ctx.writer.output(CLASS_GROUPS_NAME, checksum=True) as tmp:
        tmp.write_text(class_groups_json(groups), encoding="utf-8")


def _reason_kind(error: str | None) -> str:
    """A short failure category for the record: the reason up to its first number or colon."""
    text = error or "unknown"
    for stop in (":", "("):
        text = text.split(stop, 1)[0]
    return " ".join(text.split())[:60]
