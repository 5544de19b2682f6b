"""`signmae run decode`: every ok video of the manifest -> one standardized clip, Ray-parallel.

Output (see docs/CLIPS.md)::

    <root>/<dataset>/decode/<version>/clips/<video_id>.smclip   one clip per decoded video
    <root>/<dataset>/decode/<version>/clips.parquet             one row per ok manifest video:
                                                                status, error, frames, labels
    <root>/<dataset>/decode/<version>/_stage.json               the stage record

`version = decode_version(cfg, dataset)` (decode settings + ingest version); the record's input
is the ingest record's fingerprint. Each clip is written under a temporary name and renamed, and
carries a key of what it was made from: a rerun after new videos, or after a killed run, decodes
only the videos without a matching clip. A video that fails to decode is a failed row.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from signmae_core.clips import (
    CLIP_SUFFIX,
    ClipError,
    ClipMeta,
    decode_config_hash,
    decode_version,
    encode_jpeg,
    read_clip_meta,
    write_clip_jpegs,
)
from signmae_core.config import DecodeConfig, PipelineConfig
from signmae_core.config.ingest import DatasetConfig
from signmae_core.ingest.manifest import read_manifest
from signmae_core.ingest.source import (
    SourceError,
    crop_box_for,
    read_window,
    resample_indices,
)
from signmae_core.store import (
    ArtifactStore,
    OutputEntry,
    StageRecord,
    atomic_output,
    describe_output,
)

from . import ingest
from .progress import Progress, print_failures
from .ray_runtime import cluster_cpus, ensure_ray, map_bounded, one_thread_per_worker

CODE_VERSION = 1
STAGE = "decode"
CLIPS_DIR = "clips"
RESULTS_NAME = "clips.parquet"

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
    ("decode_s", pa.float64(), "wall seconds spent on this clip (null when reused)"),
    ("decode_cpu_s", pa.float64(), "CPU seconds of the worker on this clip (null when reused)"),
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
    box = crop_box_for(job["width"], job["height"], cfg.crop, job["bbox"])
    expected = resample_indices(job["frame_start"], job["frame_end"], job["fps"], cfg.fps)
    truncated = len(expected) > cfg.max_frames
    indices, jpegs = [], []
    for index, image in read_window(
        job["uri"],
        job["frame_start"],
        job["frame_end"],
        out_fps=cfg.fps,
        box=box,
        size=cfg.size,
        max_frames=cfg.max_frames,
        pixel_format="bgr24",
    ):
        indices.append(index)
        jpegs.append(encode_jpeg(image, cfg.jpeg_quality, bgr=True))
    if not jpegs:
        raise SourceError("no frame of the window could be decoded")
    meta = ClipMeta(
        video_id=job["video_id"],
        fps=cfg.fps,
        height=cfg.size,
        width=cfg.size,
        num_frames=len(jpegs),
        source_path=job["path"],
        source_width=job["width"],
        source_height=job["height"],
        source_fps=job["fps"],
        window=(job["frame_start"], job["frame_end"]),
        frame_indices=indices,
        crop_box=box.to_list(),
        frames_expected=min(len(expected), cfg.max_frames),
        jpeg_quality=cfg.jpeg_quality,
        source_key=job["source_key"],
    )
    write_clip_jpegs(local_path, jpegs, meta)
    return {
        "num_frames": meta.num_frames,
        "frames_expected": meta.frames_expected,
        "truncated": truncated,
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
            entry = describe_output(rel, tmp)
        result.update(status="ok", error=None, clip=rel, clip_bytes=entry.bytes)
    except (SourceError, ClipError) as exc:
        result.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a library failure on one video fails that video
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:300])
    result["decode_s"] = time.perf_counter() - started
    result["decode_cpu_s"] = time.process_time() - started_cpu
    return result


# ---- the stage ---------------------------------------------------------------------------------
def _previous_results(store: ArtifactStore, folder: str) -> dict[str, dict[str, Any]]:
    path = f"{folder}/{RESULTS_NAME}"
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


def run(cfg: PipelineConfig, dataset: DatasetConfig, force: bool = False) -> StageRecord:
    """Decode one dataset's ok videos into clips; returns the stage record."""
    store = ArtifactStore.from_config(cfg.store)
    ingest_record, manifest_path = ingest.current(cfg, dataset, store)
    version = decode_version(cfg, dataset)
    config_hash = decode_config_hash(cfg)
    inputs = {"ingest": ingest_record.fingerprint()}
    if not force:
        record = store.is_up_to_date(
            dataset.name, STAGE, version, config_hash, CODE_VERSION, inputs
        )
        if record is not None:
            return record
    manifest = read_manifest(manifest_path, filesystem=store.fs).to_pylist()
    with store.open_stage(
        dataset.name,
        STAGE,
        version,
        config_hash=config_hash,
        code_version=CODE_VERSION,
        inputs=inputs,
    ) as writer:
        previous = {} if force else _previous_results(store, writer.dir)
        results: dict[str, dict[str, Any]] = {}
        todo: list[dict[str, Any]] = []
        ok_rows = [row for row in manifest if row["status"] == "ok"]
        for row in ok_rows:
            job = {**row, "source_key": source_key(row, config_hash)}
            rel = clip_rel(row["video_id"])
            meta = None if force else _existing_clip(store, writer.path(rel), job["source_key"])
            old = previous.get(row["video_id"], {})
            if meta is not None:
                results[row["video_id"]] = {
                    **old,
                    "video_id": row["video_id"],
                    "status": "ok",
                    "error": None,
                    "clip": rel,
                    "num_frames": meta.num_frames,
                    "frames_expected": meta.frames_expected,
                    "source_key": meta.source_key,
                    "truncated": old.get("truncated", False),
                    "decode_s": None,
                    "decode_cpu_s": None,
                }
                writer.add_existing(rel)
                results[row["video_id"]]["clip_bytes"] = writer.outputs[rel].bytes
            elif old.get("status") == "failed" and old.get("source_key") == job["source_key"]:
                results[row["video_id"]] = {**old, "decode_s": None, "decode_cpu_s": None}
            else:
                todo.append(job)
        reused = len(results)
        for result in _decode_all(cfg, dataset, store, writer, todo):
            results[result["video_id"]] = result
            if result["status"] == "ok":
                writer.add(OutputEntry(path=result["clip"], bytes=result["clip_bytes"]))
        for row in ok_rows:
            result = results[row["video_id"]]
            for name in ("split", "label", "label_id", "signer"):
                result[name] = row[name]
        keep = {r["clip"] for r in results.values() if r["status"] == "ok"}
        stale = _remove_stale_clips(store, writer.dir, keep)
        with writer.output(RESULTS_NAME, checksum=True) as tmp:
            pq.write_table(_results_table(list(results.values())), str(tmp), compression="zstd")
        # One entry for the clips folder: the per-clip list is clips.parquet itself.
        clip_entries = [writer.outputs.pop(rel) for rel in keep]
        writer.add(OutputEntry(path=f"{CLIPS_DIR}/", bytes=sum(e.bytes for e in clip_entries)))
        status = Counter(r["status"] for r in results.values())
        writer.counts.update(
            ok=status["ok"],
            failed=status["failed"],
            skipped=reused,
            decoded=len(todo),
            ingest_failed=len(manifest) - len(ok_rows),
            stale_removed=stale,
            short=sum(
                1
                for r in results.values()
                if r["status"] == "ok" and r["num_frames"] < r["frames_expected"]
            ),
            truncated=sum(1 for r in results.values() if r.get("truncated")),
        )
        print_failures(f"decode {dataset.name}", results.values())
        return writer.commit(
            format="smclip (JPEG frames in one file)",
            fps=cfg.decode.fps,
            size=cfg.decode.size,
            crop=cfg.decode.crop,
            frames=sum(r.get("num_frames") or 0 for r in results.values()),
            ingest_version=ingest_record.version,
        )


def _decode_all(
    cfg: PipelineConfig,
    dataset: DatasetConfig,
    store: ArtifactStore,
    writer: Any,
    todo: list[dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    if not todo:
        return
    ensure_ray(cfg.ray)
    settings = cfg.decode.model_dump(mode="json")
    progress = Progress(f"decode {dataset.name}", len(todo))
    jobs = (
        (
            job["video_id"],
            (
                job,
                settings,
                store,
                writer.path(clip_rel(job["video_id"])),
                clip_rel(job["video_id"]),
            ),
        )
        for job in todo
    )
    in_flight = cfg.decode.max_in_flight or 2 * cluster_cpus()
    keys = {job["video_id"]: job["source_key"] for job in todo}
    for key, result, error in map_bounded(
        decode_task, jobs, max_in_flight=in_flight, timeout_s=cfg.decode.timeout_s
    ):
        if error is not None:
            result = {
                "video_id": key,
                "status": "failed",
                "error": f"worker: {error}",
                "source_key": keys[key],
            }
        progress.update(result["status"])
        yield result


# ---- for downstream stages ---------------------------------------------------------------------
def current(
    cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore | None = None
) -> tuple[StageRecord, str]:
    """The completed decode output for this config: `(record, stage folder in the store)`.

    Clips are `<folder>/<clip>` for the `clip` column of `<folder>/clips.parquet` (rows with
    status ok). Raises InputError when decode has not run (or not finished) for this config.
    """
    store = store or ArtifactStore.from_config(cfg.store)
    version = decode_version(cfg, dataset)
    record = store.require_record(
        dataset.name,
        STAGE,
        version,
        what=f"decode output for dataset {dataset.name}",
        command=f"signmae run decode --dataset {dataset.name}",
    )
    return record, store.stage_dir(dataset.name, STAGE, version)


def load_clips(cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore | None = None):
    """The decode results table (`clips.parquet`) of the current decode output, as Arrow."""
    store = store or ArtifactStore.from_config(cfg.store)
    _, folder = current(cfg, dataset, store)
    return pq.read_table(f"{folder}/{RESULTS_NAME}", filesystem=store.fs)
