"""Slovo's layout: `annotations.csv` plus `<split>/<attachment_id>.mp4` (or `<attachment_id>.mp4`).

`annotations.csv` (tab- or comma-separated) has `attachment_id, user_id, width, height, length,
text, train, begin, end`: `text` is the label, `user_id` the signer, `train` (True/False) the
split (train / test), `begin`/`end` the sign's frames, read as 0-based with `end` exclusive.
`width, height, length` pass through as `src_width, src_height, length`.
"""

from __future__ import annotations

from pathlib import Path

from signmae_core.config import DatasetConfig
from signmae_core.errors import InputError

from .base import SourceEntry, clean, label_file, parse_int, read_table
from .csv_labels import convert_window, passthrough_name

REQUIRED = ("attachment_id", "user_id", "text", "train", "begin", "end")
TRUE = {"true", "1", "yes", "train"}


def video_path(root: Path, attachment_id: str, split: str) -> str:
    """`<split>/<id>.mp4` when that file exists (Slovo's archive layout), else `<id>.mp4`."""
    nested = f"{split}/{attachment_id}.mp4"
    return nested if (root / nested).exists() else f"{attachment_id}.mp4"


def read(dataset: DatasetConfig) -> list[SourceEntry]:
    from signmae_core.ingest.manifest import MANIFEST_COLUMNS

    root = Path(dataset.root)
    path = label_file(root, dataset.labels, "annotations.csv")
    header, rows = read_table(path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{path}: missing Slovo columns {missing}")
    taken = set(MANIFEST_COLUMNS)
    extras = [c for c in header if c not in REQUIRED]
    entries = []
    for row in rows:
        attachment_id = (row["attachment_id"] or "").strip()
        split = "train" if row["train"].strip().lower() in TRUE else "test"
        entry = SourceEntry(
            path=video_path(root, attachment_id, split),
            video_id=attachment_id or None,
            label=clean(row["text"]),
            signer=clean(row["user_id"]),
            split=split,
            extra={passthrough_name(c, taken): row[c] for c in extras},
        )
        if not attachment_id:
            entry.error = "Slovo row without an attachment_id"
        else:
            try:
                start, end = parse_int(row["begin"]), parse_int(row["end"])
                entry.frame_start, entry.frame_end = convert_window(start, end, frame_base=0)
            except ValueError as exc:
                entry.error = f"bad Slovo row {attachment_id}: {exc}"
        entries.append(entry)
    return entries
