"""Dataset adapters: each reads one layout and returns `SourceEntry` rows (see docs/INGEST.md).

| adapter | layout |
|---|---|
| `csv` | a label table: `path` + optional `label, signer, split, frame_start, frame_end, bbox` |
| `folder` | `<root>/[<split>/]<label>/<video>` |
| `wlasl` | `WLASL_v0.3.json` + `videos/<video_id>.mp4` |
| `slovo` | `annotations.csv` + `[<split>/]<attachment_id>.mp4` |
| `lists` | one list file per split (NMFs-CSL style) |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from signmae_core.config import DatasetConfig
from signmae_core.errors import InputError

from . import csv_labels, folder, slovo, split_lists, wlasl
from .base import SourceEntry, resolve_inside

ADAPTERS: dict[str, Callable[[DatasetConfig], list[SourceEntry]]] = {
    "csv": csv_labels.read,
    "folder": folder.read,
    "wlasl": wlasl.read,
    "slovo": slovo.read,
    "lists": split_lists.read,
}


def read_entries(dataset: DatasetConfig) -> list[SourceEntry]:
    """The dataset's videos as its adapter describes them (raises InputError if unreadable)."""
    if not Path(dataset.root).is_dir():
        raise InputError(f"dataset {dataset.name}: root folder not found: {dataset.root}")
    if dataset.classes is not None and dataset.adapter != "wlasl":
        raise InputError(f"dataset {dataset.name}: `classes` (the first N glosses) applies to "
                         f"the wlasl adapter only, not {dataset.adapter}")
    return ADAPTERS[dataset.adapter](dataset)


def label_files(dataset: DatasetConfig) -> list[Path]:
    """The label files an adapter reads (their contents are part of the ingest inputs)."""
    root = Path(dataset.root)
    defaults = {"csv": "labels.csv", "wlasl": "WLASL_v0.3.json", "slovo": "annotations.csv"}
    if dataset.adapter == "lists":
        names = [dataset.split_lists[k] for k in sorted(dataset.split_lists)]
    elif dataset.adapter in defaults:
        names = [dataset.labels or defaults[dataset.adapter]]
    else:
        names = []
    paths = []
    for name in names:
        path, _, error = resolve_inside(root, name)
        if path is not None and not error:
            paths.append(path)
    return paths


__all__ = ["ADAPTERS", "SourceEntry", "label_files", "read_entries", "resolve_inside"]
