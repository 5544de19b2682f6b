"""What a stage prints while it runs: a progress bar or line, and its failures, on standard error.

On a terminal every running `Progress` is one `rich` bar (items done of total, rate, time left),
all of them in one live display that leaves no trace when its stages end (the runner prints one
summary line per finished stage). When standard error is not a terminal (a log, a CI job, a
pipe) a stage prints plain lines instead, at most one every `every_s` seconds and one at the end,
so logs stay readable. `SIGNMAE_PROGRESS=bars|lines` chooses either way explicitly.

Others may watch a stage's progress without the stage knowing them: a listener registered with
`listening(fn)` (or added to `LISTENERS`) is called as `fn(progress, event)` when a `Progress`
starts (`"start"`), at each printed line (`"update"`, at most every `every_s` seconds) and when
its last item is counted (`"end"`). The Prefect flows (`flows/artifacts.py`) turn these calls
into progress artifacts; the stage modules never import Prefect. A listener that raises is
reported on one line and dropped for the rest of that progress, never failing the stage.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

START, UPDATE, END = "start", "update", "end"
MODE_ENV = "SIGNMAE_PROGRESS"  # "bars", "lines"; unset: bars when standard error is a terminal

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
        self._bar = BARS.add(self) if use_bars() and total > 0 else None
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
        if self._bar is not None:
            BARS.advance(self, finished)
        if now - self.last >= self.every_s or finished:
            self.last = now
            if self._bar is None:
                self.print()
            self._notify(END if finished else UPDATE)

    @property
    def counts_text(self) -> str:
        """`failed 1, ok 5`: the counts by status."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))

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


# ---- bars -----------------------------------------------------------------------------------
def use_bars() -> bool:
    """Bars on a terminal, plain lines otherwise (`SIGNMAE_PROGRESS` decides when set)."""
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if mode in ("bars", "lines"):
        return mode == "bars"
    return sys.stderr.isatty()


class Bars:
    """One live `rich` display on standard error for every running `Progress` of the process:
    started with its first bar, stopped (and cleared) when its last bar ends or `close()`."""

    def __init__(self, console: Any = None) -> None:
        self.console = console  # a rich Console; None: standard error
        self._lock = threading.Lock()
        self._display: Any = None
        self._tasks: dict[int, Any] = {}

    def _make(self) -> Any:
        from rich import progress as rp
        from rich.console import Console

        return rp.Progress(
            rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
            rp.TextColumn("{task.fields[rate]}"), rp.TextColumn("left"),
            rp.TimeRemainingColumn(), rp.TextColumn("{task.fields[counts]}"),
            console=self.console or Console(file=sys.stderr), transient=True,
            refresh_per_second=4,
        )

    def add(self, progress: Progress) -> Any:
        """A bar for `progress` (the display starts with the first one)."""
        with self._lock:
            if self._display is None:
                self._display = self._make()
                self._display.start()
            task = self._display.add_task(progress.label, total=progress.total, rate="",
                                          counts="")
            self._tasks[id(progress)] = task
            return task

    def advance(self, progress: Progress, finished: bool) -> None:
        """Show `progress`'s items, rate and counts; a finished bar goes away."""
        with self._lock:
            task = self._tasks.get(id(progress))
            if task is None or self._display is None:
                return
            self._display.update(task, completed=progress.done, rate=f"{progress.rate:.1f}/s",
                                 counts=progress.counts_text)
            if finished:
                self._display.remove_task(self._tasks.pop(id(progress)))
                if not self._tasks:
                    self._stop()

    def close(self) -> None:
        """Stop the display (a stage that raised leaves its bar: it goes here)."""
        with self._lock:
            self._tasks.clear()
            self._stop()

    def _stop(self) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None


BARS = Bars()
atexit.register(BARS.close)  # a bar left by a stage that raised is cleared, the cursor restored


def print_failures(label: str, rows: Iterable[dict[str, Any]], limit: int = 5) -> None:
    """The first `limit` failed rows (`status == "failed"`) with their reasons, then a count."""
    failed = [row for row in rows if row.get("status") == "failed"]
    for row in failed[:limit]:
        print(f"[{label}] failed {row['video_id']}: {row['error']}", file=sys.stderr)
    if len(failed) > limit:
        print(f"[{label}] ... {len(failed) - limit} more failed", file=sys.stderr)
