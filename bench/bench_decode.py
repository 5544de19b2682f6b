"""Decode stage throughput against a bare PyAV loop, and 2 Ray workers against 1, in one run.

On real WLASL clips (their own sign windows, 288x192 to 1920x1080, H.264 and MPEG-4 Part 2):

1. bare loop: one process, one thread, PyAV decodes each window (stopping at its end) and does
   nothing else; a second bare loop also converts each window frame to an RGB array;
2. the decode stage (through the plan's envelope, forced): decode, resample to `decode.fps`, crop,
   resize, JPEG-encode and write every clip, plus the stage's bookkeeping, on a local Ray with
   1 CPU, then with 2 CPUs (one thread per worker).

Throughput is source window frames per second (the frames that must be decoded) for all runs,
so the ratios compare the same work. Ray workers are warmed up on a few other clips first. Wall
time is what counts; CPU seconds (the bare loop's process, the stage's workers as reported in
`clips.parquet`) are printed too, because on a shared machine they show the per-core cost even
when other work competes for the cores.
Targets: stage with 1 worker >= 0.6x the bare loop; 2 workers >= 1.5x one worker.

    .venv/bin/python bench/bench_decode.py --data ../shared/data/real --clips 80
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import outputs  # noqa: E402
from pipelines.dag import Plan  # noqa: E402
from pipelines.execute import execute  # noqa: E402
from pipelines.ray_runtime import ensure_ray  # noqa: E402
from signmae_core.config import (  # noqa: E402
    DatasetConfig,
    RayConfig,
    load_config,
)
from signmae_core.ingest.source import open_video  # noqa: E402


def make_subset(data: Path, folder: Path, name: str, rows: list[dict]) -> DatasetConfig:
    """A dataset folder of symbolic links to the chosen WLASL200 clips, with their label rows."""
    (folder / "videos").mkdir(parents=True)
    for row in rows:
        os.symlink(data / "wlasl200" / row["path"], folder / row["path"])
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return DatasetConfig(name=name, root=str(folder), columns={"label": "gloss"}, frame_base=1)


def bare_loop(windows: list[tuple[str, int, int]], convert: bool) -> int:
    """Decode every window with PyAV on one thread; returns the frames decoded in windows."""
    frames = 0
    for path, start, end in windows:
        container, stream = open_video(path)
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index >= end:
                    break
                if index >= start:
                    frames += 1
                    if convert:
                        frame.to_ndarray(format="rgb24")
        finally:
            container.close()
    return frames


def timed_stage(plan: Plan, dataset: DatasetConfig) -> tuple[float, float, dict[str, int]]:
    """(wall seconds, summed worker CPU seconds, counts) of one forced run of the stage."""
    started = time.perf_counter()
    record = execute(plan, plan.key("decode", dataset.name), force=True).record
    wall = time.perf_counter() - started
    cpu = sum(r["decode_cpu_s"] or 0.0 for r in outputs.clip_rows(plan, dataset.name))
    return wall, cpu, record.counts


def start_ray(cpus: int, temp_dir: str) -> None:
    """A fresh local Ray with `cpus` CPUs (the one running, if any, is shut down first)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(RayConfig(num_cpus=cpus, temp_dir=temp_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/real", help="shared real clips folder")
    parser.add_argument("--clips", type=int, default=80, help="WLASL200 clips to decode")
    parser.add_argument("--size", type=int, default=224, help="decode.size")
    parser.add_argument("--fps", type=float, default=25.0, help="decode.fps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = Path(args.data).resolve()
    with open(data / "wlasl200" / "labels.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    chosen, warm = rows[: args.clips], rows[args.clips : args.clips + 4]
    load_before = os.getloadavg()
    ray_tmp = tempfile.mkdtemp(prefix="smb-", dir="/tmp")  # short: Ray's socket paths
    try:
        results, info = run_all(args, data, chosen, warm, ray_tmp)
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    load_after = os.getloadavg()
    report(args, results, info, load_before, load_after)


def run_all(
    args: argparse.Namespace, data: Path, chosen: list[dict], warm: list[dict], ray_tmp: str
) -> tuple[dict, dict]:
    """Ingest, then time the bare loops and the stage with 1 and 2 workers."""
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        main_set = make_subset(data, Path(tmp, "main"), "bench", chosen)
        warm_set = make_subset(data, Path(tmp, "warm"), "warm", warm)
        overrides = [
            f"store.root={tmp}/store",
            f"decode.size={args.size}",
            f"decode.fps={args.fps}",
        ]
        cfg = load_config(None, overrides, datasets=[main_set.model_dump(), warm_set.model_dump()])
        plan = Plan.from_config(cfg)
        start_ray(2, ray_tmp)
        for dataset in (main_set, warm_set):
            execute(plan, plan.key("ingest", dataset.name))
        manifest = outputs.manifest(plan, main_set.name).to_pylist()
        windows = [
            (r["uri"], r["frame_start"], r["frame_end"]) for r in manifest if r["status"] == "ok"
        ]
        window_frames = sum(end - start for _, start, end in windows)
        pixels = sum(r["width"] * r["height"] for r in manifest) / len(manifest)

        started, started_cpu = time.perf_counter(), time.process_time()
        decoded = bare_loop(windows, convert=False)
        bare_s, bare_cpu = time.perf_counter() - started, time.process_time() - started_cpu
        started, started_cpu = time.perf_counter(), time.process_time()
        bare_loop(windows, convert=True)
        bare_rgb_s = time.perf_counter() - started
        bare_rgb_cpu = time.process_time() - started_cpu

        results = {}
        for cpus in (1, 2):
            start_ray(cpus, ray_tmp)
            execute(plan, plan.key("decode", warm_set.name), force=True)  # warm the workers
            results[cpus] = timed_stage(plan, main_set)
    info = {
        "windows": len(windows),
        "window_frames": window_frames,
        "decoded": decoded,
        "pixels": pixels,
        "bare": (bare_s, bare_cpu),
        "bare_rgb": (bare_rgb_s, bare_rgb_cpu),
    }
    return results, info


def report(
    args: argparse.Namespace, results: dict, info: dict, load_before: tuple, load_after: tuple
) -> None:
    """Print the table and the ratios."""
    window_frames, decoded = info["window_frames"], info["decoded"]
    (bare_s, bare_cpu), (bare_rgb_s, bare_rgb_cpu) = info["bare"], info["bare_rgb"]
    one_s, one_cpu, counts = results[1]
    two_s, two_cpu, _ = results[2]
    fps = {
        "bare PyAV decode loop (1 thread)": decoded / bare_s,
        "bare PyAV decode + RGB conversion (1 thread)": decoded / bare_rgb_s,
        "decode stage, Ray, 1 worker": window_frames / one_s,
        "decode stage, Ray, 2 workers": window_frames / two_s,
    }
    print(
        f"clips: {info['windows']} WLASL200 sign windows, {window_frames} source frames "
        f"(decoded by the bare loop: {decoded}), mean source size {info['pixels'] / 1e6:.2f} MP"
    )
    print(
        f"stage output: {counts.get('ok', 0)} clips at {args.size}x{args.size}, "
        f"{args.fps:g} fps, JPEG; failed {counts.get('failed', 0)}"
    )
    print(
        f"machine: {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after\n"
    )
    print("| run | wall s | source frames/s (wall) | CPU s | source frames per CPU s |")
    print("|---|---:|---:|---:|---:|")
    seconds = [(bare_s, bare_cpu), (bare_rgb_s, bare_rgb_cpu), (one_s, one_cpu), (two_s, two_cpu)]
    for (name, value), (wall, cpu) in zip(fps.items(), seconds, strict=True):
        print(f"| {name} | {wall:.2f} | {value:.0f} | {cpu:.2f} | {window_frames / cpu:.0f} |")
    per_core = fps["decode stage, Ray, 1 worker"] / fps["bare PyAV decode loop (1 thread)"]
    per_core_rgb = (
        fps["decode stage, Ray, 1 worker"] / fps["bare PyAV decode + RGB conversion (1 thread)"]
    )
    scaling = one_s / two_s
    print(
        f"\nstage (1 worker) / bare decode loop: {per_core:.2f}x wall, "
        f"{bare_cpu / one_cpu:.2f}x per CPU second (target >= 0.6x)"
    )
    print(
        f"stage (1 worker) / bare decode + RGB loop: {per_core_rgb:.2f}x wall, "
        f"{bare_rgb_cpu / one_cpu:.2f}x per CPU second"
    )
    print(f"2 workers / 1 worker: {scaling:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
