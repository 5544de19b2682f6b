"""What a stage prints while it runs: a progress line and its failures, on standard error.

Others may watch a stage's progress without the stage knowing them: a listener registered with
`listening(fn)` (or added to `LISTENERS`) is called as `fn(progress, event)` when a `Progress`
starts (`"start"`), at each printed line (`"update"`, at most every `every_s` seconds) and when
its last item is counted (`"end"`). The Prefect flows (`flows/artifacts.py`) turn these calls
into progress artifacts; the stage modules never import Prefect. A listener that raises is
reported on one line and dropped for the rest of that progress, never failing the stage.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

START, UPDATE, END = "start", "update", "end"

ProgressListener = Callable[["Progress", str], None]
LISTENERS: list[ProgressListener] = []  # called in order for every Progress of this process


@contextlib.contextmanager
def listening(listener: ProgressListener) -> Iterator[ProgressListener]:
    """Call `listener(progress, event)` for every `Progress` made inside the block."""
    LISTENERS.append(listener)
    try:
        yield listener
    finally:
        with contextlib.suppress(ValueError):
            LISTENERS.remove(listener)


class Progress:
    """Console progress for a stage: one line at most every `every_s` seconds, and at the end."""

    def __init__(self, label: str, total: int, every_s: float = 2.0) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.counts: Counter[str] = Counter()
        self.started = self.last = time.monotonic()
        self._listeners = list(LISTENERS)
        self._notify(START)

    @property
    def done(self) -> int:
        """Items counted so far."""
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        """Items per second since the start."""
        return self.done / max(1e-9, time.monotonic() - self.started)

    @property
    def fraction(self) -> float:
        """Share of the items counted, 0..1 (1 when there is nothing to do)."""
        return min(1.0, self.done / self.total) if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before the first item)."""
        if self.done == 0:
            return None
        return max(0, self.total - self.done) / max(1e-9, self.rate)

    def update(self, status: str) -> None:
        self.counts[status] += 1
        now = time.monotonic()
        finished = self.done == self.total
        if now - self.last >= self.every_s or finished:
            self.last = now
            self.print()
            self._notify(END if finished else UPDATE)

    def print(self) -> None:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        line = f"[{self.label}] {self.done}/{self.total} ({parts}) {self.rate:.1f}/s"
        print(line, file=sys.stderr, flush=True)

    def _notify(self, event: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(self, event)
            except Exception as exc:  # noqa: BLE001 - an observer must never fail its stage
                self._listeners.remove(listener)
                print(f"[{self.label}] progress listener dropped: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)


def print_failures(label: str, rows: Iterable[dict[str, Any]], limit: int = 5) -> None:
    """The first `limit` failed rows (`status == "failed"`) with their reasons, then a count."""
    failed = [row for row in rows if row.get("status") == "failed"]
    for row in failed[:limit]:
        print(f"[{label}] failed {row['video_id']}: {row['error']}", file=sys.stderr)
    if len(failed) > limit:
        print(f"[{label}] ... {len(failed) - limit} more failed", file=sys.stderr)
