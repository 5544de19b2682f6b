"""The DAG plan: versions known before anything runs, states, damage, relocation, one envelope."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.dag import Plan
from pipelines.stages import STAGES
from signmae_core.config import load_config

REPO = Path(__file__).resolve().parents[1]
DATA_STAGES = ["ingest", "decode", "extract", "masks"]
STAGE_MODULES = sorted({spec.compute.split(":")[0].removeprefix("pipelines.")
                        for spec in STAGES if spec.compute})  # every stage's module


def _overrides(store: str, data: str) -> list[str]:
    return [f"store.root={store}", f"datasets.0.root={data}", "extract.backend=oracle"]


def _config(store: str | Path, data: str | Path):
    return load_config("ci_tiny", _overrides(str(store), str(data)))


def _states(plan: Plan) -> dict[str, str]:
    return {f"{r['dataset']}/{r['stage']}": r["state"] for r in plan.table()}


def _versions(plan: Plan) -> dict[str, str]:
    return {f"{r['dataset']}/{r['stage']}": r["version"] for r in plan.table()}


def _record_mtimes(root: Path) -> dict[Path, int]:
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("_stage.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> Path:
    """A folder `work/` holding `data/synthetic` and `artifacts/` after the data stages ran,
    run from inside `work/` with relative paths; returns `work/`."""
    work = tmp_path_factory.mktemp("plan") / "work"
    (work / "data").mkdir(parents=True)
    old = Path.cwd()
    os.chdir(work)
    try:
        assert main(["synth", "--out", "data/synthetic", "-c", "ci_tiny"]) == 0
        before = Plan.from_config(_config("artifacts", "data/synthetic"))
        planned = _versions(before)
        assert set(_states(before).values()) <= {"will run", "missing"}
        args = [f"--set={o}" for o in _overrides("artifacts", "data/synthetic")]
        assert main(["run", *DATA_STAGES, "-c", "ci_tiny", *args]) == 0
    finally:
        os.chdir(old)
    (work / "planned.json").write_text(json.dumps(planned))
    return work


def test_versions_planned_before_the_run_are_the_ones_it_writes(finished: Path) -> None:
    planned = json.loads((finished / "planned.json").read_text())
    for stage in DATA_STAGES:
        records = list((finished / "artifacts/synthetic" / stage).glob("*/_stage.json"))
        assert [r.parent.name for r in records] == [planned[f"synthetic/{stage}"]]
        assert json.loads(records[0].read_text())["version"] == planned[f"synthetic/{stage}"]
    after = Plan.from_config(_config(finished / "artifacts", finished / "data/synthetic"))
    assert _versions(after) == planned  # training versions do not wait for the data
    states = _states(after)
    assert all(states[f"synthetic/{s}"] == "done" for s in DATA_STAGES)
    assert states["_train/pretrain"] == "will run"


def test_relative_and_absolute_paths_give_the_same_versions(finished: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = Plan.from_config(_config(finished / "artifacts", finished / "data/synthetic"))
    monkeypatch.chdir(finished / "data")
    relative = Plan.from_config(_config("../artifacts", "synthetic"))
    assert _versions(relative) == _versions(absolute)
    assert _states(relative)["synthetic/masks"] == "done"


def test_a_run_from_another_directory_recomputes_nothing(finished: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = _record_mtimes(finished / "artifacts")
    args = [f"--set={o}" for o in _overrides(str(finished / "artifacts"),
                                             str(finished / "data/synthetic"))]
    assert main(["run", *DATA_STAGES, "-c", "ci_tiny", *args]) == 0
    assert _record_mtimes(finished / "artifacts") == before


def test_store_and_dataset_moved_together_keep_their_versions(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(finished, moved, symlinks=True)  # copy2: mtimes kept, as `mv` keeps them
    original = Plan.from_config(_config(finished / "artifacts", finished / "data/synthetic"))
    plan = Plan.from_config(_config(moved / "artifacts", moved / "data/synthetic"))
    assert _versions(plan) == _versions(original)
    assert all(plan.state(plan.key(s, "synthetic")).done for s in DATA_STAGES)
    before = _record_mtimes(moved / "artifacts")
    args = [f"--set={o}" for o in _overrides(str(moved / "artifacts"),
                                             str(moved / "data/synthetic"))]
    assert main(["run", *DATA_STAGES, "-c", "ci_tiny", *args]) == 0
    assert _record_mtimes(moved / "artifacts") == before
    assert capsys.readouterr().out.count("up to date") == len(DATA_STAGES)


def test_touched_sources_rerun_ingest_alone(finished: Path, tmp_path: Path) -> None:
    """A copy or checkout that gives every video a new mtime (same bytes) reruns ingest, which
    hashes the touched files, keeps their rows and writes the same manifest: nothing below it
    reruns."""
    work = tmp_path / "w"
    shutil.copytree(finished, work, symlinks=True)
    cfg = _config(work / "artifacts", work / "data/synthetic")
    args = [f"--set={o}" for o in _overrides(str(work / "artifacts"), str(work / "data/synthetic"))]
    # the copy's manifest still names the videos where they were made (`uri`): refresh it first
    assert main(["run", "ingest", "--force", "-c", "ci_tiny", *args]) == 0
    assert main(["run", *DATA_STAGES, "-c", "ci_tiny", *args]) == 0
    videos = sorted(p for p in (work / "data/synthetic").rglob("*.mp4"))
    assert videos
    for video in videos:
        os.utime(video, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    plan = Plan.from_config(cfg)
    ingest = plan.state(plan.key("ingest", "synthetic"))
    assert (ingest.kind, ingest.why) == ("stale", "input changed: sources")
    manifest = Path(plan.folder(plan.key("ingest", "synthetic"))) / "videos.parquet"
    manifest_bytes = manifest.read_bytes()
    downstream = {p: p.stat().st_mtime_ns for p in (work / "artifacts").rglob("_stage.json")
                  if "/ingest/" not in p.as_posix()}
    assert main(["run", *DATA_STAGES, "-c", "ci_tiny", *args]) == 0
    after = Plan.from_config(cfg)
    counts = after.record(after.key("ingest", "synthetic")).counts
    assert (counts["probed"], counts["touched"]) == (0, counts["ok"])
    assert manifest.read_bytes() == manifest_bytes
    assert {p: p.stat().st_mtime_ns for p in downstream} == downstream
    assert all(after.state(after.key(s, "synthetic")).done for s in DATA_STAGES)


def test_a_truncated_clip_is_found_damaged_and_only_it_is_redone(
    finished: Path, tmp_path: Path
) -> None:
    work = tmp_path / "w"
    shutil.copytree(finished, work, symlinks=True)
    cfg = _config(work / "artifacts", work / "data/synthetic")
    clips = sorted((Path(Plan.from_config(cfg).folder(
        Plan.from_config(cfg).key("decode", "synthetic"))) / "clips").glob("*.smclip"))
    victim = clips[1]
    others = {p: p.stat().st_mtime_ns for p in clips if p != victim}
    victim.write_bytes(victim.read_bytes()[:-100])

    plan = Plan.from_config(cfg)
    state = plan.state(plan.key("decode", "synthetic"))
    assert state.kind == "damaged" and state.damaged == [f"clips/{victim.name}"]
    with pytest.raises(Exception, match="damaged.*signmae run decode --dataset synthetic"):
        plan.output("decode", "synthetic")

    args = [f"--set={o}" for o in _overrides(str(work / "artifacts"), str(work / "data/synthetic"))]
    assert main(["run", "decode", "-c", "ci_tiny", *args]) == 0
    after = Plan.from_config(cfg)
    assert after.state(after.key("decode", "synthetic")).done
    assert victim.read_bytes()[-2:] == b"\xff\xd9"  # a whole JPEG again at the end
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert after.record(after.key("decode", "synthetic")).counts["decoded"] == 1
    # the clip table now holds the repaired clip's new timing, so extraction checks again; it
    # reuses every part (the clip's bytes are the same) and masks, reading those, stay done
    assert after.state(after.key("extract", "synthetic")).kind == "stale"
    masks_record = Path(after.folder(after.key("masks", "synthetic"))) / "_stage.json"
    stamp = masks_record.stat().st_mtime_ns
    assert main(["run", "extract", "masks", "-c", "ci_tiny", *args]) == 0
    final = Plan.from_config(cfg)
    assert final.record(final.key("extract", "synthetic")).counts["extracted"] == 0
    assert final.state(final.key("masks", "synthetic")).done
    assert masks_record.stat().st_mtime_ns == stamp


def test_verify_finds_a_changed_byte_the_size_check_cannot(finished: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    work = tmp_path / "w"
    shutil.copytree(finished, work, symlinks=True)
    cfg = _config(work / "artifacts", work / "data/synthetic")
    plan = Plan.from_config(cfg)
    manifest = Path(plan.folder(plan.key("ingest", "synthetic"))) / "videos.parquet"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))
    args = [f"--set={o}" for o in _overrides(str(work / "artifacts"), str(work / "data/synthetic"))]
    assert main(["plan", "--json", "-c", "ci_tiny", *args]) == 0
    rows = {r["stage"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ingest"]["state"] == "done"
    assert main(["plan", "--json", "--verify", "-c", "ci_tiny", *args]) == 0
    rows = {r["stage"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ingest"]["state"] == "damaged" and "videos.parquet" in rows["ingest"]["why"]


def test_a_grown_dataset_keeps_its_versions_and_only_new_work_runs(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "w"
    shutil.copytree(finished, work, symlinks=True)
    data = work / "data/synthetic"
    labels = (data / "labels.csv").read_text().splitlines()
    assert labels[0].startswith("path,")
    path, *rest = labels[1].split(",")
    shutil.copy2(data / path, data / "videos" / "extra.mp4")
    (data / "labels.csv").write_text("\n".join([*labels, ",".join(["videos/extra.mp4", *rest])]))

    cfg = _config(work / "artifacts", data)
    plan = Plan.from_config(cfg)
    original = Plan.from_config(_config(finished / "artifacts", finished / "data/synthetic"))
    assert _versions(plan) == _versions(original)
    state = plan.state(plan.key("ingest", "synthetic"))
    assert state.kind == "stale" and "sources" in state.why
    args = [f"--set={o}" for o in _overrides(str(work / "artifacts"), str(data))]
    assert main(["run", "decode", "-c", "ci_tiny", *args]) == 2  # it would read a stale manifest
    assert "ingest for synthetic is stale" in capsys.readouterr().err
    assert main(["run", "ingest", "decode", "-c", "ci_tiny", *args]) == 0
    after = Plan.from_config(cfg)
    decode = after.record(after.key("decode", "synthetic"))
    assert decode.counts["ok"] == 7 and decode.counts["decoded"] == 1
    assert decode.counts["skipped"] == 6
    assert after.state(after.key("extract", "synthetic")).kind == "stale"


def test_runtime_fields_leave_versions_alone_and_output_fields_change_them_downstream() -> None:
    base = _versions(Plan.from_config(_config("/s", "/d")))
    runtime = load_config("ci_tiny", _overrides("/other", "/elsewhere") + [
        "decode.max_in_flight=3", "decode.timeout_s=5", "extract.num_workers=1",
        "extract.clips_per_part=2", "ingest.max_in_flight=1", "pretrain.device=cpu",
        "pretrain.num_workers=2", "pretrain.loader_threads=0", "finetune.log_every=1",
        "evaluate.device=cpu", "ray.num_cpus=1", "store.lock_timeout_s=1", "shard.workers=1",
    ])
    assert _versions(Plan.from_config(runtime)) == base
    changed = _versions(Plan.from_config(
        load_config("ci_tiny", _overrides("/s", "/d") + ["decode.size=48"])))
    same = {k for k in base if base[k] == changed[k]}
    assert same == {"synthetic/ingest"}


def test_no_stage_module_imports_another_stage_module() -> None:
    for name in STAGE_MODULES:
        tree = ast.parse((REPO / "pipelines" / f"{name}.py").read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1 and not module:
                    imported |= {a.name for a in node.names}
                imported.add(module.removeprefix("pipelines.").lstrip("."))
            elif isinstance(node, ast.Import):
                imported |= {a.name.removeprefix("pipelines.") for a in node.names}
        others = (imported & set(STAGE_MODULES)) - {name}
        assert not others, f"pipelines/{name}.py imports stage module(s) {others}"


def test_no_function_in_pipelines_is_longer_than_60_lines() -> None:
    long = []
    for path in sorted((REPO / "pipelines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{path.name}:{node.name} ({length} lines)")
    assert not long, long


def test_plan_and_a_bad_run_start_no_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.dag import Stage

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stage was loaded (Ray would start)")

    monkeypatch.setattr(Stage, "load", refuse)
    monkeypatch.chdir(tmp_path)
    args = [f"--set={o}" for o in _overrides("artifacts", "data/synthetic")]
    assert main(["plan", "-c", "ci_tiny", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("will run") == 10 and "missing" not in out  # every stage is implemented
    assert main(["run", "nosuchstage", "-c", "ci_tiny", *args]) == 2
    assert "unknown stage 'nosuchstage'" in capsys.readouterr().err
    assert main(["run", "decode", "-c", "ci_tiny", *args]) == 2  # ingest has not run
    err = capsys.readouterr().err
    assert "no ingest output for dataset synthetic" in err and "completed versions: none" in err
    assert "run `signmae run ingest --dataset synthetic` first" in err


def test_an_encoder_file_named_two_ways_gives_one_finetune_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = load_config("ci_tiny", _overrides("/s", "/d") + ["finetune.init_encoder=e/x.st"])
    absolute = load_config("ci_tiny", _overrides("/s", "/d") + [
        f"finetune.init_encoder={tmp_path}/e/x.st"])
    scratch = load_config("ci_tiny", _overrides("/s", "/d") + ["finetune.init_encoder=scratch"])
    versions = [Plan.from_config(c).version(Plan.from_config(c).key("finetune"))
                for c in (relative, absolute, scratch)]
    assert versions[0] == versions[1] != versions[2]
    assert Plan.from_config(relative).cfg.finetune.init_encoder == f"{tmp_path}/e/x.st"
