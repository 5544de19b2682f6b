"""`signmae serve` and `prefect.yaml`, tested from outside as a user runs them.

- prefect.yaml: every flow of flows/pipeline.py and flows/study.py has a deployment on the
  process pool, every entrypoint loads with Prefect's own loader, and the Kubernetes work-pool
  templates in infra/prefect/ pass the validation Prefect's server applies to
  `--base-job-template`.
- `signmae serve` in a subprocess (its own HOME, PREFECT_HOME and Ray temp folder, free ports):
  `prefect deployment run 'signmae-masks/local'` with new mask settings completes through the
  worker; its task runs show ingest/decode/extract "Skipped" and masks "Completed" with a new
  version, which the stage records on disk confirm; the flow run's Ray driver is on serve's Ray
  head, whose dashboard answers 401 without the token and 200 with it; SIGINT stops serve and
  every process it started (each pid seen while it ran is gone afterwards).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BEFORE_MASKS = ["ingest", "decode", "extract"]  # reused by a mask recompute, never rerun
DATASET = "synthetic"
READY_TIMEOUT_S = 150.0


# ---- prefect.yaml and the work-pool templates ----------------------------------------------------
def local_specs() -> list[dict[str, Any]]:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return [d for d in spec["deployments"] if d["work_pool"]["name"] == "signmae-local"]


def test_prefect_yaml_has_a_loadable_deployment_per_flow() -> None:
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    import flows.pipeline as pipeline
    import flows.study as study

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    modules = {"flows/pipeline.py": pipeline, "flows/study.py": study}
    flows = {getattr(module, n).name for module in modules.values() for n in dir(module)
             if isinstance(getattr(module, n), Flow)}
    assert {"signmae-pipeline", "signmae-masks", "signmae-study"} <= flows
    deployed: set[str] = set()
    for deployment in spec["deployments"]:
        path, _, func = deployment["entrypoint"].partition(":")
        assert path in modules and func, deployment
        loaded = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        assert loaded.name == getattr(modules[path], func).name
        assert deployment["work_pool"]["name"] in {"signmae-local", "signmae-k8s"}
        if deployment["work_pool"]["name"] == "signmae-local":
            deployed.add(loaded.name)
    assert deployed == flows, sorted(flows ^ deployed)  # every flow deployed, nothing else
    names = [(d["entrypoint"], d["name"]) for d in spec["deployments"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("template", ["k8s-work-pool.json", "k8s-gpu-work-pool.json"])
def test_kubernetes_work_pool_templates_pass_prefects_validation(template: str) -> None:
    from prefect.server.schemas.actions import WorkPoolCreate

    base = json.loads((REPO / "infra/prefect" / template).read_text())
    assert {"job_configuration", "variables"} <= set(base)
    pool = WorkPoolCreate(name="signmae-k8s", type="kubernetes", base_job_template=base)
    manifest = pool.base_job_template["job_configuration"]["job_manifest"]
    assert manifest["kind"] == "Job" and manifest["apiVersion"] == "batch/v1"
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "{{ image }}" and container["args"] == "{{ command }}"
    env = base["variables"]["properties"]["env"]["default"]
    assert "RAY_ADDRESS" in env  # stages find their cluster through it


# ---- processes, read from /proc ------------------------------------------------------------------
def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every live (non-zombie) process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(stat.parent.name)] = (int(fields[1]), fields[19])
    return table


def descendants(root: int) -> dict[int, str]:
    """Every live process under `root` (children, their children, ...): pid -> start time."""
    table = process_table()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def still_alive(seen: dict[int, str]) -> list[int]:
    table = process_table()
    return [pid for pid, start in seen.items() if pid in table and table[pid][1] == start]


# ---- serve in a subprocess -----------------------------------------------------------------------
class Served:
    """A running `signmae serve` and the addresses it printed."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir()
        self.ray_tmp = tempfile.mkdtemp(prefix="sst-", dir="/tmp")  # socket paths stay short
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "RAY_"))}
        env.update(HOME=str(self.home), PREFECT_HOME=str(root / "prefect-client"),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", RAY_USAGE_STATS_ENABLED="0")
        self.env = env
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(VENV_BIN / "signmae"), "serve", "--home", str(root / "serve"), "--num-cpus", "1",
             "--poll-seconds", "1", "--ray-temp-dir", self.ray_tmp],
            env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not any("[serve] ready" in line for line in self.lines):
            assert self.process.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, "\n".join(self.lines)
            time.sleep(0.2)

    def printed(self, pattern: str) -> str:
        text = "\n".join(self.lines)
        match = re.search(pattern, text)
        assert match, f"{pattern!r} not in:\n{text}"
        return match.group(1)

    @property
    def api(self) -> str:
        return self.printed(r"Prefect UI: (http://127\.0\.0\.1:\d+)") + "/api"

    @property
    def dashboard(self) -> str:
        return self.printed(r"Ray dashboard: (http://127\.0\.0\.1:\d+)")

    @property
    def token(self) -> str:
        return Path(self.printed(r"\(token: ([^;]+);")).read_text().strip()


def http_get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def prepare_tiny(root: Path) -> list[str]:
    """ci_tiny (oracle extraction) under `root` with its data stages done, in this process."""
    from pipelines.runner import run_stages
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_generated

    overrides = [f"store.root={root}/artifacts", f"datasets.0.root={root}/data/synthetic",
                 "extract.backend=oracle"]
    cfg = load_config("ci_tiny", overrides)
    ensure_generated(Path(cfg.datasets[0].root), cfg.synth)
    run_stages(cfg, [*BEFORE_MASKS, "masks"])
    return overrides


def versions(root: Path, stage: str) -> dict[str, float]:
    """Version folders of a stage with a record, and the record's modification time."""
    return {p.parent.name: p.stat().st_mtime for p in
            (root / "artifacts" / DATASET / stage).glob("*/_stage.json")}


def flow_run_tasks(api: str, deployment: str) -> tuple[Any, dict[str, Any]]:
    """The deployment's one flow run and its task runs by name, read through the client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        (run,) = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id]))
        )
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    return run, {t.name: t for t in tasks}


@pytest.mark.slow
def test_serve_runs_a_mask_recompute_shows_ray_with_its_token_and_stops_all_it_started(
    tmp_path: Path, ray_local: None
) -> None:
    served = Served(tmp_path)
    started: dict[int, str] = {}
    try:
        overrides = prepare_tiny(tmp_path)  # while serve starts
        masks_before = versions(tmp_path, "masks")
        kept = {s: versions(tmp_path, s) for s in BEFORE_MASKS}
        served.wait_ready()
        started.update(descendants(served.process.pid))
        assert len(started) >= 5, started  # server, worker, Ray head and Ray's own processes

        # (b) Ray's dashboard keeps token authentication on
        assert http_get(f"{served.dashboard}/api/version")[0] == 401
        status, body = http_get(f"{served.dashboard}/api/version", served.token)
        assert status == 200 and json.loads(body)["ray_version"]
        assert http_get(f"{served.dashboard}/api/version", "not-the-token")[0] in (401, 403)

        # (a) the one command of a mask recompute, through the deployment and the worker
        params = ["--param", "config=ci_tiny", "--param", "downstream=false", "--param",
                  "overrides=" + json.dumps([*overrides, "masks.dilation=1"])]
        ran = subprocess.run(
            [str(VENV_BIN / "prefect"), "deployment", "run", "signmae-masks/local", *params,
             "--watch", "--watch-timeout", "120"],
            env={**served.env, "PREFECT_API_URL": served.api}, capture_output=True, text=True,
            timeout=180,
        )
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        run, tasks = flow_run_tasks(served.api, "signmae-masks/local")
        assert run.state.type.value == "COMPLETED", run.state
        assert sorted(tasks) == [f"{DATASET}/{s}" for s in sorted([*BEFORE_MASKS, "masks"])]
        for stage in BEFORE_MASKS:
            assert tasks[f"{DATASET}/{stage}"].state.name == "Skipped", stage
            assert versions(tmp_path, stage) == kept[stage]  # records read, not rewritten
        masks = tasks[f"{DATASET}/masks"].state
        assert masks.type.value == "COMPLETED" and masks.name == "Completed", masks
        (new,) = set(versions(tmp_path, "masks")) - set(masks_before)
        assert new in masks.message, masks.message
        record = json.loads((tmp_path / "artifacts" / DATASET / "masks" / new / "_stage.json")
                            .read_text())
        assert record["counts"]["ok"] == 6, record["counts"]

        # the flow run was a driver on serve's Ray head
        status, body = http_get(f"{served.dashboard}/api/jobs/", served.token)
        assert status == 200 and any(job["type"] == "DRIVER" for job in json.loads(body)), body

        # (c) Ctrl-C stops serve and every process it started
        started.update(descendants(served.process.pid))
        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(60) == 0, "\n".join(served.lines)
        left = still_alive(started)
        assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in left]
        assert not _answers(served.api)  # the server is gone too
    finally:  # a failed test leaves nothing running either
        if served.process.poll() is None:
            started.update(descendants(served.process.pid))
            served.process.send_signal(signal.SIGINT)
            served.process.wait(60)
        for pid in still_alive(started):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(served.ray_tmp, ignore_errors=True)


def _answers(api: str) -> bool:
    try:
        urllib.request.urlopen(f"{api}/health", timeout=2).close()
    except OSError:
        return False
    return True
