"""`signmae status` and `signmae gc` on a store built by hand: the data stages of ci_tiny (oracle
extraction) run twice with different mask settings. Status shows both mask versions, counts,
bytes and who made each; gc keeps the current versions and what they read, removes the old mask
version and what was made from it, and deletes nothing on a dry run."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli import main
from pipelines.dag import Plan
from pipelines.status_cmd import human_bytes
from signmae_core.config import load_config

STAGES = ["ingest", "decode", "extract", "masks", "shard", "shard_fields"]
OLD, NEW = "masks.dilation=1", "masks.dilation=2"


def _overrides(root: Path, *more: str) -> list[str]:
    return [f"store.root={root / 'store'}", f"datasets.0.root={root / 'synthetic'}",
            "extract.backend=oracle", *more]


def _args(root: Path, *more: str) -> list[str]:
    return ["-c", "ci_tiny", *[f"--set={o}" for o in _overrides(root, *more)]]


def _plan(root: Path, *more: str) -> Plan:
    return Plan.from_config(load_config("ci_tiny", _overrides(root, *more)))


def _files(folder: Path) -> dict[str, int]:
    """Every file under `folder` and its size, read from disk."""
    return {str(p.relative_to(folder)): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _du(folder: Path) -> int:
    return sum(os.path.getsize(Path(d) / f) for d, _, fs in os.walk(folder) for f in fs)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> dict[str, Any]:
    """Data stages with masks.dilation=1 (old), then masks and shard_fields again with
    masks.dilation=2 (new); the versions of both, read from the plans, and a pristine copy."""
    from signmae_core.synth import ensure_generated

    root = tmp_path_factory.mktemp("status")
    ensure_generated(root / "synthetic", load_config("ci_tiny", _overrides(root)).synth)
    assert main(["run", *STAGES, *_args(root, OLD)]) == 0
    assert main(["run", "masks", "shard_fields", *_args(root, NEW)]) == 0
    versions = {
        label: {r["stage"]: r["version"] for r in _plan(root, o).table()
                if r["dataset"] == "synthetic"}
        for label, o in (("old", OLD), ("new", NEW))
    }
    shutil.copytree(root / "store", root / "pristine", copy_function=shutil.copy2)
    return {"root": root, "versions": versions}


def _fresh(store: dict[str, Any], tmp_path: Path) -> Path:
    """A private copy of the built store (tests that delete do it there); returns its root."""
    shutil.copytree(store["root"] / "pristine", tmp_path / "store", copy_function=shutil.copy2)
    (tmp_path / "synthetic").symlink_to(store["root"] / "synthetic")
    return tmp_path


def test_status_shows_versions_counts_bytes_and_who_made_them(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    root, versions = store["root"], store["versions"]
    with open(root / "synthetic" / "labels.csv", newline="") as handle:
        clips = sum(1 for _ in csv.DictReader(handle))
    capsys.readouterr()
    assert main(["status", "--json", *_args(root, NEW)]) == 0
    rows = {f"{r['dataset']}/{r['stage']}": r for r in json.loads(capsys.readouterr().out)}
    for stage in STAGES:
        row = rows[f"synthetic/{stage}"]
        assert row["state"] == "done", row
        assert row["version"] == versions["new"][stage]
        folder = root / "store" / "synthetic" / stage / row["version"]
        assert row["bytes_on_disk"] == _du(folder) > 0
        assert row["made_by"].startswith("signmae run "), row["made_by"]
    assert rows["synthetic/ingest"]["ok"] == clips and rows["synthetic/ingest"]["failed"] == 0
    assert NEW in rows["synthetic/masks"]["made_by"]
    assert OLD in rows["synthetic/decode"]["made_by"]  # made by the first run, reused since
    for stage in ("masks", "shard_fields"):
        others = rows[f"synthetic/{stage}"]["other_versions"]
        assert [o["version"] for o in others] == [versions["old"][stage]]
        assert others[0]["complete"] and OLD in others[0]["made_by"]
    assert rows["synthetic/extract"]["other_versions"] == []
    assert rows["_train/pretrain"]["state"] == "will run"

    assert main(["status", *_args(root, NEW)]) == 0
    text = capsys.readouterr().out
    assert versions["old"]["masks"] in text and "superseded" in text


def test_gc_dry_run_lists_the_old_mask_version_and_deletes_nothing(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, old = _fresh(store, tmp_path), store["versions"]["old"]
    before = _files(root / "store")
    capsys.readouterr()
    assert main(["gc", *_args(root, NEW)]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[2] for line in out.splitlines() if line.startswith("would remove ")}
    assert listed == {f"synthetic/masks/{old['masks']}",
                      f"synthetic/shard_fields/{old['shard_fields']}"}
    assert "dry run" in out
    assert _files(root / "store") == before


def test_gc_apply_removes_superseded_versions_only(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, versions = _fresh(store, tmp_path), store["versions"]
    data = root / "store" / "synthetic"
    removed = {data / "masks" / versions["old"]["masks"],
               data / "shard_fields" / versions["old"]["shard_fields"]}
    locks = {  # the runs that wrote the removed versions held these
        root / "store" / "_locks" / f"synthetic__{stage}__{versions['old'][stage]}.lock"
        for stage in ("masks", "shard_fields")
    }
    assert all(lock.is_file() for lock in locks)
    expected = {k: v for k, v in _files(root / "store").items()
                if not any((root / "store" / k).is_relative_to(r) for r in removed)
                and root / "store" / k not in locks}
    freed = sum(_du(r) for r in removed)
    capsys.readouterr()
    assert main(["gc", "--apply", *_args(root, NEW)]) == 0
    out = capsys.readouterr().out
    assert not any(r.exists() for r in removed)
    assert not any(lock.exists() for lock in locks)  # no lock file left of a removed version
    assert _files(root / "store") == expected  # everything else byte for byte (sizes) in place
    assert f"removed 2 superseded version(s), {human_bytes(freed)}" in out
    plan = _plan(root, NEW)
    assert all(plan.state(plan.key(s, "synthetic")).done for s in STAGES)
    capsys.readouterr()
    assert main(["gc", *_args(root, NEW)]) == 0
    assert "would remove 0 superseded" in capsys.readouterr().out


def test_gc_keeps_a_pinned_mask_version_and_what_reads_it(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under `masks.version=<old>` the old masks are the plan's: the new ones are superseded."""
    root, versions = _fresh(store, tmp_path), store["versions"]
    capsys.readouterr()
    assert main(["gc", *_args(root, NEW, f"masks.version={versions['old']['masks']}")]) == 0
    listed = {line.split()[2] for line in capsys.readouterr().out.splitlines()
              if line.startswith("would remove ")}
    assert listed == {f"synthetic/masks/{versions['new']['masks']}",
                      f"synthetic/shard_fields/{versions['new']['shard_fields']}"}


def test_gc_keeps_what_a_kept_record_read_and_leaves_unknown_folders(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An extraction version that is not the plan's but that the plan's masks record read
    (its fingerprint is in that record's inputs) stays; an incomplete stray version goes; a
    folder of a dataset this config does not name is left alone."""
    root, versions = _fresh(store, tmp_path), store["versions"]
    data = root / "store" / "synthetic"
    current = versions["new"]["extract"]
    moved = data / "extract" / "feedbeef0000"  # the record read by masks, under another name
    shutil.copytree(data / "extract" / current, moved)
    record = json.loads((moved / "_stage.json").read_text())
    record["version"] = moved.name
    (moved / "_stage.json").write_text(json.dumps(record))
    fingerprint = Plan.from_config(load_config("ci_tiny", _overrides(root, NEW))).store \
        .read_record("synthetic", "extract", moved.name).fingerprint()
    masks_record = data / "masks" / versions["new"]["masks"] / "_stage.json"
    doc = json.loads(masks_record.read_text())
    doc["inputs"]["synthetic/extract"] = fingerprint
    masks_record.write_text(json.dumps(doc))
    stray = data / "decode" / "0000stray000"
    stray.mkdir()
    (stray / "part.bin").write_bytes(b"x" * 10)
    other = root / "store" / "elsewhere" / "ingest" / "abc"
    other.mkdir(parents=True)
    capsys.readouterr()
    assert main(["gc", *_args(root, NEW)]) == 0
    listed = {line.split()[2] for line in capsys.readouterr().out.splitlines()
              if line.startswith("would remove ")}
    assert f"synthetic/extract/{moved.name}" not in listed
    assert "synthetic/decode/0000stray000" in listed
    assert not any(item.startswith("elsewhere/") for item in listed)


def test_a_flow_run_is_recorded_as_the_maker(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    prefect_server: None,
) -> None:
    from prefect.client.orchestration import get_client

    from flows.pipeline import signmae_ingest

    root = tmp_path
    (root / "synthetic").symlink_to(store["root"] / "synthetic")
    state = signmae_ingest(config="ci_tiny", overrides=_overrides(root), downstream=False,
                           return_state=True)
    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(state.state_details.flow_run_id).name
    capsys.readouterr()
    assert main(["status", "--json", *_args(root)]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["stage"] == "ingest")
    assert row["provenance"]["flow_run_id"] == str(state.state_details.flow_run_id)
    assert row["made_by"] == f"flow run {name} ({state.state_details.flow_run_id})"
