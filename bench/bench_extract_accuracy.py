"""Extraction accuracy: MediaPipe against synthetic ground truth; hand detection on real clips.

1. Synthetic (rendered ground truth): a synthetic dataset is generated, ingested, decoded and
   extracted with the MediaPipe backend through the stage (`pipelines.runner.run_stages`); each clip
   is compared with the oracle backend on the same clip grid:
   - hand detection rate: hands found / hands wholly in view, per hand;
   - PCK@0.1: share of the 21 landmarks of found hands within 0.1 x the hand's size (the longer
     side of the ground-truth landmarks' bounding box) of the ground truth;
   - hand-mask IoU of found hands against the rendered hand masks, on the stored part maps;
   - left/right: share of found hands nearer the other ground-truth hand than their own;
   - face and body IoU per frame.
2. Real clips (`--data`): each folder of the shared real data is ingested, decoded and extracted
   the same way; the hand detection rate is the share of frames in which at least one hand was
   found (per hand too). `--clips N` takes every k-th clip so that about N clips per folder are
   used (0: all). `--reference` also runs plain MediaPipe Hands (tracking, same thresholds) over
   every native frame of the same sign windows, the reference the stage is compared with; and
   the share of found hands within 2 palm lengths of a pose wrist shows they are real hands.
3. `--variant "NAME: key=value key=value"` (repeatable) runs both parts once per variant of the
   extraction settings on the same clips, to choose them by measurement; e.g.
   `--variant "default:" --variant "clip frames: extract.frames_from=clip"`.

    .venv/bin/python bench/bench_extract_accuracy.py --data ../shared/data/real --clips 0 \
        --reference
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import outputs  # noqa: E402
from pipelines.dag import Plan  # noqa: E402
from pipelines.ray_runtime import ensure_ray, map_bounded  # noqa: E402
from pipelines.runner import run_stages as run_pipeline  # noqa: E402
from signmae_core.clips import read_clip_meta  # noqa: E402
from signmae_core.config import DatasetConfig, RayConfig, SynthConfig, load_config  # noqa: E402
from signmae_core.extract.mediapipe_backend import wrist_distances  # noqa: E402
from signmae_core.extract.oracle_backend import oracle_extract  # noqa: E402
from signmae_core.extract.schema import iter_clips, read_extraction  # noqa: E402
from signmae_core.ingest.adapters import resolve_inside  # noqa: E402
from signmae_core.parts import BODY, FACE, LEFT_HAND, RIGHT_HAND  # noqa: E402
from signmae_core.synth import generate, read_ground_truth  # noqa: E402

REAL_FOLDERS = ("karsl70", "isl151", "wlasl200", "wlasl_samples", "misc")


# ---- datasets ----------------------------------------------------------------------------------
def csv_subset(data: Path, folder: str, out: Path, clips: int, **dataset: Any) -> DatasetConfig:
    """A dataset of symbolic links to every k-th clip of a csv-labelled real folder."""
    with open(data / folder / "labels.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // clips) if clips else 1
    rows = rows[::step][:clips] if clips else rows
    root = out / folder
    for row in rows:
        link = root / row["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(data / folder / row["path"], link)
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return DatasetConfig(name=folder, root=str(root), **dataset)


def real_datasets(data: Path, out: Path, clips: int) -> list[DatasetConfig]:
    """One dataset per real folder (csv folders subsampled to about `clips` clips)."""
    return [
        csv_subset(data, "karsl70", out, clips),
        csv_subset(data, "isl151", out, clips),
        csv_subset(data, "wlasl200", out, clips, columns={"label": "gloss"}, frame_base=1),
        DatasetConfig(name="wlasl_samples", adapter="wlasl", root=str(data / "wlasl_samples")),
        DatasetConfig(name="misc", adapter="folder", root=str(data / "misc"), labels=None),
    ]


def run_stages(cfg: Any, dataset: DatasetConfig) -> tuple[Any, float]:
    """Ingest, decode and extract one dataset; returns (extract record, extract wall seconds)."""
    run_pipeline(cfg, ["ingest", "decode"], datasets=[dataset.name])
    started = time.perf_counter()
    record = run_pipeline(cfg, ["extract"], datasets=[dataset.name])[-1].record
    return record, time.perf_counter() - started


def output_folder(cfg: Any, stage: str, dataset: DatasetConfig) -> str:
    """The finished output folder of a stage for this config and dataset."""
    return Plan(cfg).output(stage, dataset.name).folder


# ---- synthetic ---------------------------------------------------------------------------------
def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


def is_true_hand(
    points: np.ndarray, truth: np.ndarray, in_view: np.ndarray, size: np.ndarray
) -> bool:
    """Whether a found hand (21, 3) lies on a rendered hand in view (either side): its landmarks
    within half a hand span of the ground truth's (2, 21, 3), on average."""
    for side in (0, 1):
        own = truth[side, :, :2] * size
        if not in_view[side] or np.isnan(own).any():
            continue
        span = np.ptp(own, axis=0).max()
        if np.linalg.norm(points[:, :2] * size - own, axis=1).mean() < 0.5 * span:
            return True
    return False


def synthetic_metrics(cfg: Any, dataset: DatasetConfig) -> dict[str, float]:
    """Compare the stage's MediaPipe output with the ground truth, clip by clip."""
    decode_dir = output_folder(cfg, "decode", dataset)
    extract_dir = output_folder(cfg, "extract", dataset)
    root = Path(dataset.root)
    in_view = found = detected = false = 0
    pck, hand_iou, face_iou, body_iou = [], [], [], []
    swapped = judged = 0
    for clip in iter_clips(extract_dir):
        meta = read_clip_meta(Path(decode_dir, "clips", f"{clip.video_id}.smclip"))
        shape = clip.part_maps.shape[1:]
        truth = oracle_extract(root, meta, shape)
        view = read_ground_truth(root, meta.source_path, parts=False).in_view[meta.frame_indices]
        size = np.array([meta.width, meta.height])
        for hand, label in ((0, LEFT_HAND), (1, RIGHT_HAND)):
            for t in range(clip.num_frames):
                hit = not np.isnan(clip.hands[t, hand, 0, 0])
                if view[t, hand]:
                    in_view += 1
                    found += hit
                if hit:
                    detected += 1
                    false += not is_true_hand(clip.hands[t, hand], truth.hands[t], view[t], size)
                if not hit or np.isnan(truth.hands[t, hand, 0, 0]):
                    continue
                points = clip.hands[t, hand, :, :2] * size
                own = truth.hands[t, hand, :, :2] * size
                span = np.ptp(own, axis=0).max()
                pck.append(float((np.linalg.norm(points - own, axis=1) < 0.1 * span).mean()))
                hand_iou.append(iou(clip.part_maps[t] == label, truth.part_maps[t] == label))
                other = truth.hands[t, 1 - hand, :, :2] * size
                if not np.isnan(other).any():
                    judged += 1
                    swapped += bool(
                        np.linalg.norm(points - other, axis=1).mean()
                        < np.linalg.norm(points - own, axis=1).mean()
                    )
        for t in range(clip.num_frames):
            face_iou.append(iou(clip.part_maps[t] == FACE, truth.part_maps[t] == FACE))
            body_iou.append(iou(clip.part_maps[t] == BODY, truth.part_maps[t] == BODY))
    return {
        "hands in view": in_view,
        "hand detection rate": found / max(1, in_view),
        "false hands (share of found)": false / max(1, detected),
        "PCK@0.1 (found hands)": float(np.mean(pck)),
        "hand-mask IoU (found hands)": float(np.nanmean(hand_iou)),
        "left/right swapped": swapped / max(1, judged),
        "face IoU": float(np.nanmean(face_iou)),
        "body IoU": float(np.nanmean(body_iou)),
    }


def run_synthetic(args: argparse.Namespace, tmp: Path) -> None:
    synth = SynthConfig(
        classes=args.synth_classes, signers=args.synth_signers, reps=1, frames=args.synth_frames,
        size=args.synth_size, seed=args.seed,
    )
    root = tmp / "synthetic"
    generate(root, synth)
    dataset = DatasetConfig(name="synthetic", root=str(root))
    results = {}
    for index, (name, changes) in enumerate(args.variants):
        cfg = load_config(
            None,
            overrides(args, tmp, args.decode_size, tmp / f"store-synth-{index}") + changes,
            datasets=[dataset.model_dump()],
        )
        record, wall = run_stages(cfg, dataset)
        results[name] = synthetic_metrics(cfg, dataset)
    print(
        f"\n## Synthetic: {record.counts['ok']} clips ({synth.classes} signs x "
        f"{synth.signers} signers, {synth.frames} frames), {synth.size} px videos, clips "
        f"{args.decode_size} px, part maps {args.seg_scale:g} x clip\n"
    )
    choices = list(results)
    print("| metric | " + " | ".join(choices) + " |")
    print("|---|" + "---:|" * len(choices))
    for name in results[choices[0]]:
        values = [results[c][name] for c in choices]
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in values]
        print(f"| {name} | " + " | ".join(cells) + " |")


# ---- real --------------------------------------------------------------------------------------
def real_rates(extract_dir: str) -> dict[str, float]:
    table = read_extraction(
        extract_dir, columns=["status", "num_frames", "hand_frames", "left_frames",
                              "right_frames", "second_look_hands", "cpu_seconds", "seconds"],
    ).to_pylist()
    ok = [r for r in table if r["status"] == "ok"]
    frames = sum(r["num_frames"] for r in ok)
    near = judged = 0
    for clip in iter_clips(extract_dir):  # plausibility: found hands lie at the pose's wrists
        for t in np.flatnonzero(clip.pose_found):
            for hand in (clip.left_hand[t], clip.right_hand[t]):
                if np.isnan(hand[0, 0]):
                    continue
                judged += 1
                near += wrist_distances(hand, clip.pose[t], aspect=1.0).min() <= 2  # square frames
    return {
        "clips ok": len(ok),
        "failed": len(table) - len(ok),
        "frames": frames,
        "any hand": sum(r["hand_frames"] for r in ok) / max(1, frames),
        "left": sum(r["left_frames"] for r in ok) / max(1, frames),
        "right": sum(r["right_frames"] for r in ok) / max(1, frames),
        "near pose wrist": near / max(1, judged),
        "second look": sum(r["second_look_hands"] or 0 for r in ok)
        / max(1, sum(r["left_frames"] + r["right_frames"] for r in ok)),
        "frames per CPU s": frames / max(1e-9, sum(r["cpu_seconds"] for r in ok)),
    }


def reference_task(path: str, start: int, end: int, settings: dict[str, Any]) -> tuple[int, int]:
    """Ray task: plain MediaPipe Hands (tracking) over every native frame of one sign window;
    returns (frames, frames with a hand)."""
    import mediapipe as mp

    from signmae_core.ingest.source import iter_window_frames, open_video

    hands = mp.solutions.hands.Hands(
        static_image_mode=False, max_num_hands=settings["max_num_hands"],
        model_complexity=settings["hand_model_complexity"],
        min_detection_confidence=settings["min_detection_confidence"],
        min_tracking_confidence=settings["min_tracking_confidence"],
    )
    container, stream = open_video(path)
    frames = found = 0
    try:
        for _, frame in iter_window_frames(container, stream, start, end):
            image = frame.to_ndarray(format="rgb24")
            found += hands.process(image).multi_hand_landmarks is not None
            frames += 1
    finally:
        container.close()
        hands.close()
    return frames, found


def reference_settings(cfg: Any) -> dict[str, Any]:
    """The Hands settings of an extraction config that the plain reference loop uses too."""
    names = ("max_num_hands", "hand_model_complexity", "min_detection_confidence",
             "min_tracking_confidence")
    return {name: getattr(cfg.extract, name) for name in names}


def reference_rate(cfg: Any, dataset: DatasetConfig) -> float:
    """Plain MediaPipe Hands at the source's own resolution and frame rate, every frame of each
    ok clip's window: the reference the stage's detection rate is compared with."""
    manifest = outputs.manifest(Plan(cfg), dataset.name).to_pylist()
    rows = [r for r in manifest if r["status"] == "ok"]
    settings = reference_settings(cfg)
    root = Path(dataset.root)
    jobs = (
        (r["video_id"], (str(resolve_inside(root, r["path"])[0]), r["frame_start"],
                         r["frame_end"], settings))
        for r in rows
    )
    frames = found = 0
    for _, result, error in map_bounded(reference_task, jobs, max_in_flight=4):
        if error is None:
            frames, found = frames + result[0], found + result[1]
    return found / max(1, frames)


def run_real(args: argparse.Namespace, tmp: Path) -> None:
    data = Path(args.data).resolve()
    datasets = real_datasets(data, tmp / "real", args.clips)
    results: dict[str, dict[str, dict[str, float]]] = {}
    references: dict[tuple[str, str], float] = {}
    for index, (variant, changes) in enumerate(args.variants):
        store = tmp / f"store-{index}"
        cfg = load_config(
            None,
            overrides(args, tmp, args.decode_size, store) + changes,
            datasets=[d.model_dump() for d in datasets],
        )
        for dataset in datasets:
            if args.folders and dataset.name not in args.folders.split(","):
                continue
            run_stages(cfg, dataset)
            rates = real_rates(output_folder(cfg, "extract", dataset))
            if args.reference:  # once per folder and set of Hands settings
                key = (dataset.name, repr(sorted(reference_settings(cfg).items())))
                if key not in references:
                    references[key] = reference_rate(cfg, dataset)
                rates["plain Hands"] = references[key]
            results.setdefault(dataset.name, {})[variant] = rates
    subset = f"about {args.clips} clips per csv folder" if args.clips else "every clip"
    print(f"\n## Real clips ({subset}; clips {args.decode_size} px, extraction frames from "
          f"the source at up to {args.resolution} px unless a variant says otherwise)\n")
    print("| folder | variant | clips ok | failed | frames | any hand | left | right | "
          "hands near a pose wrist | hands from the second look | plain Hands, native frames | "
          "frames/CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, per_choice in results.items():
        for choice, r in per_choice.items():
            plain = f"{r['plain Hands']:.1%}" if "plain Hands" in r else "-"
            print(f"| {name} | {choice} | {r['clips ok']} | {r['failed']} | {r['frames']} | "
                  f"{r['any hand']:.1%} | {r['left']:.1%} | {r['right']:.1%} | "
                  f"{r['near pose wrist']:.1%} | {r['second look']:.1%} | {plain} | "
                  f"{r['frames per CPU s']:.1f} |")


# ---- main --------------------------------------------------------------------------------------
def overrides(
    args: argparse.Namespace, tmp: Path, decode_size: int, store: Path | None = None
) -> list[str]:
    return [
        f"store.root={store or tmp / 'store'}",
        f"decode.size={decode_size}",
        f"extract.resolution={args.resolution}",
        f"extract.seg_scale={args.seg_scale}",
        f"extract.num_workers={args.workers}",
    ]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`"NAME: a.b=1 c.d=x"` -> `("NAME", ["a.b=1", "c.d=x"])`."""
    name, _, changes = text.partition(":")
    if not name.strip():
        raise SystemExit(f"--variant {text!r}: give it a name before the colon")
    return name.strip(), changes.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/real", help="shared real clips folder")
    parser.add_argument("--clips", type=int, default=40, help="clips per csv folder (0: all)")
    parser.add_argument("--folders", default="", help="only these real folders (comma list)")
    parser.add_argument("--variant", action="append", default=[], metavar="'NAME: KEY=VALUE ...'",
                        help="a named set of config overrides to compare (repeatable)")
    parser.add_argument("--reference", action="store_true",
                        help="also run plain MediaPipe Hands on every native frame (real data)")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--decode-size", type=int, default=224)
    parser.add_argument("--resolution", type=int, default=448)
    parser.add_argument("--seg-scale", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--synth-classes", type=int, default=6)
    parser.add_argument("--synth-signers", type=int, default=3)
    parser.add_argument("--synth-frames", type=int, default=32)
    parser.add_argument("--synth-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.variants = [parse_variant(text) for text in args.variant] or [("default", [])]
    ray_tmp = tempfile.mkdtemp(prefix="smx-", dir="/tmp")  # short: Ray's socket paths
    started, load_before = time.perf_counter(), os.getloadavg()
    try:
        ensure_ray(RayConfig(num_cpus=args.workers, temp_dir=ray_tmp))
        with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
            if not args.skip_synthetic:
                run_synthetic(args, Path(tmp))
            if not args.skip_real:
                run_real(args, Path(tmp))
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"\n{args.workers} workers; {time.perf_counter() - started:.0f} s in all; load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
