"""Ray for the stages: getting a cluster, and running one task per item with bounded memory.

`ensure_ray` connects to `RAY_ADDRESS` (or `ray.address`) when set, otherwise starts a local Ray.
Only what this module started is shut down again; a cluster we merely connected to is left
running. A local Ray keeps its temporary files under a short folder (Ray's Unix socket paths
break past 107 bytes) and starts without a dashboard unless the config asks for one.

`map_bounded` runs a function as Ray tasks over a lazy stream of jobs, a bounded number in
flight, turning a task's exception, dead worker or timeout into a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

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
    return True


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
    `(key, result, error)` in completion order; `error` is a one-line reason when the task raised,
    its worker died, or it ran past `timeout_s` (then it is cancelled). Never raises for a task.
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
                yield key, None, f"timed out after {timeout_s:.0f} s"
            except ray.exceptions.RayError as exc:
                yield key, None, task_error(exc)
        if timeout_s is not None:
            now = time.monotonic()
            for ref, (_, started) in list(pending.items()):
                if now - started > timeout_s:
                    ray.cancel(ref, force=True)


def task_error(exc: BaseException) -> str:
    """A Ray task failure as a one-line reason (the task's own exception when there is one)."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:300]
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
