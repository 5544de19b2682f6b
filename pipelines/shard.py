"""`signmae run shard` and `signmae run shard_fields`: WebDataset shards of a dataset's clips and
of its mask fields, per split (see docs/SHARDS.md).

Output::

    <root>/<dataset>/shard/<version>/shards/<split>-<nnnnnn>.tar         clip samples
    <root>/<dataset>/shard/<version>/samples.parquet, index.json, _stage.json
    <root>/<dataset>/shard_fields/<version>/shards/<split>-<nnnnnn>.tar  field samples
    <root>/<dataset>/shard_fields/<version>/samples.parquet, index.json, _stage.json

Each set's `samples.parquet` says where every sample's member that readers fetch by byte range
lies in its shard (`.smclip`, `.fields.npy.gz`), so a reader needs no scan of the tar headers.

`shard` reads the decode output only, so its version does not depend on the masks: a new mask
version rewrites only the (small) field shards of `shard_fields`, which follow the clip shards'
names, keys and order (from `samples.parquet`). Both write each shard under a temporary name and
publish it whole (`signmae_core.store.atomic_output`), `index.json` last; the record, written by
the envelope, makes the set complete. A run first writes `_shards.json` (shard -> a hash of what
it holds: its samples' keys, clip sums and metadata, or the mask output's fingerprint); the next
run, after a kill or on grown data, keeps the shards in place whose hash is unchanged and writes
the others. Shards are written by `shard.workers` threads: the work is reading and writing bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from signmae_core.clips import ClipError, clip_bytes_meta
from signmae_core.errors import InputError
from signmae_core.shards import (
    CLIP_MEMBERS,
    FIELD_MEMBERS,
    FIELD_SAMPLES_SCHEMA,
    FORMAT,
    INDEX_NAME,
    SAMPLE_OVERHEAD,
    SAMPLES_NAME,
    SHARDS_DIR,
    ShardWriter,
    build_index,
    canonical_json,
    clip_info,
    cut,
    field_info,
    gzip_bytes,
    iter_shard_samples,
    member_location,
    npy_bytes,
    sample_key,
    sample_layout,
    samples_table,
    shard_entry,
    shard_rel,
)
from signmae_core.shards.format import Members
from signmae_core.store import OutputEntry, atomic_output

from . import outputs
from .execute import StageContext, StageResult
from .progress import Progress

JOURNAL_NAME = "_shards.json"  # shard -> content hash, while a run is under way


@dataclass
class ShardJob:
    """One shard to write: where, which split, a hash of what it holds, and its samples (each a
    dict with at least `video_id` and `key`, in key order)."""

    rel: str
    split: str | None
    content: str
    samples: list[dict[str, Any]]


@dataclass
class ShardDone:
    """A shard in place: the keys it holds, where each sample's members lie (`ShardWriter.
    members`), its size and sha256, one row per sample of its job (`video_id`, `status`,
    `error`)."""

    job: ShardJob
    keys: list[str]
    bytes: int
    sha256: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    kept: bool = False  # in place from an earlier run
    members: list[Members] = field(default_factory=list)

    def located(self, ext: str) -> dict[str, dict[str, int | None]]:
        """key -> the samples.parquet columns that say where member `ext` lies."""
        return {k: member_location(m, ext) for k, m in zip(self.keys, self.members, strict=True)}


def content_hash(*parts: Any) -> str:
    return hashlib.sha256(canonical_json([FORMAT, *parts])).hexdigest()[:16]


# ---- writing a shard set (both stages) ---------------------------------------------------------
WriteSamples = Callable[[ShardJob, ShardWriter], list[dict[str, Any]]]
SummarizeSamples = Callable[[ShardJob, list[dict[str, Any]]], list[dict[str, Any]]]


def write_shard_set(ctx: StageContext, jobs: list[ShardJob], write: WriteSamples,
                    summarize: SummarizeSamples) -> list[ShardDone]:
    """Put every job's shard in place: keep those an earlier run wrote with the same content
    hash, delete the other tar files, then write the rest on `shard.workers` threads. Returns
    one `ShardDone` per job, in job order; a shard that could not be written fails the stage
    after the others are done (they stay, and the next run resumes)."""
    kept = _keep_current(ctx, jobs, summarize)
    _write_journal(ctx, jobs)
    todo = [job for job in jobs if job.rel not in kept]
    done: dict[str, ShardDone] = dict(kept)
    broken: dict[str, str] = {}
    progress = Progress(ctx.label, len(todo))
    with ThreadPoolExecutor(max_workers=ctx.cfg.shard.workers) as pool:
        futures = {job.rel: pool.submit(_write_shard, ctx, job, write) for job in todo}
        for rel, future in futures.items():
            outcome = _wait(future)
            if isinstance(outcome, ShardDone):
                done[rel] = outcome
                ctx.writer.add(OutputEntry(path=rel, bytes=outcome.bytes, sha256=outcome.sha256))
                progress.update("written")
            else:
                broken[rel] = outcome
                progress.update("error")
    if broken:
        rel, error = next(iter(broken.items()))
        raise InputError(f"{len(broken)} shard(s) could not be written (first: {rel}: {error}); "
                         "the others are kept, rerun to resume")
    return [done[job.rel] for job in jobs]


def _wait(future: Future[ShardDone]) -> ShardDone | str:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - an I/O failure of one shard is reported with it
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def _write_shard(ctx: StageContext, job: ShardJob, write: WriteSamples) -> ShardDone:
    """Write one shard to a local temporary file, then publish it under its name."""
    with atomic_output(ctx.store, ctx.writer.path(job.rel)) as tmp:
        with open(tmp, "wb") as handle:
            shard = ShardWriter(handle)
            rows = write(job, shard)
            shard.close()
    return ShardDone(job, shard.keys, shard.bytes, shard.sha256, rows, members=shard.members)


def _previous_contents(ctx: StageContext) -> dict[str, str]:
    """shard -> content hash of the shards in place: from the journal of a run that did not
    finish, else from the last finished run's record; empty when neither says."""
    journal = ctx.writer.path(JOURNAL_NAME)
    if ctx.store.exists(journal):
        try:
            return dict(json.loads(ctx.store.read_bytes(journal)))
        except (ValueError, TypeError):  # not what a run writes: trust no shard
            return {}
    old = ctx.previous
    return dict(old.extra.get("contents") or {}) if old is not None else {}


def _keep_current(ctx: StageContext, jobs: list[ShardJob], summarize: SummarizeSamples
                  ) -> dict[str, ShardDone]:
    """Shards in place made for the same content (read back once for their keys and sha256);
    every other tar file in the shards folder is deleted."""
    previous = {} if ctx.force else _previous_contents(ctx)
    wanted = {job.rel: job for job in jobs}
    fs, kept = ctx.store.fs, {}
    selector = pafs.FileSelector(ctx.writer.path(SHARDS_DIR), allow_not_found=True)
    for info in fs.get_file_info(selector):
        rel = f"{SHARDS_DIR}/{info.base_name}"
        if info.type != pafs.FileType.File or not rel.endswith(".tar"):
            continue
        job, done = wanted.get(rel), None
        if job is not None and previous.get(rel) == job.content:
            done = _read_back(ctx, job, summarize)
        if done is None:
            fs.delete_file(info.path)
            continue
        ctx.writer.add(OutputEntry(path=rel, bytes=done.bytes, sha256=done.sha256))
        kept[rel] = done
    return kept


class _HashingReader:
    """A binary stream that hashes and counts what is read from it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.digest, self.bytes = stream, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        self.bytes += len(data)
        return data


def _read_back(ctx: StageContext, job: ShardJob, summarize: SummarizeSamples
               ) -> ShardDone | None:
    """A shard in place, read once: its keys, rows, size and sha256; None when unreadable or
    holding other keys than its job's."""
    try:
        with ctx.store.fs.open_input_file(ctx.writer.path(job.rel)) as stream:
            reader = _HashingReader(stream)
            samples = list(iter_shard_samples(reader))
            while reader.read(1 << 20):
                pass
    except Exception:  # noqa: BLE001 - an unreadable shard is written again
        return None
    keys = [s["__key__"] for s in samples]
    if not set(keys) <= {s["key"] for s in job.samples}:
        return None
    members, at = [], 0
    for sample in samples:  # the writer's layout: offsets follow from the member sizes
        layout, at = sample_layout(sample["__key__"], {ext: len(data) for ext, data in
                                                       sample.items() if ext != "__key__"}, at)
        members.append(layout)
    return ShardDone(job, keys, reader.bytes, reader.digest.hexdigest(), summarize(job, samples),
                     kept=True, members=members)


def _write_journal(ctx: StageContext, jobs: list[ShardJob]) -> None:
    with atomic_output(ctx.store, ctx.writer.path(JOURNAL_NAME)) as tmp:
        tmp.write_bytes(canonical_json({job.rel: job.content for job in jobs}))


def finish_set(ctx: StageContext, index: dict[str, Any], jobs: list[ShardJob]) -> dict[str, str]:
    """Write `index.json` (the last output), drop the journal; returns the content hashes the
    record keeps for the next run."""
    with ctx.writer.output(INDEX_NAME, checksum=True) as tmp:
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    ctx.store.fs.delete_file(ctx.writer.path(JOURNAL_NAME))
    return {job.rel: job.content for job in jobs}


def _entries(done: list[ShardDone]) -> list[dict[str, Any]]:
    return [shard_entry(d.job.rel, d.job.split, d.keys, d.bytes, d.sha256) for d in done]


def _counts(done: list[ShardDone]) -> dict[str, int]:
    kept = sum(d.kept for d in done)
    return {"shards": len(done), "kept": kept, "written": len(done) - kept,
            "bytes": sum(d.bytes for d in done)}


# ---- clip shards -------------------------------------------------------------------------------
def clip_jobs(ctx: StageContext, rows: list[dict[str, Any]], sums: dict[str, str | None]
              ) -> list[ShardJob]:
    """The clip shards of the ok decode rows: per split, in key order, cut by `shard.*`."""
    by_split: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        spec = {
            "video_id": row["video_id"], "key": sample_key(row["video_id"]),
            "path": row["clip_path"], "bytes": row["clip_bytes"], "sha256": sums.get(row["clip"]),
            **{n: row.get(n) for n in ("split", "signer", "label", "label_id")},
        }
        by_split.setdefault(row["split"], []).append(spec)
    jobs = []
    for split in sorted(by_split, key=lambda s: (s is None, s or "")):
        specs = sorted(by_split[split], key=lambda s: s["key"])
        sizes = [s["bytes"] + SAMPLE_OVERHEAD for s in specs]
        for number, (start, end) in enumerate(cut(sizes, ctx.cfg.shard.max_samples,
                                                  ctx.cfg.shard.max_bytes)):
            chunk = specs[start:end]
            rel = shard_rel(split, number)
            described = [{k: v for k, v in s.items() if k != "path"} for s in chunk]
            content = content_hash(rel, ctx.key.dataset, described)
            jobs.append(ShardJob(rel, split, content, chunk))
    return jobs


def write_clip_samples(ctx: StageContext, job: ShardJob, shard: ShardWriter
                       ) -> list[dict[str, Any]]:
    """Each clip of the job as a sample (`smclip`, `json`, `cls`); a clip that cannot be read
    or parsed is left out as a failed row."""
    rows = []
    for spec in job.samples:
        try:
            with ctx.store.fs.open_input_file(spec["path"]) as handle:  # 2x a stream's speed
                data = handle.read()
            meta = clip_bytes_meta(data, spec["video_id"])
        except (ClipError, OSError) as exc:
            rows.append({"video_id": spec["video_id"], "status": "failed",
                         "error": f"unreadable clip: {exc}"[:300]})
            continue
        members = {"smclip": data,
                   "json": canonical_json(clip_info(spec, ctx.key.dataset, meta))}
        if spec["label_id"] is not None:
            members["cls"] = str(int(spec["label_id"])).encode("ascii")
        shard.add(spec["key"], members)
        rows.append({"video_id": spec["video_id"], "status": "ok", "error": None})
    return rows


def summarize_clips(job: ShardJob, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a clip shard written by an earlier run: its clips ok, the job's others failed."""
    present = {s["__key__"] for s in samples}
    return [
        {"video_id": s["video_id"], "status": "ok", "error": None} if s["key"] in present
        else {"video_id": s["video_id"], "status": "failed", "error": "unreadable clip"}
        for s in job.samples
    ]


def compute(ctx: StageContext) -> StageResult:
    """Shard one dataset's decoded clips: per split, sorted keys, `shard.*` per shard."""
    dataset = ctx.key.dataset
    decode = ctx.upstream("decode")
    decoded = outputs.clip_rows(ctx.plan, dataset)
    rows = [r for r in decoded if r["status"] == "ok"]
    sums = {o.path: o.sha256 for o in decode.record.outputs}
    jobs = clip_jobs(ctx, rows, sums)
    done = write_shard_set(ctx, jobs, lambda j, s: write_clip_samples(ctx, j, s),
                           summarize_clips)
    specs = {s["key"]: s for job in jobs for s in job.samples}
    samples = [{**specs[key], "shard": d.job.rel, **where}
               for d in done for key, where in d.located("smclip").items()]
    with ctx.writer.output(SAMPLES_NAME, checksum=True) as tmp:
        pq.write_table(samples_table(samples), str(tmp), compression="zstd")
    header = {
        "dataset": dataset,
        "version": ctx.version,
        "upstream": {"decode": decode.record.version,
                     "ingest": ctx.plan.version(ctx.plan.key("ingest", dataset))},
        "class_names": outputs.class_names(ctx.plan, dataset),
        "members": list(CLIP_MEMBERS),
    }
    index = build_index("clips", header, _entries(done), samples, "label_id")
    contents = finish_set(ctx, index, jobs)
    return StageResult(
        rows=[row for d in done for row in d.rows],
        counts={**_counts(done), "unlabeled": sum(s["label_id"] is None for s in samples),
                "not_decoded": len(decoded) - len(rows)},
        extra={"format": FORMAT, "contents": contents, "decode_version": decode.record.version},
    )


# ---- field shards ------------------------------------------------------------------------------
def field_jobs(ctx: StageContext, masks_fingerprint: str) -> list[ShardJob]:
    """One field shard per clip shard: same name, same keys in the same order."""
    shard = ctx.upstream("shard")
    path = shard.path(SAMPLES_NAME)
    table = outputs.readable(ctx.plan, "shard", ctx.key.dataset, path,
                             lambda: pq.read_table(path, filesystem=ctx.store.fs))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        groups.setdefault(row["shard"], []).append(row)
    entries = json.loads(ctx.store.read_bytes(shard.path(INDEX_NAME)))["shards"]
    jobs = []
    for entry in entries:  # the clip shards in index order, empty ones included
        specs = groups.get(entry["path"], [])
        keys = [s["key"] for s in specs]
        content = content_hash(entry["path"], masks_fingerprint, keys)
        jobs.append(ShardJob(entry["path"], entry["split"], content, specs))
    return jobs


def write_field_samples(reader: Any, version: str, names: list[str], job: ShardJob,
                        shard: ShardWriter) -> list[dict[str, Any]]:
    """Each clip of the job as a field sample (`fields.npy.gz` when it has fields, and
    `fields.json`)."""
    rows = []
    failed = reader.failed
    for spec in job.samples:
        video_id = spec["video_id"]
        fields = reader.get(video_id)
        error = None if fields is not None else failed.get(video_id, "no mask fields")
        members = {"fields.json": canonical_json(field_info(video_id, version, names, fields,
                                                            error))}
        if fields is not None:
            members["fields.npy.gz"] = gzip_bytes(npy_bytes(fields.astype("<f2", copy=False)))
        shard.add(spec["key"], members)
        rows.append({"video_id": video_id, "status": "ok" if error is None else "failed",
                     "error": error})
    return rows


def summarize_fields(job: ShardJob, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a field shard written by an earlier run, from its `fields.json` members."""
    rows = []
    for sample in samples:
        info = json.loads(sample["fields.json"])
        ok = info.get("status") == "ok"
        rows.append({"video_id": info["video_id"], "status": "ok" if ok else "failed",
                     "error": None if ok else info.get("error")})
    return rows


def compute_fields(ctx: StageContext) -> StageResult:
    """Shard one dataset's mask fields beside its clip shards."""
    dataset = ctx.key.dataset
    masks = ctx.upstream("masks")
    jobs = field_jobs(ctx, masks.record.fingerprint())
    reader = outputs.field_reader(ctx.plan, dataset)
    names = list(masks.record.extra.get("field_names") or reader.metadata.get("field_names", []))
    version = masks.record.version
    done = write_shard_set(
        ctx, jobs, lambda j, s: write_field_samples(reader, version, names, j, s),
        summarize_fields,
    )
    rows = [row for d in done for row in d.rows]
    status = {r["video_id"]: r["status"] for r in rows}
    located = {key: where for d in done for key, where in d.located("fields.npy.gz").items()}
    samples = [{**{n: s[n] for n in ("key", "video_id", "split", "shard")},
                "status": status[s["video_id"]],
                **located.get(s["key"], member_location({}, "fields.npy.gz"))}
               for job in jobs for s in job.samples]
    with ctx.writer.output(SAMPLES_NAME, checksum=True) as tmp:
        pq.write_table(samples_table(samples, FIELD_SAMPLES_SCHEMA), str(tmp), compression="zstd")
    header = {
        "dataset": dataset,
        "version": ctx.version,
        "upstream": {"shard": ctx.upstream("shard").record.version, "masks": version},
        "mask_version": version,
        "field_names": names,
        "members": list(FIELD_MEMBERS),
    }
    index = build_index("fields", header, _entries(done), samples, "status")
    contents = finish_set(ctx, index, jobs)
    return StageResult(rows=rows, counts=_counts(done),
                       extra={"format": FORMAT, "contents": contents, "mask_version": version})
