"""`signmae run masks`: per-frame part presence and hand motion fields of every clip.

Output (see docs/MASKS.md)::

    <root>/<dataset>/masks/<version>/fields/<part>.parquet   one file per extraction part file
    <root>/<dataset>/masks/<version>/_stage.json             the stage record
    <root>/<dataset>/masks/_versions.json                    index of versions: current, stale

`version = mask_version(cfg, extraction record)`: a hash of the field settings (`masks.*` except
`masks.version`), the fingerprint of the extraction output read, the stored clip geometry and
`CODE_VERSION`. Changing a field setting makes a new version beside the old ones; decode and
extraction outputs are only read. The run that makes (or re-selects) a version makes it
`current` in the index and marks every other version `stale`, together with the downstream
outputs whose records name a stale version's fingerprint as input (their files stay untouched).
Downstream readers take `masks.version` when set, else the version their config makes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from signmae_core.config import DatasetConfig, PipelineConfig, config_hash
from signmae_core.errors import InputError
from signmae_core.masking.fields import FIELD_NAMES, FieldParams, compute_fields_batch
from signmae_core.masking.storage import FieldReader, FieldRow, write_field_file
from signmae_core.store import (
    ArtifactStore,
    OutputEntry,
    StageRecord,
    atomic_output,
    describe_output,
    publish,
)

from .progress import Progress
from .ray_runtime import cluster_cpus, ensure_ray, map_bounded

STAGE = "masks"
CODE_VERSION = 1
FIELDS_DIR = "fields"
INDEX_NAME = "_versions.json"


# ---- versions ----------------------------------------------------------------------------------
def clip_geometry(cfg: PipelineConfig) -> dict[str, Any]:
    """The stored clip geometry the fields are laid out on (from the decode settings)."""
    return {"size": cfg.decode.size, "fps": cfg.decode.fps, "crop": cfg.decode.crop}


def masks_config_hash(cfg: PipelineConfig) -> str:
    """Hash of the settings the fields depend on (`masks.version` only selects, so it is out)."""
    return config_hash(cfg.masks.field_params())


def mask_version(cfg: PipelineConfig, extraction: StageRecord) -> str:
    """The version this config makes from that extraction output."""
    return config_hash(
        {
            "fields": cfg.masks.field_params(),
            "extraction": extraction.fingerprint(),
            "geometry": clip_geometry(cfg),
            "code_version": CODE_VERSION,
        }
    )


def _extraction(cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore):
    from . import extract

    return extract.current(cfg, dataset, store)


def current(
    cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore | None = None
) -> tuple[StageRecord, str]:
    """The mask output to read: `(record, fields folder in the store)`.

    `masks.version` when set; otherwise the version this config makes from the current
    extraction output. Raises InputError when that version has not been computed.
    """
    store = store or ArtifactStore.from_config(cfg.store)
    version = cfg.masks.version
    if version is None:
        extraction_record, _ = _extraction(cfg, dataset, store)
        version = mask_version(cfg, extraction_record)
    record = store.require_record(
        dataset.name,
        STAGE,
        version,
        what=f"mask fields for dataset {dataset.name}",
        command=f"signmae run masks --dataset {dataset.name}",
    )
    return record, f"{store.stage_dir(dataset.name, STAGE, version)}/{FIELDS_DIR}"


def open_fields(
    cfg: PipelineConfig, dataset: DatasetConfig, store: ArtifactStore | None = None
) -> FieldReader:
    """A random-access `FieldReader` over the mask output `current` chooses."""
    store = store or ArtifactStore.from_config(cfg.store)
    record, _ = current(cfg, dataset, store)
    folder = store.stage_dir(dataset.name, STAGE, record.version)
    paths = [f"{folder}/{o.path}" for o in record.outputs if o.path.startswith(f"{FIELDS_DIR}/")]
    return FieldReader(paths, filesystem=store.fs)


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

    Returns the output entry and per-clip counts; a clip that cannot be computed becomes a failed
    row with its reason (so does a clip that failed extraction).
    """
    from signmae_core.extract.schema import read_extraction, table_to_clips

    field_params = FieldParams(**params)
    table = read_extraction(extraction_file)  # one part file: a bounded number of clips
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
                clip, error = _load_one(extraction_file, video_id)
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
    return {"entry": entry.model_dump(), "ok": len(ordered) - len(failed), "failed": failed}


def _load_one(extraction_file: str, video_id: str) -> tuple[Any, str | None]:
    """(ClipExtraction, None), or (None, why it could not be read)."""
    from signmae_core.extract.schema import load_clip

    try:
        return load_clip(extraction_file, video_id), None
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


# ---- the stage ---------------------------------------------------------------------------------
def run(cfg: PipelineConfig, dataset: DatasetConfig, force: bool = False) -> StageRecord:
    """Compute the mask fields of one dataset; returns the stage record (at once when up to date).

    Reads the extraction output; writes only under `masks/<version>/` and the versions index.
    """
    from signmae_core.extract.schema import part_files

    store = ArtifactStore.from_config(cfg.store)
    extraction_record, extraction_dir = _extraction(cfg, dataset, store)
    version = mask_version(cfg, extraction_record)
    chash = masks_config_hash(cfg)
    inputs = {"extract": extraction_record.fingerprint()}
    if cfg.masks.version not in (None, version):
        print(
            f"[masks {dataset.name}] note: masks.version={cfg.masks.version} selects what is "
            f"read downstream; this config computes version {version}",
            file=sys.stderr,
        )
    record = (
        None
        if force
        else store.is_up_to_date(dataset.name, STAGE, version, chash, CODE_VERSION, inputs)
    )
    if record is None:
        files = part_files(store.local_path(extraction_dir))
        if not files:
            raise InputError(f"extraction output {extraction_dir} holds no Parquet files")
        record = _compute(cfg, dataset, store, version, chash, inputs, extraction_dir, files, force)
    _update_index(store, dataset.name, record)
    return record


def _output_names(files: list[Path], base: Path) -> dict[Path, str]:
    """Field file name of each extraction file: its name, or its path when names repeat."""
    if len({f.name for f in files}) == len(files):
        return {f: f.name for f in files}
    return {f: f.relative_to(base).as_posix().replace("/", "__") for f in files}


def _compute(
    cfg: PipelineConfig,
    dataset: DatasetConfig,
    store: ArtifactStore,
    version: str,
    chash: str,
    inputs: dict[str, str],
    extraction_dir: str,
    files: list[Path],
    force: bool,
) -> StageRecord:
    params = FieldParams.from_config(cfg.masks)
    metadata = {
        "version": version,
        "cell": params.cell,
        "dilation": params.dilation,
        "blur": params.blur,
        "motion_scale": params.motion_scale,
        "motion_source": "keypoints",
    }
    names = _output_names(files, Path(extraction_dir))
    with store.open_stage(
        dataset.name, STAGE, version, config_hash=chash, code_version=CODE_VERSION, inputs=inputs
    ) as writer:
        jobs = []
        for file in files:
            rel = f"{FIELDS_DIR}/{names[file]}"
            if not force and writer.exists(rel):
                writer.add_existing(rel, checksum=True)  # finished by a run that was killed
                writer.counts["resumed_files"] += 1
                continue
            args = (store, str(file), writer.path(rel), rel, dataclasses.asdict(params), metadata)
            jobs.append((rel, args))
        failures: dict[str, str] = {}
        broken: dict[str, str] = {}
        if jobs:
            ensure_ray(cfg.ray)
            progress = Progress(f"masks {dataset.name}", len(jobs))
            in_flight = max(1, min(len(jobs), 2 * cluster_cpus()))
            for rel, result, error in map_bounded(compute_part, jobs, max_in_flight=in_flight):
                if error is not None:  # the worker died: finish the others, then report
                    broken[rel] = error
                    progress.update("error")
                    continue
                writer.add(OutputEntry.model_validate(result["entry"]))
                writer.counts["ok"] += result["ok"]
                writer.counts["failed"] += len(result["failed"])
                failures.update(result["failed"])
                progress.update("done")
        if broken:
            rel, error = next(iter(broken.items()))
            raise InputError(
                f"mask fields of {len(broken)} extraction file(s) could not be computed "
                f"(first: {rel}: {error}); the other files are kept, rerun to resume"
            )
        if writer.counts["resumed_files"]:
            for rel in writer.outputs:
                if rel.startswith(f"{FIELDS_DIR}/") and rel not in {j[0] for j in jobs}:
                    reader = FieldReader([writer.path(rel)], filesystem=store.fs)
                    writer.counts["ok"] += len(reader)
                    writer.counts["failed"] += len(reader.failed)
                    failures.update(reader.failed)
        for video_id, reason in sorted(failures.items())[:5]:
            print(f"[masks {dataset.name}] failed {video_id}: {reason}", file=sys.stderr)
        return writer.commit(
            field_names=list(FIELD_NAMES),
            params=metadata,
            geometry=clip_geometry(cfg),
            extraction_version=Path(extraction_dir).name,
            failure_reasons=dict(Counter(r.split(":", 1)[0] for r in failures.values())),
        )


# ---- the versions index: current and stale ------------------------------------------------------
def index_path(store: ArtifactStore, dataset: str) -> str:
    return f"{store.stage_dir(dataset, STAGE)}/{INDEX_NAME}"


def read_index(store: ArtifactStore, dataset: str) -> dict[str, Any]:
    """The versions index: {"current": version, "versions": {version: {...}}} (empty if none)."""
    path = index_path(store, dataset)
    if not store.exists(path):
        return {"current": None, "versions": {}}
    return json.loads(store.read_bytes(path))


def is_stale(store: ArtifactStore, dataset: str, version: str) -> bool:
    """True when a newer mask computation superseded `version` (its outputs are kept)."""
    entry = read_index(store, dataset)["versions"].get(version)
    return bool(entry and entry.get("stale"))


def _update_index(store: ArtifactStore, dataset: str, record: StageRecord) -> None:
    """Make `record.version` current; mark the others and what was built from them stale."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with store.lock(dataset, STAGE, "index"):
        index = read_index(store, dataset)
        versions: dict[str, Any] = index["versions"]
        fingerprints = {record.version: record.fingerprint()}
        for version in store.versions(dataset, STAGE):
            if version not in versions:
                old = store.read_record(dataset, STAGE, version)
                versions[version] = _index_entry(old, now) if old else {}
            fingerprints.setdefault(version, versions[version].get("fingerprint", ""))
        versions[record.version] = {
            **_index_entry(record, versions.get(record.version, {}).get("first_made", now)),
            "stale": False,
            "superseded_by": None,
            "made_current": now,
        }
        for version, entry in versions.items():
            if version != record.version and not entry.get("stale"):
                entry.update(stale=True, superseded_by=record.version, stale_since=now)
        stale_prints = {
            fingerprints.get(v) or versions[v].get("fingerprint")
            for v, e in versions.items()
            if e.get("stale")
        }
        index = {
            "current": record.version,
            "versions": versions,
            "stale_dependents": _dependents(store, dataset, stale_prints - {None, ""}),
        }
        with tempfile.TemporaryDirectory() as tmpdir:
            local = Path(tmpdir) / INDEX_NAME
            local.write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
            publish(store, local, index_path(store, dataset))


def _index_entry(record: StageRecord, first_made: str) -> dict[str, Any]:
    return {
        "fingerprint": record.fingerprint(),
        "params": record.extra.get("params", {}),
        "extraction": record.inputs.get("extract"),
        "finished_at": record.finished_at,
        "first_made": first_made,
        "stale": False,
    }


def _dependents(store: ArtifactStore, dataset: str, fingerprints: set[str]) -> list[str]:
    """`stage/version` of the outputs whose record reads a stale version's fingerprint.

    Looks at every stage of the dataset and at the training runs (`_train/`), whose records
    name their input fingerprints too.
    """
    if not fingerprints:
        return []
    found = []
    for owner in (dataset, "_train"):
        folder = store.stage_dir(owner, "").rstrip("/")
        infos = store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        for stage in sorted(Path(i.path).name for i in infos if i.type == pafs.FileType.Directory):
            if owner == dataset and stage == STAGE:
                continue
            for version in store.versions(owner, stage):
                record = store.read_record(owner, stage, version)
                if record is not None and fingerprints & set(record.inputs.values()):
                    prefix = "" if owner == dataset else f"{owner}/"
                    found.append(f"{prefix}{stage}/{version}")
    return found


# ---- a figure for people -----------------------------------------------------------------------
def inspect_masks(
    cfg: PipelineConfig, dataset: DatasetConfig, video_id: str, out: str | Path, seed: int = 0
) -> Path:
    """Write `out` (PNG): per time slot, the frame, the part fields, the pooled score and one mask
    drawn by each sampler, for a clip's evaluation view (whole frame, centred frames)."""
    import torch

    from signmae_core.data import ClipDataset, ClipRecord, Sampling
    from signmae_core.masking import SAMPLERS, TokenMasker
    from signmae_core.masking.figure import save_mask_figure
    from signmae_core.models import token_grid

    from . import decode

    store = ArtifactStore.from_config(cfg.store)
    _, folder = decode.current(cfg, dataset, store)
    rows = [
        r for r in decode.load_clips(cfg, dataset, store).to_pylist() if r["video_id"] == video_id
    ]
    if not rows or rows[0]["status"] != "ok":
        reason = rows[0]["error"] if rows else "not in the decode output"
        raise InputError(f"no decoded clip for {video_id!r} in {dataset.name}: {reason}")
    reader = open_fields(cfg, dataset, store)
    if video_id not in reader:
        reason = reader.failed.get(video_id, "not in the mask output")
        raise InputError(f"no mask fields for {video_id!r} in {dataset.name}: {reason}")
    record = ClipRecord(video_id, f"{folder}/{rows[0]['clip']}", dataset=dataset.name)
    reader_one = ClipDataset([record], Sampling.from_config(cfg), fields=reader, train=False)
    item = reader_one.load(0, None)
    grid = token_grid(cfg.model)
    fields = torch.from_numpy(item["fields"])[None]
    masks, scores = {}, None
    for name in sorted(SAMPLERS):
        masker = TokenMasker.from_config(cfg.masking.model_copy(update={"sampler": name}), grid)
        draw = masker(fields, generator=torch.Generator().manual_seed(seed))
        masks[name] = draw.mask[0].numpy()
        scores = draw.maps.scores[0].numpy()
    title = (
        f"{dataset.name}/{video_id}  masks {current(cfg, dataset, store)[0].version}  "
        f"ratio {cfg.masking.ratio}  strength {cfg.masking.strength}"
    )
    frames = item["clips"].permute(1, 2, 3, 0).numpy()
    return save_mask_figure(out, frames, item["fields"], scores, masks, grid, title=title)
