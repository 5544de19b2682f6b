"""Shard write throughput against a raw sequential write of the same bytes, in the same run.

Makes `--clips` clip files (`--frames` frames of `--frame-kb` KiB of random bytes each: the
size of 224 px JPEG frames; nothing is decoded, so random bytes cost what JPEG bytes cost) in
a local store, then, interleaved `--repeats` times:

  raw     read every clip file and write its bytes, one after another, into one file per
          `shard.max_bytes` (plain `open().write()`, no tar, no hashing);
  shard   the shard stage's own path (`pipelines.shard.clip_jobs` and `write_shard_set`): read
          each clip, check its header, write the tar members with their metadata while hashing,
          publish each shard atomically; on `--workers` threads (1 = sequential, the fair
          comparison; more is printed too).

Throughput counts the clip bytes (the payload) per second; best of the repeats. Target: shard
>= 0.5x raw. By default the files go to the page cache, as the stage writes them (no fsync), so
both sides run at memory speed and the shard side's sha256 (about 2 GB/s a core) weighs most;
with `--sync` each timing also includes `os.sync()`, i.e. the bytes reaching the disk, which is
what a data set larger than memory costs.

    python bench/bench_shards.py --work /tmp/bench-shards
    python bench/bench_shards.py --work /tmp/bench-shards --sync
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/bench-shards", help="scratch folder (removed)")
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--frame-kb", type=float, default=12.0)
    parser.add_argument("--max-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sync", action="store_true", help="time until the bytes are on disk")
    return parser.parse_args(argv)


def make_clips(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Clip files in the clip format with random frame bytes; returns decode-table-like rows."""
    import numpy as np

    from signmae_core.clips import ClipMeta, write_clip_jpegs

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    size = int(args.frame_kb * 1024)
    rows = []
    for i in range(args.clips):
        video_id = f"clip_{i:06d}"
        meta = ClipMeta(video_id=video_id, fps=25.0, height=224, width=224,
                        num_frames=args.frames, source_path=f"{video_id}.mp4", source_width=640,
                        source_height=480, source_fps=25.0, window=(0, args.frames),
                        frame_indices=list(range(args.frames)), crop_box=(80.0, 0.0, 480.0),
                        jpeg_quality=90)
        jpegs = [rng.bytes(size) for _ in range(args.frames)]
        path = folder / f"{video_id}.smclip"
        nbytes = write_clip_jpegs(path, jpegs, meta)
        rows.append({"video_id": video_id, "clip": f"clips/{path.name}", "clip_path": str(path),
                     "clip_bytes": nbytes, "split": "train" if i % 5 else "test",
                     "signer": "s0", "label": f"class{i % 10}", "label_id": i % 10})
    return rows


def write_raw(rows: list[dict[str, Any]], out: Path, max_bytes: int) -> None:
    """The same clip bytes, read and written back to back into files of about `max_bytes`."""
    out.mkdir(parents=True, exist_ok=True)
    number, written = 0, 0
    handle = open(out / f"raw-{number:06d}.bin", "wb")
    try:
        for row in rows:
            with open(row["clip_path"], "rb") as clip:
                data = clip.read()
            if written and written + len(data) > max_bytes:
                handle.close()
                number, written = number + 1, 0
                handle = open(out / f"raw-{number:06d}.bin", "wb")
            handle.write(data)
            written += len(data)
    finally:
        handle.close()


def write_shards(rows: list[dict[str, Any]], store_root: Path, max_bytes: int,
                 workers: int) -> int:
    """The shard stage's writing path on a stage writer of a scratch store; returns bytes."""
    from pipelines.shard import clip_jobs, summarize_clips, write_clip_samples, write_shard_set
    from signmae_core.config import ShardConfig
    from signmae_core.store import ArtifactStore

    store = ArtifactStore(str(store_root))
    cfg = SimpleNamespace(shard=ShardConfig(max_samples=10**9, max_bytes=max_bytes,
                                            workers=workers))
    with store.open_stage("bench", "shard", "v", config_hash="", code_version=1) as writer:
        ctx = SimpleNamespace(store=store, writer=writer, cfg=cfg, force=True, previous=None,
                              key=SimpleNamespace(dataset="bench"), label="bench shard")
        jobs = clip_jobs(ctx, rows, {})
        done = write_shard_set(ctx, jobs, lambda j, s: write_clip_samples(ctx, j, s),
                               summarize_clips)
    return sum(d.bytes for d in done)


def timed(fn: Any, sync: bool) -> float:
    """Seconds `fn()` takes (with `sync`: until every dirty page is written to disk)."""
    os.sync()  # what earlier runs left in the page cache is not charged to this one
    started = time.perf_counter()
    fn()
    if sync:
        os.sync()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    rows = make_clips(work / "clips", args)
    payload = sum(r["clip_bytes"] for r in rows)
    best: dict[str, float] = {}
    for repeat in range(args.repeats):
        runs = {"raw": lambda r=repeat: write_raw(rows, work / f"raw{r}", args.max_bytes)}
        for n in args.workers:
            runs[f"shard x{n}"] = lambda r=repeat, n=n: write_shards(
                rows, work / f"store{r}-{n}", args.max_bytes, n)
        for name, fn in runs.items():
            seconds = timed(fn, args.sync)
            best[name] = min(best.get(name, float("inf")), seconds)
        for name in list(runs):  # free the page cache's disk space between repeats
            for folder in work.glob(f"{'raw' if name == 'raw' else 'store'}{repeat}*"):
                shutil.rmtree(folder, ignore_errors=True)
    mb = payload / 1e6
    print(f"{args.clips} clips x {args.frames} frames x {args.frame_kb:g} KiB = {mb:.1f} MB "
          f"of clip bytes; best of {args.repeats}; {os.cpu_count()} CPUs; "
          f"{'until on disk (os.sync)' if args.sync else 'to the page cache'}")
    results = {}
    for name, seconds in best.items():
        ratio = best["raw"] / seconds
        results[name] = {"seconds": round(seconds, 3), "MB_per_s": round(mb / seconds, 1),
                         "vs_raw": round(ratio, 2)}
        print(f"  {name:<10} {seconds:7.3f} s  {mb / seconds:8.1f} MB/s  {ratio:5.2f}x raw")
    print(json.dumps({"payload_bytes": payload, "sync": args.sync, "results": results}))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
