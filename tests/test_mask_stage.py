"""The masks stage on the plan: fields per clip, reruns skip, a killed run resumes (also when
killed for real, in a subprocess), a damaged field file is redone alone, a grown extraction
updates the version in place, new settings make a new version beside the old one, and
single-stage recompute leaves decode and extraction untouched."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_runs import cli_env, copy_store, kill_at, make_tiny_data

from pipelines import masks as mask_stage
from pipelines import outputs
from pipelines.dag import DAMAGED, DONE, STALE, Plan, Stage, StageKey
from pipelines.execute import execute
from signmae_core.config import PipelineConfig, load_config
from signmae_core.errors import InputError
from signmae_core.extract.schema import empty_extraction, failed_row, ok_row, write_part
from signmae_core.masking import FIELD_NAMES, FieldParams, compute_fields
from signmae_core.masking.storage import METADATA_KEY

CLIP = 64  # stored clip size in pixels
SEG = 32  # part map size

# A two-stage DAG: a hand-made extraction output (never computed here) and the real masks stage.
STAGES = [
    Stage("extract", (), 1, ("extract",), True, "tests.test_mask_stage:never_run", "hand-made"),
    Stage("masks", ("extract",), 1, ("masks",), True, "pipelines.masks:compute", "fields"),
]


def never_run(ctx: Any) -> None:
    raise AssertionError("the hand-made extraction output is never recomputed")


def handmade_clip(video_id: str, shift: int):
    """A ClipExtraction with a left hand walking right and a still right hand (8 frames)."""
    clip = empty_extraction(video_id, 8, (SEG, SEG))
    clip.clip_width = clip.clip_height = CLIP
    clip.part_maps[:, SEG // 2 :, :] = 1  # body
    for t in range(8):
        x = shift + 2 * t  # part-map pixels
        clip.part_maps[t, 20:24, x : x + 4] = 3
        clip.part_maps[t, 20:24, 24:28] = 4
        u = (x + np.linspace(0, 4, 21)) / SEG
        v = np.linspace(20, 24, 21) / SEG
        clip.left_hand[t, :, 0], clip.left_hand[t, :, 1], clip.left_hand[t, :, 2] = u, v, 0
        clip.right_hand[t, :, 0] = (24 + np.linspace(0, 4, 21)) / SEG
        clip.right_hand[t, :, 1], clip.right_hand[t, :, 2] = v, 0
    return clip


def expected_fields(clip: Any, cfg: PipelineConfig) -> np.ndarray:
    """The fields of one hand-made clip, computed directly (not through the stage)."""
    points = clip.hands[..., :2].astype(np.float64) * CLIP
    return compute_fields(
        clip.part_maps, points[:, 0], points[:, 1], (CLIP, CLIP), FieldParams.from_config(cfg.masks)
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[Path, tuple[int, str]]:
    """Every file under a folder with its modification time and checksum."""
    return {p: (p.stat().st_mtime_ns, sha(p)) for p in sorted(folder.rglob("*")) if p.is_file()}


def config(store: Path, *overrides: str) -> PipelineConfig:
    return load_config(None, [f"store.root={store}", "decode.size=64", *overrides])


def write_extraction(plan: Plan, parts: dict[str, list[dict[str, Any]] | None]) -> Path:
    """(Re)write the hand-made extraction output: `parts` maps a part name to its rows (written
    anew), or to None (kept as it is); part files not named are deleted. Returns its folder."""
    key = plan.key("extract")
    folder = Path(plan.folder(key))
    for old in folder.glob("parts/*.parquet"):
        if old.name not in parts:
            old.unlink()
    with plan.store.open_stage(key.dataset, "extract", plan.version(key),
                               config_hash=plan.config_hash(key), code_version=1) as writer:
        for name, rows in parts.items():
            if rows is None:
                writer.add_existing(f"parts/{name}", checksum=True)
                continue
            with writer.output(f"parts/{name}", checksum=True) as tmp:
                write_part(tmp, rows)
        writer.commit()
    return folder


def first_parts() -> dict[str, list[dict[str, Any]]]:
    """Two part files: clips a and b; then c, a failed clip d and a clip e whose part map bytes
    are damaged."""
    damaged = ok_row(handmade_clip("e", 1))
    damaged["part_maps"][3] = b"not zlib"
    return {
        "part-0.parquet": [ok_row(handmade_clip("a", 2)), ok_row(handmade_clip("b", 6))],
        "part-1.parquet": [
            ok_row(handmade_clip("c", 0)), failed_row("d", "unreadable clip", "oracle"), damaged,
        ],
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[PipelineConfig, StageKey, Path]:
    """A store holding the hand-made extraction output; the config, the masks key and the
    extraction folder."""
    cfg = config(tmp_path / "store")
    plan = Plan(cfg, STAGES)
    folder = write_extraction(plan, first_parts())
    return cfg, plan.key("masks"), folder


def fresh(cfg: PipelineConfig) -> Plan:
    """A new plan (what a new command makes): nothing memoized."""
    return Plan(cfg, STAGES)


def fields_folder(cfg: PipelineConfig, key: StageKey) -> Path:
    return Path(fresh(cfg).folder(key)) / "fields"


def test_fields_are_computed_per_clip_and_failures_recorded(setup, ray_local) -> None:
    cfg, key, extraction = setup
    outcome = execute(fresh(cfg), key)
    record = outcome.record
    assert outcome.ran
    assert record.counts["ok"] == 3 and record.counts["failed"] == 2
    assert record.extra["field_names"] == list(FIELD_NAMES)
    plan = fresh(cfg)
    assert plan.state(key).kind == DONE
    reader = outputs.field_reader(plan, key.dataset)
    assert reader.video_ids == ["a", "b", "c"]
    assert reader.failed["d"].startswith("extraction failed: unreadable clip")
    assert reader.failed["e"].startswith("unreadable extraction: part map bytes")
    assert np.array_equal(reader.get("b"), expected_fields(handmade_clip("b", 6), cfg))
    assert reader.get("b").shape == (len(FIELD_NAMES), 8, 8, 8)
    # each field file names the version; the record, the part file each was made from
    folder = fields_folder(cfg, key)
    meta = json.loads(pq.read_schema(folder / "part-0.parquet").metadata[METADATA_KEY])
    assert meta["version"] == plan.version(key) == record.version
    assert record.extra["sources"] == {
        f"fields/{name}": sha(extraction / "parts" / name) for name in first_parts()
    }
    assert not (folder.parent / mask_stage.JOURNAL_NAME).exists()
    assert not (folder.parent.parent / "_versions.json").exists()  # no staleness index


def interrupted_after_first_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next masks run die (as if killed) right after its first field file."""
    real = mask_stage.map_bounded

    def one_then_killed(func, jobs, **kwargs):
        yield next(real(func, jobs, **{**kwargs, "max_in_flight": 1}))
        raise KeyboardInterrupt

    monkeypatch.setattr(mask_stage, "map_bounded", one_then_killed)


def test_rerun_skips_and_killed_run_resumes(setup, ray_local, monkeypatch) -> None:
    cfg, key, _ = setup
    interrupted_after_first_file(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        execute(fresh(cfg), key)
    monkeypatch.undo()
    folder = fields_folder(cfg, key)
    done = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}
    assert len(done) == 1 and not (folder.parent / "_stage.json").exists()
    (folder / ".tmp-1234-part-9.parquet").write_bytes(b"partial")  # a kill mid-write leaves this

    resumed = execute(fresh(cfg), key).record
    assert (resumed.counts["reused_files"], resumed.counts["computed_files"]) == (1, 1)
    assert resumed.counts["ok"] == 3 and resumed.counts["failed"] == 2
    assert {n: (folder / n).stat().st_mtime_ns for n in done} == done  # kept, not redone
    assert not list(folder.glob(".tmp-*"))
    assert len(outputs.field_reader(fresh(cfg), key.dataset)) == 3

    again = execute(fresh(cfg), key)
    assert not again.ran and again.record.finished_at == resumed.finished_at


def test_a_damaged_field_file_is_found_and_redone_alone(setup, ray_local) -> None:
    cfg, key, _ = setup
    execute(fresh(cfg), key)
    folder = fields_folder(cfg, key)
    reader = outputs.field_reader(fresh(cfg), key.dataset)
    before = {v: reader.get(v) for v in reader.video_ids}
    other = folder / "part-0.parquet"
    stamp = (other.stat().st_mtime_ns, sha(other))
    damaged = folder / "part-1.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])

    state = fresh(cfg).state(key)
    assert state.kind == DAMAGED and state.damaged == ["fields/part-1.parquet"]
    with pytest.raises(InputError, match="damaged.*signmae run masks"):
        outputs.field_reader(fresh(cfg), key.dataset)

    repaired = execute(fresh(cfg), key)
    assert repaired.ran
    assert (repaired.record.counts["reused_files"], repaired.record.counts["computed_files"]) == (
        1, 1)
    assert fresh(cfg).state(key).kind == DONE
    assert (other.stat().st_mtime_ns, sha(other)) == stamp
    reader = outputs.field_reader(fresh(cfg), key.dataset)
    assert reader.video_ids == sorted(before)
    for video_id, fields in before.items():
        assert np.array_equal(reader.get(video_id), fields)


def test_a_grown_extraction_updates_the_version_in_place(setup, ray_local) -> None:
    cfg, key, _ = setup
    first = execute(fresh(cfg), key).record
    folder = fields_folder(cfg, key)
    kept = folder / "part-0.parquet"
    stamp = (kept.stat().st_mtime_ns, sha(kept))
    # extraction redoes part-1 (c moved, d and e gone) and adds part-2 (a new clip f)
    plan = fresh(cfg)
    write_extraction(plan, {
        "part-0.parquet": None,
        "part-1.parquet": [ok_row(handmade_clip("c", 4))],
        "part-2.parquet": [ok_row(handmade_clip("f", 3))],
    })
    plan = fresh(cfg)
    assert plan.version(key) == first.version
    assert plan.state(key).kind == STALE and "input changed" in plan.state(key).why

    grown = execute(plan, key).record
    assert grown.version == first.version
    assert (grown.counts["reused_files"], grown.counts["computed_files"]) == (1, 2)
    assert (grown.counts["ok"], grown.counts["failed"]) == (4, 0)
    assert (kept.stat().st_mtime_ns, sha(kept)) == stamp
    reader = outputs.field_reader(fresh(cfg), key.dataset)
    assert reader.video_ids == ["a", "b", "c", "f"] and not reader.failed
    assert np.array_equal(reader.get("c"), expected_fields(handmade_clip("c", 4), cfg))

    # the extraction loses part-2: its field file goes too
    write_extraction(fresh(cfg), {"part-0.parquet": None, "part-1.parquet": None})
    shrunk = execute(fresh(cfg), key).record
    assert (shrunk.counts["reused_files"], shrunk.counts["computed_files"]) == (2, 0)
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["part-0.parquet",
                                                                "part-1.parquet"]
    assert outputs.field_reader(fresh(cfg), key.dataset).video_ids == ["a", "b", "c"]


def test_new_settings_make_a_new_version_beside_the_old(setup, ray_local) -> None:
    cfg, key, extraction = setup
    old = execute(fresh(cfg), key).record
    before = snapshot(extraction)
    changed = config(Path(cfg.store.root), "masks.dilation=2")
    new = execute(fresh(changed), key).record
    assert new.version != old.version
    assert fresh(cfg).store.versions(key.dataset, "masks") == sorted([old.version, new.version])
    assert snapshot(extraction) == before  # extraction outputs were only read
    pinned = config(Path(cfg.store.root), "masks.dilation=2", f"masks.version={old.version}")
    wider = outputs.field_reader(fresh(changed), key.dataset).get("a")[:4].sum()
    plain = outputs.field_reader(fresh(pinned), key.dataset).get("a")[:4].sum()
    assert wider > plain
    again = execute(fresh(cfg), key)  # back to the old settings: nothing computed
    assert not again.ran and again.record.finished_at == old.finished_at


def test_a_pinned_version_is_read_never_computed(setup) -> None:
    cfg, key, _ = setup
    pinned = config(Path(cfg.store.root), "masks.version=nope")
    with pytest.raises(InputError, match="run `signmae run masks"):
        outputs.field_reader(fresh(pinned), key.dataset)
    with pytest.raises(InputError, match="pinned masks.version nope not found"):
        execute(fresh(pinned), key, force=True)
    done = execute(fresh(cfg), key).record  # pinned to a version that exists: read, not redone
    pinned = config(Path(cfg.store.root), f"masks.version={done.version}", "masks.dilation=3")
    again = execute(fresh(pinned), key, force=True)
    assert not again.ran and again.record.finished_at == done.finished_at


def test_the_version_follows_field_settings_and_upstream_only(tmp_path) -> None:
    def version(*overrides: str) -> str:
        plan = Plan(config(tmp_path, *overrides))
        return plan.version(plan.key("masks"))

    base = version()
    for same in ("masking.hand_weight=5", "masking.sampler=tube", "masking.strength=0",
                 "model.patch_size=8", "extract.num_workers=3", "ray.num_cpus=1"):
        assert version(same) == base, same  # applied on the fly, or how the stages run
    for other in ("masks.cell=4", "masks.dilation=1", "masks.blur=0.5", "masks.motion_scale=0.5",
                  "decode.fps=30", "extract.seg_scale=0.5"):
        assert version(other) != base, other


# ---- end to end on the synthetic signer, through the real stages ---------------------------------
@pytest.mark.slow
def test_single_stage_recompute_and_repairs_through_the_cli(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli import main
    from signmae_core.synth import ensure_generated

    monkeypatch.chdir(tmp_path)
    overrides = ["store.root=store", "datasets.0.root=synthetic", "extract.backend=oracle",
                 "extract.clips_per_part=2"]
    base = ["--config", "ci_tiny"] + [arg for o in overrides for arg in ("--set", o)]
    cfg = load_config("ci_tiny", overrides)
    ensure_generated(tmp_path / "synthetic", cfg.synth)
    assert main(["run", "ingest", "decode", "extract", "masks", *base]) == 0
    plan = Plan(cfg)
    dataset = plan.cfg.dataset().name
    old = plan.output("masks", dataset).record
    clips = cfg.synth.classes * cfg.synth.signers * cfg.synth.reps
    assert old.counts["ok"] == clips
    upstream = tmp_path / "store" / dataset
    before = {s: snapshot(upstream / s) for s in ("ingest", "decode", "extract")}

    assert main(["run", "masks", *base, "--set", "masks.dilation=2"]) == 0
    assert {s: snapshot(upstream / s) for s in before} == before
    changed = Plan(load_config("ci_tiny", [*overrides, "masks.dilation=2"]))
    assert changed.output("masks", dataset).record.version != old.version

    # a truncated extraction part: found by the plan, its clips redone alone, then its fields
    extract_key = plan.key("extract", dataset)
    parts = sorted((Path(plan.folder(extract_key)) / "parts").glob("*.parquet"))
    assert len(parts) == 3
    lost = pq.read_table(parts[0]).num_rows
    stamps = {p: p.stat().st_mtime_ns for p in parts[1:]}
    parts[0].write_bytes(parts[0].read_bytes()[:200])
    assert Plan(cfg).state(extract_key).kind == DAMAGED
    assert main(["run", "extract", *base]) == 0
    assert Plan(cfg).state(extract_key).kind == DONE
    assert {p: p.stat().st_mtime_ns for p in parts[1:]} == stamps
    record = Plan(cfg).output("extract", dataset).record
    assert (record.counts["extracted"], record.counts["skipped"]) == (lost, clips - lost)
    assert Plan(cfg).state(plan.key("masks", dataset)).kind == STALE
    assert main(["run", "masks", *base]) == 0
    masks = Plan(cfg).output("masks", dataset).record
    assert masks.version == old.version and masks.counts["ok"] == clips
    assert (masks.counts["reused_files"], masks.counts["computed_files"]) == (2, 1)

    # the mask figure, the clip named by its file's stem
    video_id = outputs.clip_rows(Plan(cfg), dataset)[0]["video_id"]
    sheet = tmp_path / "sheet.png"
    assert main(["inspect", video_id.split("__")[-1], "--masks", "--out", str(sheet), *base]) == 0
    assert (tmp_path / "sheet_masks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def settled(folder: Path, quiet_s: float = 1.0, limit_s: float = 20.0) -> list[Path]:
    """The files of `folder` once nothing has appeared, gone or changed for `quiet_s` (the Ray
    workers of a killed command can still be finishing a file for a moment)."""
    def listing() -> dict[Path, tuple[int, int]]:
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}

    seen, since, deadline = listing(), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.1)
        now = listing()
        if now != seen:
            seen, since = now, time.monotonic()
    return sorted(seen)


@pytest.mark.slow
def test_a_masks_run_killed_for_real_resumes_without_redoing_finished_files(
    tmp_path: Path, ray_local: None
) -> None:
    """`signmae run masks` in a subprocess, SIGKILLed once its first field file is finished (the
    record not written), then run again: the finished field files are kept as they are (same
    inode and mtime), the others computed, no temporary file left, and every clip's fields equal
    those of an uninterrupted run."""
    import ray

    from pipelines.cli import main

    args = make_tiny_data(tmp_path / "data", ["ingest", "decode", "extract"],
                          ["extract.backend=oracle", "extract.clips_per_part=1"])
    cfg = load_config("ci_tiny", [a for a in args if "=" in a])
    clips = cfg.synth.classes * cfg.synth.signers * cfg.synth.reps  # one part file each
    reference = [*args, *copy_store(tmp_path / "data" / "store", tmp_path / "reference")]
    assert main(["run", "masks", *reference]) == 0

    env = cli_env(RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    seen = kill_at(["run", "masks", *args], "progress:1", cwd=tmp_path, env=env)
    assert seen["counts"] == {"done": 1}
    plan = Plan(cfg)
    folder = Path(plan.folder(plan.key("masks")))
    assert not (folder / "_stage.json").exists()
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in settled(folder / "fields") if not p.name.startswith(".tmp-")}
    assert 1 <= len(done) < clips, done

    assert main(["run", "masks", *args]) == 0
    plan = Plan(cfg)
    key = plan.key("masks")
    record = plan.output("masks", key.dataset).record
    assert plan.state(key).kind == DONE
    assert (record.counts["reused_files"], record.counts["computed_files"]) == (
        len(done), clips - len(done))
    assert (record.counts["ok"], record.counts["failed"]) == (clips, 0)
    for name, stamp in done.items():
        path = folder / "fields" / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, name  # not redone
    assert not [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]
    assert not (folder / mask_stage.JOURNAL_NAME).exists()

    ours = outputs.field_reader(plan, key.dataset)
    theirs = outputs.field_reader(Plan(load_config("ci_tiny", [
        a for a in reference if "=" in a])), key.dataset)
    assert ours.video_ids == theirs.video_ids and len(ours.video_ids) == clips
    for video_id in theirs.video_ids:
        assert np.array_equal(ours.get(video_id), theirs.get(video_id)), video_id
