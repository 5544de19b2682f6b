"""WLASL's release layout: `WLASL_v0.3.json` plus `videos/<video_id>.mp4`.

The JSON is a list of `{gloss, instances: [...]}`; each instance has `video_id`, `split`,
`signer_id`, `bbox` (x0, y0, x1, y1 in pixels), 1-based inclusive `frame_start`/`frame_end`
(`-1` = to the end), and `fps, instance_id, source, url, variation_id`, which pass through.
Videos that could not be downloaded (missing or zero-byte files, 10-35 % of WLASL) become
failed rows at probing, never a failed run.

WLASL's subsets are its first glosses: the file lists glosses by number of instances, and
WLASL100/300/1000/2000 are its first 100/300/1000/2000 (`DatasetConfig.classes`).
"""

from __future__ import annotations

import json
from pathlib import Path

from signmae_core.config import DatasetConfig
from signmae_core.errors import InputError

from .base import SourceEntry, label_file, parse_int
from .csv_labels import convert_window

PASSTHROUGH = ("instance_id", "variation_id", "source", "url", "fps")


def read(dataset: DatasetConfig) -> list[SourceEntry]:
    """One entry per instance in the JSON, in file order."""
    root = Path(dataset.root)
    path = label_file(root, dataset.labels, "WLASL_v0.3.json")
    if not path.is_file():
        raise InputError(f"WLASL label file not found: {path}")
    try:
        glosses = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(glosses, list):
        raise InputError(f"{path}: expected a list of {{gloss, instances}}")
    if dataset.classes is not None:
        glosses = glosses[: dataset.classes]  # WLASL100 = the file's first 100 glosses
    entries = []
    for item in glosses:
        gloss = item.get("gloss") if isinstance(item, dict) else None
        for inst in (item.get("instances") or []) if isinstance(item, dict) else []:
            entries.append(_entry(gloss, inst))
    return entries


def _entry(gloss: str | None, inst: dict) -> SourceEntry:
    video_id = str(inst.get("video_id", "")).strip()
    entry = SourceEntry(
        path=f"videos/{video_id}.mp4",
        video_id=video_id or None,
        label=gloss,
        signer=None if inst.get("signer_id") is None else str(inst["signer_id"]),
        split=inst.get("split"),
        extra={
            ("src_fps" if key == "fps" else key): "" if inst.get(key) is None else str(inst[key])
            for key in PASSTHROUGH
        },
    )
    if not video_id:
        entry.error = "WLASL instance without a video_id"
        return entry
    try:
        start = parse_int(inst.get("frame_start"))
        end = parse_int(inst.get("frame_end"))
        entry.frame_start, entry.frame_end = convert_window(start, end, frame_base=1)
        bbox = inst.get("bbox")
        if bbox:
            if len(bbox) != 4:
                raise ValueError(f"bbox {bbox!r} needs 4 numbers")
            entry.bbox = tuple(float(v) for v in bbox)  # type: ignore[assignment]
    except (ValueError, TypeError) as exc:
        entry.error = f"bad WLASL instance {video_id}: {exc}"
    return entry
