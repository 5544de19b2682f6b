"""`signmae run decode`: every ok video of the manifest -> one standardized clip, Ray-parallel.

Output (see docs/CLIPS.md)::

    <root>/<dataset>/decode/<version>/clips/<video_id>.smclip   one clip per decoded video
    <root>/<dataset>/decode/<version>/clips.parquet             one row per ok manifest video:
                                                                status, error, frames, labels
    <root>/<dataset>/decode/<version>/_stage.json               the stage record

The version hashes the decode settings and the ingest version (see `pipelines.dag`); the
record's input is the ingest record's fingerprint. Each clip is written under a temporary name
and renamed, and carries a key of what it was made from: a rerun after new videos, or after a
killed run, decodes only the videos without a matching clip. A video that fails to decode is a
failed row.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from signmae_core.clips import (
    CLIP_SUFFIX,
    CLIP_TABLE,
    CLIPS_DIR,
    ClipError,
    ClipMeta,
    decode_source,
    read_clip_meta,
    write_clip_jpegs,
)
from signmae_core.config import DecodeConfig
from signmae_core.ingest.adapters import resolve_inside
from signmae_core.ingest.source import SourceError, resample_indices
from signmae_core.store import (
    ArtifactStore,
    OutputEntry,
    StageWriter,
    atomic_output,
    describe_output,
)

from . import outputs
from .execute import StageContext, StageResult
from .progress import Progress
from .ray_runtime import cluster_cpus, ensure_ray, map_bounded, one_thread_per_worker

RESULT_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("video_id", pa.string(), "the manifest's video id"),
    ("split", pa.string(), "from the manifest"),
    ("label", pa.string(), "from the manifest"),
    ("label_id", pa.int32(), "from the manifest (null: unlabeled)"),
    ("signer", pa.string(), "from the manifest"),
    ("status", pa.string(), "ok or failed"),
    ("error", pa.string(), "why decoding failed (null when ok)"),
    ("clip", pa.string(), "clip file relative to the stage folder (null when failed)"),
    ("clip_bytes", pa.int64(), "size of the clip file"),
    ("num_frames", pa.int32(), "frames in the clip"),
    ("frames_expected", pa.int32(), "frames the window should give at decode.fps"),
    ("truncated", pa.bool_(), "the window had more than decode.max_frames frames"),
    ("source_key", pa.string(), "hash of the manifest row and settings the clip was made from"),
    ("decode_s", pa.float64(), "wall seconds spent on this clip when it was made"),
    ("decode_cpu_s", pa.float64(), "CPU seconds of the worker on this clip when it was made"),
]


def clip_rel(video_id: str) -> str:
    return f"{CLIPS_DIR}/{video_id}{CLIP_SUFFIX}"


def source_key(row: dict[str, Any], settings_hash: str) -> str:
    """What a clip depends on: the video file, its window and box, and the decode settings."""
    parts = [
        settings_hash,
        row["path"],
        row["file_bytes"],
        row["file_mtime_ns"],
        row["frame_start"],
        row["frame_end"],
        row["bbox"],
        row["width"],
        row["height"],
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


# ---- the worker --------------------------------------------------------------------------------
def decode_clip(job: dict[str, Any], settings: dict[str, Any], local_path: str) -> dict[str, Any]:
    """Decode one manifest row into a clip file at `local_path`; returns the result facts.

    Raises SourceError / ClipError for a video that cannot be decoded.
    """
    cfg = DecodeConfig.model_validate(settings)
    window = (job["frame_start"], job["frame_end"])
    jpegs, meta = decode_source(
        job["uri"], cfg, window=window, source_fps=job["fps"],
        source_size=(job["width"], job["height"]), bbox=job["bbox"], video_id=job["video_id"],
        source_path=job["path"], source_key=job["source_key"],
    )
    write_clip_jpegs(local_path, jpegs, meta)
    expected = resample_indices(*window, job["fps"], cfg.fps)
    return {
        "num_frames": meta.num_frames,
        "frames_expected": meta.frames_expected,
        "truncated": len(expected) > cfg.max_frames,
    }


def decode_task(
    job: dict[str, Any], settings: dict[str, Any], store: ArtifactStore, final: str, rel: str
) -> dict[str, Any]:
    """Ray task: decode one video and publish its clip atomically; never raises for bad input."""
    one_thread_per_worker()
    started, started_cpu = time.perf_counter(), time.process_time()
    result: dict[str, Any] = {"video_id": job["video_id"], "source_key": job["source_key"]}
    try:
        with atomic_output(store, final) as tmp:
            result.update(decode_clip(job, settings, str(tmp)))
            entry = describe_output(rel, tmp, checksum=True)
        result.update(status="ok", error=None, clip=rel, clip_bytes=entry.bytes,
                      clip_sha256=entry.sha256)
    except (SourceError, ClipError) as exc:
        result.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a library failure on one video fails that video
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:300])
    result["decode_s"] = time.perf_counter() - started
    result["decode_cpu_s"] = time.process_time() - started_cpu
    return result


# ---- the stage ---------------------------------------------------------------------------------
def _previous_results(store: ArtifactStore, folder: str) -> dict[str, dict[str, Any]]:
    path = f"{folder}/{CLIP_TABLE}"
    if not store.exists(path):
        return {}
    try:
        rows = pq.read_table(path, filesystem=store.fs).to_pylist()
    except Exception:  # noqa: BLE001 - an unreadable old table only means no reuse
        return {}
    return {row["video_id"]: row for row in rows}


def _existing_clip(store: ArtifactStore, path: str, key: str) -> ClipMeta | None:
    """The clip's metadata when a complete clip made from `key` is already in place."""
    if not store.exists(path):
        return None
    try:
        with store.fs.open_input_file(path) as handle:
            meta = read_clip_meta(handle)
    except (ClipError, OSError):
        return None
    return meta if meta.source_key == key else None


def _remove_stale_clips(store: ArtifactStore, folder: str, keep: set[str]) -> int:
    """Delete clips of videos no longer in the manifest (or no longer decodable)."""
    selector = pafs.FileSelector(f"{folder}/{CLIPS_DIR}", allow_not_found=True)
    removed = 0
    for info in store.fs.get_file_info(selector):
        name = info.path.rsplit("/", 1)[-1]
        if info.type == pafs.FileType.File and f"{CLIPS_DIR}/{name}" not in keep:
            store.fs.delete_file(info.path)
            removed += 1
    return removed


def _results_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in RESULT_FIELDS])
    rows = sorted(rows, key=lambda r: r["video_id"])
    return pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in schema.names}, schema=schema)


def _reused_result(
    writer: StageWriter, meta: ClipMeta, old: dict[str, Any], rel: str
) -> dict[str, Any]:
    """The result row of a clip already in place (a killed run's, or a grown dataset's)."""
    writer.add_existing(rel, checksum=True)
    return {
        **old,
        "video_id": meta.video_id,
        "status": "ok",
        "error": None,
        "clip": rel,
        "clip_bytes": writer.outputs[rel].bytes,
        "num_frames": meta.num_frames,
        "frames_expected": meta.frames_expected,
        "source_key": meta.source_key,
        "truncated": old.get("truncated", False),
        "decode_s": old.get("decode_s"),  # the time it took when it was made
        "decode_cpu_s": old.get("decode_cpu_s"),
    }


def _split_work(
    ctx: StageContext, ok_rows: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Results that can be reused as they are, and the jobs that must be decoded."""
    store, writer, dataset = ctx.store, ctx.writer, ctx.dataset
    settings_hash = ctx.cfg.decode.output_hash()
    previous = {} if ctx.force else _previous_results(store, writer.dir)
    results: dict[str, dict[str, Any]] = {}
    todo: list[dict[str, Any]] = []
    for row in ok_rows:
        source, _, error = resolve_inside(Path(dataset.root), row["path"])
        job = {**row, "uri": str(source) if source else None,
               "source_key": source_key(row, settings_hash)}
        rel = clip_rel(row["video_id"])
        meta = None if ctx.force else _existing_clip(store, writer.path(rel), job["source_key"])
        old = previous.get(row["video_id"], {})
        if meta is not None:
            results[row["video_id"]] = _reused_result(writer, meta, old, rel)
        elif old.get("status") == "failed" and old.get("source_key") == job["source_key"]:
            results[row["video_id"]] = dict(old)
        elif error is not None:
            results[row["video_id"]] = {"video_id": row["video_id"], "status": "failed",
                                        "error": error, "source_key": job["source_key"]}
        else:
            todo.append(job)
    return results, todo


def compute(ctx: StageContext) -> StageResult:
    """Decode one dataset's ok videos into clips (reusing clips already made from the same
    video, window and settings)."""
    manifest = outputs.manifest(ctx.plan, ctx.key.dataset).to_pylist()
    ok_rows = [row for row in manifest if row["status"] == "ok"]
    results, todo = _split_work(ctx, ok_rows)
    reused = len(results)
    for result in _decode_all(ctx, todo):
        results[result["video_id"]] = result
        if result["status"] == "ok":
            ctx.writer.add(OutputEntry(path=result["clip"], bytes=result["clip_bytes"],
                                       sha256=result["clip_sha256"]))
    for row in ok_rows:
        result = results[row["video_id"]]
        for name in ("split", "label", "label_id", "signer"):
            result[name] = row[name]
    keep = {r["clip"] for r in results.values() if r["status"] == "ok"}
    stale = _remove_stale_clips(ctx.store, ctx.writer.dir, keep)
    with ctx.writer.output(CLIP_TABLE, checksum=True) as tmp:
        pq.write_table(_results_table(list(results.values())), str(tmp), compression="zstd")
    rows = list(results.values())
    ok = [r for r in rows if r["status"] == "ok"]
    counts = {
        "skipped": reused,
        "decoded": len(todo),
        "ingest_failed": len(manifest) - len(ok_rows),
        "stale_removed": stale,
        "short": sum(1 for r in ok if r["num_frames"] < r["frames_expected"]),
        "truncated": sum(1 for r in rows if r.get("truncated")),
    }
    extra = {
        "format": "smclip (JPEG frames in one file)",
        "fps": ctx.cfg.decode.fps,
        "size": ctx.cfg.decode.size,
        "crop": ctx.cfg.decode.crop,
        "frames": sum(r.get("num_frames") or 0 for r in rows),
    }
    return StageResult(rows=rows, counts=counts, extra=extra)


def _decode_all(ctx: StageContext, todo: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if not todo:
        return
    ensure_ray(ctx.cfg.ray)
    settings = ctx.cfg.decode.model_dump(mode="json")
    progress = Progress(ctx.label, len(todo))
    writer = ctx.writer
    jobs = (
        (job["video_id"], (job, settings, ctx.store, writer.path(clip_rel(job["video_id"])),
                           clip_rel(job["video_id"])))
        for job in todo
    )
    in_flight = ctx.cfg.decode.max_in_flight or 2 * cluster_cpus()
    keys = {job["video_id"]: job["source_key"] for job in todo}
    for key, result, error in map_bounded(
        decode_task, jobs, max_in_flight=in_flight, timeout_s=ctx.cfg.decode.timeout_s
    ):
        if error is not None:
            result = {"video_id": key, "status": "failed", "error": f"worker: {error}",
                      "source_key": keys[key]}
        progress.update(result["status"])
        yield result
