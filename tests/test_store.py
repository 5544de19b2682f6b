"""The artifact store: atomic outputs, stage records, skip/force, kill safety and locking."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from signmae_core.store import RECORD_NAME, ArtifactStore, StageRecord, StoreError

CODE_VERSION = 1


def toy_stage(store: ArtifactStore, items: list[str], config_hash: str, force: bool = False):
    """A minimal incremental stage: what the execute envelope does around a compute function."""
    inputs = {"items": ",".join(items)}
    done = store.read_record("ds", "toy", "v1")
    if not force and done is not None and done.matches(config_hash, CODE_VERSION, inputs):
        return done, 0
    computed = 0
    with store.open_stage(
        "ds", "toy", "v1", config_hash=config_hash, code_version=CODE_VERSION, inputs=inputs
    ) as writer:
        for item in items:
            rel = f"items/{item}.txt"
            if writer.exists(rel) and not force:
                writer.add_existing(rel)
                writer.counts["skipped"] += 1
                continue
            with writer.output(rel) as tmp:
                tmp.write_text(f"value of {item}\n")
            computed += 1
            writer.counts["ok"] += 1
        return writer.commit(), computed


def test_record_is_written_last_and_describes_the_outputs(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "root"))
    record, computed = toy_stage(store, ["a", "b"], "h1")
    assert computed == 2
    stage_dir = Path(store.stage_dir("ds", "toy", "v1"))
    saved = json.loads((stage_dir / RECORD_NAME).read_text())
    assert saved["stage"] == "toy" and saved["config_hash"] == "h1"
    assert saved["code_version"] == CODE_VERSION
    assert saved["counts"] == {"ok": 2}
    assert [o["path"] for o in saved["outputs"]] == ["items/a.txt", "items/b.txt"]
    assert saved["started_at"] <= saved["finished_at"]
    assert not list(stage_dir.rglob(".tmp-*"))
    assert store.versions("ds", "toy") == ["v1"]
    assert store.datasets() == ["ds"]


def test_rerun_skips_force_recomputes_and_changes_invalidate(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    first, _ = toy_stage(store, ["a", "b"], "h1")
    again, computed = toy_stage(store, ["a", "b"], "h1")
    assert computed == 0 and again == first
    forced, computed = toy_stage(store, ["a", "b"], "h1", force=True)
    assert computed == 2 and forced.finished_at != first.finished_at
    # new input: the record no longer matches; only the new item is computed
    grown, computed = toy_stage(store, ["a", "b", "c"], "h1")
    assert computed == 1 and grown.counts == {"ok": 1, "skipped": 2}
    # another config hash or code version does not match either
    assert not grown.matches("h2", CODE_VERSION, {"items": "a,b,c"})
    assert not grown.matches("h1", CODE_VERSION + 1, {"items": "a,b,c"})
    assert grown.matches("h1", CODE_VERSION, {"items": "a,b,c"})


def test_fingerprint_changes_with_outputs() -> None:
    base = dict(
        stage="s", dataset="d", version="v", config_hash="h", code_version=1,
        started_at="t0", finished_at="t1",
    )
    a = StageRecord(**base, outputs=[{"path": "x", "bytes": 1}])
    b = StageRecord(**base, outputs=[{"path": "x", "bytes": 2}])
    c = StageRecord(**{**base, "finished_at": "t2"}, outputs=[{"path": "x", "bytes": 1}])
    d = StageRecord(**{**base, "inputs": {"up": "other"}}, outputs=[{"path": "x", "bytes": 1}])
    e = StageRecord(**base, outputs=[{"path": "x", "bytes": 1, "sha256": "ab"}])
    assert a.fingerprint() != b.fingerprint() and a.fingerprint() != e.fingerprint()
    assert a.fingerprint() == c.fingerprint()  # timing is not content
    assert a.fingerprint() == d.fingerprint()  # same bytes written from other inputs


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    with store.open_stage("ds", "toy", "v1", config_hash="h", code_version=1) as writer:
        with pytest.raises(RuntimeError):
            with writer.output("items/x.txt") as tmp:
                tmp.write_text("half")
                raise RuntimeError("boom")
        assert not writer.exists("items/x.txt")
    assert store.read_record("ds", "toy", "v1") is None
    assert not list(Path(store.stage_dir("ds", "toy", "v1")).rglob(".tmp-*"))


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from signmae_core.store import ArtifactStore
    store = ArtifactStore({root!r})
    with store.open_stage("ds", "toy", "v1", config_hash="h1", code_version=1,
                          inputs={{"items": "a,b,c,d,e,f"}}) as writer:
        for item in "abcdef":
            with writer.output(f"items/{{item}}.txt") as tmp:
                with open(tmp, "w") as handle:
                    handle.write("partial ")
                    handle.flush()
                    print(item, flush=True)
                    time.sleep({pause})
                    handle.write("complete\\n")
            writer.counts["ok"] += 1
        writer.commit()
    """
)


def test_sigkill_mid_write_leaves_no_complete_looking_output_and_rerun_completes(
    tmp_path: Path,
) -> None:
    root = str(tmp_path / "root")
    script = WRITER_SCRIPT.format(tests=str(Path(__file__).parent), root=root, pause=0.3)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(3):  # let it finish two items and be in the middle of the third
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    store = ArtifactStore(root)
    assert store.read_record("ds", "toy", "v1") is None  # not complete
    items = Path(store.stage_dir("ds", "toy", "v1")) / "items"
    finals = sorted(p.name for p in items.iterdir() if not p.name.startswith(".tmp-"))
    assert finals == ["a.txt", "b.txt"]
    assert all(p.read_text() == "partial complete\n" for p in items.glob("[a-z].txt"))
    assert list(items.glob(".tmp-*"))  # the killed write is only a temporary file

    record, computed = toy_stage(store, list("abcdef"), "h1")
    assert computed == 4 and record.counts == {"ok": 4, "skipped": 2}
    assert not list(items.glob(".tmp-*"))


LOCK_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from signmae_core.store import ArtifactStore
    store = ArtifactStore({root!r})
    print("starting", flush=True)
    with store.lock("ds", "toy", "v1"):
        print("locked", flush=True)
        while len(sys.argv) > 2 and not os.path.exists(sys.argv[2]):
            time.sleep(0.01)
        for i in range(5):
            with open({log!r}, "a") as handle:
                handle.write(f"{{sys.argv[1]}} {{i}}\\n")
            time.sleep(0.2)
    """
)


def test_concurrent_writers_do_not_interleave(tmp_path: Path) -> None:
    """A holds the lock; B asks for it; only then does A write its lines: B must wait."""
    log, go = tmp_path / "log.txt", tmp_path / "go"
    script = LOCK_SCRIPT.format(root=str(tmp_path / "root"), log=str(log))
    first = subprocess.Popen([sys.executable, "-c", script, "A", str(go)],
                             stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None and first.stdout.readline().strip() == "starting"
    assert first.stdout.readline().strip() == "locked"
    second = subprocess.Popen([sys.executable, "-c", script, "B"], stdout=subprocess.PIPE,
                              text=True)
    assert second.stdout is not None and second.stdout.readline().strip() == "starting"
    go.touch()  # B is at (or past) its lock call while A writes, 0.2 s apart
    assert second.wait(timeout=60) == 0 and first.wait(timeout=60) == 0
    writers = [line.split()[0] for line in log.read_text().splitlines()]
    assert writers == ["A"] * 5 + ["B"] * 5


def test_second_writer_fails_clearly_after_timeout(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path), lock_timeout_s=0.3)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from signmae_core.store import ArtifactStore;"
            f"s = ArtifactStore({str(tmp_path)!r});"
            "cm = s.lock('ds', 'toy', 'v1'); cm.__enter__(); print('locked', flush=True);"
            "time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(StoreError, match="being written by another run"):
            with store.lock("ds", "toy", "v1"):
                pass
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    with store.lock("ds", "toy", "v1"):  # released by the kernel when the holder died
        pass


def test_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create store root"):
        ArtifactStore(str(blocker / "sub"))


def test_uri_roots_go_through_pyarrow_fs(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/uri-root")
    record, computed = toy_stage(store, ["a"], "h")
    assert computed == 1
    assert (tmp_path / "uri-root" / "ds" / "toy" / "v1" / "items" / "a.txt").exists()
    assert store.read_record("ds", "toy", "v1") == record


def test_relative_root_is_resolved_against_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("relative/root")
    assert store.base == str(tmp_path / "relative" / "root")
    toy_stage(store, ["a"], "h")
    assert (tmp_path / "relative/root/ds/toy/v1/_stage.json").exists()
