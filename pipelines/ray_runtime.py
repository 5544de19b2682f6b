"""Ray for the stages: getting a cluster, and running one task per item with bounded memory.

`ensure_ray` connects to `RAY_ADDRESS` (or `ray.address`) when set, otherwise starts a local Ray.
Only what this module started is shut down again; a cluster we merely connected to is left
running. A local Ray keeps its temporary files under a short folder (Ray's Unix socket paths
break past 107 bytes) and starts without a dashboard unless the config asks for one.

`map_bounded` runs a function as Ray tasks over a lazy stream of jobs, a bounded number in
flight, turning a task's exception, dead worker or timeout into a one-line reason (a
`TaskFailure`, which says whether the work was lost with its worker rather than failed). A stage
that gives up because work was lost raises `WorkLost`, which flows retry.

`worker_output_to(path, verbose)` sends what the Ray workers print (TensorFlow Lite, absl and
MediaPipe warnings repeated by every worker) and Ray's own start-up warnings (token auth, ...)
to a log file instead of the console; with `verbose` the console shows them too. Workers' lines
reach the driver through Ray's log forwarding (`log_to_driver`); the driver's handler that
prints them is swapped for one that writes the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from signmae_core.config import RayConfig


def _short_temp_dir(configured: str | None) -> str:
    if configured:
        return configured
    env = os.environ.get("SIGNMAE_RAY_TMPDIR")
    if env:
        return env
    return str(Path(tempfile.gettempdir()) / "signmae-ray")


def ensure_ray(config: RayConfig | None = None) -> bool:
    """Make sure Ray is initialized; return True when this call started it (so we own it)."""
    import ray

    config = config or RayConfig()
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or config.address
    if address:
        ray.init(address=address, log_to_driver=True)
        _route_worker_output()
        return True  # our connection, not the cluster: shutting it down only disconnects
    temp_dir = _short_temp_dir(config.temp_dir)
    if len(temp_dir) > 60:
        raise ValueError(f"Ray temp dir {temp_dir!r} is too long for Unix socket paths (>60 chars)")
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=config.num_cpus,
        include_dashboard=config.include_dashboard,
        dashboard_host=config.dashboard_host,
        _temp_dir=temp_dir,
        configure_logging=True,
        logging_level="WARNING",
        log_to_driver=True,
    )
    _route_worker_output()
    return True


# ---- where the workers' output goes -------------------------------------------------------------
RAY_PRINT_HANDLER = "ray_print_logs"  # Ray's handler that prints forwarded worker lines
OUR_HANDLER = "signmae_worker_log"


@dataclass
class WorkerLog:
    """The log file of the current run (None: Ray prints worker output to the console)."""

    handle: TextIO | None = None
    verbose: bool = False
    removed: tuple[str, Any] | None = None  # Ray's print handler while we replace it


WORKER_LOG = WorkerLog()
_WRITE_LOCK = threading.Lock()


def _dispatcher() -> Any:
    """Ray's dispatcher of forwarded worker output (None when this Ray has none)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher
    except ImportError:
        return None
    return global_worker_stdstream_dispatcher


def write_worker_lines(data: dict[str, Any]) -> None:
    """Append one batch of forwarded worker output to the run's log file."""
    handle = WORKER_LOG.handle
    if handle is None:
        return
    who = data.get("actor_name") or data.get("task_name") or "worker"
    prefix = f"({who} pid={data.get('pid')}, ip={data.get('ip')})"
    with _WRITE_LOCK:
        for line in data.get("lines", []):
            handle.write(f"{prefix} {line}\n")
        handle.flush()


def log_line(text: str) -> None:
    """Append one line of the driver's own (a stage summary) to the run's log file, if any."""
    handle = WORKER_LOG.handle
    if handle is not None:
        with _WRITE_LOCK:
            handle.write(text.rstrip("\n") + "\n")
            handle.flush()


def _route_worker_output() -> None:
    """Once Ray is connected: forwarded worker lines go to the log file (and, verbose, to the
    console as Ray prints them). No log file set: Ray's console printing stays."""
    dispatcher = _dispatcher()
    if WORKER_LOG.handle is None or dispatcher is None:
        return
    dispatcher.remove_handler(OUR_HANDLER)
    if not WORKER_LOG.verbose:
        ours = [pair for pair in dispatcher.handlers if pair[0] == RAY_PRINT_HANDLER]
        if ours:
            WORKER_LOG.removed = ours[0]
            dispatcher.remove_handler(RAY_PRINT_HANDLER)
    dispatcher.add_handler(OUR_HANDLER, write_worker_lines)


def _unroute_worker_output() -> None:
    dispatcher = _dispatcher()
    if dispatcher is None:
        return
    dispatcher.remove_handler(OUR_HANDLER)
    import ray

    if WORKER_LOG.removed is not None and ray.is_initialized():
        dispatcher.add_handler(*WORKER_LOG.removed)  # a Ray that outlives the run prints again
    WORKER_LOG.removed = None


@contextlib.contextmanager
def worker_output_to(path: Path, verbose: bool = False) -> Iterator[logging.Handler]:
    """Within the block, Ray workers' output and Ray's own log records go to `path`
    (appended); the console keeps Ray's errors only, or everything with `verbose`. Yields the
    file's logging handler (the caller may add its own loggers to it)."""
    import ray

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    file_handler = logging.StreamHandler(handle)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ray_logger = logging.getLogger("ray")
    consoles = [h for h in ray_logger.handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in consoles]
    ray_logger.addHandler(file_handler)
    if not verbose:
        for handler in consoles:
            handler.setLevel(logging.ERROR)
    WORKER_LOG.handle, WORKER_LOG.verbose = handle, verbose
    if ray.is_initialized():
        _route_worker_output()
    try:
        yield file_handler
    finally:
        _unroute_worker_output()
        WORKER_LOG.handle = None
        ray_logger.removeHandler(file_handler)
        for handler, level in zip(consoles, levels, strict=True):
            handler.setLevel(level)
        handle.close()


@contextlib.contextmanager
def ray_session(config: RayConfig | None = None) -> Iterator[None]:
    """A block in which stages may start Ray (`ensure_ray`) when they have work for it; a Ray
    started inside the block is shut down at its end, one that was running is left alone."""
    import ray

    running_before = ray.is_initialized()
    try:
        yield
    finally:
        if not running_before and ray.is_initialized():
            ray.shutdown()


# ---- tasks -------------------------------------------------------------------------------------
def cluster_cpus() -> int:
    """CPUs of the Ray cluster this process is connected to."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def one_thread_per_worker() -> None:
    """Called at the start of a task: video decoding parallelizes across workers, not inside."""
    import cv2

    cv2.setNumThreads(1)


def map_bounded(
    func: Callable[..., Any],
    jobs: Iterable[tuple[str, tuple[Any, ...]]],
    *,
    max_in_flight: int,
    timeout_s: float | None = None,
) -> Iterator[tuple[str, Any, str | None]]:
    """Run `func(*args)` as Ray tasks (1 CPU each), at most `max_in_flight` at a time.

    `jobs` is consumed lazily, so memory holds only the tasks in flight. Yields
    `(key, result, error)` in completion order; `error` is a one-line reason (`TaskFailure`, a
    str) when the task raised, its worker died, or it ran past `timeout_s` (then it is
    cancelled). Never raises for a task.
    """
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(func)
    pending: dict[Any, tuple[str, float]] = {}
    job_iter = iter(jobs)
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < max_in_flight:
            try:
                key, args = next(job_iter)
            except StopIteration:
                exhausted = True
                break
            pending[remote.remote(*args)] = (key, time.monotonic())
        if not pending:
            break
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in done:
            key, _ = pending.pop(ref)
            try:
                yield key, ray.get(ref), None
            except ray.exceptions.TaskCancelledError:
                yield key, None, TaskFailure(f"timed out after {timeout_s:.0f} s")
            except ray.exceptions.RayTaskError as exc:  # the task itself raised
                yield key, None, TaskFailure(task_error(exc))
            except ray.exceptions.RayError as exc:  # its worker, node or result was lost
                yield key, None, TaskFailure(task_error(exc), lost=True)
        if timeout_s is not None:
            now = time.monotonic()
            for ref, (_, started) in list(pending.items()):
                if now - started > timeout_s:
                    ray.cancel(ref, force=True)


class TaskFailure(str):
    """Why a Ray task gave no result: a one-line reason (a plain `str` to every reader), with
    `lost` True when the work was lost (its worker or node died, its result object is gone)
    rather than the task raising or timing out."""

    lost: bool

    def __new__(cls, reason: str, lost: bool = False) -> TaskFailure:
        made = super().__new__(cls, reason)
        made.lost = lost
        return made


class WorkLost(ConnectionError):
    """A stage gave up because Ray work was lost with its worker or node, not because anything
    was wrong with it: transient (an `OSError` other than a missing or forbidden path, which
    `flows.pipeline.is_transient` retries); the finished outputs stay and a rerun resumes."""


def task_error(exc: BaseException) -> str:
    """A Ray task failure as a one-line reason (the task's own exception when there is one)."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:300]
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
