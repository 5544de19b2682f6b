"""The Prefect UI in a real headless browser, as a person would look at a finished run.

A Prefect server started as the demo starts it (`flows.server.temporary_server`: its UI told its
own API port), `signmae demo` on ci_tiny (oracle extraction) run against it in a subprocess (it
prints the run's UI address), then Debian's `chromium` renders that flow run page and the
evaluation report artifact's page. The assertions
are on the rendered text (`--dump-dom` after a virtual-time budget: the UI is a JavaScript app):
the flow run's name and state, the artifact's key and a metric from the report on disk.
Screenshots of both pages are saved in the test's tmp folder (`flow-run.png`, `report.png`).

Chromium comes from scripts/setup.sh (`apt-get install -y chromium` when run as root). Without
it the test skips on a developer's machine and fails under CI (`CI` set).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--virtual-time-budget=30000"]
REPORT_KEY = "signmae-evaluation-report"
COUNTS_KEY = "signmae-stage-counts"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        message = "chromium not found (scripts/setup.sh installs it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser test", pytrace=False)
        pytest.skip(message)
    return found


def render(chromium: str, url: str, out: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran, as visible text; a screenshot to `out`."""
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    subprocess.run([*common, f"--screenshot={out}", "--window-size=1400,1000", url],
                   capture_output=True, timeout=120, check=True)
    assert out.stat().st_size > 10_000, out  # a picture, not an empty page
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


def report_artifact(flow_run_id: UUID) -> tuple[Any, str, int]:
    """The report artifact the flow run made, the flow run's name and its number of task runs,
    read through the client once the server has recorded as completed every key of the run's
    stage-counts table (it records task run states from events, a moment after the run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        found = {key: [a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        ) if a.flow_run_id == flow_run_id] for key in (REPORT_KEY, COUNTS_KEY)}
        (counts,) = found[COUNTS_KEY]
        keys = len(json.loads(counts.data) if isinstance(counts.data, str) else counts.data)
        name = client.read_flow_run(flow_run_id).name
        deadline = time.monotonic() + 30
        while True:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = [t for t in tasks if t.state is not None and t.state.is_completed()]
            if len(done) == keys or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert len(done) == len(tasks) == keys > 0, [(t.name, t.state) for t in tasks]
    (artifact,) = found[REPORT_KEY]
    return artifact, name, keys


@pytest.mark.slow
def test_prefect_ui_shows_the_finished_run_and_renders_the_report_artifact(
    chromium: str, tmp_path: Path
) -> None:
    from flows.server import temporary_server

    overrides = [f"store.root={tmp_path}/artifacts", f"datasets.0.root={tmp_path}/data/synth",
                 "extract.backend=oracle"]
    ray_tmp = tempfile.mkdtemp(prefix="sbr-", dir="/tmp")  # its own Ray, short socket paths
    with temporary_server(tmp_path / "prefect") as api:
        # the demo against this server, in its own process (one Prefect client per process:
        # the test session may hold another server's); it prints the run's UI address
        env = {**os.environ, "PREFECT_API_URL": api, "SIGNMAE_RAY_TMPDIR": ray_tmp}
        demo = subprocess.run(
            [str(Path(sys.executable).parent / "signmae"), "demo", "--config", "ci_tiny",
             *[arg for o in overrides for arg in ("--set", o)]],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        shutil.rmtree(ray_tmp, ignore_errors=True)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        url = re.search(r"Prefect UI of this run: (\S+)", demo.stdout)
        assert url and url.group(1).startswith(api.removesuffix("/api")), demo.stdout[-2000:]
        flow_run_id = url.group(1).rsplit("/", 1)[1]
        artifact, name, tasks = report_artifact(UUID(flow_run_id))
        ui = api.removesuffix("/api")
        page = render(chromium, url.group(1), tmp_path / "flow-run.png", tmp_path / "chrome")
        report = render(chromium, f"{ui}/artifacts/artifact/{artifact.id}",
                        tmp_path / "report.png", tmp_path / "chrome")
    assert "Can't connect to Server API" not in page, page[:2000]
    assert name in page and "Completed" in page, page[:3000]
    (tmp_path / "flow-run.txt").write_text(page)
    shown = " ".join(page.split())
    assert f"{tasks} Task runs" in shown, (tasks, shown[:3000])  # its task runs, counted
    assert "signmae-pipeline" in shown, shown[:3000]  # the flow

    (version,) = [p.parent.name for p in
                  (tmp_path / "artifacts/_train/evaluate").glob("*/metrics.json")]
    metrics = json.loads((tmp_path / "artifacts/_train/evaluate" / version / "metrics.json")
                         .read_text())
    top1 = f"{metrics['per_instance']['top1']:.4f}"
    assert top1 in artifact.data  # the metric as the report writes it, from the file on disk
    (tmp_path / "report.txt").write_text(report)
    assert REPORT_KEY in report, report[:3000]
    assert top1 in report, (top1, report[:5000])
    print(f"screenshots: {tmp_path / 'flow-run.png'} {tmp_path / 'report.png'}")
