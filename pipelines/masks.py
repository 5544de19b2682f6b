"""`signmae run masks`: per-frame part presence and hand motion fields of every clip.

Output (see docs/MASKS.md)::

    <root>/<dataset>/masks/<version>/fields/<part>.parquet   one file per extraction part file
    <root>/<dataset>/masks/<version>/_stage.json             the stage record

The version hashes the field settings (`masks.*` except the runtime `masks.version`) and the
extraction version it reads (see `pipelines.dag`); the record's input is the extraction record's
fingerprint. Changing a field setting makes a new version beside the old ones; decode and
extraction outputs are only read. A grown dataset (a changed extraction output) keeps its
version: each field file remembers the sha256 of the extraction part file it was made from (the
record's `sources`), and a run recomputes only the field files whose part changed or is new, and
deletes those whose part is gone. While a run is under way `_sources.json` in the stage folder
holds the same facts, so a killed run resumes without redoing the field files it finished.
Readers use `pipelines.outputs.field_reader`; `masks.version` pins the version read downstream.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from signmae_core.config import PipelineConfig
from signmae_core.errors import InputError
from signmae_core.masking.fields import FIELD_NAMES, FieldParams, compute_fields_batch
from signmae_core.masking.storage import FieldReader, FieldRow, write_field_file
from signmae_core.store import (
    ArtifactStore,
    OutputEntry,
    StageWriter,
    atomic_output,
    describe_output,
    sha256_file,
)

from . import outputs
from .dag import StageOutput
from .execute import StageContext, StageResult
from .progress import Progress
from .ray_runtime import WorkLost, cluster_cpus, ensure_ray, map_bounded

FIELDS_DIR = outputs.FIELDS_DIR
JOURNAL_NAME = "_sources.json"  # field file -> extraction part sha256, while a run is under way


def clip_geometry(cfg: PipelineConfig) -> dict[str, Any]:
    """The stored clip geometry the fields are laid out on (from the decode settings)."""
    return {"size": cfg.decode.size, "fps": cfg.decode.fps, "crop": cfg.decode.crop}


# ---- the work of one task ----------------------------------------------------------------------
def compute_part(
    store: ArtifactStore,
    extraction_file: str,
    output_path: str,
    output_rel: str,
    params: dict[str, Any],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Ray task: fields of every clip of one extraction part file, written as one field file.

    Returns `{"entry": OutputEntry dump, "ok": [video_id], "failed": {video_id: reason}}`; a clip
    that cannot be computed becomes a failed row with its reason (so does a clip that failed
    extraction).
    """
    from signmae_core.extract.schema import read_extraction, table_to_clips

    field_params = FieldParams(**params)
    # one part file (a bounded number of clips), read through the store's filesystem
    table = read_extraction(extraction_file, filesystem=store.fs)
    video_ids = table.column("video_id").to_pylist()
    rows: dict[str, FieldRow] = {
        video_id: FieldRow(video_id, error=f"extraction failed: {error}")
        for video_id, state, error in zip(
            video_ids,
            table.column("status").to_pylist(),
            table.column("error").to_pylist(),
            strict=True,
        )
        if state != "ok"
    }
    try:
        clips = list(table_to_clips(table))
    except ValueError:  # one damaged clip spoils the batch: read the clips one at a time
        clips = []
        for video_id in video_ids:
            if video_id not in rows:
                clip, error = _load_one(store, extraction_file, video_id)
                if clip is None:
                    rows[video_id] = FieldRow(video_id, error=error)
                else:
                    clips.append(clip)
    rows.update(_clip_rows(clips, field_params))
    ordered = [rows[v] for v in sorted(rows)]
    with atomic_output(store, output_path) as tmp:
        write_field_file(tmp, ordered, metadata)
        entry = describe_output(output_rel, tmp, checksum=True)
    failed = {r.video_id: r.error for r in ordered if r.fields is None}
    ok = [r.video_id for r in ordered if r.fields is not None]
    return {"entry": entry.model_dump(), "ok": ok, "failed": failed}


def _load_one(
    store: ArtifactStore, extraction_file: str, video_id: str
) -> tuple[Any, str | None]:
    """(ClipExtraction, None), or (None, why it could not be read)."""
    from signmae_core.extract.schema import load_clip

    try:
        return load_clip(extraction_file, video_id, filesystem=store.fs), None
    except ValueError as exc:
        return None, f"unreadable extraction: {exc}"[:300]


def _clip_rows(clips: list[Any], params: FieldParams) -> dict[str, FieldRow]:
    """Fields of `ClipExtraction`s, computed together per geometry; a clip whose fields cannot
    be computed becomes a failed row with the reason."""
    groups: dict[tuple, list[Any]] = {}
    for clip in clips:
        key = (int(clip.clip_height), int(clip.clip_width), clip.part_maps.shape[1:])
        groups.setdefault(key, []).append(clip)
    rows: dict[str, FieldRow] = {}
    for (height, width, _), group in groups.items():
        inputs = [_clip_inputs(clip, (height, width)) for clip in group]
        try:
            fields = compute_fields_batch(inputs, (height, width), params)
        except (ValueError, IndexError):  # find the clip at fault: one at a time
            fields = [None] * len(group)
        for clip, one, computed in zip(group, inputs, fields, strict=True):
            if computed is None:
                try:
                    computed = compute_fields_batch([one], (height, width), params)[0]
                except (ValueError, IndexError) as exc:
                    rows[clip.video_id] = FieldRow(
                        clip.video_id, error=f"{type(exc).__name__}: {exc}"[:300]
                    )
                    continue
            rows[clip.video_id] = FieldRow(clip.video_id, computed)
    return rows


def _clip_inputs(clip: Any, size: tuple[int, int]) -> tuple[Any, Any, Any]:
    """(part maps, left points, right points) of a clip; points in stored-clip pixels with
    pixel i spanning [i, i + 1) (normalized coordinates times the clip size)."""
    scale = np.array([size[1], size[0]], dtype=np.float32)
    return clip.part_maps, clip.left_hand[..., :2] * scale, clip.right_hand[..., :2] * scale


# ---- which field files are current -------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """The extraction part file a field file is made from."""

    rel: str  # the field file, relative to the stage folder
    part: str  # the extraction part file (a path in the store)
    sha256: str  # of the part file, as the extraction record has it


def _output_names(parts: list[str]) -> dict[str, str]:
    """Field file name of each extraction part (relative path): its name, or its path when
    names repeat."""
    if len({Path(p).name for p in parts}) == len(parts):
        return {p: Path(p).name for p in parts}
    return {p: p.replace("/", "__") for p in parts}


def _sources(extraction: StageOutput) -> dict[str, Source]:
    """field rel -> Source, for every Parquet part file the extraction record lists."""
    entries = {
        o.path: o for o in extraction.record.outputs
        if o.path.endswith(".parquet")
        and not any(seg.startswith((".", "_")) for seg in o.path.split("/"))
    }
    if not entries:
        raise InputError(f"extraction output {extraction.folder} holds no Parquet files")
    sources = {}
    for part, name in _output_names(sorted(entries)).items():
        path = extraction.path(part)
        digest = entries[part].sha256 or sha256_file(path)
        sources[f"{FIELDS_DIR}/{name}"] = Source(f"{FIELDS_DIR}/{name}", path, digest)
    return sources


def _previous_sources(ctx: StageContext) -> dict[str, str]:
    """field rel -> part sha256 of the field files in place: from the journal of a run that did
    not finish, else from the record of the last finished run (`ctx.previous`); empty when
    neither says (every field file is then redone)."""
    journal = ctx.writer.path(JOURNAL_NAME)
    if ctx.store.exists(journal):
        try:
            return dict(json.loads(ctx.store.read_bytes(journal)))
        except (ValueError, TypeError):  # not what a run writes: trust no field file
            return {}
    old = ctx.previous
    return dict(old.extra.get("sources") or {}) if old is not None else {}


def _field_files(writer: StageWriter) -> list[str]:
    """Field files (relative to the stage folder) that earlier runs finished."""
    selector = pafs.FileSelector(writer.path(FIELDS_DIR), allow_not_found=True)
    infos = writer.store.fs.get_file_info(selector)
    names = [Path(i.path).name for i in infos if i.type == pafs.FileType.File]
    return sorted(f"{FIELDS_DIR}/{n}" for n in names if n.endswith(".parquet"))


def _keep_current(
    ctx: StageContext, sources: dict[str, Source]
) -> dict[str, list[dict[str, Any]]]:
    """Keep the field files made from the extraction part that is in place now; delete the
    others (part changed or gone, `force`, unreadable). Returns field rel -> its clip rows."""
    previous = {} if ctx.force else _previous_sources(ctx)
    writer, kept = ctx.writer, {}
    for rel in _field_files(writer):
        source = sources.get(rel)
        rows = None
        if source is not None and previous.get(rel) == source.sha256:
            rows = _file_rows(writer, rel)
        if rows is None:
            writer.store.fs.delete_file(writer.path(rel))
            continue
        writer.add_existing(rel, checksum=True)
        kept[rel] = rows
    return kept


def _file_rows(writer: StageWriter, rel: str) -> list[dict[str, Any]] | None:
    """The clip rows of a field file in place; None when it cannot be read."""
    try:
        reader = FieldReader([writer.path(rel)], filesystem=writer.store.fs)
    except Exception:  # noqa: BLE001 - an unreadable field file is redone
        return None
    return _rows(reader.video_ids, reader.failed)


def _rows(ok: list[str], failed: dict[str, str]) -> list[dict[str, Any]]:
    return [{"video_id": v, "status": "ok", "error": None} for v in ok] + [
        {"video_id": v, "status": "failed", "error": e} for v, e in failed.items()
    ]


def _write_journal(writer: StageWriter, sources: dict[str, Source]) -> None:
    with atomic_output(writer.store, writer.path(JOURNAL_NAME)) as tmp:
        tmp.write_text(json.dumps({rel: s.sha256 for rel, s in sources.items()}, indent=1,
                                  sort_keys=True), encoding="utf-8")


# ---- the stage ---------------------------------------------------------------------------------
def compute(ctx: StageContext) -> StageResult:
    """Compute the mask fields of one dataset, one field file per extraction part file; field
    files made from the same part file by an earlier (or killed) run are kept."""
    extraction = ctx.upstream("extract")  # its part files are read through the store's fs
    sources = _sources(extraction)
    kept = _keep_current(ctx, sources)
    _write_journal(ctx.writer, sources)
    params = FieldParams.from_config(ctx.cfg.masks)
    metadata = {
        "version": ctx.version,
        "cell": params.cell,
        "dilation": params.dilation,
        "blur": params.blur,
        "motion_scale": params.motion_scale,
        "motion_source": "keypoints",
    }
    todo = [s for rel, s in sources.items() if rel not in kept]
    rows = [row for file_rows in kept.values() for row in file_rows]
    rows += _compute_files(ctx, todo, dataclasses.asdict(params), metadata)
    ctx.store.fs.delete_file(ctx.writer.path(JOURNAL_NAME))  # the record holds it from now on
    failures = [r["error"] for r in rows if r["status"] != "ok"]
    return StageResult(
        rows=rows,
        counts={"reused_files": len(kept), "computed_files": len(todo)},
        extra={
            "field_names": list(FIELD_NAMES),
            "params": metadata,
            "geometry": clip_geometry(ctx.cfg),
            "extraction_version": extraction.record.version,
            "failure_reasons": dict(Counter(r.split(":", 1)[0] for r in failures)),
            "sources": {rel: s.sha256 for rel, s in sorted(sources.items())},
        },
    )


def _compute_files(
    ctx: StageContext, todo: list[Source], params: dict[str, Any], metadata: dict[str, Any]
) -> list[dict[str, Any]]:
    """Field files of the `todo` part files, one Ray task each; returns their clip rows.

    A failed task does not stop the others; then raises `WorkLost` (transient: flows retry it)
    when every failed task lost its worker, else InputError. The finished files stay either
    way, and the next run resumes.
    """
    if not todo:
        return []
    ensure_ray(ctx.cfg.ray)
    writer = ctx.writer
    jobs = [
        (s.rel, (ctx.store, s.part, writer.path(s.rel), s.rel, params, metadata)) for s in todo
    ]
    progress = Progress(ctx.label, len(jobs))
    in_flight = max(1, min(len(jobs), 2 * cluster_cpus()))
    rows: list[dict[str, Any]] = []
    broken: dict[str, str] = {}
    for rel, result, error in map_bounded(compute_part, jobs, max_in_flight=in_flight):
        if error is not None:  # the task raised or its worker died: finish the others
            broken[rel] = error
            progress.update("error")
            continue
        writer.add(OutputEntry.model_validate(result["entry"]))
        rows += _rows(result["ok"], result["failed"])
        progress.update("done")
    if broken:
        rel, error = next(iter(broken.items()))
        lost = all(getattr(reason, "lost", False) for reason in broken.values())
        raise (WorkLost if lost else InputError)(
            f"mask fields of {len(broken)} extraction file(s) could not be computed "
            f"(first: {rel}: {error}); the other files are kept, rerun to resume"
        )
    return rows
