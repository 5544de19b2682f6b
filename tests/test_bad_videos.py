"""Every kind of bad video becomes a failed row with its reason; the run goes on and counts them."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from stages_helper import manifest as read_manifest
from stages_helper import run_stage, stage_folder
from video_files import write_bad_videos, write_video

from signmae_core.config import DatasetConfig, IngestConfig, load_config
from signmae_core.ingest.probe import probe_video


def _write_labels(root: Path, rows: list[dict[str, str]]) -> None:
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "frame_start", "frame_end"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A csv dataset: two good videos, one window wholly outside its video, and every bad file."""
    root = tmp_path_factory.mktemp("bad")
    expected = write_bad_videos(root / "videos")
    write_video(root / "videos" / "good.mp4", frames=20)
    write_video(root / "videos" / "good_audio.mp4", frames=20, audio=True)
    write_video(root / "videos" / "outside.mp4", frames=20)
    rows = [{"path": f"videos/{name}", "label": "x"} for name in expected]
    rows += [
        {"path": "videos/good.mp4", "label": "a", "frame_start": "5", "frame_end": "25"},
        {"path": "videos/good_audio.mp4", "label": "b"},
        {"path": "videos/outside.mp4", "label": "a", "frame_start": "40", "frame_end": "60"},
        {"path": "../escape.mp4", "label": "a"},
        {"path": "videos/good.mp4", "label": "a", "frame_start": "1.5"},
    ]
    _write_labels(root, rows)
    expected["outside.mp4"] = "lies outside the video's 20 frames"
    expected["escape.mp4"] = "resolves outside the dataset root"
    return root, expected


@pytest.mark.parametrize(
    "name",
    [
        "zero_bytes.mp4",
        "truncated.mp4",
        "truncated_faststart.mp4",
        "text.mp4",
        "audio_only.mp4",
        "one_pixel.mkv",
        "unknown_codec.mkv",
        "undecodable.mp4",
        "no_frames.mp4",
        "huge_header.mp4",
        "missing.mp4",
    ],
)
def test_probe_gives_a_reason(bad_dataset: tuple[Path, dict[str, str]], name: str) -> None:
    root, expected = bad_dataset
    probe = probe_video(root / "videos" / name, IngestConfig())
    assert probe.error is not None and expected[name] in probe.error, probe.error


def test_huge_header_is_rejected_before_decoding(bad_dataset: tuple[Path, dict[str, str]]) -> None:
    root, _ = bad_dataset
    probe = probe_video(root / "videos" / "huge_header.mp4", IngestConfig())
    assert (probe.width, probe.height) == (16000, 16000)
    assert probe.frame_count is None  # stopped at the header: nothing was read or decoded


def test_limits_come_from_config(bad_dataset: tuple[Path, dict[str, str]]) -> None:
    root, _ = bad_dataset
    good = root / "videos" / "good.mp4"
    assert probe_video(good, IngestConfig()).error is None
    assert "max_file_bytes" in probe_video(good, IngestConfig(max_file_bytes=100)).error
    assert "max_duration_s" in probe_video(good, IngestConfig(max_duration_s=0.1)).error
    assert "max_pixels" in probe_video(good, IngestConfig(max_pixels=1000)).error


@pytest.mark.slow
def test_bad_videos_never_stop_ingest_or_decode(
    bad_dataset: tuple[Path, dict[str, str]], tmp_path: Path, ray_local: None
) -> None:
    root, expected = bad_dataset
    dataset = DatasetConfig(name="bad", adapter="csv", root=str(root))
    cfg = load_config(
        None,
        [f"store.root={tmp_path / 'store'}", "decode.size=32"],
        datasets=[dataset.model_dump()],
    )
    record = run_stage(cfg, "ingest", dataset)
    manifest = read_manifest(cfg, dataset).to_pylist()
    assert record.counts["ok"] == 2 and record.counts["failed"] == len(manifest) - 2
    by_name = {Path(row["path"]).name: row for row in manifest}
    for name, reason in expected.items():
        row = by_name[name]
        assert row["status"] == "failed" and reason in row["error"], (name, row["error"])
    good = [r for r in manifest if r["status"] == "ok"]
    assert {Path(r["path"]).name for r in good} == {"good.mp4", "good_audio.mp4"}
    clamped = next(r for r in good if r["path"] == "videos/good.mp4")
    window = (clamped["frame_start"], clamped["frame_end"], clamped["window_clamped"])
    assert window == (5, 20, True)
    assert next(r for r in good if r["path"] == "videos/good_audio.mp4")["has_audio"] is True
    bad_row = [r for r in manifest if r["error"] and "not an integer" in r["error"]]
    assert len(bad_row) == 1  # a bad label row is a failed row too

    record = run_stage(cfg, "decode", dataset)
    assert record.counts["ok"] == 2 and record.counts["failed"] == 0
    assert record.counts["ingest_failed"] == len(manifest) - 2
    folder = stage_folder(cfg, "decode", dataset)
    results = pq.read_table(f"{folder}/clips.parquet").to_pylist()
    assert sorted(r["num_frames"] for r in results) == [15, 20]
