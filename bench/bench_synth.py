"""Synthetic signer dataset: generation speed and how well MediaPipe Hands sees the hands.

Two measurements, each on a freshly generated dataset in a temporary folder:

1. Speed: `synth` of 12 classes x 4 signers x 3 reps, 32 frames at 128 px (target: under 60 s
   on a 2-core machine). The reference measured in the same run is encoding the same number of
   frames (one rendered clip, encoded again and again) with the same H.264 settings: the ratio
   says how much rendering and ground truth add on top of the unavoidable video encoding.
2. Detection: the same dataset at 224 px, every clip decoded from its MP4 and run through
   MediaPipe Hands (`static_image_mode=False, max_num_hands=2, model_complexity=1,
   min_detection_confidence=0.3`, a fresh tracker per clip, RGB input). Reported:
   - frame detection rate: frames with at least one hand in view (all 21 ground-truth landmarks
     inside the frame) where MediaPipe finds at least one hand (target: >= 0.8);
   - hand recall: in-view ground-truth hands matched by a detection (mean landmark distance
     under 0.35 x the hand's bounding-box diagonal);
   - handedness: matched detections whose MediaPipe label, un-mirrored (MediaPipe assumes a
     mirrored selfie image, so its "Left" is the signer's anatomical right hand), equals the
     ground-truth hand;
   - landmark error of matched hands (median, pixels);
   - hand size at 224 px (bounding box of the drawn hand, from the part label map);
   - with `--pose`: how often MediaPipe Pose finds the signer and whether its left/right wrist
     lies nearer the matching true hand (how the extraction stage assigns hands by default).

    .venv/bin/python bench/bench_synth.py            # both parts (minutes: MediaPipe is slow)
    .venv/bin/python bench/bench_synth.py --skip-speed --limit 24 --pose
    .venv/bin/python bench/bench_synth.py --skip-detection
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signmae_core.config import SynthConfig  # noqa: E402
from signmae_core.synth import generate, read_ground_truth, render_clip  # noqa: E402
from signmae_core.synth.generate import write_video  # noqa: E402


def time_generation(cfg: SynthConfig) -> dict[str, float]:
    """Wall time of `generate` and of the encode-only reference for the same frame count."""
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        summary = generate(Path(tmp) / "data", cfg)
        synth_s = time.perf_counter() - started
        synth_cpu_s = _cpu_seconds() - cpu_before
        clip = render_clip(cfg, 0, 0, 0)
        started = time.perf_counter()
        for k in range(summary["clips"]):
            write_video(Path(tmp) / f"ref{k % 2}.mp4", clip.frames, cfg.fps, cfg.crf)
        encode_s = time.perf_counter() - started
    return {
        "clips": summary["clips"],
        "synth_s": synth_s,
        "synth_cpu_s": synth_cpu_s,
        "encode_only_s": encode_s,
    }


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the generation workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class DetectionStats:
    """Counts accumulated over clips."""

    frames_with_hand: int = 0
    frames_detected: int = 0
    hands_in_view: int = 0
    hands_matched: int = 0
    handedness_ok: int = 0
    handedness_mirrored_ok: int = 0
    unmatched_detections: int = 0
    landmark_errors: list[float] = field(default_factory=list)
    box_min: list[float] = field(default_factory=list)
    box_max: list[float] = field(default_factory=list)
    per_signer: dict[str, list[int]] = field(default_factory=dict)
    pose_frames: int = 0
    pose_found: int = 0
    pose_hands: int = 0
    pose_side_ok: int = 0


def _decode(path: Path) -> np.ndarray:
    """All frames of a video: (T, H, W, 3) uint8 RGB."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def detect_clip(
    root: Path,
    rel_path: str,
    hands_model: object,
    stats: DetectionStats,
    pose_model: object | None = None,
) -> None:
    """Run MediaPipe Hands (and Pose, if given) on one clip and add its counts to `stats`."""
    frames = _decode(root / rel_path)
    truth = read_ground_truth(root, rel_path)
    assert truth.parts is not None
    height, width = frames.shape[1:3]
    signer = truth.meta.get("signer", "?")
    counts = stats.per_signer.setdefault(signer, [0, 0])
    for t, frame in enumerate(frames):
        result = hands_model.process(frame)  # type: ignore[attr-defined]
        detections = []
        for lms, handed in zip(
            result.multi_hand_landmarks or [], result.multi_handedness or [], strict=True
        ):
            xy = np.array([[p.x * width - 0.5, p.y * height - 0.5] for p in lms.landmark])
            detections.append((xy, handed.classification[0].label))
        in_view = truth.in_view[t]
        if in_view.any():
            stats.frames_with_hand += 1
            counts[0] += 1
            if detections:
                stats.frames_detected += 1
                counts[1] += 1
        used = set()
        for h, side in enumerate(("left", "right")):
            if not in_view[h]:
                continue
            gt = truth.landmarks[t, h]
            ys, xs = np.nonzero(truth.parts[t] == 3 + h)  # the drawn hand (part label 3 / 4)
            if len(xs):
                box = (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
                stats.box_min.append(float(min(box)))
                stats.box_max.append(float(max(box)))
            stats.hands_in_view += 1
            extent = gt.max(axis=0) - gt.min(axis=0)
            best, best_err = None, 0.35 * float(np.hypot(*extent))
            for k, (xy, _) in enumerate(detections):
                err = float(np.linalg.norm(xy - gt, axis=1).mean())
                if k not in used and err < best_err:
                    best, best_err = k, err
            if best is None:
                continue
            used.add(best)
            stats.hands_matched += 1
            stats.landmark_errors.append(best_err)
            label = detections[best][1].lower()
            unmirrored = "right" if label == "left" else "left"
            stats.handedness_ok += unmirrored == side
            stats.handedness_mirrored_ok += label == side
        stats.unmatched_detections += len(detections) - len(used)
        if pose_model is not None:
            _pose_sides(pose_model, frame, truth.landmarks[t], in_view, stats)


def _pose_sides(
    pose_model: object,
    frame: np.ndarray,
    hands: np.ndarray,
    in_view: np.ndarray,
    stats: DetectionStats,
) -> None:
    """Does MediaPipe Pose's left/right wrist (15/16) lie nearer the matching true hand?

    hands: (2, 21, 2) true landmarks (left, right); in_view: (2,) bool.
    """
    stats.pose_frames += 1
    result = pose_model.process(frame)  # type: ignore[attr-defined]
    if not result.pose_landmarks:
        return
    stats.pose_found += 1
    height, width = frame.shape[:2]
    points = result.pose_landmarks.landmark
    for h, index in ((0, 15), (1, 16)):
        if not in_view[h]:
            continue
        wrist = np.array([points[index].x * width - 0.5, points[index].y * height - 0.5])
        own = float(np.linalg.norm(wrist - hands[h, 0]))
        other = float(np.linalg.norm(wrist - hands[1 - h, 0]))
        stats.pose_hands += 1
        stats.pose_side_ok += own < other


def measure_detection(cfg: SynthConfig, limit: int | None, pose: bool) -> DetectionStats:
    """Generate `cfg` at its size and run MediaPipe over (up to `limit`) clips."""
    import csv

    import mediapipe as mp

    stats = DetectionStats()
    with tempfile.TemporaryDirectory(prefix="bench-synth-mp-") as tmp:
        root = Path(tmp) / "data"
        generate(root, cfg)
        with (root / "labels.csv").open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if limit:
            rows = rows[:: max(1, len(rows) // limit)][:limit]
        for row in rows:
            # A fresh tracker per clip: tracking must not carry over from the previous clip.
            with mp.solutions.hands.Hands(
                static_image_mode=False,
                max_num_hands=2,
                model_complexity=1,
                min_detection_confidence=0.3,
            ) as hands_model:
                if pose:
                    with mp.solutions.pose.Pose(
                        static_image_mode=False, model_complexity=1
                    ) as pose_model:
                        detect_clip(root, row["path"], hands_model, stats, pose_model)
                else:
                    detect_clip(root, row["path"], hands_model, stats)
    return stats


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f} ({a}/{b})" if b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--signers", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="generation processes (0: auto)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-detection", action="store_true")
    parser.add_argument("--detect-size", type=int, default=224)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips for MP")
    parser.add_argument(
        "--pose", action="store_true", help="also check MediaPipe Pose's wrists against the hands"
    )
    args = parser.parse_args()
    base = dict(
        classes=args.classes,
        signers=args.signers,
        reps=args.reps,
        frames=args.frames,
        seed=args.seed,
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if not args.skip_speed:
        timing = time_generation(SynthConfig(**base, size=128, workers=args.workers))
        print(
            f"synth {args.classes}x{args.signers}x{args.reps}, {args.frames} frames, 128 px: "
            f"{timing['clips']} clips in {timing['synth_s']:.1f} s wall (target < 60 s), "
            f"{timing['synth_cpu_s']:.1f} s CPU "
            f"({timing['synth_cpu_s'] / timing['clips'] * 1000:.0f} ms CPU/clip); "
            f"encode-only reference {timing['encode_only_s']:.1f} s wall, "
            f"ratio {timing['synth_s'] / timing['encode_only_s']:.2f}x"
        )
    if not args.skip_detection:
        started = time.perf_counter()
        stats = measure_detection(SynthConfig(**base, size=args.detect_size), args.limit, args.pose)
        print(f"MediaPipe Hands at {args.detect_size} px ({time.perf_counter() - started:.0f} s):")
        print(
            f"  frame detection rate: {_ratio(stats.frames_detected, stats.frames_with_hand)}"
            " (target >= 0.8)"
        )
        print(f"  hand recall:          {_ratio(stats.hands_matched, stats.hands_in_view)}")
        print(
            f"  handedness (un-mirrored MediaPipe label): "
            f"{_ratio(stats.handedness_ok, stats.hands_matched)}; "
            f"as given: {_ratio(stats.handedness_mirrored_ok, stats.hands_matched)}"
        )
        if stats.landmark_errors:
            print(
                f"  landmark error of matched hands: median "
                f"{np.median(stats.landmark_errors):.1f} px"
            )
        print(f"  unmatched detections: {stats.unmatched_detections}")
        for signer, (n, d) in sorted(stats.per_signer.items()):
            print(f"  {signer}: {_ratio(d, n)}")
        if stats.pose_frames:
            print(
                f"  MediaPipe Pose found the signer in "
                f"{_ratio(stats.pose_found, stats.pose_frames)} frames; its left/right wrist is "
                f"nearer the matching true hand for {_ratio(stats.pose_side_ok, stats.pose_hands)}"
                " in-view hands"
            )
        if stats.box_min:
            box_min, box_max = np.array(stats.box_min), np.array(stats.box_max)
            print(
                f"  drawn hand box (px): longer side median {np.median(box_max):.0f}, "
                f"5th pct {np.percentile(box_max, 5):.0f}; shorter side median "
                f"{np.median(box_min):.0f}, 5th pct {np.percentile(box_min, 5):.0f}; "
                f"both sides >= 32 px: {np.mean(box_min >= 32):.3f}"
            )


if __name__ == "__main__":
    main()
