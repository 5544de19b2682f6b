"""What every adapter produces: one `SourceEntry` per video, and helpers they share."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from signmae_core.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")


@dataclass
class SourceEntry:
    """One video as the dataset describes it, before probing.

    Windows are already converted to the manifest's convention: 0-based `frame_start`
    (inclusive), `frame_end` exclusive, `None` for "from the start" / "to the end".
    `error` set means the row itself is bad (e.g. an unparsable window): it becomes a failed
    manifest row with that reason.
    """

    path: str
    video_id: str | None = None
    label: str | None = None
    signer: str | None = None
    split: str | None = None
    frame_start: int | None = None
    frame_end: int | None = None
    bbox: tuple[float, float, float, float] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def resolve_inside(root: Path, rel: str) -> tuple[Path | None, str, str | None]:
    """Resolve a label file's path inside `root`: `(absolute path, normalized posix, error)`.

    Normalization is lexical (`a/../b` -> `b`): a path that climbs out of the root, or an
    absolute path elsewhere, is rejected. Symbolic links placed inside the root are trusted.
    """
    text = rel.strip().replace("\\", "/")
    if not text:
        return None, rel, "empty path"
    root_abs = Path(os.path.abspath(root))
    candidate = Path(os.path.normpath(root_abs / text))
    try:
        inside = candidate.relative_to(root_abs)
    except ValueError:
        return None, text, f"path {rel!r} resolves outside the dataset root"
    if str(inside) in ("", "."):
        return None, text, f"path {rel!r} is the dataset root itself"
    return candidate, PurePosixPath(inside).as_posix(), None


def parse_int(text: str | int | None) -> int | None:
    """`"12"` -> 12; `""`/None -> None; `"12.0"` -> 12. Raises ValueError for anything else."""
    if text is None:
        return None
    if isinstance(text, int):
        return text
    value = text.strip()
    if not value:
        return None
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"not an integer: {text!r}")
    return int(number)


def clean(text: str | None) -> str | None:
    """Strip surrounding blanks; empty becomes None. Inner text is left byte-for-byte alone."""
    if text is None:
        return None
    value = text.strip()
    return value or None


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV/TSV label file (delimiter sniffed among , tab ;) as strings, UTF-8.

    Every value stays a string exactly as written (no type guessing, no NA conversion), so
    labels in any script survive unchanged.
    """
    if not path.is_file():
        raise InputError(f"label file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"label file {path} is not UTF-8 ({exc.reason})") from None
    first = text.split("\n", 1)[0]
    delimiter = max(",\t;", key=first.count) if first else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise InputError(f"label file {path} has no header row")
    header = [name.strip() for name in reader.fieldnames]
    if len(set(header)) != len(header):
        raise InputError(f"label file {path} repeats a column name: {header}")
    reader.fieldnames = header
    rows = []
    for row in reader:
        if None in row:  # more values than columns
            row.pop(None)
        rows.append({k: (v if v is not None else "") for k, v in row.items()})
    return header, rows


def label_file(root: Path, configured: str | None, default: str) -> Path:
    """The label file: the configured name (relative to root) or the adapter's usual one."""
    path, _, error = resolve_inside(root, configured or default)
    if error or path is None:
        raise InputError(f"label file {configured!r}: {error}")
    return path
