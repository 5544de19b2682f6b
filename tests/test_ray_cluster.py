"""The data stages on a Ray cluster of two nodes, both on this machine.

A head (`ray start --head`, its own resource `signmae_node_a`) and a second node (`ray start
--address`, `signmae_node_b`), one CPU each, bound to 127.0.0.1, token authentication on as
`signmae serve` starts Ray, each with a temporary folder of its own and in a session of its own.
`signmae run ingest decode extract masks` on ci_tiny (oracle extraction) in a subprocess with
`RAY_ADDRESS` pointing at the head runs on that cluster. The work is read back from Ray's task
list (the dashboard's state API, with the token): every clip's probe, decode and extraction and
every extraction part's mask fields ran on this cluster, once, and the stages' work ran on both
nodes (the task list tells which node ran each call). At the end both nodes are stopped by their
sessions (never `ray stop`, which stops every Ray on the machine) and no process of theirs is
left.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_runs import cli_env, run_cli

from signmae_core.config import load_config

pytestmark = pytest.mark.slow

STAGES = ["ingest", "decode", "extract", "masks"]
NODES = {"signmae_node_a": "head", "signmae_node_b": "second"}  # each node's own resource
START_TIMEOUT_S = 120.0
# 240 clips (ci_tiny has 6) in 8 extraction part files: enough work that a stage outlasts a worker's
# start on the other node. Ray keeps short tasks (a probe or a tiny clip's decode, ~10 ms) on the
# worker that is already up, so they may all run on one node; long ones spread.
MORE = ["synth.classes=20", "synth.reps=6", "extract.clips_per_part=30"]


@dataclass
class Cluster:
    address: str  # the head, for RAY_ADDRESS
    dashboard: str
    token: str
    env: dict[str, str]  # token authentication, as for the nodes

    def api(self, path: str) -> Any:
        """GET `<dashboard><path>` with the token; the decoded JSON."""
        request = urllib.request.Request(
            f"{self.dashboard}{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def nodes(self) -> dict[str, str]:
        """node id -> which node (`head`, `second`) of the alive nodes, by their own resource."""
        rows = self.api("/api/v0/nodes?limit=100&detail=1")["data"]["result"]["result"]
        found = {}
        for row in rows:
            names = [NODES[r] for r in row.get("resources_total", {}) if r in NODES]
            if row["state"] == "ALIVE" and names:
                found[row["node_id"]] = names[0]
        return found

    def tasks(self) -> list[dict[str, Any]]:
        return self.api("/api/v0/tasks?limit=10000&detail=1")["data"]["result"]["result"]


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> Any:
    """`ray start --block ARGS` as the leader of a new session (stopped by that session)."""
    from flows.server import start_session

    ray = str(Path(sys.executable).with_name("ray"))
    return start_session([ray, "start", "--block", *args, "--disable-usage-stats"], env, log)


def _wait(ready: Any, processes: list[Any], what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            assert process.poll() is None, f"{what}: ray start exited:\n{tail}"
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not up within {START_TIMEOUT_S:.0f} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two Ray nodes on 127.0.0.1, one CPU each, token authentication on; stopped at the end."""
    from flows.server import free_port, session_pids, stop

    home = tmp_path_factory.mktemp("cluster")
    token_path = home / "auth_token"
    token_path.write_text(secrets.token_hex(16))
    env = cli_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    env.pop("RAY_ADDRESS", None)
    temps = [tempfile.mkdtemp(prefix="smc-", dir="/tmp") for _ in NODES]  # short: socket paths
    port, dashboard_port = free_port(), free_port()
    started = []
    try:
        head_log, second_log = home / "head.log", home / "second.log"
        head = (
            f"--head --node-ip-address 127.0.0.1 --port {port} --num-cpus 1 --include-dashboard"
            f" true --dashboard-host 127.0.0.1 --dashboard-port {dashboard_port}"
            f" --dashboard-agent-listen-port {free_port()} --ray-client-server-port {free_port()}"
            f" --temp-dir {temps[0]}"
        ).split()
        resources = ["--resources", json.dumps({"signmae_node_a": 1})]
        started.append(_ray_start([*head, *resources], env, head_log))
        address = f"127.0.0.1:{port}"
        made = Cluster(address, f"http://127.0.0.1:{dashboard_port}", token_path.read_text(), env)
        _wait(lambda: len(made.nodes()) == 1, started, "the head", [head_log])
        second = (
            f"--address {address} --node-ip-address 127.0.0.1 --num-cpus 1"
            f" --dashboard-agent-listen-port {free_port()} --temp-dir {temps[1]}"
        ).split()
        resources = ["--resources", json.dumps({"signmae_node_b": 1})]
        started.append(_ray_start([*second, *resources], env, second_log))
        both = [head_log, second_log]
        _wait(lambda: sorted(made.nodes().values()) == ["head", "second"], started, "both", both)
        yield made
    finally:
        for process in reversed(started):  # `ray start --block` stops its node on SIGTERM
            stop(process, first=signal.SIGTERM, group=False)
        left = {p.pid: session_pids(p.pid) for p in started}
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
        assert not any(left.values()), f"processes of the Ray nodes left: {left}"


def finished_tasks(cluster: Cluster, expected: dict[str, int]) -> list[dict[str, Any]]:
    """The cluster's finished tasks, once `expected` (task name -> how many at least) have all
    reached the task list (workers report their task events a moment after they finish)."""
    deadline = time.monotonic() + 60
    while True:
        tasks = [t for t in cluster.tasks() if t["state"] == "FINISHED"]
        counts = Counter(t["name"] for t in tasks)
        if all(counts[name] >= n for name, n in expected.items()):
            return tasks
        assert time.monotonic() < deadline, f"task list {dict(counts)}, expected {expected}"
        time.sleep(1)


def test_the_data_stages_run_on_both_nodes_of_a_cluster(cluster: Cluster, tmp_path: Path) -> None:
    from signmae_core.synth import ensure_generated

    data, store = tmp_path / "synthetic", tmp_path / "store"
    sets = [f"store.root={store}", f"datasets.0.root={data}", "extract.backend=oracle", *MORE]
    clips = ensure_generated(data, load_config("ci_tiny", sets).synth)["clips"]
    args = ["run", *STAGES, "-c", "ci_tiny", *[a for s in sets for a in ("--set", s)]]
    run_cli(args, cwd=tmp_path, env={**cluster.env, "RAY_ADDRESS": cluster.address})

    for stage in STAGES:
        assert list((store / "synthetic" / stage).glob("*/_stage.json")), stage
    parts = len(list((store / "synthetic" / "extract").glob("*/parts/*.parquet")))
    work = {
        "probe_task": clips,
        "decode_task": clips,
        "ExtractActor.extract": clips,
        "compute_part": parts,
    }  # ingest, decode, extract, masks: one call per item
    nodes = cluster.nodes()
    ran_on = {
        name: Counter(
            nodes.get(t["node_id"], "?") for t in finished_tasks(cluster, work) if t["name"] == name
        )
        for name in work
    }
    for name, count in work.items():  # every item's work ran on this cluster, once
        assert sum(ran_on[name].values()) == count, ran_on
    used = {node for counts in ran_on.values() for node in counts}
    assert used == {"head", "second"}, ran_on
