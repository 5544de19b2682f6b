"""Split lists (NMFs-CSL style): one list file per split, one video per line.

`DatasetConfig.split_lists` maps a split name to a list file relative to the root. Each
non-blank line is `path` or `path<separator>label` (separator: a comma, a tab or blanks; lines
starting with `#` are comments). Without a label column the label is the video's parent folder
(the class-per-folder layout such datasets ship), or none for a video directly under the root.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from signmae_core.config import DatasetConfig
from signmae_core.errors import InputError

from .base import SourceEntry, clean, label_file

_SEPARATOR = re.compile(r"\s*[,\t]\s*|\s+")


def parse_line(line: str) -> tuple[str, str | None]:
    """`"a/b.mp4 12"` -> `("a/b.mp4", "12")`; `"a/b.mp4"` -> `("a/b.mp4", None)`."""
    parts = _SEPARATOR.split(line.strip(), maxsplit=1)
    label = clean(parts[1]) if len(parts) > 1 else None
    return parts[0], label


def read(dataset: DatasetConfig) -> list[SourceEntry]:
    if not dataset.split_lists:
        raise InputError(f"dataset {dataset.name}: the lists adapter needs split_lists")
    root = Path(dataset.root)
    entries = []
    for split, name in sorted(dataset.split_lists.items()):
        path = label_file(root, name, name)
        if not path.is_file():
            raise InputError(f"split list not found: {path}")
        for raw in path.read_text(encoding="utf-8-sig").splitlines():
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            video, label = parse_line(raw)
            if label is None:
                parent = PurePosixPath(video.replace("\\", "/")).parent.name
                label = parent or None
            entries.append(SourceEntry(path=video, label=label, split=split))
    return entries
