"""A temporary Prefect server on 127.0.0.1 for one command (the demo; later `signmae serve`).

`prefect server start` in its own process group, on a free port, its database under a folder
we name (so a second demo starts faster and `--keep-server` shows earlier runs), its output in
that folder's `server.log`. Its environment names its own port in `PREFECT_API_URL` and
`PREFECT_UI_API_URL` (else the UI calls port 4200). Stopping it signals that process group
only: nothing else on the machine is touched.
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

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]
    with open(home / "server.log", "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        with _terminate_as_interrupt():
            wait_healthy(api, process, home / "server.log")
            with temporary_settings({PREFECT_API_URL: api}):
                try:
                    yield api
                finally:
                    drain_client_workers()
    finally:
        stop(process)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
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


def stop(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGINT, then SIGKILL after `timeout_s`, to the server's own process group only."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue
