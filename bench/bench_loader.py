"""Loader throughput per CPU worker: training clips/s (16 frames at the training size) from
shards, k = 1, 2, 4 views per decoded clip, against the store-direct reader in the same run.

Makes `--clips` clips of `--stored` frames of `--size` px (smooth moving gradients with noise,
JPEG quality 90: about the bytes and decode cost of real 224 px frames) as decode clip files,
and the same clips as one WebDataset shard set (the shard stage's tar format, `ShardWriter`).
Then, interleaved `--repeats` times, on one thread of one process (= one loader worker), with
the training transform (16 frames at stride 2, random resized crop to `--size`, flip):

  files    `ClipDataset` over the clip files (the store-direct reader)
  indexed  `ShardClips`: the same transform, clips read by byte range from the shards (member
           offsets from the set's samples.parquet, as the shard stage writes it)
  stream   `ShardStream`: the WebDataset streaming pipeline (shard order, no buffer)
  undecoded `ShardClips(decode=False)` + `collate_items`: what a loader worker does when the
           training device decodes (`data.decode_on: device`): read, draw, cut the fields,
           pool the JPEG bytes; no decode, no resize

Prints clips/s (decoded clips) and views/s (training items) per reader and k; best of the
repeats.

    python bench/bench_loader.py --work /tmp/bench-loader
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def make_frames(rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
    """Smooth gradients that move over time, with mild noise: (size, size, 3) uint8 each."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0, 1, 3)
    frames = []
    for t in range(count):
        phase = t / count
        img = np.stack([np.sin(6 * (x + phase) + base[0]), np.cos(5 * (y - phase) + base[1]),
                        np.sin(4 * (x + y) + base[2])], axis=-1)
        img = (img * 100 + 128 + rng.normal(0, 6, img.shape)).clip(0, 255)
        frames.append(img.astype(np.uint8))
    return frames


def make_data(work: Path, clips: int, stored: int, size: int) -> tuple[list[str], list[Any]]:
    """Clip files under work/clips and one shard set under work/shards; returns the clip paths
    and the shard sets."""
    import pyarrow.parquet as pq

    from signmae_core.clips import ClipMeta, encode_jpeg, write_clip_jpegs
    from signmae_core.data.shards import ShardSet
    from signmae_core.shards import (
        SAMPLES_NAME,
        ShardWriter,
        canonical_json,
        member_location,
        samples_table,
    )

    (work / "clips").mkdir(parents=True, exist_ok=True)
    (work / "shards").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    buffer = io.BytesIO()
    writer = ShardWriter(buffer)
    for i in range(clips):
        video_id = f"clip{i:05d}"
        jpegs = [encode_jpeg(f, 90) for f in make_frames(rng, stored, size)]
        meta = ClipMeta(video_id=video_id, fps=25.0, height=size, width=size, num_frames=stored,
                        source_path="x.mp4", source_width=size, source_height=size,
                        source_fps=25.0, window=(0, stored), frame_indices=list(range(stored)),
                        crop_box=(0.0, 0.0, float(size)), jpeg_quality=90)
        path = work / "clips" / f"{video_id}.smclip"
        write_clip_jpegs(path, jpegs, meta)
        paths.append(str(path))
        writer.add(video_id, {"smclip": path.read_bytes(), "cls": str(i % 10).encode(),
                              "json": canonical_json({"video_id": video_id})})
    writer.close()
    (work / "shards" / "train-000000.tar").write_bytes(buffer.getvalue())
    rel = "shards/train-000000.tar"
    rows = [{"key": key, "video_id": key, "split": "train", "shard": rel, "label_id": i % 10,
             **member_location(members, "smclip")}
            for i, (key, members) in enumerate(zip(writer.keys, writer.members, strict=True))]
    pq.write_table(samples_table(rows), str(work / SAMPLES_NAME))
    entry = {"path": rel, "split": "train", "samples": clips}
    return paths, [ShardSet("bench", str(work), [entry])]


def run_map(reader: Any, views: int, seed: int = 0) -> float:
    """Seconds to load every clip of a map-style reader with `views` views each."""
    start = time.perf_counter()
    for i in range(len(reader)):
        reader.load_views(i, np.random.default_rng([seed, 0, i]), repeats=views)
    return time.perf_counter() - start


def run_undecoded(reader: Any, views: int, seed: int = 0) -> float:
    """Seconds to make every clip's undecoded views and pool them, a batch per clip."""
    from signmae_core.data.device import collate_items

    start = time.perf_counter()
    for i in range(len(reader)):
        collate_items(reader.load_views(i, np.random.default_rng([seed, 0, i]), repeats=views))
    return time.perf_counter() - start


def run_stream(stream: Any) -> float:
    start = time.perf_counter()
    for _ in stream:
        pass
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    import cv2
    import torch

    from signmae_core.data import ClipDataset, ClipRecord, Sampling
    from signmae_core.data.shards import ShardClips, ShardOpener, ShardStream, shard_refs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-loader"))
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--stored", type=int, default=32, help="stored frames per clip")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    paths, sets = make_data(args.work, args.clips, args.stored, args.size)
    sampling = Sampling(num_frames=16, img_size=args.size, frame_stride=2)
    files = ClipDataset([ClipRecord(Path(p).stem, p) for p in paths], sampling)
    indexed = ShardClips(sets, sampling, ShardOpener())
    undecoded = ShardClips(sets, sampling, ShardOpener(), decode=False)
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.repeats):
        for k in (1, 2, 4):
            timings = {
                "files": run_map(files, k),
                "indexed": run_map(indexed, k),
                "stream": run_stream(ShardStream(shard_refs(sets), sampling, ShardOpener(),
                                                 repeats=k, shuffle_shards=False)),
                "undecoded": run_undecoded(undecoded, k),
            }
            for name, seconds in timings.items():
                best[name, k] = min(best.get((name, k), float("inf")), seconds)
    print(f"{args.clips} clips of {args.stored} stored {args.size} px frames -> 16 frames at "
          f"{args.size} px; one thread, best of {args.repeats}")
    print(f"{'reader':9} {'k':>2} {'clips/s':>8} {'views/s':>8} {'vs files':>8}")
    for k in (1, 2, 4):
        for name in ("files", "indexed", "stream", "undecoded"):
            rate = args.clips / best[name, k]
            ref = args.clips / best["files", k]
            print(f"{name:9} {k:>2} {rate:8.1f} {rate * k:8.1f} {rate / ref:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
