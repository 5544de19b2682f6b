"""`signmae run extract`: keypoints and part maps of every decoded clip, Ray-parallel.

Output (see docs/EXTRACT.md)::

    <root>/<dataset>/extract/<version>/parts/part-00000.parquet   one row per clip (schema.py)
    <root>/<dataset>/extract/<version>/_stage.json                the stage record

`version = extract_version(cfg, dataset)`: the extraction settings that change the output plus
the decode version it reads; the record's input is the decode record's fingerprint.

Workers are Ray actors, one per CPU (or `extract.num_workers`), each loading its models once.
The driver hands each actor one clip at a time and writes the rows back in part files of
`extract.clips_per_part` clips, each written under a temporary name and renamed. A rerun skips
clips that already have a row made from the same clip (`clip_key`), so a killed run resumes and a
dataset that grew extracts only its new clips. A clip that fails (unreadable, a MediaPipe error,
its worker crashing or running past `extract.clip_timeout_s`) is a failed row with the reason;
the worker is replaced and the stage goes on.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from signmae_core.clips import decode_version
from signmae_core.config import DatasetConfig, PipelineConfig, config_hash
from signmae_core.config.extract import EXTRACT_RUNTIME_FIELDS
from signmae_core.errors import InputError
from signmae_core.extract.schema import STATUS_OK, failed_row, write_part
from signmae_core.store import ArtifactStore, StageRecord, StageWriter

from . import decode, ingest
from .progress import Progress
from .ray_runtime import cluster_cpus, ensure_ray, task_error

CODE_VERSION = 1
STAGE = "extract"
PARTS_DIR = "parts"
_PART_NAME = re.compile(r"^part-(\d+)\.parquet$")
_SUMMARY = (
    "video_id", "status", "error", "clip_key", "num_frames", "hand_frames", "second_look_hands"
)


# ---- versions ----------------------------------------------------------------------------------
def extract_config_hash(cfg: PipelineConfig) -> str:
    """Hash of the extraction settings that change the output (not the parallelism)."""
    return config_hash(cfg.extract.model_dump(mode="json", exclude=set(EXTRACT_RUNTIME_FIELDS)))


def extract_version(cfg: PipelineConfig, dataset: DatasetConfig) -> str:
    """The output folder's version: extraction settings + the decode version they read."""
    return config_hash(extract_config_hash(cfg), decode_version(cfg, dataset))


def current(
    cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore | None = None
) -> tuple[StageRecord, str]:
    """The completed extraction output for this config: `(record, stage folder in the store)`.

    Read it with `signmae_core.extract.read_extraction(folder)` / `iter_clips(folder)`.
    Raises InputError when extraction has not run (or not finished) for this config.
    """
    store = store or ArtifactStore.from_config(cfg.store)
    version = extract_version(cfg, dataset)
    record = store.require_record(
        dataset.name,
        STAGE,
        version,
        what=f"extraction output for dataset {dataset.name}",
        command=f"signmae run extract --dataset {dataset.name}",
    )
    return record, store.stage_dir(dataset.name, STAGE, version)


# ---- workers -----------------------------------------------------------------------------------
class ExtractActor:
    """A Ray actor's body: one `ClipExtractor`, models loaded once for all its clips."""

    def __init__(self, settings: dict[str, Any], dataset_root: str) -> None:
        import cv2

        from signmae_core.config import ExtractConfig
        from signmae_core.extract.worker import ClipExtractor

        cv2.setNumThreads(1)  # parallelism comes from the workers, one thread each
        self.extractor = ClipExtractor(ExtractConfig.model_validate(settings), dataset_root)

    def extract(self, job: Any) -> dict[str, Any]:
        return self.extractor.extract(job)


def map_actors(
    make_actor: Callable[[], Any],
    method: str,
    jobs: Iterable[tuple[str, Any]],
    *,
    num_actors: int,
    timeout_s: float,
) -> Iterator[tuple[str, Any, str | None]]:
    """Run `actor.<method>(job)` over `jobs` on `num_actors` actors, one job per actor at a time.

    Yields `(key, result, error)` in completion order; `error` is a one-line reason when the
    method raised, the actor died (it is replaced) or it ran past `timeout_s` (it is killed and
    replaced). A job's clock starts when its actor is ready (model loading does not count). Jobs
    are consumed lazily: memory holds one job per actor. Actors are killed at the end, also when
    the consumer stops early. Raises `InputError` when a new actor cannot even start.
    """
    import ray

    starting: dict[Any, Any] = {}  # ready ref -> actor
    idle: list[Any] = []
    running: dict[Any, tuple[str, Any, float]] = {}

    def start_actor() -> None:
        actor = make_actor()
        starting[actor.__ray_ready__.remote()] = actor

    for _ in range(num_actors):
        start_actor()
    job_iter = iter(jobs)
    exhausted = False
    try:
        while True:
            while idle and not exhausted:
                job = next(job_iter, None)
                if job is None:
                    exhausted = True
                    break
                actor = idle.pop()
                running[getattr(actor, method).remote(job[1])] = (job[0], actor, time.monotonic())
            if not running and (exhausted or not starting):
                return
            done, _ = ray.wait([*running, *starting], num_returns=1, timeout=1.0)
            outcomes: list[tuple[str, Any, str | None]] = []
            for ref in done:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise InputError(f"a worker could not start: {_one_line(exc)}") from None
                    idle.append(actor)
                    continue
                key, actor, _ = running.pop(ref)
                try:
                    outcomes.append((key, ray.get(ref), None))
                    idle.append(actor)
                except ray.exceptions.RayActorError as exc:
                    outcomes.append((key, None, f"worker died: {_one_line(exc)}"))
                    start_actor()
                except ray.exceptions.RayError as exc:
                    outcomes.append((key, None, task_error(exc)))
                    idle.append(actor)
            now = time.monotonic()
            for ref, (key, actor, started) in list(running.items()):
                if now - started > timeout_s:
                    del running[ref]
                    ray.kill(actor, no_restart=True)
                    outcomes.append((key, None, f"timed out after {timeout_s:.0f} s"))
                    start_actor()
            yield from outcomes
    finally:
        for actor in [*idle, *starting.values(), *(a for _, a, _ in running.values())]:
            ray.kill(actor, no_restart=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text


# ---- the stage ---------------------------------------------------------------------------------
def _jobs(cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore) -> dict[str, Any]:
    """video_id -> ClipJob for every clip the current decode output holds."""
    from signmae_core.extract.worker import ClipJob

    _, decode_dir = decode.current(cfg, dataset, store)
    if not store.is_local:
        raise InputError("the extract stage reads clips from a local store root only")
    uris = {
        row["video_id"]: row["uri"]
        for row in ingest.load_manifest(cfg, dataset, store)
        .select(["video_id", "uri"])
        .to_pylist()
    }
    jobs = {}
    for row in decode.load_clips(cfg, dataset, store).to_pylist():
        if row["status"] != "ok":
            continue
        jobs[row["video_id"]] = ClipJob(
            video_id=row["video_id"],
            clip_path=f"{decode_dir}/{row['clip']}",
            source_path=uris.get(row["video_id"]),
            clip_key=row["source_key"] or "",
            num_frames=row["num_frames"] or 0,
        )
    return jobs


def _existing_parts(writer: StageWriter) -> list[str]:
    """Part files (relative to the stage folder) that earlier runs finished."""
    selector = pafs.FileSelector(writer.path(PARTS_DIR), allow_not_found=True)
    names = [Path(i.path).name for i in writer.store.fs.get_file_info(selector)]
    return sorted(f"{PARTS_DIR}/{n}" for n in names if _PART_NAME.match(n))


def _reuse_parts(
    writer: StageWriter, jobs: dict[str, Any], force: bool
) -> tuple[dict[str, dict[str, Any]], int]:
    """Keep the rows of earlier runs that still match a current clip.

    Returns (video_id -> {status, error, ...} of kept rows, next free part number). A part with
    rows of clips that were re-decoded or are gone is rewritten without them (or deleted).
    """
    fs = writer.store.fs
    kept: dict[str, dict[str, Any]] = {}
    next_index = 0
    if force:
        for rel in _existing_parts(writer):
            fs.delete_file(writer.path(rel))
        return kept, next_index
    for rel in _existing_parts(writer):
        path = writer.path(rel)
        next_index = max(next_index, int(_PART_NAME.match(Path(rel).name).group(1)) + 1)
        rows = pq.read_table(path, filesystem=fs, columns=list(_SUMMARY)).to_pylist()
        valid = [
            r["video_id"] in jobs
            and r["video_id"] not in kept
            and (r["clip_key"] or "") == jobs[r["video_id"]].clip_key
            for r in rows
        ]
        if not any(valid):
            fs.delete_file(path)
            continue
        if not all(valid):
            table = pq.read_table(path, filesystem=fs).filter(pa.array(valid))
            with writer.output(rel) as tmp:
                pq.write_table(table, str(tmp), compression="zstd", row_group_size=16)
        else:
            writer.add_existing(rel)
        for row, ok in zip(rows, valid, strict=True):
            if ok:
                kept[row["video_id"]] = row
    return kept, next_index


def run(cfg: PipelineConfig, dataset: DatasetConfig, force: bool = False) -> StageRecord:
    """Extract keypoints and part maps of one dataset's decoded clips; returns the stage record."""
    if cfg.extract.backend == "oracle" and not (Path(dataset.root) / "ground_truth").is_dir():
        raise InputError(
            f"extract.backend=oracle needs the synthetic dataset's ground truth "
            f"({Path(dataset.root) / 'ground_truth'} not found); use the mediapipe backend"
        )
    store = ArtifactStore.from_config(cfg.store)
    decode_record, _ = decode.current(cfg, dataset, store)
    version = extract_version(cfg, dataset)
    chash = extract_config_hash(cfg)
    inputs = {"decode": decode_record.fingerprint()}
    if not force:
        record = store.is_up_to_date(dataset.name, STAGE, version, chash, CODE_VERSION, inputs)
        if record is not None:
            return record
    jobs = _jobs(cfg, dataset, store)
    with store.open_stage(
        dataset.name, STAGE, version, config_hash=chash, code_version=CODE_VERSION, inputs=inputs
    ) as writer:
        rows, next_index = _reuse_parts(writer, jobs, force)
        reused = len(rows)
        # Longest clips first: the workers finish together instead of waiting on a late long one.
        todo = sorted((job for job in jobs.values() if job.video_id not in rows),
                      key=lambda job: (-job.num_frames, job.video_id))
        warnings: Counter[str] = Counter()
        buffer: list[dict[str, Any]] = []
        for row in _extract_all(cfg, dataset, todo):
            buffer.append(row)
            rows[row["video_id"]] = {k: row.get(k) for k in _SUMMARY}  # not the arrays
            if row.get("warning"):
                warnings[row["warning"].split(" (", 1)[0]] += 1
            if len(buffer) >= cfg.extract.clips_per_part:
                _write(writer, next_index, buffer)
                next_index, buffer = next_index + 1, []
        if buffer:
            _write(writer, next_index, buffer)
        return _commit(writer, dataset, rows, reused, len(todo), warnings, decode_record.version)


def _write(writer: StageWriter, index: int, rows: list[dict[str, Any]]) -> None:
    with writer.output(f"{PARTS_DIR}/part-{index:05d}.parquet", checksum=True) as tmp:
        write_part(tmp, rows)


def _commit(
    writer: StageWriter,
    dataset: DatasetConfig,
    rows: dict[str, dict[str, Any]],
    reused: int,
    extracted: int,
    warnings: Counter[str],
    decode_version_: str,
) -> StageRecord:
    ok = [r for r in rows.values() if r["status"] == STATUS_OK]
    failed = [r for r in rows.values() if r["status"] != STATUS_OK]
    frames = sum(r["num_frames"] for r in ok)
    hand_frames = sum(r["hand_frames"] for r in ok)
    writer.counts.update(
        ok=len(ok),
        failed=len(failed),
        skipped=reused,
        extracted=extracted,
        no_hands=sum(1 for r in ok if not r["hand_frames"]),
        frames=frames,
        hand_frames=hand_frames,
        second_look_hands=sum(r["second_look_hands"] or 0 for r in ok),
    )
    for row in sorted(failed, key=lambda r: r["video_id"])[:5]:
        reason = row.get("error") or "unknown error"
        print(f"[extract {dataset.name}] failed {row['video_id']}: {reason}", file=sys.stderr)
    for warning, count in warnings.items():
        print(f"[extract {dataset.name}] {count} clip(s): {warning}", file=sys.stderr)
    return writer.commit(
        hand_detection_rate=round(hand_frames / frames, 4) if frames else None,
        warnings=dict(warnings),
        decode_version=decode_version_,
    )


def _extract_all(
    cfg: PipelineConfig, dataset: DatasetConfig, todo: list[Any]
) -> Iterator[dict[str, Any]]:
    """Rows of the clips in `todo`, in completion order, with console progress."""
    if not todo:
        return
    import ray

    ensure_ray(cfg.ray)
    per_worker = cfg.extract.num_cpus_per_worker
    workers = cfg.extract.num_workers or max(1, cluster_cpus() // per_worker)
    workers = max(1, min(workers, len(todo), cluster_cpus() // per_worker or 1))
    settings = cfg.extract.model_dump(mode="json")
    actor_class = ray.remote(num_cpus=per_worker, max_restarts=0)(ExtractActor)
    keys = {job.video_id: job.clip_key for job in todo}
    progress = Progress(f"extract {dataset.name}", len(todo))
    for video_id, row, error in map_actors(
        lambda: actor_class.remote(settings, dataset.root),
        "extract",
        ((job.video_id, job) for job in todo),
        num_actors=workers,
        timeout_s=cfg.extract.clip_timeout_s,
    ):
        if error is not None:
            row = failed_row(video_id, error, cfg.extract.backend, clip_key=keys[video_id])
        progress.update(row["status"])
        yield row
