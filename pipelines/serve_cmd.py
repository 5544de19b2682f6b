"""`signmae serve`: the flows deployed on this machine, with the Prefect UI and the Ray dashboard.

It starts, each in a session of its own (`flows.server.start_session`), all on 127.0.0.1:
1. a Prefect server (`flows.server.start_server`; its database and logs under `--home`);
2. the process work pool `signmae-local` and the deployments of `prefect.yaml` on that pool
   (registered through Prefect's Python API from the same file `prefect deploy` reads, so the
   file is the one list, in one process instead of a `prefect deploy` start per deployment);
3. a Ray head (`ray start --head --block`) with its dashboard, token authentication on
   (`RAY_AUTH_MODE=token`; the token `~/.ray/auth_token` or `RAY_AUTH_TOKEN_PATH`, written
   when missing);
4. a Prefect worker on the pool, whose flow runs reach that Ray through `RAY_ADDRESS`.
It prints the Prefect UI and the Ray dashboard addresses and waits. Ctrl-C (SIGINT) or SIGTERM
stops the worker, Ray and the server, each by its own session, and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from signmae_core.errors import SignmaeError

POOL = "signmae-local"  # the process work pool of prefect.yaml's local deployments
REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO_ROOT / "prefect.yaml"
DEFAULT_HOME = Path("runs/serve")
START_TIMEOUT_S = 120.0


class ServeError(SignmaeError):
    """Something `signmae serve` starts did not come up."""


# ---- deployments --------------------------------------------------------------------------------
def local_deployments(path: Path = PREFECT_YAML, pool: str = POOL) -> list[dict[str, Any]]:
    """The deployments of `prefect.yaml` on the work pool `pool` (YAML anchors resolved)."""
    import yaml

    spec = yaml.safe_load(path.read_text())
    return [d for d in spec["deployments"] if d.get("work_pool", {}).get("name") == pool]


def ensure_pool(pool: str = POOL) -> None:
    """Create the process work pool `pool` with Prefect's default template when missing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=template)
            )


def register_deployments(specs: list[dict[str, Any]], root: Path = REPO_ROOT) -> list[str]:
    """Register each deployment spec (`name`, `entrypoint` `flows/pipeline.py:<flow>`,
    `work_pool`, optional `description`, `parameters`, `tags`) with flow runs working in `root`
    (the pull step `prefect deploy` records). Returns `<flow>/<deployment>` names."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.runner.storage import LocalStorage

    names = []
    for spec in specs:
        made = load_flow_from_entrypoint(str(root / spec["entrypoint"]))
        pool = spec["work_pool"]
        deployment = made.to_deployment(
            name=spec["name"], work_pool_name=pool["name"],
            work_queue_name=pool.get("work_queue_name"), description=spec.get("description"),
            parameters=spec.get("parameters") or {}, tags=spec.get("tags") or [],
        )
        deployment.entrypoint = spec["entrypoint"]  # relative to `root`, as in prefect.yaml
        deployment.storage = LocalStorage(path=str(root))
        deployment.apply()
        names.append(f"{made.name}/{spec['name']}")
    return names


# ---- Ray ----------------------------------------------------------------------------------------
def ray_env() -> dict[str, str]:
    """Environment for the Ray head and every driver that joins it: token authentication on,
    the token `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`, made (private to the user) when
    missing, as Ray itself does for a new local cluster."""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not token.is_file():
        token.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(16))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0"}


def start_ray_head(home: Path, temp_dir: str, dashboard_port: int, num_cpus: int | None,
                   started: list[tuple[str, Any]]) -> tuple[str, str]:
    """`ray start --head --block` on 127.0.0.1 with its dashboard, added to `started` at once;
    returns the cluster address (for `RAY_ADDRESS`) and the dashboard URL once it answers."""
    from flows.server import free_port, start_session

    port = free_port()
    command = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
        "--dashboard-agent-listen-port", str(free_port()),
        "--ray-client-server-port", str(free_port()), "--temp-dir", temp_dir,
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        command += ["--num-cpus", str(num_cpus)]
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    process = start_session(command, {**os.environ, **ray_env()}, home / "ray.log")
    started.append(("Ray head", process))
    url = f"http://127.0.0.1:{dashboard_port}"
    wait_for(lambda: _answers(f"{url}/api/gcs_healthz"), process, "the Ray dashboard",
             home / "ray.log")
    return f"127.0.0.1:{port}", url


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    return False


def wait_for(ready: Callable[[], bool], process: Any, what: str, log: Path,
             timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll `ready()` until true; a process that exits first or a timeout is a `ServeError`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServeError(f"{what} exited with status {process.returncode}; see {log}")
        if ready():
            return
        time.sleep(0.3)
    raise ServeError(f"{what} did not come up within {timeout_s:.0f} s; see {log}")


# ---- the worker ---------------------------------------------------------------------------------
def start_worker(home: Path, api: str, env: dict[str, str], poll_s: float,
                 started: list[tuple[str, Any]]) -> None:
    """`prefect worker start` on the process pool, polling every `poll_s` seconds, added to
    `started` at once; its flow runs inherit `env` (`RAY_ADDRESS`, the token). Returns once
    the worker has registered with the server."""
    from flows.server import start_session

    name = f"signmae-serve-{os.getpid()}"
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
               "--type", "process", "--name", name]
    worker_env = {
        **os.environ, **env, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
        "PREFECT_WORKER_QUERY_SECONDS": str(poll_s), "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
        "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    process = start_session(command, worker_env, home / "worker.log", cwd=REPO_ROOT)
    started.append(("Prefect worker", process))
    wait_for(lambda: _worker_online(name), process, "the Prefect worker", home / "worker.log")


def _worker_online(name: str) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return any(w.name == name for w in client.read_workers_for_work_pool(POOL))


# ---- serve --------------------------------------------------------------------------------------
def serve(home: Path, port: int | None, dashboard_port: int | None, num_cpus: int | None,
          ray_temp_dir: str | None, poll_s: float, ray: bool = True) -> None:
    """Start the server, deployments, Ray head and worker; print the addresses; wait for
    Ctrl-C or SIGTERM; stop what was started (each by its own session), last first."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.demo import prefect_console
    from flows.server import (
        drain_client_workers,
        start_server,
        terminate_as_interrupt,
        wait_healthy,
    )

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    temp = ray_temp_dir or _ray_temp_dir()
    with prefect_console(logging.WARNING), terminate_as_interrupt(), _stopping(temp) as started:
        server, api = start_server(home, port)
        started.append(("Prefect server", server))
        wait_healthy(api, server, home / "server.log")
        with temporary_settings({PREFECT_API_URL: api}):
            try:
                _start_rest(home, api, temp if ray else None, dashboard_port, num_cpus, poll_s,
                            started)
                pids = ", ".join(f"{what} {process.pid}" for what, process in started)
                print(f"[serve] sessions: {pids}; logs in {home}", flush=True)
                print(f"[serve] Prefect UI: {api.removesuffix('/api')}", flush=True)
                print("[serve] ready: Ctrl-C stops what serve started", flush=True)
                _wait_for_interrupt()
            finally:
                drain_client_workers()


def _start_rest(home: Path, api: str, ray_temp_dir: str | None, dashboard_port: int | None,
                num_cpus: int | None, poll_s: float, started: list[tuple[str, Any]]) -> None:
    """The work pool and deployments, the Ray head (unless `ray_temp_dir` is None), the worker."""
    from flows.server import free_port

    ensure_pool()
    names = register_deployments(local_deployments())
    print(f"[serve] deployments on work pool {POOL}: {', '.join(names)}", flush=True)
    env: dict[str, str] = {}
    if ray_temp_dir is not None:
        address, dashboard = start_ray_head(home, ray_temp_dir, dashboard_port or free_port(),
                                            num_cpus, started)
        env = {**ray_env(), "RAY_ADDRESS": address}
        print(f"[serve] Ray dashboard: {dashboard} (token: {env['RAY_AUTH_TOKEN_PATH']}; "
              f"cluster {address}; log {home / 'ray.log'})", flush=True)
    start_worker(home, api, env, poll_s, started)


@contextlib.contextmanager
def _stopping(ray_temp_dir: str) -> Iterator[list[tuple[str, Any]]]:
    """Yield a list to which started sessions are added; stop them, last first, at the end
    (the worker before the Ray its flow runs use, both before the server); then remove the
    Ray head's temp folder when it is the one serve made up."""
    from flows.server import stop

    started: list[tuple[str, Any]] = []
    try:
        yield started
    finally:
        for what, process in reversed(started):
            print(f"[serve] stopping the {what} (session {process.pid})", flush=True)
            if what == "Ray head":  # `ray start --block` stops Ray's processes on SIGTERM
                stop(process, first=signal.SIGTERM, group=False)
            else:
                stop(process)  # SIGINT to the process group
        if ray_temp_dir == _ray_temp_dir():
            shutil.rmtree(ray_temp_dir, ignore_errors=True)


def _ray_temp_dir() -> str:
    """A short folder for the Ray head's sockets (paths must stay under 107 bytes)."""
    base = os.environ.get("SIGNMAE_RAY_TMPDIR") or "/tmp"
    return str(Path(base) / f"sms-{os.getpid()}")


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[serve] interrupted: stopping", flush=True)


# ---- command line -------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    serve(Path(args.home), args.port, args.ray_dashboard_port, args.num_cpus, args.ray_temp_dir,
          args.poll_seconds, ray=not args.no_ray)
    return 0


def register(sub: Any, add_config_args: Callable[[Any], None]) -> None:
    """Add `signmae serve` to the CLI's subcommands."""
    p = sub.add_parser("serve", help="a local Prefect server, worker and Ray head with the "
                       "flows deployed; prints the UI addresses (Ctrl-C stops them)")
    p.add_argument("--home", default=str(DEFAULT_HOME),
                   help="the server's database and the logs (default: runs/serve)")
    p.add_argument("--port", type=int, help="Prefect server port (default: a free one)")
    p.add_argument("--ray-dashboard-port", type=int, help="default: a free port")
    p.add_argument("--num-cpus", type=int, help="CPUs of the Ray head (default: all)")
    p.add_argument("--ray-temp-dir", help="Ray's temp folder (keep it short)")
    p.add_argument("--poll-seconds", type=float, default=5.0,
                   help="how often the worker asks for scheduled flow runs")
    p.add_argument("--no-ray", action="store_true",
                   help="no Ray head: each flow run starts a local Ray of its own")
    p.set_defaults(func=cmd_serve)
