"""Ingest: adapters on format-faithful fixtures and on the shared real folders; ids, windows and
the class map."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
from stages_helper import manifest, run_stage, stage_folder
from video_files import write_video

from signmae_core.config import DatasetConfig, load_config
from signmae_core.errors import InputError
from signmae_core.ingest import build_rows, plan_videos, probe_video
from signmae_core.ingest.adapters import read_entries, resolve_inside
from signmae_core.ingest.adapters.split_lists import parse_line
from signmae_core.ingest.manifest import extend_classes, resolve_window, stable_video_id


# ---- pure pieces --------------------------------------------------------------------------------
def test_stable_video_id_is_readable_unique_and_dot_free() -> None:
    assert stable_video_id("train/0001.mp4") == "train__0001"
    assert stable_video_id("Do_Not.mp4") == "Do_Not"
    odd = stable_video_id("my clips/a.b c.mp4")
    assert odd.startswith("my_clips__a_b_c-") and "." not in odd
    assert odd == stable_video_id("my clips/a.b c.mp4")
    assert stable_video_id("a/b__c.mp4") != stable_video_id("a__b/c.mp4")
    assert stable_video_id("a.mp4") == "a"


def test_resolve_window_clamps_overlaps_and_fails_outside() -> None:
    assert resolve_window(None, None, 30) == (0, 30, False, None)
    assert resolve_window(5, 10, 30) == (5, 10, False, None)
    assert resolve_window(25, 35, 30) == (25, 30, True, None)
    assert resolve_window(-1, 10, 30) == (0, 10, True, None)
    assert "outside" in resolve_window(30, 40, 30)[3]
    assert "empty" in resolve_window(10, 10, 30)[3]


def test_class_map_appends_never_renumbers() -> None:
    classes, added = extend_classes([], ["b", "c", "b"])
    assert classes == ["b", "c"] and added == ["b", "c"]
    classes, added = extend_classes(classes, ["a", "c", "d"])
    assert classes == ["b", "c", "a", "d"] and added == ["a", "d"]


def test_paths_outside_the_root_are_rejected(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path, "a/../b.mp4")[1:] == ("b.mp4", None)
    for bad in ("../x.mp4", "a/../../x.mp4", "/etc/passwd", ""):
        assert resolve_inside(tmp_path, bad)[2] is not None


def test_split_list_lines() -> None:
    assert parse_line("P01/001_0.mp4 12") == ("P01/001_0.mp4", "12")
    assert parse_line("a/b.mp4,hello world") == ("a/b.mp4", "hello world")
    assert parse_line("a/b.mp4") == ("a/b.mp4", None)


# ---- adapters on format-faithful fixtures -------------------------------------------------------
def _manifest(dataset: DatasetConfig, classes: list[str] | None = None) -> list[dict]:
    """Ingest without Ray: plan, probe in-process, build rows."""
    cfg = load_config(None)
    planned = plan_videos(dataset)
    probes = {p.video_id: probe_video(p.abs_path, cfg.ingest) for p in planned if p.probe_needed}
    rows, _, _, _ = build_rows(planned, probes, dataset, classes or [])
    return rows


def test_csv_adapter_maps_columns_and_passes_extras_through(tmp_path: Path) -> None:
    write_video(tmp_path / "videos" / "v1.mp4", frames=30)
    write_video(tmp_path / "videos" / "v2.mp4", frames=30)
    (tmp_path / "labels.csv").write_text(
        "video_id,path,gloss,class_id,split,frame_start,frame_end,frames_in_file,width\n"
        "00001,videos/v1.mp4,book,7,train,1,10,30,64\n"
        "00002,videos/v2.mp4,drink,9,test,21,35,30,64\n",
        encoding="utf-8",
    )
    dataset = DatasetConfig(name="t", root=str(tmp_path), columns={"label": "gloss"}, frame_base=1)
    rows = {r["video_id"]: r for r in _manifest(dataset)}
    assert rows["00001"]["label"] == "book" and rows["00001"]["split"] == "train"
    assert (rows["00001"]["frame_start"], rows["00001"]["frame_end"]) == (0, 10)
    assert (rows["00002"]["frame_start"], rows["00002"]["frame_end"]) == (20, 30)
    assert rows["00002"]["window_clamped"] and not rows["00001"]["window_clamped"]
    assert rows["00001"]["class_id"] == "7" and rows["00001"]["frames_in_file"] == "30"
    assert rows["00001"]["src_width"] == "64" and rows["00001"]["width"] == 64


def test_csv_adapter_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="label file not found"):
        read_entries(DatasetConfig(name="t", root=str(tmp_path)))
    (tmp_path / "labels.csv").write_text("file,label\na.mp4,x\n", encoding="utf-8")
    with pytest.raises(InputError, match="no 'path' column"):
        read_entries(DatasetConfig(name="t", root=str(tmp_path)))
    with pytest.raises(InputError, match="root folder not found"):
        read_entries(DatasetConfig(name="t", root=str(tmp_path / "nope")))


def test_unlabeled_rows_and_splits(tmp_path: Path) -> None:
    write_video(tmp_path / "a.mp4")
    write_video(tmp_path / "b.mp4")
    write_video(tmp_path / "c.mp4")
    (tmp_path / "labels.csv").write_text(
        "path,label,split\na.mp4,hello,train\nb.mp4,,train\nc.mp4,bye,unlabeled\n", encoding="utf-8"
    )
    rows = {r["video_id"]: r for r in _manifest(DatasetConfig(name="t", root=str(tmp_path)))}
    assert rows["a"]["label_id"] == 0
    assert rows["b"]["label"] is None and rows["b"]["label_id"] is None
    assert rows["c"]["label"] == "bye" and rows["c"]["label_id"] is None
    assert all(r["status"] == "ok" for r in rows.values())


def test_folder_adapter(tmp_path: Path) -> None:
    write_video(tmp_path / "train" / "hello" / "1.mp4")
    write_video(tmp_path / "test" / "hello" / "2.mp4")
    write_video(tmp_path / "bye" / "3.mp4")
    write_video(tmp_path / "loose.mp4")
    (tmp_path / "notes.txt").write_text("not a video")
    entries = {
        e.path: e
        for e in read_entries(DatasetConfig(name="t", adapter="folder", root=str(tmp_path)))
    }
    assert set(entries) == {"train/hello/1.mp4", "test/hello/2.mp4", "bye/3.mp4", "loose.mp4"}
    assert (entries["train/hello/1.mp4"].label, entries["train/hello/1.mp4"].split) == (
        "hello",
        "train",
    )
    assert entries["bye/3.mp4"].label == "bye" and entries["bye/3.mp4"].split is None
    assert entries["loose.mp4"].label is None


def _wlasl_fixture(root: Path) -> None:
    """WLASL's release layout: a list of {gloss, instances}, 1-based inclusive windows."""
    write_video(root / "videos" / "00001.mp4", frames=40)
    write_video(root / "videos" / "00002.mp4", frames=40)
    (root / "videos" / "00003.mp4").write_bytes(b"")  # a failed download

    def inst(vid: str, start: int, end: int, split: str, signer: int) -> dict:
        return {
            "bbox": [8, 4, 40, 44],
            "fps": 25,
            "frame_end": end,
            "frame_start": start,
            "instance_id": 0,
            "signer_id": signer,
            "source": "aslu",
            "split": split,
            "url": f"https://example.invalid/{vid}",
            "variation_id": 0,
            "video_id": vid,
        }

    data = [
        {
            "gloss": "book",
            "instances": [
                inst("00001", 11, 20, "train", 1),
                inst("00003", 1, -1, "val", 3),
                inst("00004", 1, -1, "train", 4),
            ],
        },
        {"gloss": "drink", "instances": [inst("00002", 31, -1, "test", 2)]},
    ]
    (root / "WLASL_v0.3.json").write_text(json.dumps(data), encoding="utf-8")


def test_wlasl_adapter(tmp_path: Path) -> None:
    _wlasl_fixture(tmp_path)
    rows = {
        r["video_id"]: r
        for r in _manifest(DatasetConfig(name="w", adapter="wlasl", root=str(tmp_path)))
    }
    assert (rows["00001"]["frame_start"], rows["00001"]["frame_end"]) == (10, 20)
    assert (rows["00002"]["frame_start"], rows["00002"]["frame_end"]) == (30, 40)
    assert rows["00001"]["bbox"] == [8.0, 4.0, 40.0, 44.0] and rows["00001"]["signer"] == "1"
    assert rows["00001"]["url"] == "https://example.invalid/00001"
    assert rows["00003"]["status"] == "failed" and "empty file" in rows["00003"]["error"]
    assert rows["00004"]["status"] == "failed" and "not found" in rows["00004"]["error"]
    assert rows["00003"]["label_id"] == rows["00001"]["label_id"] == 0  # book
    assert rows["00002"]["label_id"] == 1


def test_slovo_adapter(tmp_path: Path) -> None:
    write_video(tmp_path / "train" / "a1b2-0001.mp4", frames=40)
    write_video(tmp_path / "test" / "a1b2-0002.mp4", frames=40)
    (tmp_path / "annotations.csv").write_text(
        "attachment_id\tuser_id\twidth\theight\tlength\ttext\ttrain\tbegin\tend\n"
        "a1b2-0001\tu1\t64\t48\t40\tпривет\tTrue\t5\t25\n"
        "a1b2-0002\tu2\t64\t48\t40\tno_event\tFalse\t0\t40\n",
        encoding="utf-8",
    )
    rows = {
        r["video_id"]: r
        for r in _manifest(DatasetConfig(name="s", adapter="slovo", root=str(tmp_path)))
    }
    first = rows["a1b2-0001"]
    assert (first["label"], first["signer"], first["split"]) == ("привет", "u1", "train")
    assert (first["frame_start"], first["frame_end"]) == (5, 25)
    assert first["path"] == "train/a1b2-0001.mp4" and first["src_width"] == "64"
    assert first["length"] == "40"
    assert rows["a1b2-0002"]["split"] == "test" and rows["a1b2-0002"]["status"] == "ok"


def test_split_lists_adapter(tmp_path: Path) -> None:
    for name in ("001/P01_0.mp4", "001/P02_0.mp4", "002/P01_0.mp4"):
        write_video(tmp_path / "videos" / name)
    (tmp_path / "train.txt").write_text("videos/001/P01_0.mp4\nvideos/002/P01_0.mp4\n")
    (tmp_path / "test.txt").write_text("# comment\nvideos/001/P02_0.mp4 001\n\n")
    dataset = DatasetConfig(
        name="n",
        adapter="lists",
        root=str(tmp_path),
        split_lists={"train": "train.txt", "test": "test.txt"},
    )
    rows = {r["path"]: r for r in _manifest(dataset)}
    assert rows["videos/001/P01_0.mp4"]["split"] == "train"
    assert rows["videos/001/P01_0.mp4"]["label"] == "001"
    assert rows["videos/001/P02_0.mp4"]["split"] == "test"
    assert rows["videos/001/P01_0.mp4"]["label_id"] == rows["videos/001/P02_0.mp4"]["label_id"]


# ---- the stage on real data ---------------------------------------------------------------------
def _cfg(tmp_path: Path, dataset: DatasetConfig):
    return load_config(None, [f"store.root={tmp_path / 'store'}"], datasets=[dataset.model_dump()])


@pytest.mark.slow
def test_wlasl_samples_end_to_end(real_data: Path, tmp_path: Path, ray_local: None) -> None:

    dataset = DatasetConfig(
        name="wlasl_samples", adapter="wlasl", root=str(real_data / "wlasl_samples")
    )
    cfg = _cfg(tmp_path, dataset)
    record = run_stage(cfg, "ingest", dataset)
    assert (record.counts["ok"], record.counts["failed"]) == (4, 2)
    rows = {r["video_id"]: r for r in manifest(cfg, dataset).to_pylist()}
    data = json.loads((real_data / "wlasl_samples" / "WLASL_v0.3.json").read_text())
    for item in data:
        for inst in item["instances"]:
            row = rows[inst["video_id"]]
            assert (row["label"], row["split"]) == (item["gloss"], inst["split"])
    for vid in ("70212", "70266"):
        assert rows[vid]["status"] == "failed" and "empty file" in rows[vid]["error"]
    assert (rows["63185"]["frame_start"], rows["63185"]["frame_end"]) == (0, 49)
    assert rows["63185"]["frame_count"] == 4232 and rows["63185"]["has_audio"]
    folder = Path(stage_folder(cfg, "ingest", dataset))
    classes = json.loads((folder / "classes.json").read_text(encoding="utf-8"))
    assert classes["classes"] == ["book", "wheelchair", "whistle"]


@pytest.mark.slow
def test_karsl_and_isl_labels_survive(real_data: Path, tmp_path: Path, ray_local: None) -> None:

    karsl = DatasetConfig(name="karsl70", root=str(real_data / "karsl70"))
    cfg = _cfg(tmp_path, karsl)
    assert run_stage(cfg, "ingest", karsl).counts["ok"] == 140
    rows = {r["path"]: r for r in manifest(cfg, karsl).to_pylist()}
    with open(real_data / "karsl70" / "labels.csv", encoding="utf-8", newline="") as handle:
        source = list(csv.DictReader(handle))
    assert any(ord(ch) > 0x600 for r in source for ch in r["label_ar"])  # Arabic script is there
    for src in source:
        row = rows[src["path"]]
        assert row["label_ar"].encode("utf-8") == src["label_ar"].encode("utf-8")
        assert (row["label"], row["split"], row["signer"]) == (
            src["label"],
            src["split"],
            src["signer"],
        )
    assert len({r["label_id"] for r in rows.values()}) == 70

    isl = DatasetConfig(name="isl151", root=str(real_data / "isl151"))
    cfg = _cfg(tmp_path, isl)
    record = run_stage(cfg, "ingest", isl)
    assert record.counts["ok"] == 151 and record.counts["unlabeled"] == 151
    assert record.extra["classes"] == 0
    rows = manifest(cfg, isl).to_pylist()
    assert all(r["split"] == "unlabeled" and r["label_id"] is None and r["label"] for r in rows)


@pytest.mark.slow
def test_wlasl200_windows_and_odd_metadata(
    real_data: Path, tmp_path: Path, ray_local: None
) -> None:

    dataset = DatasetConfig(
        name="wlasl200", root=str(real_data / "wlasl200"), columns={"label": "gloss"}, frame_base=1
    )
    cfg = _cfg(tmp_path, dataset)
    record = run_stage(cfg, "ingest", dataset)
    assert (record.counts["ok"], record.counts["failed"]) == (199, 0)
    assert record.counts["window_clamped"] == 43  # windows set on longer original downloads
    rows = {r["video_id"]: r for r in manifest(cfg, dataset).to_pylist()}
    assert rows["01586"]["status"] == "ok"  # its metadata is not UTF-8


# ---- idempotence, incremental runs, stable class map -------------------------------------------
@pytest.mark.slow
def test_rerun_skips_and_incremental_ingest(tmp_path: Path, ray_local: None) -> None:

    root = tmp_path / "data"
    for name in ("b1", "c1"):
        write_video(root / f"{name}.mp4")
    labels = root / "labels.csv"
    labels.write_text("path,label\nb1.mp4,b\nc1.mp4,c\n", encoding="utf-8")
    dataset = DatasetConfig(name="inc", root=str(root))
    cfg = _cfg(tmp_path, dataset)
    first = run_stage(cfg, "ingest", dataset)
    assert first.counts["probed"] == 2
    again = run_stage(cfg, "ingest", dataset)
    assert again == first  # the record itself: nothing ran

    write_video(root / "a1.mp4")
    labels.write_text("path,label\nb1.mp4,b\nc1.mp4,c\na1.mp4,a\n", encoding="utf-8")
    third = run_stage(cfg, "ingest", dataset)
    assert (third.counts["probed"], third.counts["skipped"], third.counts["ok"]) == (1, 2, 3)
    rows = {r["video_id"]: r for r in manifest(cfg, dataset).to_pylist()}
    assert (rows["b1"]["label_id"], rows["c1"]["label_id"], rows["a1"]["label_id"]) == (0, 1, 2)
    assert third.fingerprint() != first.fingerprint()

    os.utime(root / "c1.mp4", ns=(1, 1))  # touched, not changed: hashed, its row kept
    fourth = run_stage(cfg, "ingest", dataset)
    assert (fourth.counts["probed"], fourth.counts["touched"]) == (0, 1)
    assert fourth.fingerprint() == third.fingerprint()  # the same manifest: decode stays done
    c1 = {r["video_id"]: r for r in manifest(cfg, dataset).to_pylist()}["c1"]
    assert c1["file_sha256"] == hashlib.sha256((root / "c1.mp4").read_bytes()).hexdigest()

    write_video(root / "c1.mp4", frames=21)  # changed: probed again
    fifth = run_stage(cfg, "ingest", dataset)
    assert (fifth.counts["probed"], fifth.counts["touched"]) == (1, 0)
    rows = {r["video_id"]: r for r in manifest(cfg, dataset).to_pylist()}
    assert rows["c1"]["frame_count"] == 21
    assert run_stage(cfg, "ingest", dataset, force=True).counts["probed"] == 3


@pytest.mark.slow
def test_touched_failed_videos_keep_their_rows(tmp_path: Path, ray_local: None) -> None:
    """Failed videos are probed again on every run; touched but failing the same way, they keep
    their rows (mtime included), so the manifest stays the same; changed, they get new rows."""
    root = tmp_path / "data"
    write_video(root / "ok.mp4")
    write_video(root / "late.mp4", frames=10)
    (root / "empty.mp4").write_bytes(b"")
    (root / "junk.mp4").write_bytes(b"\x01" * 4096)
    (root / "labels.csv").write_text(
        "path,label,frame_start\nok.mp4,a,\nlate.mp4,a,50\nempty.mp4,a,\njunk.mp4,a,\n",
        encoding="utf-8")
    dataset = DatasetConfig(name="bad", root=str(root))
    cfg = _cfg(tmp_path, dataset)
    first = run_stage(cfg, "ingest", dataset)
    assert (first.counts["ok"], first.counts["failed"]) == (1, 3)
    before = {r["video_id"]: r for r in manifest(cfg, dataset).to_pylist()}
    assert "window" in before["late"]["error"]  # the window, not the probe, failed it

    for name in ("ok", "late", "empty", "junk"):
        os.utime(root / f"{name}.mp4", ns=(7, 7))
    second = run_stage(cfg, "ingest", dataset)
    assert (second.counts["probed"], second.counts["touched"]) == (3, 4)
    assert manifest(cfg, dataset).to_pylist() == list(before.values())
    assert second.fingerprint() == first.fingerprint()  # decode stays done

    (root / "junk.mp4").write_bytes(b"\x02" * 4096)  # changed, failing the same way
    os.utime(root / "junk.mp4", ns=(9, 9))
    third = run_stage(cfg, "ingest", dataset)
    junk = {r["video_id"]: r for r in manifest(cfg, dataset).to_pylist()}["junk"]
    assert (junk["status"], junk["file_mtime_ns"]) == ("failed", 9)
    assert junk["file_sha256"] == hashlib.sha256(b"\x02" * 4096).hexdigest()
    assert third.counts["touched"] == 3 and third.fingerprint() != first.fingerprint()


# ---- class groups --------------------------------------------------------------------------------
def test_class_groups_file_format_errors_are_clear() -> None:
    from signmae_core.ingest.class_groups import check_class_groups, parse_class_groups

    good = '{"groups": [{"kind": "handshape", "classes": ["a", "b"], "note": "x"}]}'
    assert parse_class_groups(good) == [{"kind": "handshape", "classes": ["a", "b"]}]
    for text, reason in [
        ("{", "not JSON"),
        ('{"pairs": []}', "must be"),
        ('{"groups": [{"classes": ["a", "b"]}]}', "kind"),
        ('{"groups": [{"kind": "a b", "classes": ["a", "b"]}]}', "kind"),
        ('{"groups": [{"kind": "k", "classes": "ab"}]}', "list of labels"),
        ('{"groups": [{"kind": "k", "classes": ["a"]}]}', "two distinct"),
        ('{"groups": [{"kind": "k", "classes": ["a", "a"]}]}', "two distinct"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_class_groups(text)
    with pytest.raises(InputError, match="'zz'"):
        check_class_groups([{"kind": "k", "classes": ["a", "zz"]}], ["a", "b"])


@pytest.mark.slow
def test_ingest_copies_the_class_groups_and_reruns_when_they_change(
    tmp_path: Path, ray_local: None
) -> None:
    from pipelines import outputs
    from pipelines.dag import Plan
    from signmae_core.ingest import sources_fingerprint

    root = tmp_path / "data"
    for name in ("a1", "b1", "c1"):
        write_video(root / f"{name}.mp4")
    (root / "labels.csv").write_text("path,label\na1.mp4,a\nb1.mp4,b\nc1.mp4,c\n", "utf-8")
    dataset = DatasetConfig(name="grouped", root=str(root))
    cfg = _cfg(tmp_path, dataset)
    without = sources_fingerprint(dataset, plan_videos(dataset))
    run_stage(cfg, "ingest", dataset)
    assert outputs.class_groups(Plan.from_config(cfg), "grouped") == []

    groups_file = root / "class_groups.json"
    groups = [{"kind": "handshape", "classes": ["a", "b"]}]
    groups_file.write_text(json.dumps({"groups": groups}), encoding="utf-8")
    assert sources_fingerprint(dataset, plan_videos(dataset)) != without
    record = run_stage(cfg, "ingest", dataset)  # the input changed: it runs, probing nothing
    assert (record.counts["probed"], record.counts["skipped"]) == (0, 3)
    assert "class_groups.json" in [o.path for o in record.outputs]
    assert outputs.class_groups(Plan.from_config(cfg), "grouped") == groups

    groups_file.write_text('{"groups": [{"kind": "handshape", "classes": ["a", "x"]}]}', "utf-8")
    with pytest.raises(InputError, match="'x'"):
        run_stage(cfg, "ingest", dataset)

    groups_file.unlink()  # back to no groups: the fingerprint and the output as before
    assert sources_fingerprint(dataset, plan_videos(dataset)) == without
    run_stage(cfg, "ingest", dataset)
    assert outputs.class_groups(Plan.from_config(cfg), "grouped") == []
    assert not (Path(stage_folder(cfg, "ingest", dataset)) / "class_groups.json").exists()
