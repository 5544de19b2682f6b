"""`signmae run extract`: keypoints and part maps of every decoded clip, Ray-parallel.

Output (see docs/EXTRACT.md)::

    <root>/<dataset>/extract/<version>/parts/part-00000.parquet   one row per clip (schema.py)
    <root>/<dataset>/extract/<version>/_stage.json                the stage record

The version hashes the extraction settings that change the output and the decode version it
reads (see `pipelines.dag`); the record's input is the decode record's fingerprint.

Workers are Ray actors, one per CPU (or `extract.num_workers`), each loading its models once.
The driver hands each actor one clip at a time and writes the rows back in part files of
`extract.clips_per_part` clips, each written under a temporary name and renamed. A rerun skips
clips that already have a row made from the same clip (`clip_key`), so a killed run resumes, a
dataset that grew extracts only its new clips, and a part file found damaged (deleted by the
envelope) has just its clips extracted again. A clip that fails (unreadable, a MediaPipe error,
its worker crashing or running past `extract.clip_timeout_s`) is a failed row with the reason;
the worker is replaced and the stage goes on. With an object-store root (`s3://...`) each actor
fetches its clip file through the store's filesystem into a local temporary file, and the part
files are uploaded by the writer like any stage's outputs (docs/STORE.md).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from signmae_core.config import DatasetConfig, PipelineConfig
from signmae_core.errors import InputError
from signmae_core.extract.schema import STATUS_OK, failed_row, write_part
from signmae_core.ingest.adapters import resolve_inside
from signmae_core.store import ArtifactStore, StageWriter

from . import outputs
from .dag import Plan
from .execute import StageContext, StageResult
from .progress import Progress
from .ray_runtime import cluster_cpus, ensure_ray, task_error

PARTS_DIR = "parts"
_PART_NAME = re.compile(r"^part-(\d+)\.parquet$")
_SUMMARY = (
    "video_id", "status", "error", "clip_key", "num_frames", "hand_frames", "second_look_hands"
)


# ---- workers -----------------------------------------------------------------------------------
class ExtractActor:
    """A Ray actor's body: one `ClipExtractor`, models loaded once for all its clips.

    `store`: None when the clip paths are local files (a local store root); an object-store
    root's `ArtifactStore`, through which the actor fetches each clip file into a local
    temporary file (on whatever node it runs) and deletes it after the clip."""

    def __init__(
        self, settings: dict[str, Any], dataset_root: str, store: ArtifactStore | None = None
    ) -> None:
        import cv2

        from signmae_core.config import ExtractConfig
        from signmae_core.extract.worker import ClipExtractor

        cv2.setNumThreads(1)  # parallelism comes from the workers, one thread each
        self.extractor = ClipExtractor(ExtractConfig.model_validate(settings), dataset_root)
        self.store = store

    def extract(self, job: Any) -> dict[str, Any]:
        if self.store is None:
            return self.extractor.extract(job)
        with tempfile.TemporaryDirectory(prefix="signmae-extract-") as tmp:
            local = self.store.fetch(job.clip_path, Path(tmp) / Path(job.clip_path).name)
            return self.extractor.extract(dataclasses.replace(job, clip_path=str(local)))


Outcome = tuple[str, Any, str | None]  # (key, result, error) of one job


class _ActorPool:
    """The actors of one `map_actors` call: starting (loading), idle and running ones.

    Ray's own `ActorPool` is not used: it has no per-job timeout, does not replace an actor
    that died, and cannot kill the actor of a job that hangs.
    """

    def __init__(self, make_actor: Callable[[], Any], method: str, timeout_s: float) -> None:
        self.make_actor, self.method, self.timeout_s = make_actor, method, timeout_s
        self.starting: dict[Any, Any] = {}  # ready ref -> actor
        self.idle: list[Any] = []
        self.running: dict[Any, tuple[str, Any, float]] = {}  # ref -> (key, actor, started)

    def start(self) -> None:
        actor = self.make_actor()
        self.starting[actor.__ray_ready__.remote()] = actor

    def submit(self, key: str, job: Any) -> None:
        actor = self.idle.pop()
        self.running[getattr(actor, self.method).remote(job)] = (key, actor, time.monotonic())

    def wait(self) -> list[Outcome]:
        """Outcomes of the jobs that finished or timed out within about a second."""
        import ray

        done, _ = ray.wait([*self.running, *self.starting], num_returns=1, timeout=1.0)
        outcomes = []
        for ref in done:
            if ref in self.starting:
                self._ready(ref)
            else:
                outcomes.append(self._finished(ref))
        return outcomes + self._timed_out()

    def _ready(self, ref: Any) -> None:
        import ray

        actor = self.starting.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise InputError(f"a worker could not start: {_one_line(exc)}") from None
        self.idle.append(actor)

    def _finished(self, ref: Any) -> Outcome:
        import ray

        key, actor, _ = self.running.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self.start()
            return key, None, f"worker died: {_one_line(exc)}"
        except ray.exceptions.RayError as exc:
            self.idle.append(actor)
            return key, None, task_error(exc)
        self.idle.append(actor)
        return key, result, None

    def _timed_out(self) -> list[Outcome]:
        import ray

        now, outcomes = time.monotonic(), []
        for ref, (key, actor, started) in list(self.running.items()):
            if now - started > self.timeout_s:
                del self.running[ref]
                ray.kill(actor, no_restart=True)
                outcomes.append((key, None, f"timed out after {self.timeout_s:.0f} s"))
                self.start()
        return outcomes

    def kill_all(self) -> None:
        import ray

        for actor in [*self.idle, *self.starting.values(), *(a for _, a, _ in
                                                             self.running.values())]:
            ray.kill(actor, no_restart=True)


def map_actors(
    make_actor: Callable[[], Any],
    method: str,
    jobs: Iterable[tuple[str, Any]],
    *,
    num_actors: int,
    timeout_s: float,
) -> Iterator[Outcome]:
    """Run `actor.<method>(job)` over `jobs` on `num_actors` actors, one job per actor at a time.

    Yields `(key, result, error)` in completion order; `error` is a one-line reason when the
    method raised, the actor died (it is replaced) or it ran past `timeout_s` (it is killed and
    replaced). A job's clock starts when its actor is ready (model loading does not count). Jobs
    are consumed lazily: memory holds one job per actor. Actors are killed at the end, also when
    the consumer stops early. Raises `InputError` when a new actor cannot even start.
    """
    pool = _ActorPool(make_actor, method, timeout_s)
    for _ in range(num_actors):
        pool.start()
    job_iter = iter(jobs)
    exhausted = False
    try:
        while True:
            while pool.idle and not exhausted:
                job = next(job_iter, None)
                if job is None:
                    exhausted = True
                    break
                pool.submit(*job)
            if not pool.running and (exhausted or not pool.starting):
                return
            yield from pool.wait()
    finally:
        pool.kill_all()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text


# ---- the jobs ----------------------------------------------------------------------------------
def check_backend(cfg: PipelineConfig, dataset: DatasetConfig) -> None:
    """The oracle backend reads the synthetic dataset's ground truth: refuse it elsewhere."""
    truth = Path(dataset.root) / "ground_truth"
    if cfg.extract.backend == "oracle" and not truth.is_dir():
        raise InputError(
            f"extract.backend=oracle needs the synthetic dataset's ground truth "
            f"({truth} not found); use the mediapipe backend"
        )


def _source_video(root: Path, rel: str | None) -> str | None:
    """The source video under the dataset's current root (None: the worker resolves the clip's
    own source path, and fails the clip with the reason when that climbs out of the root)."""
    if rel is None:
        return None
    path, _, _ = resolve_inside(root, rel)
    return str(path) if path is not None else None


def clip_jobs(plan: Plan, dataset: str) -> dict[str, Any]:
    """video_id -> `ClipJob` for every ok clip of the dataset's decode output.

    The source video is found from the dataset's root as configured now and the manifest's
    relative `path` (never the manifest's absolute `uri`), so a dataset moved elsewhere works.
    """
    from signmae_core.extract.worker import ClipJob

    root = Path(plan.cfg.dataset(dataset).root)
    manifest = outputs.manifest(plan, dataset).select(["video_id", "path"]).to_pylist()
    paths = {row["video_id"]: row["path"] for row in manifest}
    jobs = {}
    for row in outputs.clip_rows(plan, dataset):
        if row["status"] != "ok":
            continue
        jobs[row["video_id"]] = ClipJob(
            video_id=row["video_id"],
            clip_path=row["clip_path"],
            source_path=_source_video(root, paths.get(row["video_id"])),
            clip_key=row["source_key"] or "",
            num_frames=row["num_frames"] or 0,
        )
    return jobs


# ---- reuse of earlier parts --------------------------------------------------------------------
def _existing_parts(writer: StageWriter) -> list[str]:
    """Part files (relative to the stage folder) that earlier runs finished."""
    selector = pafs.FileSelector(writer.path(PARTS_DIR), allow_not_found=True)
    names = [Path(i.path).name for i in writer.store.fs.get_file_info(selector)]
    return sorted(f"{PARTS_DIR}/{n}" for n in names if _PART_NAME.match(n))


def _part_summary(writer: StageWriter, rel: str) -> list[dict[str, Any]] | None:
    """The summary columns of a part's rows; None (and the file deleted) when it is unreadable."""
    path = writer.path(rel)
    try:
        return pq.read_table(path, filesystem=writer.store.fs, columns=list(_SUMMARY)).to_pylist()
    except Exception:  # noqa: BLE001 - a damaged part is redone, whatever Arrow says about it
        writer.store.fs.delete_file(path)
        return None


def _reuse_parts(
    writer: StageWriter, jobs: dict[str, Any], force: bool
) -> tuple[dict[str, dict[str, Any]], int]:
    """Keep the rows of earlier runs that still match a current clip.

    Returns (video_id -> {status, error, ...} of kept rows, next free part number). A part with
    rows of clips that were re-decoded or are gone is rewritten without them (or deleted); an
    unreadable part is deleted and its clips are extracted again.
    """
    if force:
        for rel in _existing_parts(writer):
            writer.store.fs.delete_file(writer.path(rel))
        return {}, 0
    kept: dict[str, dict[str, Any]] = {}
    next_index = 0
    for rel in _existing_parts(writer):
        next_index = max(next_index, int(_PART_NAME.match(Path(rel).name).group(1)) + 1)
        rows = _part_summary(writer, rel)
        if rows is None:
            continue
        valid = [
            r["video_id"] in jobs
            and r["video_id"] not in kept
            and (r["clip_key"] or "") == jobs[r["video_id"]].clip_key
            for r in rows
        ]
        _keep_rows(writer, rel, valid)
        kept.update((row["video_id"], row) for row, ok in zip(rows, valid, strict=True) if ok)
    return kept, next_index


def _keep_rows(writer: StageWriter, rel: str, valid: list[bool]) -> None:
    """Keep a part as it is, rewrite it with only its valid rows, or delete it."""
    path = writer.path(rel)
    if not any(valid):
        writer.store.fs.delete_file(path)
    elif all(valid):
        writer.add_existing(rel, checksum=True)
    else:
        table = pq.read_table(path, filesystem=writer.store.fs).filter(pa.array(valid))
        with writer.output(rel, checksum=True) as tmp:
            pq.write_table(table, str(tmp), compression="zstd", row_group_size=16)


# ---- the stage ---------------------------------------------------------------------------------
def compute(ctx: StageContext) -> StageResult:
    """Extract keypoints and part maps of one dataset's decoded clips (reusing the rows of
    clips already extracted from the same clip)."""
    check_backend(ctx.cfg, ctx.dataset)
    decode_record = ctx.upstream("decode").record
    jobs = clip_jobs(ctx.plan, ctx.key.dataset)
    rows, next_index = _reuse_parts(ctx.writer, jobs, ctx.force)
    reused = len(rows)
    # Longest clips first: the workers finish together instead of waiting on a late long one.
    todo = sorted((job for job in jobs.values() if job.video_id not in rows),
                  key=lambda job: (-job.num_frames, job.video_id))
    warnings = _extract_into_parts(ctx, todo, rows, next_index)
    for warning, count in warnings.items():
        print(f"[{ctx.label}] {count} clip(s): {warning}", file=sys.stderr)
    return _result(rows, reused, len(todo), warnings, decode_record.version)


def _extract_into_parts(
    ctx: StageContext, todo: list[Any], rows: dict[str, dict[str, Any]], next_index: int
) -> Counter[str]:
    """Extract `todo`, writing rows in part files of `extract.clips_per_part` as they come;
    adds each clip's summary to `rows`; returns the warnings counted by kind."""
    warnings: Counter[str] = Counter()
    buffer: list[dict[str, Any]] = []
    for row in _extract_all(ctx, todo):
        buffer.append(row)
        rows[row["video_id"]] = {k: row.get(k) for k in _SUMMARY}  # not the arrays
        if row.get("warning"):
            warnings[row["warning"].split(" (", 1)[0]] += 1
        if len(buffer) >= ctx.cfg.extract.clips_per_part:
            _write(ctx.writer, next_index, buffer)
            next_index, buffer = next_index + 1, []
    if buffer:
        _write(ctx.writer, next_index, buffer)
    return warnings


def _write(writer: StageWriter, index: int, rows: list[dict[str, Any]]) -> None:
    with writer.output(f"{PARTS_DIR}/part-{index:05d}.parquet", checksum=True) as tmp:
        write_part(tmp, rows)


def _result(
    rows: dict[str, dict[str, Any]],
    reused: int,
    extracted: int,
    warnings: Counter[str],
    decode_version: str,
) -> StageResult:
    """Rows (one per clip), counts and record facts of a finished run."""
    ok = [r for r in rows.values() if r["status"] == STATUS_OK]
    frames = sum(r["num_frames"] for r in ok)
    hand_frames = sum(r["hand_frames"] for r in ok)
    counts = {
        "skipped": reused,
        "extracted": extracted,
        "no_hands": sum(1 for r in ok if not r["hand_frames"]),
        "frames": frames,
        "hand_frames": hand_frames,
        "second_look_hands": sum(r["second_look_hands"] or 0 for r in ok),
    }
    extra = {
        "hand_detection_rate": round(hand_frames / frames, 4) if frames else None,
        "warnings": dict(warnings),
        "decode_version": decode_version,
    }
    return StageResult(rows=list(rows.values()), counts=counts, extra=extra)


def _extract_all(ctx: StageContext, todo: list[Any]) -> Iterator[dict[str, Any]]:
    """Rows of the clips in `todo`, in completion order, with console progress."""
    if not todo:
        return
    import ray

    cfg = ctx.cfg
    ensure_ray(cfg.ray)
    per_worker = cfg.extract.num_cpus_per_worker
    workers = cfg.extract.num_workers or max(1, cluster_cpus() // per_worker)
    workers = max(1, min(workers, len(todo), cluster_cpus() // per_worker or 1))
    settings = cfg.extract.model_dump(mode="json")
    actor_class = ray.remote(num_cpus=per_worker, max_restarts=0)(ExtractActor)
    keys = {job.video_id: job.clip_key for job in todo}
    progress = Progress(ctx.label, len(todo))
    root = ctx.dataset.root
    store = None if ctx.store.is_local else ctx.store  # clip paths are in an object store
    for video_id, row, error in map_actors(
        lambda: actor_class.remote(settings, root, store),
        "extract",
        ((job.video_id, job) for job in todo),
        num_actors=workers,
        timeout_s=cfg.extract.clip_timeout_s,
    ):
        if error is not None:
            row = failed_row(video_id, error, cfg.extract.backend, clip_key=keys[video_id])
        progress.update(row["status"])
        yield row
