"""Planning an ingest: adapter rows -> ids, paths, file facts; probes -> manifest rows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signmae_core.config import DatasetConfig

from .adapters import SourceEntry, label_files, read_entries, resolve_inside
from .class_groups import class_groups_path
from .manifest import check_video_id, extend_classes, resolve_window, stable_video_id
from .probe import Probe, file_facts

STAGE = "ingest"


@dataclass
class PlannedVideo:
    """One adapter row with its id and path resolved, before probing."""

    entry: SourceEntry
    video_id: str
    rel_path: str
    abs_path: Path | None
    error: str | None = None
    file_bytes: int | None = None
    file_mtime_ns: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def probe_needed(self) -> bool:
        return self.error is None and self.abs_path is not None

    def file_key(self) -> tuple[str, int | None, int | None]:
        """The path and the file's size and mtime: what the ingest's input fingerprint lists."""
        return self.rel_path, self.file_bytes, self.file_mtime_ns


def plan_videos(dataset: DatasetConfig) -> list[PlannedVideo]:
    """Read the dataset through its adapter; resolve paths inside the root, ids, file facts.

    Bad rows (path outside the root, bad id, duplicate id) get an `error` and stay in the list:
    they become failed manifest rows. Raises InputError only when the dataset cannot be read.
    """
    root = Path(dataset.root)
    planned: list[PlannedVideo] = []
    seen: dict[str, str] = {}
    for entry in read_entries(dataset):
        abs_path, rel_path, error = resolve_inside(root, entry.path)
        error = entry.error or error
        if entry.video_id is not None:
            video_id = entry.video_id
            error = error or check_video_id(video_id)
            if not _safe_id(video_id):
                video_id = stable_video_id(f"bad-id/{video_id}")
        else:
            video_id = stable_video_id(rel_path)
        if video_id in seen:
            error = error or f"duplicate video_id {video_id} (also {seen[video_id]})"
            video_id = stable_video_id(f"duplicate/{rel_path}/{len(planned)}")
        seen.setdefault(video_id, rel_path)
        item = PlannedVideo(entry, video_id, rel_path, None if error else abs_path, error)
        if item.abs_path is not None:
            facts = file_facts(item.abs_path)
            if facts is not None:
                item.file_bytes, item.file_mtime_ns = facts
        planned.append(item)
    return planned


def _safe_id(video_id: str) -> bool:
    return check_video_id(video_id) is None


def sources_fingerprint(dataset: DatasetConfig, planned: list[PlannedVideo]) -> str:
    """Hash of the label files' bytes, the class groups file's bytes (when the dataset has
    one) and every video's path, size and mtime.

    The ingest stage's input fingerprint: it changes when a label file, the class groups file
    or a video changes, is added or removed, and only then (listing files is cheap; probing is
    not). A dataset without a class groups file hashes as it did before the file existed.
    """
    digest = hashlib.sha256()
    for path in label_files(dataset):
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    groups = class_groups_path(dataset.root)
    if groups is not None:
        digest.update(groups.name.encode())
        digest.update(groups.read_bytes())
    for item in planned:
        digest.update(json.dumps([item.video_id, *item.file_key()]).encode())
    return digest.hexdigest()[:16]


def build_rows(
    planned: list[PlannedVideo],
    probes: dict[str, Probe],
    dataset: DatasetConfig,
    classes: list[str],
) -> tuple[list[dict[str, Any]], list[str], list[str], list[str]]:
    """Manifest rows from planned videos and their probes; extends the class map.

    Returns `(rows, extra_columns, classes, added_classes)`. Labeled rows (a label, and a split
    not in `dataset.unlabeled_splits`) get a `label_id` from the class map, failed ones too, so
    a download fixed later keeps its id. New labels are appended, never renumbered.
    """
    unlabeled = set(dataset.unlabeled_splits)
    splits = {item.video_id: item.entry.split or dataset.default_split for item in planned}
    labels = [
        item.entry.label
        for item in planned
        if item.entry.label is not None and splits[item.video_id] not in unlabeled
    ]
    classes, added = extend_classes(classes, labels)
    index = {label: i for i, label in enumerate(classes)}
    extra_columns: list[str] = []
    for item in planned:
        for name in item.entry.extra:
            if name not in extra_columns:
                extra_columns.append(name)
    rows = []
    for item in planned:
        entry = item.entry
        split = splits[item.video_id]
        row: dict[str, Any] = {
            "video_id": item.video_id,
            "path": item.rel_path,
            "uri": str(item.abs_path) if item.abs_path is not None else None,
            "label": entry.label,
            "label_id": index[entry.label]
            if entry.label is not None and split not in unlabeled
            else None,
            "signer": entry.signer,
            "split": split,
            "frame_start": entry.frame_start,
            "frame_end": entry.frame_end,
            "window_clamped": False,
            "bbox": list(entry.bbox) if entry.bbox is not None else None,
            **entry.extra,
        }
        error = item.error
        probe = probes.get(item.video_id)
        if error is None and probe is None:
            error = "not probed"
        if probe is not None:
            row.update(probe.to_dict())
            error = error or probe.error
        if error is None:
            start, end, clamped, error = resolve_window(
                entry.frame_start, entry.frame_end, int(row["frame_count"])
            )
            row.update(frame_start=start, frame_end=end, window_clamped=clamped)
        row["status"] = "failed" if error else "ok"
        row["error"] = error
        rows.append(row)
    return rows, extra_columns, classes, added
