"""The synthetic signer dataset: format, determinism, split, ground truth against decoded pixels."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from signmae_core.config import ConfigError, SynthConfig, load_config
from signmae_core.errors import InputError
from signmae_core.synth import (
    COMPLETION_FILE,
    HANDS,
    ensure_generated,
    generate,
    read_ground_truth,
    render_clip,
)
from signmae_core.synth.generate import PARTIAL_FILE, synthetic_datasets
from signmae_core.synth.signs import HANDSHAPES, build_class_set

TINY = SynthConfig(classes=3, signers=3, reps=1, frames=10, size=128, seed=3, workers=1)
SKIN_MATCH_PX = 25.0  # RGB distance from the signer's skin (lit or palm-tinted) that counts


def _decode(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a video."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "labels.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _skin_distance(pixels: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Distance of (N, 3) RGB pixels from the signer's skin tone under any brightness.

    The renderer lights skin between about 0.5x and 1.2x and tints palms towards pink, so a
    pixel is compared with the nearest brightness-scaled skin or palm colour.
    """
    luma = 0.299 * skin[0] + 0.587 * skin[1] + 0.114 * skin[2]
    palm = skin + (0.15 + 0.4 * (1 - luma / 255)) * (np.array([238.0, 190.0, 170.0]) - skin)
    best = np.full(len(pixels), np.inf)
    for base in (skin, palm):
        scale = np.clip(pixels @ base / (base @ base), 0.5, 1.25)
        best = np.minimum(best, np.linalg.norm(pixels - scale[:, None] * base, axis=1))
    return best


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    summary = generate(root, TINY)
    assert summary["clips"] == 9
    return root


# ---- config ------------------------------------------------------------------------------------
def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        SynthConfig(classes=0)
    with pytest.raises(ValidationError, match="smaller than signers"):
        SynthConfig(signers=2, test_signers=2)
    with pytest.raises(ValidationError, match="even"):
        SynthConfig(size=97)
    with pytest.raises(ConfigError, match="synth.classes") as info:
        load_config(None, ["synth.classes=0"])
    assert "\n" not in str(info.value)


# ---- layout and split --------------------------------------------------------------------------
def test_labels_csv_and_split_by_signer(tiny: Path) -> None:
    with (tiny / "labels.csv").open(encoding="utf-8") as handle:
        assert handle.readline().strip() == "path,label,signer,split"
    rows = _rows(tiny)
    assert len(rows) == TINY.classes * TINY.signers * TINY.reps
    for row in rows:
        assert not Path(row["path"]).is_absolute()
        assert (tiny / row["path"]).is_file()
    signers = {s: {r["signer"] for r in rows if r["split"] == s} for s in ("train", "test")}
    assert signers["train"] and signers["test"]
    assert not signers["train"] & signers["test"]
    assert signers["test"] == {f"s{TINY.signers - 1:02d}"}
    labels = {split: {r["label"] for r in rows if r["split"] == split} for split in signers}
    assert labels["train"] == labels["test"] == {s.name for s in build_class_set(TINY.classes)}
    manifest = json.loads((tiny / COMPLETION_FILE).read_text(encoding="utf-8"))
    assert manifest["clips"] == len(rows)
    assert manifest["config"]["seed"] == TINY.seed


def test_videos_are_h264_of_the_configured_size(tiny: Path) -> None:
    import av

    path = tiny / _rows(tiny)[0]["path"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (TINY.size, TINY.size)
        assert float(stream.average_rate) == TINY.fps
    assert len(_decode(path)) == TINY.frames


def test_class_set_has_minimal_pairs() -> None:
    signs = build_class_set(12)
    assert len({s.name for s in signs}) == 12
    assert build_class_set(5) == signs[:5]
    assert all(s.handshape in HANDSHAPES for s in signs)

    def same_except(a, b, field):  # noqa: ANN001, ANN202
        keys = ("handshape", "movement", "place", "orientation", "hands")
        return getattr(a, field) != getattr(b, field) and all(
            getattr(a, k) == getattr(b, k) for k in keys if k != field
        )

    pairs = [(a, b) for i, a in enumerate(signs) for b in signs[i + 1 :]]
    assert any(same_except(a, b, "handshape") for a, b in pairs)
    assert any(same_except(a, b, "movement") for a, b in pairs)


def test_class_groups_file_lists_the_minimal_pairs(tiny: Path) -> None:
    # judged from the classes' attributes in _synth.json, not from their positions
    completion = json.loads((tiny / COMPLETION_FILE).read_text())
    attributes = {c["label"]: c for c in completion["classes"]}
    groups = json.loads((tiny / "class_groups.json").read_text(encoding="utf-8"))["groups"]
    keys = ("handshape", "movement", "place", "orientation", "hands")
    for group in groups:
        a, b = (attributes[name] for name in group["classes"])
        assert [k for k in keys if a[k] != b[k]] == [group["kind"]], group
    # 3 classes = one base sign with its handshape pair and its movement pair
    assert sorted(g["kind"] for g in groups) == ["handshape", "movement"]
    # a complete dataset made before the file existed gets it without being regenerated
    (tiny / "class_groups.json").unlink()
    assert ensure_generated(tiny, TINY)["status"] == "up to date"
    assert json.loads((tiny / "class_groups.json").read_text(encoding="utf-8"))["groups"] == groups


# ---- determinism -------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, TINY.model_copy(update={"workers": 2}))
    first, second = _files(tiny), _files(again)
    assert sorted(first) == sorted(second)
    assert any(name.endswith(".mp4") for name in first)
    assert any(name.endswith(".parquet") for name in first)
    for name, data in first.items():
        assert second[name] == data, name


def test_other_seed_gives_other_videos(tiny: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate(other, TINY.model_copy(update={"seed": TINY.seed + 1, "signers": 2, "classes": 1}))
    name = "videos/s00_c000_r00.mp4"
    assert (other / name).read_bytes() != (tiny / name).read_bytes()


# ---- ground truth ------------------------------------------------------------------------------
def test_landmarks_land_on_hand_pixels_of_the_decoded_video(tiny: Path) -> None:
    """Wrist, knuckle and middle-joint landmarks sit on skin-coloured pixels of the MP4.

    Checked against the decoded colours (not against masks drawn from the landmarks); the same
    points moved up by a hand length must mostly miss the skin, or the check would prove nothing.
    """
    manifest = json.loads((tiny / COMPLETION_FILE).read_text(encoding="utf-8"))
    skins = {s["signer"]: np.asarray(s["skin"], dtype=np.float64) for s in manifest["signers"]}
    joints = [0, 5, 9, 13, 17, 6, 10, 14, 18]
    on_hand, moved = [], []
    for row in _rows(tiny):
        frames = _decode(tiny / row["path"]).astype(np.float64)
        truth = read_ground_truth(tiny, row["path"], parts=False)
        size = frames.shape[1]
        for t, h in zip(*np.nonzero(truth.in_view), strict=True):
            points = truth.landmarks[t, h, joints]
            hand_length = 2 * float(np.linalg.norm(points[2] - points[0]))
            xy = np.round(points).astype(int)
            on_hand.append(_skin_distance(frames[t, xy[:, 1], xy[:, 0]], skins[row["signer"]]))
            up = np.round(points - [0.0, 1.2 * hand_length]).astype(int)
            keep = (up >= 0).all(axis=1) & (up < size).all(axis=1)
            moved.append(_skin_distance(frames[t, up[keep, 1], up[keep, 0]], skins[row["signer"]]))
    on_hand_rate = float(np.mean(np.concatenate(on_hand) < SKIN_MATCH_PX))
    moved_rate = float(np.mean(np.concatenate(moved) < SKIN_MATCH_PX))
    assert len(on_hand) > 20
    assert on_hand_rate >= 0.93, on_hand_rate
    assert moved_rate <= 0.35, moved_rate


def test_part_maps_match_the_decoded_video(tiny: Path) -> None:
    manifest = json.loads((tiny / COMPLETION_FILE).read_text(encoding="utf-8"))
    skins = {s["signer"]: np.asarray(s["skin"], dtype=np.float64) for s in manifest["signers"]}
    for row in _rows(tiny)[:4]:
        frames = _decode(tiny / row["path"]).astype(np.float64)
        truth = read_ground_truth(tiny, row["path"])
        assert truth.parts is not None
        assert truth.parts.shape == frames.shape[:3]
        assert truth.parts.dtype == np.uint8
        assert set(np.unique(truth.parts)) <= {0, 1, 2, 3, 4}
        assert (truth.parts == 2).any(axis=(1, 2)).all()  # the face is always in view
        assert truth.meta["label"] == row["label"]
        for t, h in zip(*np.nonzero(truth.in_view), strict=True):
            label = 3 + h
            mask = truth.parts[t] == label
            assert mask.sum() > 50
            # hand pixels of the map are skin in the video (away from the outlined edges)
            inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            distance = _skin_distance(frames[t][inner], skins[row["signer"]])
            assert np.mean(distance < SKIN_MATCH_PX) > 0.85
            # the knuckles carry a hand label (the other hand may cover them)
            knuckles = np.round(truth.landmarks[t, h, [5, 9, 13, 17]]).astype(int)
            assert np.isin(truth.parts[t][knuckles[:, 1], knuckles[:, 0]], (3, 4)).all()
        background = truth.parts == 0
        assert background[:, :, :3].mean() > 0.9  # the left border is wall


def test_read_ground_truth_accepts_ids_and_paths(tiny: Path) -> None:
    by_path = read_ground_truth(tiny, "videos/s00_c001_r00.mp4", parts=False)
    by_id = read_ground_truth(tiny, "s00_c001_r00", parts=False)
    assert by_path.landmarks.shape == (TINY.frames, 2, 21, 2)
    assert by_path.landmarks.dtype == np.float32
    assert by_path.in_view.shape == (TINY.frames, 2)
    assert by_path.parts is None
    np.testing.assert_array_equal(by_path.landmarks, by_id.landmarks)
    assert by_path.meta["hands"] == list(HANDS) == ["left", "right"]
    with pytest.raises(InputError, match="no ground truth"):
        read_ground_truth(tiny, "s99_c000_r00")


def test_left_hand_is_the_signers_left_on_image_right() -> None:
    """Hand 0 is the anatomical left hand, seen on the image right of a signer facing us."""
    cfg = TINY.model_copy(update={"frames": 4})
    for signer in (0, 1):  # signer 1 is left-dominant
        clip = render_clip(cfg, signer, 0, 0)
        left_x = clip.landmarks[0, 0, :, 0].mean()
        right_x = clip.landmarks[0, 1, :, 0].mean()
        assert left_x > right_x
    # a right hand held up, palm to the camera, has its thumb towards image right
    from signmae_core.synth.hand import hand_skeleton, pose_points, rotation

    points, _ = hand_skeleton(HANDSHAPES["five"])
    right = pose_points(points, rotation(0, 0, 0), (100.0, 100.0, 0.0), 50.0, left=False)
    left = pose_points(points, rotation(0, 0, 0), (100.0, 100.0, 0.0), 50.0, left=True)
    assert right[4, 0] > right[20, 0]
    assert left[4, 0] < left[20, 0]
    assert right[12, 1] < right[0, 1]  # fingers up


def test_hands_are_large_at_the_demo_size() -> None:
    """At 224 px most in-view hands span at least 2 x 2 patches of 16 px."""
    cfg = SynthConfig(classes=6, signers=3, frames=8, size=224, workers=1)
    spans = []
    for signer in range(cfg.signers):
        for class_index in range(cfg.classes):
            clip = render_clip(cfg, signer, class_index, 0)
            for t, h in zip(*np.nonzero(clip.in_view), strict=True):
                ys, xs = np.nonzero(clip.parts[t] == 3 + h)
                spans.append((xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
    spans_arr = np.asarray(spans)
    assert len(spans_arr) > 50
    assert np.median(spans_arr.min(axis=1)) >= 32
    assert np.mean(spans_arr.max(axis=1) >= 32) >= 0.95


# ---- completion, skip, interruption ------------------------------------------------------------
def test_ensure_generated_skips_a_complete_dataset(tiny: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*") if p.is_file()}
    summary = ensure_generated(tiny, TINY)
    assert summary == {"clips": 9, "status": "up to date", "config_hash": summary["config_hash"]}
    # workers does not change the output, so it does not change the hash either
    assert ensure_generated(tiny, TINY.model_copy(update={"workers": 3}))["status"] == "up to date"
    after = {p: p.stat().st_mtime_ns for p in tiny.rglob("*") if p.is_file()}
    assert before == after


def test_ensure_generated_redoes_a_changed_or_incomplete_dataset(tmp_path: Path) -> None:
    root = tmp_path / "data"
    cfg = TINY.model_copy(update={"classes": 2, "signers": 2, "frames": 4})
    assert ensure_generated(root, cfg)["status"] == "generated"
    assert ensure_generated(root, cfg)["status"] == "up to date"
    fewer = cfg.model_copy(update={"classes": 1})
    summary = ensure_generated(root, fewer)
    assert (summary["clips"], summary["status"]) == (2, "generated")
    # clips of the earlier, larger dataset are gone
    assert sorted(p.name for p in (root / "videos").iterdir()) == [
        "s00_c000_r00.mp4",
        "s01_c000_r00.mp4",
    ]
    (root / COMPLETION_FILE).unlink()  # as a killed run leaves it: the partial marker, no
    (root / PARTIAL_FILE).touch()  # completion file (the slow test below kills one for real)
    assert ensure_generated(root, fewer)["status"] == "generated"
    assert not (root / PARTIAL_FILE).exists()


def test_generation_never_writes_into_a_folder_it_did_not_make(tmp_path: Path) -> None:
    real = tmp_path / "karsl"  # a real dataset's layout: a label table and its videos
    (real / "train").mkdir(parents=True)
    (real / "labels.csv").write_text("path,label,split\ntrain/0001.mp4,0,train\n")
    (real / "train" / "0001.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    before = {p: p.read_bytes() for p in real.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="not a synthetic dataset"):
        ensure_generated(real, TINY)
    with pytest.raises(InputError, match="not a synthetic dataset"):
        generate(real, TINY)
    assert {p: p.read_bytes() for p in real.rglob("*") if p.is_file()} == before
    # a config of real datasets without a synth section generates nothing
    cfg = load_config(None, [f"datasets.0.root={real}", "datasets.0.name=karsl"])
    assert synthetic_datasets(cfg) == []
    assert synthetic_datasets(load_config("real_karsl")) == []
    # the embedded default still generates its first dataset, into an empty or missing root
    assert [name for name, _, _ in synthetic_datasets(load_config("cpu_demo"))] == ["synthetic"]
    empty = tmp_path / "empty"
    empty.mkdir()
    small = TINY.model_copy(update={"classes": 1, "signers": 2, "frames": 4})
    assert ensure_generated(empty, small)["status"] == "generated"


@pytest.mark.slow
def test_killed_generation_leaves_no_complete_dataset(tmp_path: Path) -> None:
    root = tmp_path / "data"
    cfg = SynthConfig(classes=6, signers=3, reps=1, frames=12, size=96, workers=1)
    code = (
        "import sys; from pathlib import Path; from signmae_core.config import SynthConfig; "
        "from signmae_core.synth import generate; "
        f"generate(Path(sys.argv[1]), SynthConfig.model_validate_json({cfg.model_dump_json()!r}))"
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=repo)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            videos = root / "videos"
            if videos.is_dir() and len(list(videos.glob("*.mp4"))) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("generation finished before it could be interrupted")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # it was interrupted, not finished
    assert not (root / COMPLETION_FILE).exists()
    assert ensure_generated(root, cfg)["status"] == "generated"
    assert not list(root.rglob(".tmp-*"))
    assert len(_rows(root)) == 18
    assert ensure_generated(root, cfg)["status"] == "up to date"


# ---- MediaPipe sees the hands ------------------------------------------------------------------
@pytest.mark.slow
def test_mediapipe_finds_the_synthetic_hands(tmp_path: Path) -> None:
    """MediaPipe Hands finds a hand in >= 80 % of frames with a hand in view, at 224 px."""
    import mediapipe as mp

    root = tmp_path / "data"
    generate(root, SynthConfig(classes=3, signers=2, reps=1, frames=16, size=224, seed=0))
    with_hand = detected = 0
    for row in _rows(root):
        frames = _decode(root / row["path"])
        truth = read_ground_truth(root, row["path"], parts=False)
        with mp.solutions.hands.Hands(
            static_image_mode=False,
            max_num_hands=2,
            model_complexity=1,
            min_detection_confidence=0.3,
        ) as hands:
            for frame, in_view in zip(frames, truth.in_view, strict=True):
                result = hands.process(frame)
                if in_view.any():
                    with_hand += 1
                    detected += bool(result.multi_hand_landmarks)
    assert with_hand > 50
    assert detected / with_hand >= 0.8, (detected, with_hand)


def test_an_unlabelled_pool_puts_every_clip_in_pretrain_and_ingests_without_labels(
    tmp_path: Path,
) -> None:
    from signmae_core.ingest.plan import build_rows, plan_videos
    from signmae_core.synth import ensure_config_datasets, synth_hash

    # the flag off keeps the hash datasets had before it existed (no regeneration)
    assert synth_hash(TINY) == synth_hash(TINY.model_copy(update={"unlabeled": False}))
    assert "unlabeled" not in TINY.output_dump()
    cfg = load_config(None, [
        f"datasets.0.root={tmp_path}/labelled",
        "datasets.0.synth={classes: 2, signers: 2, reps: 1, frames: 4, size: 64, workers: 1}",
    ])
    pool = cfg.datasets[0].model_copy(update={
        "name": "pool", "root": str(tmp_path / "pool"),
        "synth": SynthConfig(classes=2, signers=2, reps=1, frames=4, size=64, seed=5,
                             unlabeled=True, workers=1)})
    cfg = cfg.model_copy(update={"datasets": [cfg.datasets[0], pool]})
    made = {name: summary for name, _, summary in ensure_config_datasets(cfg)}
    assert made["synthetic"]["clips"] == made["pool"]["clips"] == 4
    assert {r["split"] for r in _rows(tmp_path / "labelled")} == {"train", "test"}
    assert {r["split"] for r in _rows(tmp_path / "pool")} == {"pretrain"}
    assert not (tmp_path / "pool" / "class_groups.json").exists()
    planned = plan_videos(pool)
    rows, _, classes, _ = build_rows(planned, {}, pool, [])
    assert len(rows) == 4 and classes == []
    assert all(row["label_id"] is None and row["label"] for row in rows)
