"""The masks stage: versions side by side, reruns skip, killed runs resume, single-stage recompute
leaves decode and extraction untouched and marks what depends on the old version stale."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipelines import masks as mask_stage
from signmae_core.config import PipelineConfig, load_config
from signmae_core.extract.schema import empty_extraction, failed_row, ok_row, write_part
from signmae_core.masking import FIELD_NAMES, FieldParams, compute_fields
from signmae_core.store import ArtifactStore

CLIP = 64  # stored clip size in pixels
SEG = 32  # part map size


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


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A store with a hand-made 'extract' output (two part files, a failed clip, a clip whose
    part map bytes are damaged) that the masks stage reads in place of `extract.current`."""
    cfg = load_config(None, [f"store.root={tmp_path / 'store'}", "decode.size=64"])
    dataset = cfg.dataset()
    store = ArtifactStore(cfg.store.root)
    with store.open_stage(dataset.name, "extract", "ex1", config_hash="h", code_version=1) as w:
        with w.output("parts/part-0.parquet", checksum=True) as tmp:
            write_part(tmp, [ok_row(handmade_clip("a", 2)), ok_row(handmade_clip("b", 6))])
        damaged = ok_row(handmade_clip("e", 1))
        damaged["part_maps"][3] = b"not zlib"
        with w.output("parts/part-1.parquet", checksum=True) as tmp:
            write_part(
                tmp,
                [
                    ok_row(handmade_clip("c", 0)),
                    failed_row("d", "unreadable clip", "oracle"),
                    damaged,
                ],
            )
        record = w.commit()
    folder = store.stage_dir(dataset.name, "extract", "ex1")
    monkeypatch.setattr(mask_stage, "_extraction", lambda cfg, dataset, store: (record, folder))
    return cfg, dataset, store, Path(folder)


def with_overrides(cfg: PipelineConfig, *overrides: str) -> PipelineConfig:
    return load_config(None, [f"store.root={cfg.store.root}", "decode.size=64", *overrides])


def test_fields_are_computed_per_clip_and_failures_recorded(setup, ray_local) -> None:
    cfg, dataset, store, _ = setup
    record = mask_stage.run(cfg, dataset)
    assert record.counts["ok"] == 3 and record.counts["failed"] == 2
    assert record.extra["field_names"] == list(FIELD_NAMES)
    reader = mask_stage.open_fields(cfg, dataset, store)
    assert reader.video_ids == ["a", "b", "c"]
    assert reader.failed["d"].startswith("extraction failed: unreadable clip")
    assert reader.failed["e"].startswith("unreadable extraction: part map bytes")
    clip = handmade_clip("b", 6)
    points = clip.hands[..., :2].astype(np.float64) * CLIP
    expected = compute_fields(
        clip.part_maps, points[:, 0], points[:, 1], (CLIP, CLIP), FieldParams.from_config(cfg.masks)
    )
    assert np.array_equal(reader.get("b"), expected)
    assert reader.get("b").shape == (len(FIELD_NAMES), 8, 8, 8)
    index = mask_stage.read_index(store, dataset.name)
    assert index["current"] == record.version and not index["versions"][record.version]["stale"]


def test_rerun_skips_and_killed_run_resumes(setup, ray_local) -> None:
    cfg, dataset, store, _ = setup
    first = mask_stage.run(cfg, dataset)
    folder = Path(store.stage_dir(dataset.name, "masks", first.version))
    kept = folder / "fields" / "part-0.parquet"
    mtime = kept.stat().st_mtime_ns
    assert mask_stage.run(cfg, dataset).finished_at == first.finished_at  # nothing recomputed
    # a run killed after one file: no record, one output missing, a temporary left behind
    (folder / "_stage.json").unlink()
    (folder / "fields" / "part-1.parquet").unlink()
    (folder / "fields" / ".tmp-1234-part-1.parquet").write_bytes(b"partial")
    resumed = mask_stage.run(cfg, dataset)
    assert resumed.counts["resumed_files"] == 1
    assert resumed.counts["ok"] == 3 and resumed.counts["failed"] == 2
    assert kept.stat().st_mtime_ns == mtime
    assert not list((folder / "fields").glob(".tmp-*"))
    assert len(mask_stage.open_fields(cfg, dataset, store)) == 3


def test_recompute_makes_a_new_version_and_marks_the_old_stale(setup, ray_local) -> None:
    cfg, dataset, store, extract_dir = setup
    old = mask_stage.run(cfg, dataset)
    # something built from the old version: a downstream record naming its fingerprint
    with store.open_stage(
        dataset.name,
        "shard",
        "s1",
        config_hash="x",
        code_version=1,
        inputs={"masks": old.fingerprint()},
    ) as w:
        w.commit()
    before = {p: (p.stat().st_mtime_ns, sha(p)) for p in extract_dir.rglob("*") if p.is_file()}

    changed = with_overrides(cfg, "masks.dilation=2")
    new = mask_stage.run(changed, dataset)
    assert new.version != old.version
    assert store.versions(dataset.name, "masks") == sorted([old.version, new.version])
    after = {p: (p.stat().st_mtime_ns, sha(p)) for p in extract_dir.rglob("*") if p.is_file()}
    assert after == before  # extraction outputs were only read
    index = mask_stage.read_index(store, dataset.name)
    assert index["current"] == new.version
    assert index["versions"][old.version]["stale"]
    assert index["versions"][old.version]["superseded_by"] == new.version
    assert index["stale_dependents"] == ["shard/s1"]
    assert mask_stage.is_stale(store, dataset.name, old.version)
    # the old version is still readable, pinned by masks.version
    pinned = with_overrides(cfg, f"masks.version={old.version}")
    assert mask_stage.current(pinned, dataset, store)[0].version == old.version
    wider = mask_stage.open_fields(changed, dataset, store).get("a")[:4].sum()
    plain = mask_stage.open_fields(pinned, dataset, store).get("a")[:4].sum()
    assert wider > plain
    # going back to the old config re-selects the old version without computing anything
    again = mask_stage.run(cfg, dataset)
    assert again.finished_at == old.finished_at
    index = mask_stage.read_index(store, dataset.name)
    assert index["current"] == old.version and index["versions"][new.version]["stale"]
    assert not index["versions"][old.version]["stale"]


def test_the_version_follows_field_settings_extraction_and_geometry_only(setup) -> None:
    cfg, _, _, _ = setup
    record = mask_stage._extraction(cfg, None, None)[0]
    version = mask_stage.mask_version(cfg, record)
    same = [
        "masking.hand_weight=5",
        "masking.sampler=tube",
        "masking.strength=0",
        "model.patch_size=8",
        "masks.version=abc",
    ]
    for override in same:  # applied on the fly, or only a choice of what to read
        assert mask_stage.mask_version(with_overrides(cfg, override), record) == version
    for override in [
        "masks.cell=4",
        "masks.dilation=1",
        "masks.blur=0.5",
        "masks.motion_scale=0.5",
        "decode.fps=30",
    ]:
        assert mask_stage.mask_version(with_overrides(cfg, override), record) != version
    other = record.model_copy(update={"inputs": {"decode": "another"}})
    assert mask_stage.mask_version(cfg, other) != version


def test_an_unknown_pinned_version_is_a_clear_error(setup) -> None:
    cfg, dataset, store, _ = setup
    from signmae_core.errors import InputError

    with pytest.raises(InputError, match="run `signmae run masks"):
        mask_stage.current(with_overrides(cfg, "masks.version=nope"), dataset, store)


# ---- end to end on the synthetic signer, through the real stages ---------------------------------
def snapshot(folder: Path) -> dict[Path, tuple[int, str]]:
    """Every file under a folder with its modification time and checksum."""
    return {p: (p.stat().st_mtime_ns, sha(p)) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_single_stage_recompute_leaves_decode_and_extraction_untouched(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli import main
    from signmae_core.synth import ensure_generated

    monkeypatch.chdir(tmp_path)
    paths = [f"store.root={tmp_path / 'store'}", f"datasets.0.root={tmp_path / 'synthetic'}"]
    base = ["--config", "ci_tiny"]
    for override in ["extract.backend=oracle", *paths]:
        base += ["--set", override]
    cfg = load_config("ci_tiny", ["extract.backend=oracle", *paths])
    dataset = cfg.dataset()
    ensure_generated(Path(dataset.root), cfg.synth)
    assert main(["run", "ingest", "decode", "extract", "masks", *base]) == 0
    store = ArtifactStore(cfg.store.root)
    old = mask_stage.current(cfg, dataset, store)[0]
    assert old.counts["ok"] == cfg.synth.classes * cfg.synth.signers * cfg.synth.reps
    upstream = Path(store.stage_dir(dataset.name, ""))
    before = {s: snapshot(upstream / s) for s in ("ingest", "decode", "extract")}
    assert all(before.values())

    assert main(["run", "masks", *base, "--set", "masks.dilation=2"]) == 0

    assert {s: snapshot(upstream / s) for s in before} == before
    changed = load_config("ci_tiny", ["extract.backend=oracle", "masks.dilation=2", *paths])
    new = mask_stage.current(changed, dataset, store)[0]
    assert new.version != old.version
    assert store.versions(dataset.name, "masks") == sorted([old.version, new.version])
    index = mask_stage.read_index(store, dataset.name)
    assert index["current"] == new.version and index["versions"][old.version]["stale"]

    from pipelines import decode

    video_id = decode.load_clips(cfg, dataset, store).column("video_id")[0].as_py()
    sheet = tmp_path / "sheet.png"
    assert main(["inspect", video_id, "--masks", "--out", str(sheet), *base]) == 0
    figure = tmp_path / "sheet_masks.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
