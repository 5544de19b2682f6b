"""The generic label table: `path` plus optional `label, signer, split, frame_start, frame_end`.

Column names can be mapped (`DatasetConfig.columns`, manifest name -> file column), windows may
be 0-based end-exclusive (`frame_base: 0`, the manifest's own convention) or 1-based inclusive
(`frame_base: 1`, as WLASL's files); an empty end or -1 means "to the end". Every other column
passes through to the manifest unchanged, as a string (prefixed `src_` if its name is taken).
"""

from __future__ import annotations

import re
from pathlib import Path

from signmae_core.config import DatasetConfig
from signmae_core.errors import InputError

from .base import SourceEntry, clean, label_file, parse_int, read_table

FIELDS = ("path", "video_id", "label", "signer", "split", "frame_start", "frame_end", "bbox")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def convert_window(
    start: int | None, end: int | None, frame_base: int
) -> tuple[int | None, int | None]:
    """A window as written -> 0-based `[start, end)`; `None` means the video's start / end."""
    if end is not None and end < 0:
        end = None
    if start is not None and start < 0:
        start = None
    if frame_base == 1 and start is not None:
        start -= 1  # 1-based inclusive end n is 0-based exclusive end n: unchanged
    return start, end


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """`"x0 y0 x1 y1"` (any separators, JSON list too) -> 4 floats; empty -> None."""
    if not text or not text.strip():
        return None
    numbers = [float(n) for n in _NUMBER.findall(text)]
    if len(numbers) != 4:
        raise ValueError(f"bbox {text!r} needs 4 numbers")
    return numbers[0], numbers[1], numbers[2], numbers[3]


def passthrough_name(column: str, taken: set[str]) -> str:
    """Name of a passed-through column in the manifest (`src_` prefix when the name is taken)."""
    return f"src_{column}" if column in taken else column


def read(dataset: DatasetConfig) -> list[SourceEntry]:
    """One entry per row of the label table (see the module docstring)."""
    from signmae_core.ingest.manifest import MANIFEST_COLUMNS

    root = Path(dataset.root)
    path = label_file(root, dataset.labels, "labels.csv")
    header, rows = read_table(path)
    unknown = sorted(set(dataset.columns) - set(FIELDS))
    if unknown:
        raise InputError(f"dataset {dataset.name}: unknown columns mapping keys {unknown}")
    mapping = {name: dataset.columns.get(name, name) for name in FIELDS}
    if mapping["path"] not in header:
        raise InputError(f"{path}: no '{mapping['path']}' column (columns: {', '.join(header)})")
    for name, column in dataset.columns.items():
        if column not in header:
            raise InputError(f"{path}: mapped column {name} -> {column!r} is not in the file")
    used = {column for column in mapping.values() if column in header}
    taken = set(MANIFEST_COLUMNS)
    extras = [c for c in header if c not in used]
    entries = []
    for row in rows:
        entry = SourceEntry(
            path=row[mapping["path"]],
            video_id=clean(row.get(mapping["video_id"])),
            label=clean(row.get(mapping["label"])),
            signer=clean(row.get(mapping["signer"])),
            split=clean(row.get(mapping["split"])),
            extra={passthrough_name(c, taken): row[c] for c in extras},
        )
        try:
            start = parse_int(row.get(mapping["frame_start"]))
            end = parse_int(row.get(mapping["frame_end"]))
            entry.frame_start, entry.frame_end = convert_window(start, end, dataset.frame_base)
            entry.bbox = parse_bbox(row.get(mapping["bbox"]))
        except ValueError as exc:
            entry.error = f"bad row in {path.name}: {exc}"
        entries.append(entry)
    return entries
