"""Class-per-folder layout: `<root>/<label>/<video>` or `<root>/<split>/<label>/<video>`.

The label is the video's parent folder; when the first folder is a split name (train, val,
validation, dev, test) it gives the split. Videos directly under the root (or directly under a
split folder) are unlabeled. Files are found by suffix (`VIDEO_SUFFIXES`), hidden ones skipped.
"""

from __future__ import annotations

from pathlib import Path

from signmae_core.config import DatasetConfig
from signmae_core.errors import InputError

from .base import VIDEO_SUFFIXES, SourceEntry

SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}


def read(dataset: DatasetConfig) -> list[SourceEntry]:
    """One entry per video file under the root, sorted by path."""
    root = Path(dataset.root)
    if not root.is_dir():
        raise InputError(f"dataset root not found: {root}")
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if not path.is_file() or path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        folders = list(rel.parts[:-1])
        split = None
        if folders and folders[0].lower() in SPLIT_FOLDERS:
            split = SPLIT_FOLDERS[folders.pop(0).lower()]
        label = folders[-1] if folders else None
        entries.append(SourceEntry(path=rel.as_posix(), label=label, split=split))
    return entries
