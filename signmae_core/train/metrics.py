"""Training metrics as JSON lines: one object per logged step, flushed as it is written.

Each line is `{"step": int, "time": unix seconds, <name>: number, ...}`. A resumed run first drops
the lines past the step it resumes from, so the file never holds a step twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete lines of a metrics file (a torn last line from a kill is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLogger:
    """Appends metric rows to a JSONL file; `truncate_after(step)` prepares a resume."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop every row whose step is greater than `step` (rewritten atomically)."""
        rows = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_name(f".tmp-{self.path.name}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, self.path)

    def log(self, step: int, wall_time: float | None = None, **values: Any) -> dict[str, Any]:
        """Append one row (`wall_time`: when the step ended, default now); floats are rounded
        to 7 significant digits, NaN/inf become None."""
        when = time.time() if wall_time is None else wall_time
        row: dict[str, Any] = {"step": step, "time": round(when, 3)}
        for name, value in values.items():
            if isinstance(value, float):
                value = float(f"{value:.7g}") if math.isfinite(value) else None
            row[name] = value
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        return row
