"""The extraction stage: part map encoding, the Parquet schema, rasterized hands against rendered
ones, MediaPipe on synthetic clips (mask IoU, left/right), and the stage's reruns, failures and
resumption after a kill."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pytest

from signmae_core.clips import ClipMeta, read_source_frames
from signmae_core.config import DatasetConfig, SynthConfig, load_config
from signmae_core.errors import InputError
from signmae_core.extract import encoding, schema
from signmae_core.extract.mediapipe_backend import (
    MediaPipeParams,
    _Hand,
    accept_second_look,
    assign_sides,
    classifier_side,
    crop_square,
    hand_crop_box,
    near_pose_wrist,
    uncrop_points,
)
from signmae_core.extract.oracle_backend import oracle_extract
from signmae_core.extract.rasterize import normalized_to_grid, rasterize_hand
from signmae_core.parts import LEFT_HAND, NUM_PARTS, RIGHT_HAND
from signmae_core.synth import generate, read_ground_truth

REPO_ROOT = Path(__file__).resolve().parents[1]
LEFT, RIGHT = LEFT_HAND, RIGHT_HAND


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four short synthetic clips at 224 px (two signers, two signs) with ground truth."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(classes=2, signers=2, reps=1, frames=12, size=224, seed=3))
    return root


def full_frame_meta(root: Path, video_id: str) -> ClipMeta:
    """The metadata of a clip that is the whole synthetic video, uncropped, at its own size."""
    truth = read_ground_truth(root, video_id, parts=False)
    count, size = len(truth.landmarks), int(truth.meta["width"])
    return ClipMeta(
        video_id=video_id, fps=25, height=size, width=size, num_frames=count,
        source_path=f"videos/{video_id}.mp4", source_width=size, source_height=size,
        source_fps=25, window=(0, count), frame_indices=list(range(count)),
        crop_box=(0.0, 0.0, float(size)), jpeg_quality=90,
    )


# ---- encoding ----------------------------------------------------------------------------------
def test_part_map_encoding_round_trip() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (28, 28), (56, 40), (7, 113)]:
        labels = rng.integers(0, NUM_PARTS, size=shape, dtype=np.uint8)
        data = encoding.encode_part_map(labels)
        assert isinstance(data, bytes)
        np.testing.assert_array_equal(encoding.decode_part_map(data, *shape), labels)
    maps = np.zeros((5, 56, 56), np.uint8)
    maps[:, 10:20, 30:40] = LEFT
    blobs = encoding.encode_part_maps(maps)
    assert max(len(b) for b in blobs) < 100  # compact: a blob per frame, far below 56*56 bytes
    np.testing.assert_array_equal(encoding.decode_part_maps(blobs, 56, 56), maps)
    assert encoding.decode_part_maps([], 4, 6).shape == (0, 4, 6)


def test_part_map_encoding_rejects_bad_input() -> None:
    with pytest.raises(encoding.PartMapError, match="out of range"):
        encoding.encode_part_map(np.full((4, 4), 5, np.uint8))
    with pytest.raises(encoding.PartMapError, match="uint8"):
        encoding.encode_part_map(np.zeros((4, 4), np.int32))
    good = encoding.encode_part_map(np.zeros((4, 4), np.uint8))
    with pytest.raises(encoding.PartMapError, match="expected 4 x 5"):
        encoding.decode_part_map(good, 4, 5)
    with pytest.raises(encoding.PartMapError, match="do not decompress"):
        encoding.decode_part_map(b"not zlib at all", 4, 4)
    bomb = zlib.compress(bytes(50_000_000))  # 50 MB of zeros in ~50 kB: stops after 17 bytes
    with pytest.raises(encoding.PartMapError):
        encoding.decode_part_map(bomb, 4, 4)
    with pytest.raises(encoding.PartMapError, match="out of range"):
        encoding.decode_part_map(zlib.compress(bytes([9] * 16)), 4, 4)


# ---- schema ------------------------------------------------------------------------------------
def random_clip(video_id: str, frames: int, seed: int) -> schema.ClipExtraction:
    rng = np.random.default_rng(seed)
    clip = schema.empty_extraction(video_id, frames, (14, 12))
    found = rng.random(frames) < 0.6
    clip.left_hand[found] = rng.random((found.sum(), 21, 3), dtype=np.float32)
    clip.left_score[found] = 0.9
    clip.right_hand[1] = rng.random((21, 3), dtype=np.float32)
    clip.right_score[1] = 0.7
    clip.pose[:] = rng.random((frames, 33, 4), dtype=np.float32)
    clip.pose_score[:] = 0.8
    clip.face_box[0] = (0.2, 0.1, 0.6, 0.5)
    clip.face_score[0] = 0.9
    clip.person_found[:] = True
    clip.part_maps = rng.integers(0, 5, size=(frames, 14, 12), dtype=np.uint8)
    clip.clip_width = clip.clip_height = 56
    clip.extract_width = clip.extract_height = 224
    clip.fps, clip.frames_from, clip.clip_key = 25.0, "source", f"key-{video_id}"
    return clip


def assert_same_clip(a: schema.ClipExtraction, b: schema.ClipExtraction) -> None:
    for name in ("left_hand", "right_hand", "left_score", "right_score", "pose", "pose_score",
                 "face_box", "face_score", "person_found", "part_maps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("video_id", "backend", "frames_from", "clip_width", "clip_height",
                 "extract_width", "extract_height", "clip_key"):
        assert getattr(a, name) == getattr(b, name), name


def test_schema_round_trip_and_readers(tmp_path: Path) -> None:
    import duckdb
    import pandas as pd

    clips = [random_clip("b", 9, 1), random_clip("a", 5, 2)]
    parts = tmp_path / "parts"
    parts.mkdir()
    schema.write_part(parts / "part-00000.parquet", [schema.ok_row(c) for c in clips])
    schema.write_part(parts / "part-00001.parquet",
                      [schema.failed_row("c", "ClipError: truncated", "mediapipe")])
    (parts / ".tmp-123-part-00002.parquet").write_bytes(b"half written")  # never read

    table = schema.read_extraction(tmp_path)
    assert table.num_rows == 3 and table.schema.equals(schema.SCHEMA)
    assert table.schema.field("left_hand").type == pa.list_(pa.list_(pa.float32(), 63))
    assert table.schema.field("pose").type == pa.list_(pa.list_(pa.float32(), 132))
    by_id = {r["video_id"]: r for r in table.select(
        ["video_id", "status", "error", "num_frames", "hand_frames"]).to_pylist()}
    assert by_id["c"] == {"video_id": "c", "status": "failed", "error": "ClipError: truncated",
                          "num_frames": 0, "hand_frames": None}
    assert by_id["b"]["num_frames"] == 9
    assert by_id["b"]["hand_frames"] == int((clips[0].left_found | clips[0].right_found).sum())

    for clip in clips:
        assert_same_clip(schema.load_clip(tmp_path, clip.video_id), clip)
    assert [c.video_id for c in schema.iter_clips(tmp_path, batch_clips=1)] == ["a", "b"]
    assert [c.video_id for c in schema.iter_clips(tmp_path, video_ids=["b"])] == ["b"]
    assert schema.read_extraction(tmp_path, ["a", "c"], columns=["status"]).num_rows == 2
    assert schema.read_extraction(tmp_path, only_ok=True).num_rows == 2
    with pytest.raises(schema.ExtractionError, match="failed extraction: ClipError"):
        schema.load_clip(tmp_path, "c")
    with pytest.raises(schema.ExtractionError, match="not in the extraction output"):
        schema.load_clip(tmp_path, "zzz")

    frame = pd.read_parquet(parts)  # pandas and DuckDB read the files as they are
    assert sorted(frame["video_id"]) == ["a", "b", "c"]
    assert len(frame.set_index("video_id").loc["b", "left_hand"]) == 9
    rows = duckdb.sql(
        f"SELECT video_id, status, len(part_maps) AS t, len(left_hand[1]) AS w "
        f"FROM read_parquet('{parts}/part-*.parquet') ORDER BY video_id"
    ).fetchall()
    assert rows == [("a", "ok", 5, 63), ("b", "ok", 9, 63), ("c", "failed", None, None)]


# ---- rasterization and the oracle ---------------------------------------------------------------
def test_rasterized_hands_match_the_rendered_hands(synthetic: Path) -> None:
    """Hands drawn from the ground-truth landmarks cover the renderer's hand pixels (IoU)."""
    scores = []
    for video in sorted((synthetic / "videos").glob("*.mp4")):
        oracle = oracle_extract(synthetic, full_frame_meta(synthetic, video.stem), (56, 56))
        for hand, label in ((oracle.left_hand, LEFT), (oracle.right_hand, RIGHT)):
            for t in np.flatnonzero(~np.isnan(hand[:, 0, 0])):
                drawn = rasterize_hand((56, 56), normalized_to_grid(hand[t], (56, 56)))
                scores.append(iou(drawn, oracle.part_maps[t] == label))
    assert len(scores) > 20
    assert np.nanmean(scores) >= 0.7


def test_oracle_maps_ground_truth_through_the_crop(synthetic: Path) -> None:
    video_id = sorted((synthetic / "videos").glob("*.mp4"))[0].stem
    meta = full_frame_meta(synthetic, video_id)
    # A square on the right of the frame, at its own scale, frames 2..9.
    cropped = meta.model_copy(update={"crop_box": (112.0, 56.0, 112.0), "width": 112,
                                      "height": 112, "frame_indices": list(range(2, 10)),
                                      "num_frames": 8})
    full = oracle_extract(synthetic, meta, (224, 224))
    part = oracle_extract(synthetic, cropped, (112, 112))
    np.testing.assert_array_equal(part.part_maps, full.part_maps[2:10, 56:168, 112:])
    truth = read_ground_truth(synthetic, video_id, parts=False)
    expected = ((truth.landmarks[2:10, 1] + 0.5) - [112, 56]) / 112  # right hand, normalized
    seen = ~np.isnan(part.right_hand[:, 0, 0])
    np.testing.assert_allclose(part.right_hand[seen, :, :2], expected[seen], atol=1e-5)


def test_padding_is_never_a_part() -> None:
    """A 1280x720 video padded to a square clip: only the middle rows show the video."""
    from signmae_core.extract.worker import inside_source, seg_shape, source_size

    meta = ClipMeta(
        video_id="w", fps=25, height=224, width=224, num_frames=1, source_path="w.mp4",
        source_width=1280, source_height=720, source_fps=25, window=(0, 1), frame_indices=[0],
        crop_box=(0.0, -280.0, 1280.0), jpeg_quality=90,
    )
    inside = inside_source(meta, seg_shape(meta, 0.25))
    assert inside.shape == (56, 56) and inside.all(axis=1).sum() == 32
    assert not inside[:12].any() and not inside[44:].any() and inside[12:44].all()
    extract_cfg = load_config(None).extract
    assert source_size(meta, extract_cfg) == 448  # auto: the source, larger than the clip
    assert source_size(meta.model_copy(update={"width": 448, "height": 448}), extract_cfg) is None
    small_source = meta.model_copy(update={"crop_box": (0.0, 0.0, 200.0)})
    assert source_size(small_source, extract_cfg) is None  # never upsampled past the source


def test_source_video_is_found_inside_the_dataset_root_only(tmp_path: Path) -> None:
    """A dataset of symbolic links is fine; a clip whose source path climbs out is refused."""
    from signmae_core.extract.worker import ClipExtractor, ClipJob

    elsewhere = tmp_path / "elsewhere.mp4"
    elsewhere.write_bytes(b"")
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "a.mp4").symlink_to(elsewhere)
    extractor = ClipExtractor(load_config(None, ["extract.backend=oracle"]).extract, root)
    meta = ClipMeta(
        video_id="a", fps=25, height=64, width=64, num_frames=1, source_path="a.mp4",
        source_width=64, source_height=64, source_fps=25, window=(0, 1), frame_indices=[0],
        crop_box=(0.0, 0.0, 64.0), jpeg_quality=90,
    )
    job = ClipJob(video_id="a", clip_path="unused")
    assert extractor._source_video(job, meta) == root / "a.mp4"
    climbing = meta.model_copy(update={"source_path": "../elsewhere.mp4"})
    with pytest.raises(ValueError, match="outside the dataset root"):
        extractor._source_video(job, climbing)


# ---- handedness --------------------------------------------------------------------------------
def test_handedness_labels_are_swapped_for_ordinary_video() -> None:
    assert classifier_side("Left", mirrored_input=False) == "right"
    assert classifier_side("Right", mirrored_input=False) == "left"
    assert classifier_side("Left", mirrored_input=True) == "left"


def _hand_at(x: float, side: str, score: float = 0.9) -> _Hand:
    points = np.zeros((21, 3), np.float32)
    points[:, 0] = x + np.linspace(0, 0.05, 21)
    points[:, 1] = 0.5 + np.linspace(0, 0.08, 21)
    return _Hand(points, side, score)


def test_sides_follow_the_pose_wrists_and_are_never_shared() -> None:
    pose = np.full((33, 4), 0.5, np.float32)
    pose[15, :2] = (0.7, 0.5)  # the signer's left wrist appears on the image right
    pose[16, :2] = (0.3, 0.5)
    params = MediaPipeParams()
    # The classifier says "left" for both; the pose puts each at its own wrist.
    sides = assign_sides([_hand_at(0.3, "left"), _hand_at(0.7, "left")], pose, 1.0, params)
    assert sides["right"].points[0, 0] == pytest.approx(0.3)
    assert sides["left"].points[0, 0] == pytest.approx(0.7)
    # Without a pose: the classifier decides, the more confident hand first, no side twice.
    sides = assign_sides([_hand_at(0.3, "left", 0.6), _hand_at(0.7, "left", 0.9)], None, 1.0,
                         params)
    assert sides["left"].points[0, 0] == pytest.approx(0.7)
    assert sides["right"].points[0, 0] == pytest.approx(0.3)
    # One hand reported twice (nested boxes) is one hand.
    inner = _hand_at(0.31, "right", 0.5)
    inner.points[:, :2] = 0.5 * (inner.points[:, :2] - inner.points[0, :2]) + [0.31, 0.52]
    assert len(assign_sides([_hand_at(0.3, "left"), inner], None, 1.0, params)) == 1


def test_a_hand_far_from_both_pose_wrists_is_not_a_hand() -> None:
    pose = np.full((33, 4), 0.5, np.float32)
    pose[15, :2] = (0.7, 0.5)
    pose[16, :2] = (0.3, 0.5)
    assert near_pose_wrist(_hand_at(0.3, "left"), pose, 1.0, max_distance=2.0)
    assert near_pose_wrist(_hand_at(0.72, "left"), pose, 1.0, max_distance=2.0)
    phantom = _hand_at(0.5, "left")  # on the face between the wrists, 5 palm lengths away
    assert not near_pose_wrist(phantom, pose, 1.0, max_distance=2.0)
    assert near_pose_wrist(phantom, pose, 1.0, max_distance=6.0)
    pose[15:17, :2] = np.nan  # a pose without wrists cannot judge: the hand is kept
    assert near_pose_wrist(phantom, pose, 1.0, max_distance=2.0)


def _pose_with_hands(left: tuple[float, float], right: tuple[float, float]) -> np.ndarray:
    """(33, 4) pose whose wrists sit at `left` / `right` (u, v), knuckles 0.04 below them."""
    pose = np.full((33, 4), 0.5, np.float32)
    pose[:, 3] = 0.9
    for (wrist, pinky, index), (u, v) in (((15, 17, 19), left), ((16, 18, 20), right)):
        pose[wrist, :2] = (u, v)
        pose[pinky, :2] = (u - 0.01, v + 0.04)
        pose[index, :2] = (u + 0.01, v + 0.04)
    return pose


def test_second_look_crop_maps_points_back_to_the_frame() -> None:
    params = MediaPipeParams(second_look_crop=4.5, second_look_min_crop=8)
    frame = np.zeros((300, 400, 3), np.uint8)
    pose = _pose_with_hands(left=(0.6, 0.5), right=(0.3, 0.5))
    box = hand_crop_box(pose, "left", frame.shape[:2], params)
    x0, y0, side_px = box
    # centred at the knuckles (0.6, 0.54) with side 4.5 wrist-to-knuckle lengths (0.04 x 300 px)
    assert x0 + side_px / 2 == pytest.approx(0.6 * 400)
    assert y0 + side_px / 2 == pytest.approx(0.54 * 300)
    assert side_px == pytest.approx(4.5 * 12)
    # A bright pixel inside the box lands where `uncrop_points` says it is.
    frame[170, 250] = 255
    crop = crop_square(frame, box, 216)  # 4x zoom
    ys, xs = np.nonzero(crop[..., 0] > 0)
    found = np.array([[(xs.mean() + 0.5) / 216, (ys.mean() + 0.5) / 216, 0.1]])
    u, v, z = uncrop_points(np.repeat(found, 21, 0), box, frame.shape[:2])[0]
    assert (u * 400 - 0.5, v * 300 - 0.5) == (pytest.approx(250, abs=0.05),
                                               pytest.approx(170, abs=0.05))
    assert z == pytest.approx(0.1 * side_px / 400)
    # Parts of the box outside the frame are black, not stretched edges.
    edge = hand_crop_box(_pose_with_hands((0.99, 0.97), (0.3, 0.5)), "left", (300, 400), params)
    assert edge[0] + edge[2] > 400
    assert (crop_square(np.full((300, 400, 3), 200, np.uint8), edge, 64)[:, -8:] == 0).all()


def test_second_look_needs_a_visible_wrist_in_the_frame() -> None:
    params = MediaPipeParams(second_look_min_crop=8)
    pose = _pose_with_hands(left=(0.6, 0.5), right=(0.3, 0.5))
    assert hand_crop_box(pose, "right", (300, 400), params) is not None
    pose[16, 3] = 0.2  # right wrist not visible
    assert hand_crop_box(pose, "right", (300, 400), params) is None
    off = _pose_with_hands(left=(0.6, 1.6), right=(0.3, 0.5))  # hand well below the frame
    assert hand_crop_box(off, "left", (300, 400), params) is None
    off[15:20, :2] = np.nan
    assert hand_crop_box(off, "left", (300, 400), params) is None


def test_second_look_keeps_only_a_new_hand_at_its_own_wrist() -> None:
    params = MediaPipeParams(max_wrist_distance=2.0)
    pose = _pose_with_hands(left=(0.7, 0.5), right=(0.3, 0.5))
    at_left_wrist = _hand_at(0.7, "left")
    assert accept_second_look(at_left_wrist, "left", pose, {}, 1.0, params)
    # nearer to the other wrist: that is the other hand, or nobody's
    assert not accept_second_look(_hand_at(0.35, "left"), "left", pose, {}, 1.0, params)
    # far from the own wrist (2.5 palm lengths, more than max_wrist_distance)
    assert not accept_second_look(_hand_at(0.55, "left"), "left", pose, {}, 1.0, params)
    assert accept_second_look(_hand_at(0.64, "left"), "left", pose, {}, 1.0, params)
    # the right hand, already found, seen again at the left wrist's crop
    seen = {"right": _hand_at(0.7, "right")}
    assert not accept_second_look(at_left_wrist, "left", pose, seen, 1.0, params)


# ---- MediaPipe on synthetic clips ----------------------------------------------------------------
# ---- the stage ---------------------------------------------------------------------------------
def stage_config(store: Path, dataset: DatasetConfig, *overrides: str):
    return load_config(
        None, [f"store.root={store}", "decode.size=64", *overrides],
        datasets=[dataset.model_dump()],
    )


def run(cfg: Any, *stages: str, force: bool = False) -> Any:
    """Run stages through the plan and the envelope; returns the last stage's outcome."""
    from pipelines.runner import run_stages

    return run_stages(cfg, list(stages), force=force)[-1]


def test_oracle_backend_needs_ground_truth(tmp_path: Path) -> None:
    from pipelines import extract
    from pipelines.dag import Plan
    from pipelines.execute import StageContext

    dataset = DatasetConfig(name="real", root=str(tmp_path))
    plan = Plan(stage_config(tmp_path / "store", dataset, "extract.backend=oracle"))
    context = StageContext(plan, plan.key("extract", "real"), writer=None, force=False,
                           previous=None)
    with pytest.raises(InputError, match="ground truth"):
        extract.compute(context)  # refused before it reads anything


def decoded(synthetic: Path, store: Path, *overrides: str):
    dataset = DatasetConfig(name="syn", root=str(synthetic))
    cfg = stage_config(store, dataset, *overrides)
    run(cfg, "ingest", "decode")
    return cfg, dataset


def folder_of(cfg: Any, stage: str) -> str:
    """The finished output folder of a stage of dataset `syn`, through a fresh plan."""
    from pipelines.dag import Plan

    return Plan(cfg).output(stage, "syn").folder


@contextlib.contextmanager
def moved_aside(path: Path) -> Iterator[None]:
    """`path` is missing inside the block."""
    aside = path.with_name(f"{path.name}.aside")
    path.rename(aside)
    try:
        yield
    finally:
        aside.rename(path)


@pytest.mark.slow
def test_stage_writes_rows_skips_reruns_and_fails_a_clip_alone(
    synthetic: Path, tmp_path: Path, ray_local: None
) -> None:
    import duckdb

    from signmae_core.synth.ground_truth import ground_truth_path

    synthetic = Path(shutil.copytree(synthetic, tmp_path / "synth"))  # one of its videos changes
    cfg, dataset = decoded(synthetic, tmp_path / "store", "extract.backend=oracle",
                           "extract.clips_per_part=3")
    clip_files = sorted(Path(folder_of(cfg, "decode"), "clips").glob("*.smclip"))
    broken = clip_files[0]
    truth = ground_truth_path(synthetic, broken.stem.split("__")[-1])
    with moved_aside(truth):  # the oracle cannot extract this clip
        record = run(cfg, "extract").record
    assert (record.counts["ok"], record.counts["failed"], record.counts["extracted"]) == (3, 1, 4)
    folder = folder_of(cfg, "extract")
    table = schema.read_extraction(folder)
    failed = table.filter(pa.compute.equal(table.column("status"), "failed")).to_pylist()
    assert [r["video_id"] for r in failed] == [broken.stem]
    assert "no ground truth" in failed[0]["error"]
    assert len(list(Path(folder, "parts").glob("part-*.parquet"))) == 2
    ok = next(schema.iter_clips(folder))
    assert ok.backend == "oracle" and ok.part_maps.shape == (12, 16, 16)  # 0.25 x 64 px
    assert ok.clip_width == 64 and ok.left_found.any() | ok.right_found.any()
    assert duckdb.sql(f"SELECT count(*) FROM '{folder}/parts/*.parquet'").fetchall() == [(4,)]

    # Frames read again from the 224 px source line up with the 64 px stored clip.
    from signmae_core.clips import read_clip, read_clip_meta
    from signmae_core.extract.worker import ClipExtractor, ClipJob

    clip_path = clip_files[1]
    frames, origin, warning = ClipExtractor(cfg.extract, synthetic)._frames(
        ClipJob(clip_path.stem, str(clip_path)), read_clip_meta(clip_path))
    assert (frames.shape, origin, warning) == ((12, 224, 224, 3), "source", None)
    small = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in frames])
    stored = read_clip(clip_path).astype(np.float32)
    assert np.abs(small.astype(np.float32) - stored).mean() < 4  # same frames, same crop

    stamps = {p: p.stat().st_mtime_ns for p in Path(folder, "parts").iterdir()}
    again = run(cfg, "extract")
    assert not again.ran and again.record == record  # up to date: nothing redone
    assert {p: p.stat().st_mtime_ns for p in Path(folder, "parts").iterdir()} == stamps

    with moved_aside(truth):
        forced = run(cfg, "extract", force=True).record
    assert (forced.counts["extracted"], forced.counts["skipped"]) == (4, 0)
    assert forced.counts["failed"] == 1
    assert schema.read_extraction(folder).num_rows == 4  # replaced, not duplicated

    # The failed clip's video changes: decode remakes that clip, extraction redoes only it.
    # (Other bytes, same frames: the MP4's ftyp minor version. A touch alone is not a change.)
    video = synthetic / "videos" / f"{broken.stem.split('__')[-1]}.mp4"
    data = bytearray(video.read_bytes())
    assert data[4:8] == b"ftyp"
    data[12:16] = (int.from_bytes(data[12:16], "big") + 1).to_bytes(4, "big")
    video.write_bytes(bytes(data))
    grown = run(cfg, "ingest", "decode", "extract").record
    assert (grown.counts["extracted"], grown.counts["skipped"]) == (1, 3)
    assert (grown.counts["ok"], grown.counts["failed"]) == (4, 0)
    ids = schema.read_extraction(folder).column("video_id").to_pylist()
    assert sorted(ids) == sorted({*ids}) and len(ids) == 4


@pytest.mark.slow
def test_source_videos_are_found_under_the_dataset_root_as_configured_now(
    synthetic: Path, tmp_path: Path, ray_local: None
) -> None:
    """The manifest's absolute `uri` goes stale when the dataset moves; the jobs do not."""
    from pipelines import extract, outputs
    from pipelines.dag import Plan

    before, after = tmp_path / "before", tmp_path / "after"
    shutil.copytree(synthetic, before, symlinks=True)
    decoded(before, tmp_path / "store")
    before.rename(after)
    plan = Plan(stage_config(tmp_path / "store", DatasetConfig(name="syn", root=str(after))))
    jobs = extract.clip_jobs(plan, "syn")
    manifest = {r["video_id"]: r for r in outputs.manifest(plan, "syn").to_pylist()}
    assert len(jobs) == len(manifest) == 4
    for video_id, job in jobs.items():
        assert manifest[video_id]["uri"].startswith(str(before))
        assert job.source_path == str(after / manifest[video_id]["path"])
        assert Path(job.source_path).is_file()


def mean_distance(points: np.ndarray, truth: np.ndarray) -> float:
    """Mean (u, v) distance between two (21, >=2) hands; infinite when `truth` is absent."""
    if np.isnan(truth[:, 0]).any():
        return float("inf")
    return float(np.linalg.norm(points[:, :2] - truth[:, :2], axis=1).mean())


@pytest.mark.slow
def test_mediapipe_stage_on_synthetic_clips(
    synthetic: Path, tmp_path: Path, ray_local: None
) -> None:
    """Two MediaPipe workers extract the clips; against the rendered ground truth, the hand
    masks of detected frames reach a mean IoU of 0.5 and left and right are not swapped."""
    from signmae_core.clips import read_clip_meta

    cfg, dataset = decoded(synthetic, tmp_path / "store", "decode.size=224",
                           "extract.num_workers=2")
    record = run(cfg, "extract").record
    assert (record.counts["ok"], record.counts["failed"]) == (4, 0)
    decode_dir, folder = folder_of(cfg, "decode"), folder_of(cfg, "extract")
    ious, correct, swapped = [], 0, 0
    for found in schema.iter_clips(folder):
        assert (found.backend, found.frames_from, found.part_maps.shape[1:]) == (
            "mediapipe", "clip", (56, 56))
        assert found.pose_found.all() and found.person_found.all()
        meta = read_clip_meta(Path(decode_dir, "clips", f"{found.video_id}.smclip"))
        truth = oracle_extract(synthetic, meta, (56, 56))
        for hand, label in ((0, LEFT), (1, RIGHT)):
            for t in np.flatnonzero(~np.isnan(found.hands[:, hand, 0, 0])):
                ious.append(iou(found.part_maps[t] == label, truth.part_maps[t] == label))
                own, other = (
                    mean_distance(found.hands[t, hand], truth.hands[t, h]) for h in (hand, 1 - hand)
                )
                correct += bool(own < other)
                swapped += bool(other < own)
    assert len(ious) >= 30, "MediaPipe found too few hands to judge"
    assert np.nanmean(ious) >= 0.5
    assert swapped <= 0.1 * (correct + swapped), f"{swapped} swapped, {correct} right"


@pytest.mark.slow
def test_second_look_adds_hands_on_their_own_side(tmp_path: Path) -> None:
    """Where tracking misses hands in view, the hands that only the second look finds lie on the
    rendered hand of their own side, and tracking's own hands do not change."""
    from signmae_core.extract.mediapipe_backend import MediaPipeBackend

    # The accuracy bench's synthetic set (seed 0); in these two clips the full-frame palm
    # detector misses 60 of the 116 hands in view; the second look finds 28 of them.
    generate(tmp_path, SynthConfig(classes=6, signers=3, reps=1, frames=32, size=224, seed=0))
    tracked_only = MediaPipeBackend(MediaPipeParams(second_look=False))
    with_look = MediaPipeBackend(MediaPipeParams())
    added = on_own_hand = 0
    try:
        for video_id in ("s00_c000_r00", "s01_c004_r00"):
            meta = full_frame_meta(tmp_path, video_id)
            frames = read_source_frames(tmp_path / meta.source_path, meta, 224)
            truth = oracle_extract(tmp_path, meta, (56, 56))
            before = tracked_only.process(frames, (56, 56))
            after = with_look.process(frames, (56, 56))
            kept = ~np.isnan(before.hands[:, :, 0, 0])
            new = ~np.isnan(after.hands[:, :, 0, 0]) & ~kept
            np.testing.assert_array_equal(after.hands[kept], before.hands[kept])
            assert after.second_look_hands == new.sum()
            for t, hand in zip(*np.nonzero(new), strict=True):
                own, other = (
                    mean_distance(after.hands[t, hand], truth.hands[t, h]) for h in (hand, 1 - hand)
                )
                span = np.ptp(truth.hands[t, hand, :, :2], axis=0).max()  # NaN: no such hand
                added += 1
                on_own_hand += bool(own < other and own < 0.5 * span)
    finally:
        tracked_only.close()
        with_look.close()
    assert added >= 10, f"the second look found only {added} of the missed hands"
    assert on_own_hand == added


@pytest.mark.slow
def test_a_crashing_or_hanging_clip_fails_alone(ray_local: None) -> None:
    import ray

    from pipelines.extract import map_actors

    class ToyWorker:  # defined here so that Ray ships it by value
        """Stands in for an extraction actor: crashes or hangs on request."""

        def extract(self, job: str) -> str:
            if job == "crash":
                os._exit(1)
            if job == "hang":
                time.sleep(120)
            return job.upper()

    actor = ray.remote(num_cpus=0, max_restarts=0)(ToyWorker)
    jobs = [(name, name) for name in ("a", "crash", "b", "hang", "c", "d")]
    results = {key: (value, error) for key, value, error in map_actors(
        actor.remote, "extract", jobs, num_actors=2, timeout_s=5.0)}
    assert {k: v for k, (v, _) in results.items() if v} == {"a": "A", "b": "B", "c": "C",
                                                            "d": "D"}
    assert results["crash"][1].startswith("worker died")
    assert results["hang"][1] == "timed out after 5 s"


_KILL_SCRIPT = """
import sys
from signmae_core.config import DatasetConfig, load_config
from pipelines.runner import run_stages
dataset = DatasetConfig(name="syn", root=sys.argv[1])
cfg = load_config(None, [f"store.root={sys.argv[2]}", "decode.size=64", "extract.backend=oracle",
                         "extract.clips_per_part=1", "extract.num_workers=1"],
                  datasets=[dataset.model_dump()])
run_stages(cfg, ["extract"])
"""


@pytest.mark.slow
def test_killed_extraction_resumes_without_redoing_parts(
    tmp_path: Path, ray_local: None
) -> None:
    import ray

    root = tmp_path / "data"
    generate(root, SynthConfig(classes=4, signers=2, reps=1, frames=24, size=96, seed=1))
    cfg, dataset = decoded(root, tmp_path / "store", "extract.backend=oracle",
                           "extract.clips_per_part=1", "extract.num_workers=1")
    script = tmp_path / "run_extract.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), str(tmp_path / "store")], cwd=REPO_ROOT,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    stage_dir = tmp_path / "store" / "syn" / "extract"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(stage_dir.glob("*/parts/part-*.parquet"))) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the extraction finished before it was killed"
    version_dir = next(stage_dir.iterdir())
    assert not (version_dir / "_stage.json").exists()
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in version_dir.glob("parts/part-*.parquet")}
    assert 2 <= len(done) < 8
    for name in done:  # a part with its final name is complete
        assert schema.read_extraction(version_dir / "parts" / name).num_rows == 1

    record = run(cfg, "extract").record
    assert record.counts["ok"] == 8
    assert record.counts["skipped"] >= len(done)
    assert record.counts["skipped"] + record.counts["extracted"] == 8
    for name, stamp in done.items():
        path = version_dir / "parts" / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp  # kept, not redone
    ids = schema.read_extraction(version_dir).column("video_id").to_pylist()
    assert len(ids) == len(set(ids)) == 8
    assert not list(version_dir.rglob(".tmp-*"))
