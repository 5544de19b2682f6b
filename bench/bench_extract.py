"""Extraction stage speed against a bare MediaPipe loop, and 2 Ray workers against 1, in one run.

On real clips (KArSL and WLASL200 by default, decoded by the decode stage first):

1. bare loop: one process, the same MediaPipe models and settings the stage uses (Hands in
   tracking mode, Pose complexity 1, Selfie Segmentation), reset per clip, over the same frames
   the stage extracts from (read into memory before the clock starts); it does nothing else;
2. the extract stage (forced, through `pipelines.runner.run_stages`) on a local Ray with 1 CPU
   and 1 worker, with the second look off, so that it runs the bare loop's models and nothing
   more: worker start and model loading, reading the frames, MediaPipe, handedness, rasterizing
   part maps, encoding, Parquet writing and bookkeeping;
3. the stage with its default settings (the second look on: extra Hands runs on crops where
   tracking missed a hand), 1 worker: what the second look costs;
4. the default stage with 2 CPUs and 2 workers (one thread each).

Throughput is frames per wall second. Worker CPU seconds are printed too: on a shared machine
they show the per-core cost when other work competes for the cores.
Targets: stage with 1 worker >= 0.9x the bare loop (same models); 2 workers >= 1.5x one worker.

    .venv/bin/python bench/bench_extract.py --data ../shared/data/real --clips 24
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_extract_accuracy import csv_subset  # noqa: E402

from pipelines import extract, outputs  # noqa: E402
from pipelines.dag import Plan  # noqa: E402
from pipelines.ray_runtime import ensure_ray  # noqa: E402
from pipelines.runner import run_stages  # noqa: E402
from signmae_core.clips import read_clip_meta  # noqa: E402
from signmae_core.config import DatasetConfig, RayConfig, load_config  # noqa: E402
from signmae_core.extract.schema import read_extraction  # noqa: E402
from signmae_core.extract.worker import ClipExtractor, mediapipe_params  # noqa: E402


def start_ray(cpus: int, temp_dir: str) -> None:
    """A fresh local Ray with `cpus` CPUs (the one running, if any, is shut down first)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(RayConfig(num_cpus=cpus, temp_dir=temp_dir))


def stage_frames(cfg: Any, dataset: DatasetConfig) -> list[Any]:
    """The frames the stage extracts from, per clip, read as the stage's workers read them."""
    jobs = extract.clip_jobs(Plan(cfg), dataset.name)
    reader = ClipExtractor(cfg.extract.model_copy(update={"backend": "oracle"}), dataset.root)
    clips = []
    for job in jobs.values():
        frames, _, _ = reader._frames(job, read_clip_meta(job.clip_path))
        clips.append(frames)
    return clips


def bare_loop(clips: list[Any], cfg: Any, pose: bool = True) -> tuple[float, float, int]:
    """MediaPipe alone over the frames: (wall s, CPU s, frames). `pose=False` runs only Hands
    and Selfie Segmentation (the models the brief's 32-42 frames/s figure refers to)."""
    import mediapipe as mp

    params = mediapipe_params(cfg.extract)
    solutions = mp.solutions
    models = [
        solutions.hands.Hands(
            static_image_mode=False, max_num_hands=params.max_num_hands,
            model_complexity=params.hand_complexity,
            min_detection_confidence=params.min_detection_confidence,
            min_tracking_confidence=params.min_tracking_confidence,
        ),
        solutions.selfie_segmentation.SelfieSegmentation(model_selection=0),
    ]
    if pose:
        models.append(solutions.pose.Pose(static_image_mode=False, model_complexity=1))
    started, started_cpu = time.perf_counter(), time.process_time()
    count = 0
    for frames in clips:
        for model in models:
            model.reset()
        for frame in frames:
            for model in models:
                model.process(frame)
            count += 1
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    for model in models:
        model.close()
    return wall, cpu, count


def timed_stage(cfg: Any, dataset: DatasetConfig) -> tuple[float, float, int]:
    """(wall s, summed worker CPU s, frames) of one forced run of the stage."""
    started = time.perf_counter()
    record = run_stages(cfg, ["extract"], datasets=[dataset.name], force=True)[-1].record
    wall = time.perf_counter() - started
    folder = Plan(cfg).output("extract", dataset.name).folder
    cpu = sum(r["cpu_seconds"] or 0.0 for r in read_extraction(
        folder, columns=["cpu_seconds"]).to_pylist())
    return wall, cpu, record.counts["frames"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/real", help="shared real clips folder")
    parser.add_argument("--clips", type=int, default=24, help="clips per folder (KArSL, WLASL)")
    parser.add_argument("--decode-size", type=int, default=224)
    args = parser.parse_args()
    data = Path(args.data).resolve()
    ray_tmp = tempfile.mkdtemp(prefix="smx-", dir="/tmp")  # short: Ray's socket paths
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-extract-speed-") as tmp:
            results, info = run_all(args, data, Path(tmp), ray_tmp)
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    report(results, info, load_before, os.getloadavg())


def run_all(args: argparse.Namespace, data: Path, tmp: Path, ray_tmp: str) -> tuple[dict, dict]:
    """Decode the clips, then time the bare loop and the stage with 1 and 2 workers."""
    subsets = [
        csv_subset(data, "karsl70", tmp / "data", args.clips),
        csv_subset(data, "wlasl200", tmp / "data", args.clips),
    ]
    # One dataset of both folders (WLASL200's files hold just the sign): links in one csv.
    both = tmp / "data" / "both"
    both.mkdir()
    rows = ["path,label"]
    for folder in subsets:
        for link in sorted(Path(folder.root).rglob("*.mp4")):
            rel = f"{folder.name}/{link.relative_to(folder.root)}"
            (both / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(link), both / rel)
            rows.append(f"{rel},x")
    (both / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    dataset = DatasetConfig(name="speed", root=str(both))
    base = [f"store.root={tmp / 'store'}", f"decode.size={args.decode_size}"]
    cfg1 = load_config(None, base + ["extract.num_workers=1"], datasets=[dataset.model_dump()])
    cfg2 = load_config(None, base + ["extract.num_workers=2"], datasets=[dataset.model_dump()])
    cfg_same = load_config(
        None, base + ["extract.num_workers=1", "extract.second_look=false"],
        datasets=[dataset.model_dump()],
    )
    start_ray(2, ray_tmp)
    run_stages(cfg1, ["ingest", "decode"], datasets=[dataset.name])
    clips = stage_frames(cfg1, dataset)
    sizes = sorted({c.shape[1] for c in clips})
    results = {"bare": bare_loop(clips, cfg1)}
    results["bare_no_pose"] = bare_loop(clips, cfg1, pose=False)
    del clips
    start_ray(1, ray_tmp)
    results["stage1_same"] = timed_stage(cfg_same, dataset)
    results["stage1"] = timed_stage(cfg1, dataset)
    start_ray(2, ray_tmp)
    results["stage2"] = timed_stage(cfg2, dataset)
    clips_in_manifest = len(outputs.manifest(Plan(cfg1), dataset.name))
    return results, {"clips": clips_in_manifest, "sizes": sizes}


def report(results: dict, info: dict, load_before: tuple, load_after: tuple) -> None:
    names = {
        "bare": "bare MediaPipe loop (1 process)",
        "stage1_same": "extract stage, second look off, Ray, 1 worker",
        "stage1": "extract stage (default: second look), Ray, 1 worker",
        "stage2": "extract stage (default: second look), Ray, 2 workers",
    }
    frames = results["bare"][2]
    print(f"\nclips: {info['clips']} (KArSL + WLASL200), {frames} frames; extraction frame "
          f"sizes {info['sizes']} px")
    print(f"machine: {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after\n")
    print("| run | wall s | frames/s (wall) | CPU s | frames per CPU s |")
    print("|---|---:|---:|---:|---:|")
    fps = {}
    for key, name in names.items():
        wall, cpu, count = results[key]
        fps[key] = count / wall
        print(f"| {name} | {wall:.1f} | {fps[key]:.2f} | {cpu:.1f} | {count / cpu:.2f} |")
    bare_cpu_rate = frames / results["bare"][1]
    stage_cpu_rate = results["stage1_same"][2] / results["stage1_same"][1]
    ratio = fps["stage1_same"] / fps["bare"]
    print(f"\nstage 1 worker, same models / bare loop (wall): {ratio:.2f}x (target >= 0.9)")
    print(f"stage 1 worker, same models / bare loop (per CPU s, workers only): "
          f"{stage_cpu_rate / bare_cpu_rate:.2f}x")
    print(f"default stage (second look) / same models, 1 worker (wall): "
          f"{fps['stage1'] / fps['stage1_same']:.2f}x")
    print(f"2 workers / 1 worker (wall): {fps['stage2'] / fps['stage1']:.2f}x (target >= 1.5)")
    wall, cpu, count = results["bare_no_pose"]
    print(f"\nfor reference, Hands + Selfie Segmentation without Pose, bare loop: "
          f"{count / wall:.2f} frames/s (wall), {count / cpu:.2f} per CPU s")


if __name__ == "__main__":
    main()
