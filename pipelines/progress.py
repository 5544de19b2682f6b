"""What a stage prints while it runs: a progress line and its failures, on standard error."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any


class Progress:
    """Console progress for a stage: one line at most every `every_s` seconds, and at the end."""

    def __init__(self, label: str, total: int, every_s: float = 2.0) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.counts: Counter[str] = Counter()
        self.started = self.last = time.monotonic()

    def update(self, status: str) -> None:
        self.counts[status] += 1
        now = time.monotonic()
        if now - self.last >= self.every_s or sum(self.counts.values()) == self.total:
            self.last = now
            self.print()

    def print(self) -> None:
        done = sum(self.counts.values())
        rate = done / max(1e-9, time.monotonic() - self.started)
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        line = f"[{self.label}] {done}/{self.total} ({parts}) {rate:.1f}/s"
        print(line, file=sys.stderr, flush=True)


def print_failures(label: str, rows: Iterable[dict[str, Any]], limit: int = 5) -> None:
    """The first `limit` failed rows (`status == "failed"`) with their reasons, then a count."""
    failed = [row for row in rows if row.get("status") == "failed"]
    for row in failed[:limit]:
        print(f"[{label}] failed {row['video_id']}: {row['error']}", file=sys.stderr)
    if len(failed) > limit:
        print(f"[{label}] ... {len(failed) - limit} more failed", file=sys.stderr)
