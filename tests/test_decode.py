"""Decode: windows, seeking, resampling, crop geometry, the clip format, and the Ray stage
(idempotent, incremental, resumable after SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from stages_helper import clip_rows, run_stage, stage_folder
from video_files import frame_level, write_video

from signmae_core import clips
from signmae_core.config import DatasetConfig, load_config
from signmae_core.ingest import source
from signmae_core.ingest.source import CropBox, crop_box_for, read_window, resample_indices

REPO_ROOT = Path(__file__).resolve().parents[1]


def _level(image: np.ndarray) -> float:
    """Mean grey level of the middle of a frame (clear of the marker square and the bars)."""
    h, w = image.shape[:2]
    return float(image[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].mean())


# ---- pure geometry and timing -------------------------------------------------------------------
def test_resample_indices() -> None:
    assert resample_indices(0, 6, 30.0, 30.0) == [0, 1, 2, 3, 4, 5]
    assert resample_indices(10, 40, 30.0, 25.0) == [10 + int(j * 1.2 + 1e-6) for j in range(25)]
    assert resample_indices(0, 4, 25.0, 50.0) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resample_indices(0, 3, 30.0, None) == [0, 1, 2]
    assert resample_indices(5, 5, 30.0, 25.0) == []


def test_crop_box_modes() -> None:
    assert crop_box_for(640, 480, "pad") == CropBox(0.0, -80.0, 640.0)
    assert crop_box_for(640, 480, "center") == CropBox(80.0, 0.0, 480.0)
    assert crop_box_for(640, 480, "bbox_or_pad", (100, 50, 300, 450)) == CropBox(0, 50, 400)
    assert crop_box_for(640, 480, "bbox_or_pad", None) == CropBox(0.0, -80.0, 640.0)
    assert crop_box_for(640, 480, "bbox_or_pad", (5, 5, 5, 5)) == CropBox(0.0, -80.0, 640.0)


def _meta(**over) -> clips.ClipMeta:
    values = dict(
        video_id="v",
        fps=25.0,
        height=32,
        width=32,
        num_frames=0,
        source_path="v.mp4",
        source_width=64,
        source_height=48,
        source_fps=25.0,
        window=(0, 0),
        frame_indices=[],
        crop_box=(0.0, -8.0, 64.0),
        jpeg_quality=90,
    )
    values.update(over)
    return clips.ClipMeta(**values)


def test_source_clip_mapping_round_trip() -> None:
    meta = _meta()
    points = np.array([[0.0, 0.0], [64.0, 48.0], [32.0, 24.0]])
    mapped = clips.source_to_clip(points, meta)
    assert np.allclose(mapped, [[0, 4], [32, 28], [16, 16]])
    assert np.allclose(clips.clip_to_source(mapped, meta), points)


def test_window_and_resample_pick_the_right_frames(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", frames=50, fps=50)
    got = list(read_window(video, 10, 40, out_fps=25, box=None, size=32))
    assert [i for i, _ in got] == list(range(10, 40, 2))
    for index, image in got:
        assert abs(_level(image) - frame_level(index)) < 3


def test_seek_lands_on_the_right_frames(tmp_path: Path) -> None:
    video = write_video(tmp_path / "long.mp4", frames=200, fps=25, gop=25)
    got = list(read_window(video, 150, 160, out_fps=25, box=None, size=32))
    assert [i for i, _ in got] == list(range(150, 160))
    for index, image in got:
        assert abs(_level(image) - frame_level(index % 60)) < 3


def test_padding_and_marker_land_where_the_mapping_says(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", frames=3, width=64, height=48)
    box = crop_box_for(64, 48, "pad")
    _, image = next(read_window(video, 0, 3, out_fps=None, box=box, size=32))
    assert image.shape == (32, 32, 3)
    assert image[:3].max() < 20 and image[-3:].max() < 20  # black bars above and below
    meta = _meta(crop_box=tuple(box.to_list()))
    (x0, y0), (x1, y1) = clips.source_to_clip(np.array([[0, 0], [12, 12]]), meta)
    marker = image[int(y0) + 1 : int(y1) - 1, int(x0) + 1 : int(x1) - 1]
    assert marker.min() > 200  # the white square at the source's top-left corner


# ---- the clip format ----------------------------------------------------------------------------
def test_clip_round_trip_random_access_and_damage(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3)
    frames = [(base * (0.5 + 0.1 * t) % 256).astype(np.uint8) for t in range(6)]
    frames[2] = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    meta = _meta(num_frames=6, window=(3, 9), frame_indices=list(range(3, 9)), video_id="درس")
    path = tmp_path / "c.smclip"
    size = clips.write_clip(path, frames, meta)
    assert size == path.stat().st_size
    assert clips.read_clip_meta(path) == meta
    video = clips.read_clip(path)
    assert video.shape == (6, 32, 32, 3) and video.dtype == np.uint8
    assert np.abs(video[0].astype(int) - frames[0]).mean() < 3
    assert np.array_equal(clips.read_frames(path, [3, 0, 3]), video[[3, 0, 3]])
    assert len(clips.read_jpeg_bytes(path, [1])[0]) > 100
    with pytest.raises(IndexError):
        clips.read_frames(path, [6])
    path.with_name("cut.smclip").write_bytes(path.read_bytes()[: size - 50])
    with pytest.raises(clips.ClipError, match="truncated"):
        clips.read_clip(path.with_name("cut.smclip"))
    path.with_name("bad.smclip").write_bytes(b"NOTACLIP" + path.read_bytes()[8:])
    with pytest.raises(clips.ClipError, match="not a clip"):
        clips.read_clip_meta(path.with_name("bad.smclip"))


def test_source_frames_at_another_size_align_with_the_clip(tmp_path: Path) -> None:
    from pipelines.decode import decode_clip

    video = write_video(tmp_path / "v.mp4", frames=30, width=96, height=64)
    job = {
        "video_id": "v",
        "uri": str(video),
        "path": "v.mp4",
        "frame_start": 4,
        "frame_end": 24,
        "bbox": [10.0, 0.0, 70.0, 60.0],
        "width": 96,
        "height": 64,
        "fps": 25.0,
        "source_key": "k",
    }
    settings = load_config(None, ["decode.size=32", "decode.fps=12.5"]).decode.model_dump()
    facts = decode_clip(job, settings, str(tmp_path / "v.smclip"))
    meta = clips.read_clip_meta(tmp_path / "v.smclip")
    assert facts["num_frames"] == meta.num_frames == 10
    assert meta.frame_indices == list(range(4, 24, 2)) and meta.crop_box == (10.0, 0.0, 60.0)
    clip = clips.read_clip(tmp_path / "v.smclip")
    big = clips.read_source_frames(video, meta, size=64)
    assert big.shape == (10, 64, 64, 3)
    small = big.reshape(10, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.abs(small - clip).mean() < 4


# ---- the stage ----------------------------------------------------------------------------------
def _cfg(tmp_path: Path, dataset: DatasetConfig, *overrides: str):
    return load_config(
        None,
        [f"store.root={tmp_path / 'store'}", "decode.size=32", *overrides],
        datasets=[dataset.model_dump()],
    )


def test_decode_reads_only_the_window(real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """63185 is 4,232 frames; its sign is frames 1-49: decoding must stop right after them."""
    decoded = []

    class Counting:
        def __init__(self, container) -> None:
            self.container = container

        def __getattr__(self, name: str):
            return getattr(self.container, name)

        def decode(self, stream):
            for frame in self.container.decode(stream):
                decoded.append(frame.pts)
                yield frame

    real_open = source.open_video

    def counting_open(path):
        container, stream = real_open(path)
        return Counting(container), stream

    monkeypatch.setattr(source, "open_video", counting_open)
    video = real_data / "wlasl_samples" / "videos" / "63185.mp4"
    frames = list(read_window(video, 0, 49, out_fps=25, box=None, size=32))
    assert len(frames) == 49
    assert 49 <= len(decoded) <= 50  # every frame of the window, and at most one past it


@pytest.mark.slow
def test_wlasl_samples_decode(real_data: Path, tmp_path: Path, ray_local: None) -> None:

    dataset = DatasetConfig(name="ws", adapter="wlasl", root=str(real_data / "wlasl_samples"))
    cfg = _cfg(tmp_path, dataset)
    run_stage(cfg, "ingest", dataset)
    record = run_stage(cfg, "decode", dataset)
    counts = record.counts
    assert (counts["ok"], counts["failed"], counts["ingest_failed"]) == (4, 0, 2)
    folder = stage_folder(cfg, "decode", dataset)
    results = {r["video_id"]: r for r in clip_rows(cfg, dataset)}
    assert set(results) == {"63048", "63185", "68011", "68012"}
    meta = clips.read_clip_meta(f"{folder}/{results['63185']['clip']}")
    assert meta.window == (0, 49) and meta.num_frames == 49 and meta.source_fps == 25.0
    assert clips.read_clip(f"{folder}/{results['63185']['clip']}").shape == (49, 32, 32, 3)
    assert results["68011"]["label"] == "book" and results["68011"]["split"] == "train"
    # 68011 is 29.97 fps: 47 source frames become round(47 * 25 / 29.97) = 39 clip frames
    assert results["68011"]["num_frames"] == 39
    assert run_stage(cfg, "decode", dataset) == record  # up to date: returned at once


@pytest.mark.slow
def _break_in_place(path: Path) -> None:
    """Overwrite a file with text of the same size and give it back its mtime (silent damage)."""
    stat = path.stat()
    path.write_bytes((b"replaced by text after ingest " * stat.st_size)[: stat.st_size])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_incremental_decode_and_a_video_that_breaks_after_ingest(
    tmp_path: Path, ray_local: None
) -> None:

    root = tmp_path / "data"
    for name in ("a", "b", "c"):
        write_video(root / f"{name}.mp4", frames=20)
    labels = root / "labels.csv"
    labels.write_text("path,label\na.mp4,x\nb.mp4,y\nc.mp4,x\n", encoding="utf-8")
    dataset = DatasetConfig(name="inc", root=str(root))
    cfg = _cfg(tmp_path, dataset)
    run_stage(cfg, "ingest", dataset)
    first = run_stage(cfg, "decode", dataset)
    assert (first.counts["decoded"], first.counts["ok"]) == (3, 3)
    folder = stage_folder(cfg, "decode", dataset)
    before = {p.name: p.stat().st_mtime_ns for p in Path(folder, "clips").iterdir()}

    write_video(root / "d.mp4", frames=20)
    labels.write_text("path,label\na.mp4,x\nb.mp4,y\nc.mp4,x\nd.mp4,z\n", encoding="utf-8")
    run_stage(cfg, "ingest", dataset)
    _break_in_place(root / "c.mp4")  # ingest cannot see it: same size, same mtime
    second = run_stage(cfg, "decode", dataset)
    assert (second.counts["decoded"], second.counts["skipped"]) == (1, 3)
    assert (second.counts["ok"], second.counts["failed"]) == (4, 0)  # c's clip was already made
    after = {p.name: p.stat().st_mtime_ns for p in Path(folder, "clips").iterdir()}
    assert all(after[name] == stamp for name, stamp in before.items())

    third = run_stage(cfg, "decode", dataset, force=True)
    assert (third.counts["ok"], third.counts["failed"]) == (3, 1)
    results = {r["video_id"]: r for r in clip_rows(cfg, dataset)}
    assert results["c"]["status"] == "failed" and "cannot open video" in results["c"]["error"]
    assert not Path(folder, "clips", "c.smclip").exists()  # no clip left for a failed video


_KILL_SCRIPT = """
import sys
from signmae_core.config import DatasetConfig, load_config
from pipelines.dag import Plan
from pipelines.execute import execute
dataset = DatasetConfig(name="kill", root=sys.argv[1])
cfg = load_config(None, [f"store.root={sys.argv[2]}", "decode.size=32", "decode.max_in_flight=1"],
                  datasets=[dataset.model_dump()])
plan = Plan.from_config(cfg)
execute(plan, plan.key("decode", "kill"))
"""


@pytest.mark.slow
def test_killed_decode_resumes_without_redoing_clips(tmp_path: Path, ray_local: None) -> None:
    import ray


    root = tmp_path / "data"
    names = [f"v{i:02d}" for i in range(30)]
    for name in names:
        write_video(root / f"{name}.mp4", frames=60, width=320, height=240)
    (root / "labels.csv").write_text(
        "path,label\n" + "".join(f"{n}.mp4,{n[-1]}\n" for n in names), encoding="utf-8"
    )
    dataset = DatasetConfig(name="kill", root=str(root))
    cfg = _cfg(tmp_path, dataset)
    run_stage(cfg, "ingest", dataset)
    script = tmp_path / "run_decode.py"
    script.write_text(_KILL_SCRIPT)
    env = {
        **os.environ,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), str(tmp_path / "store")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    clips_dir = tmp_path / "store" / "kill" / "decode"
    deadline = time.monotonic() + 120
    finished = []
    while time.monotonic() < deadline and proc.poll() is None:
        finished = [p for p in clips_dir.glob("*/clips/*.smclip")]
        if len(finished) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the decode finished before it could be killed"
    version_dir = next(clips_dir.iterdir())
    assert not (version_dir / "_stage.json").exists()
    done = {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in version_dir.glob("clips/*")
        if not p.name.startswith(".tmp-")
    }
    assert 3 <= len(done) < len(names)
    for name in done:  # whatever has a final name is a complete clip
        meta = clips.read_clip_meta(version_dir / "clips" / name)
        assert clips.read_clip(version_dir / "clips" / name).shape[0] == meta.num_frames

    record = run_stage(cfg, "decode", dataset)
    assert record.counts["ok"] == len(names)
    assert record.counts["skipped"] >= len(done)  # more may have finished as the kill landed
    assert record.counts["skipped"] + record.counts["decoded"] == len(names)
    for name, stamp in done.items():
        path = version_dir / "clips" / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp  # not redone
    assert not list(version_dir.rglob(".tmp-*"))
    results = pq.read_table(version_dir / "clips.parquet").to_pylist()
    assert len(results) == len(names) and all(r["status"] == "ok" for r in results)


@pytest.mark.slow
def test_parallel_map_turns_task_failures_into_reasons(ray_local: None) -> None:
    """A task that raises, kills its worker or hangs past its timeout gives a reason."""
    from pipelines.ingest import map_bounded

    def square_root(value: float) -> float:  # local functions travel to the workers by value
        import math

        return math.sqrt(value)

    def die(code: int) -> None:
        os._exit(code)

    def hang(seconds: float) -> None:
        time.sleep(seconds)

    jobs = [("ok", (49.0,)), ("raises", (-1.0,))]
    out = {key: (res, err) for key, res, err in map_bounded(square_root, jobs, max_in_flight=2)}
    assert out["ok"] == (7.0, None)
    assert out["raises"][0] is None and "math domain error" in out["raises"][1]
    crashed = list(map_bounded(die, [("dies", (1,))], max_in_flight=1))
    assert crashed[0][1] is None and crashed[0][2]
    hung = list(map_bounded(hang, [("hangs", (60,))], max_in_flight=1, timeout_s=1.0))
    assert hung == [("hangs", None, "timed out after 1 s")]
