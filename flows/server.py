"""A temporary Prefect server on 127.0.0.1 for one command (`signmae demo`, `signmae serve`).

`prefect server start` in its own session and process group, on a free port, its database under
a folder we name (so a second demo starts faster and `--keep-server` shows earlier runs), its
output in that folder's `server.log`. Its environment names its own port in `PREFECT_API_URL`
and `PREFECT_UI_API_URL` (else the UI calls port 4200). Stopping it signals that process group,
then whatever is left of its session: nothing else on the machine is touched.

`start_session` / `stop` do the same for any command `signmae serve` starts (a Prefect worker,
a Ray head): each runs as the leader of a new session, so every process it starts (Ray's
workers make process groups of their own, but stay in the session) is found again by its
session id and stopped with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from signmae_core.errors import SignmaeError

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


class ServerError(SignmaeError):
    """The temporary Prefect server did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at the time of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configured_api_url() -> str | None:
    """The Prefect API this process is pointed at (`PREFECT_API_URL`, a profile, a test
    harness), or None when Prefect would start its own ephemeral server."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


@contextlib.contextmanager
def temporary_server(home: Path, port: int | None = None) -> Iterator[str]:
    """Start a Prefect server, point this process at it, yield its API URL; stop it at the end.

    `home` holds the server's database (`PREFECT_HOME`) and `server.log`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    process, api = start_server(home, port)
    try:
        with terminate_as_interrupt():
            wait_healthy(api, process, home / "server.log")
            with temporary_settings({PREFECT_API_URL: api}):
                try:
                    yield api
                finally:
                    drain_client_workers()
    finally:
        stop(process)


def start_server(home: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start `prefect server start` on 127.0.0.1 (its database and `server.log` in `home`);
    returns the process and its API URL at once (`wait_healthy` waits for it)."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]
    return start_session(command, env, home / "server.log"), api


def start_session(command: list[str], env: dict[str, str], log: Path,
                  cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Run `command` as the leader of a new session (and process group), its output appended
    to `log`, no stdin. Its session id is its pid: `session_pids(process.pid)`."""
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)


def session_pids(sid: int) -> list[int]:
    """The processes of session `sid`, read from /proc (empty where there is no /proc)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session
                found.append(int(entry.parent.name))
    return sorted(found)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block (main thread only), so a terminated
    command still stops the server it started instead of leaving it behind."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def drain_client_workers() -> None:
    """Send the logs and events this process still holds before the server goes away (as
    Prefect's own test harness does), so none is lost and no "Error logging to API" follows."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # a worker that never started
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


def wait_healthy(api: str, process: subprocess.Popen[bytes], log: Path,
                 timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until `<api>/health` answers; a server that exits or hangs is a `ServerError`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"the Prefect server exited with status {process.returncode}; "
                              f"see {log}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{api}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.2)
    raise ServerError(f"the Prefect server did not answer within {timeout_s:.0f} s; see {log}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S,
         first: int = signal.SIGINT, group: bool = True) -> None:
    """`first` (SIGINT: what Prefect's server and worker stop on) to the process group of a
    session leader started by `start_session` (to the leader alone unless `group`: `ray start
    --block` stops its processes itself on SIGTERM, and hangs when they are signalled at the
    same time); after `timeout_s`, SIGTERM and then SIGKILL to every process still in its
    session. Nothing outside that session is signalled."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, first)
            else:
                os.kill(process.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = session_pids(process.pid)
        if not left and process.poll() is not None:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        _wait_gone(process, timeout_s / 3)
    process.poll()


def _wait_gone(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait until the leader has exited and its session is empty, at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None and not session_pids(process.pid):
            return
        time.sleep(0.1)
