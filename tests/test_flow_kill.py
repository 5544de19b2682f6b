"""Reliability of a flow run: killed for real in the middle of extraction, then run again.

- The `signmae-pipeline` flow (ingest, decode, extract on ci_tiny, oracle extraction, two clips
  per part file) runs in a subprocess against a Prefect server on 127.0.0.1 with its own local
  Ray; `tests/cli_runs.py` stops it after the third extracted clip (one part file written, one
  clip held in memory, the others in flight) and SIGKILLs it there.
- Run again, the flow completes: ingest and decode are reused, extraction keeps the part file
  it finished and extracts only the rest. Its rows equal those of an uninterrupted flow run
  (content digests, the columns that time the run left out, as tests/test_golden_outputs.py
  does), each clip once; no temporary file is left and the record lists exactly the files on
  disk; the killed run's Ray processes are gone.
- Ray work lost with its worker is transient for the masks stage (`WorkLost`, retried by the
  flows) while a task that raises is not (`InputError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_runs import cli_env, flow_args, kill_at, run_cli
from test_golden_outputs import VOLATILE_COLUMNS

from signmae_core.config import load_config

STAGES = ["ingest", "decode", "extract"]
CLIPS_PER_PART = 2
KILL_AFTER = 3  # extracted clips: one part file finished, one clip in the next


# ---- a Prefect server, the data, an uninterrupted run --------------------------------------------
@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server on 127.0.0.1 for the flow runs of this module's subprocesses (this
    process is not pointed at it); stopped with its session at the end."""
    from flows.server import start_server, stop, wait_healthy

    home = tmp_path_factory.mktemp("prefect")
    process, api = start_server(home)
    try:
        wait_healthy(api, process, home / "server.log")
        yield api
    finally:
        stop(process)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ci_tiny's synthetic signer, made once."""
    from signmae_core.synth import ensure_generated

    root = tmp_path_factory.mktemp("kill-data") / "synthetic"
    ensure_generated(root, load_config("ci_tiny", [f"datasets.0.root={root}"]).synth)
    return root


def overrides(store: Path, data: Path) -> list[str]:
    return [
        f"store.root={store}",
        f"datasets.0.root={data}",
        "extract.backend=oracle",
        f"extract.clips_per_part={CLIPS_PER_PART}",
    ]


def flow_env(api: str, ray_tmp: str) -> dict[str, str]:
    """The subprocess's environment: the Prefect server, and a local Ray of its own whose
    temporary folder (`ray_tmp`, short: socket paths) no other Ray on the machine uses."""
    env = cli_env(PREFECT_API_URL=api, SIGNMAE_RAY_TMPDIR=ray_tmp)
    env.pop("RAY_ADDRESS", None)
    return env


@contextlib.contextmanager
def short_temp_dir() -> Iterator[str]:
    """A folder under /tmp for a Ray's temporary files (short: its socket paths), removed after."""
    path = tempfile.mkdtemp(prefix="smk-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(prefect_api: str, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store of an uninterrupted flow run."""
    root = tmp_path_factory.mktemp("reference")
    with short_temp_dir() as ray_tmp:
        run_cli(
            flow_args(config="ci_tiny", overrides=overrides(root / "store", data), stages=STAGES),
            cwd=root,
            env=flow_env(prefect_api, ray_tmp),
        )
    return root / "store"


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    with short_temp_dir() as path:
        yield path


# ---- reading the outputs back -----------------------------------------------------------------
def version_folders(store: Path, stage: str) -> list[Path]:
    return sorted(p for p in (store / "synthetic" / stage).iterdir() if p.is_dir())


def extract_rows(store: Path) -> tuple[list[str], str]:
    """(video ids in file order over every part file, a digest of the rows' content) of the one
    extraction version in `store`. The digest is the sha256 of the rows sorted by video id, the
    columns that time the run left out, as one Arrow IPC stream (NaN compares by its bytes)."""
    (folder,) = version_folders(store, "extract")
    tables = [pq.read_table(part) for part in sorted((folder / "parts").glob("*.parquet"))]
    table = pa.concat_tables(tables)
    ids = table.column("video_id").to_pylist()
    table = table.select([c for c in table.column_names if c not in VOLATILE_COLUMNS])
    table = table.sort_by("video_id").combine_chunks().replace_schema_metadata(None)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return ids, hashlib.sha256(sink.getvalue()).hexdigest()


def files_on_disk(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def processes_using(path: str) -> list[int]:
    """Processes whose command line names `path` (a Ray's temporary folder), from /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if path.encode() in entry.read_bytes():
                found.append(int(entry.parent.name))
        except OSError:
            continue
    return found


def wait_gone(path: str, timeout_s: float = 30.0) -> list[int]:
    """Wait until no process names `path`; returns those left after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (left := processes_using(path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


# ---- the tests -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_flow_killed_mid_extraction_completes_on_rerun_with_the_same_outputs(
    prefect_api: str, data: Path, reference: Path, tmp_path: Path, ray_tmp: str
) -> None:
    store = tmp_path / "store"
    env = flow_env(prefect_api, ray_tmp)
    clips = len((data / "labels.csv").read_text().strip().splitlines()) - 1
    args = flow_args(config="ci_tiny", overrides=overrides(store, data), stages=STAGES)
    # ingest and decode update their progress once per clip: then the extracted clips count
    seen = kill_at(args, f"progress:{2 * clips + KILL_AFTER}", cwd=tmp_path, env=env)
    assert sum(seen["counts"].values()) == KILL_AFTER, seen

    # killed in the middle of extraction: decode done, one part file of extraction finished
    (decode,) = version_folders(store, "decode")
    assert (decode / "_stage.json").is_file()
    (extract,) = version_folders(store, "extract")
    assert not (extract / "_stage.json").exists()
    finished = sorted(p.name for p in (extract / "parts").glob("*.parquet"))
    assert finished == ["part-00000.parquet"], finished
    kept_part = (extract / "parts" / finished[0]).read_bytes()
    records = {p: p.stat().st_mtime_ns for p in store.rglob("_stage.json")}
    left = wait_gone(ray_tmp)
    assert not left, f"the killed flow run's Ray processes are still running: {left}"

    run_cli(args, cwd=tmp_path, env=env)

    # the rerun reused ingest and decode (records untouched) and the finished part file
    for path, mtime in records.items():
        assert path.stat().st_mtime_ns == mtime, path
    record = json.loads((extract / "_stage.json").read_text())
    assert record["counts"]["skipped"] == CLIPS_PER_PART  # clips of the kept part, not redone
    assert record["counts"]["ok"] == clips
    assert (extract / "parts" / finished[0]).read_bytes() == kept_part
    # the outputs equal an uninterrupted run's, each clip once
    ids, digest = extract_rows(store)
    ref_ids, ref_digest = extract_rows(reference)
    assert len(ids) == len(set(ids)) == clips
    assert sorted(ids) == sorted(ref_ids)
    assert digest == ref_digest
    # nothing left over: one version per stage, no temporary files, the record names every file
    for stage in STAGES:
        assert len(version_folders(store, stage)) == 1, stage
    leftovers = [p for p in store.rglob("*") if p.name.startswith((".tmp", "tmp-"))]
    assert not leftovers, leftovers
    listed = {entry["path"] for entry in record["outputs"]}
    assert files_on_disk(extract) - {"_stage.json"} == listed


def test_lost_mask_workers_are_transient_and_a_raising_task_is_not(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_mask_stage import STAGES as MASK_DAG
    from test_mask_stage import config, first_parts, write_extraction

    from flows.pipeline import is_transient
    from pipelines import masks as mask_stage
    from pipelines.dag import Plan
    from pipelines.execute import execute
    from pipelines.ray_runtime import WorkLost
    from signmae_core.errors import InputError

    cfg = config(tmp_path / "store")
    write_extraction(Plan(cfg, MASK_DAG), first_parts())

    def dies(*args: Any) -> None:  # a local function travels to the workers by value
        os._exit(1)

    def raises(*args: Any) -> None:
        raise ValueError("a bug in the task")

    monkeypatch.setattr(mask_stage, "compute_part", dies)
    plan = Plan(cfg, MASK_DAG)
    with pytest.raises(WorkLost, match="could not be computed") as lost:
        execute(plan, plan.key("masks"))
    assert is_transient(lost.value)  # a flow retries it

    monkeypatch.setattr(mask_stage, "compute_part", raises)
    plan = Plan(cfg, MASK_DAG)
    with pytest.raises(InputError, match="a bug in the task") as real:
        execute(plan, plan.key("masks"))
    assert not is_transient(real.value)
