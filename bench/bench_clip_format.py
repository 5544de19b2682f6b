"""Which format should standardized clips be stored in? Measures the candidates on real clips.

Decodes the sign windows of real clips once (at the decode stage's fps and size), then stores the
same frames in each candidate format and measures, in the same run:

- bytes per clip and quality (PSNR against the frames before storage);
- encode frames/s (one thread);
- sequential decode frames/s (whole clip to a `(T, H, W, 3)` uint8 RGB array, one thread);
- random access: ms to get frame t for random t (one frame per call, file opened each call).

Times are CPU seconds of this (single-threaded) process, so that a machine shared with other
work still gives comparable figures; the load average is printed with them.

Candidates: JPEG frames in one file (the `signmae_core.clips` format), H.264 re-encoded at the
clip size through PyAV (libx264, CRF 18 and 23, keyframe every 16 frames), and raw uint8 `.npy`
as the uncompressed reference.

    .venv/bin/python bench/bench_clip_format.py --data ../shared/data/real --clips 24 --size 112
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signmae_core import clips  # noqa: E402
from signmae_core.ingest.source import read_window  # noqa: E402


def pick_clips(data: Path, count: int, seed: int = 0) -> list[tuple[Path, int, int]]:
    """(video, start, end) windows: half from KArSL, half from WLASL200 (0-based, end-exclusive)."""
    rng = random.Random(seed)
    karsl = [
        (data / "karsl70" / r["path"], 0, _frame_count(data / "karsl70" / r["path"]))
        for r in csv.DictReader(open(data / "karsl70" / "labels.csv", encoding="utf-8"))
    ]
    wlasl = [
        (data / "wlasl200" / r["path"], int(r["frame_start"]) - 1, int(r["frame_end"]))
        for r in csv.DictReader(open(data / "wlasl200" / "labels.csv", encoding="utf-8"))
    ]
    half = count // 2
    return rng.sample(karsl, half) + rng.sample(wlasl, count - half)


def _frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].frames


def decode_windows(windows: list[tuple[Path, int, int]], size: int, fps: float) -> list[np.ndarray]:
    out = []
    for path, start, end in windows:
        frames = [f for _, f in read_window(path, start, end, out_fps=fps, box=None, size=size)]
        out.append(np.stack(frames))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---- candidates ---------------------------------------------------------------------------------
@dataclass
class Format:
    name: str
    suffix: str
    write: Callable[[Path, np.ndarray], None]
    read_all: Callable[[Path], np.ndarray]
    read_one: Callable[[Path, int], np.ndarray]


def _meta(frames: np.ndarray) -> clips.ClipMeta:
    t, h, w, _ = frames.shape
    return clips.ClipMeta(
        video_id="bench",
        fps=25.0,
        height=h,
        width=w,
        num_frames=t,
        source_path="x.mp4",
        source_width=w,
        source_height=h,
        source_fps=25.0,
        window=(0, t),
        frame_indices=list(range(t)),
        crop_box=(0.0, 0.0, float(w)),
        jpeg_quality=90,
    )


def jpeg_format(quality: int) -> Format:
    def write(path: Path, frames: np.ndarray) -> None:
        clips.write_clip(path, frames, _meta(frames), quality=quality)

    return Format(
        f"JPEG q{quality} in one file (.smclip)",
        ".smclip",
        write,
        clips.read_clip,
        lambda p, t: clips.read_frames(p, [t])[0],
    )


def h264_format(crf: int, gop: int) -> Format:
    import av

    def write(path: Path, frames: np.ndarray) -> None:
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1
            stream.options = {
                "crf": str(crf),
                "preset": "veryfast",
                "g": str(gop),
                "bf": "0",
                "threads": "1",
            }
            for image in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(stream.encode())

    def read_all(path: Path) -> np.ndarray:
        with av.open(str(path)) as cont:
            stream = cont.streams.video[0]
            stream.codec_context.thread_count = 1
            return np.stack([f.to_ndarray(format="rgb24") for f in cont.decode(stream)])

    def read_one(path: Path, t: int) -> np.ndarray:
        with av.open(str(path)) as cont:
            stream = cont.streams.video[0]
            stream.codec_context.thread_count = 1
            tb = stream.time_base
            target = int(t / 25 / tb) + (stream.start_time or 0)
            cont.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in cont.decode(stream):
                index = round((frame.pts - (stream.start_time or 0)) * tb * 25)
                if index >= t:
                    return frame.to_ndarray(format="rgb24")
        raise IndexError(t)

    return Format(f"H.264 CRF {crf}, keyframe every {gop}", ".mp4", write, read_all, read_one)


def npy_format() -> Format:
    return Format(
        "raw uint8 .npy (reference)",
        ".npy",
        lambda p, f: np.save(p, f, allow_pickle=False),
        lambda p: np.load(p, allow_pickle=False),
        lambda p, t: np.array(np.load(p, mmap_mode="r", allow_pickle=False)[t]),
    )


# ---- measurement --------------------------------------------------------------------------------
def measure(fmt: Format, clips_frames: list[np.ndarray], folder: Path, seed: int) -> dict:
    rng = random.Random(seed)
    paths = [folder / f"{i:03d}{fmt.suffix}" for i in range(len(clips_frames))]
    n_frames = sum(len(f) for f in clips_frames)
    t0 = time.process_time()
    for path, frames in zip(paths, clips_frames, strict=True):
        fmt.write(path, frames)
    encode_s = time.process_time() - t0
    sizes = [p.stat().st_size for p in paths]
    t0 = time.process_time()
    decoded = [fmt.read_all(p) for p in paths]
    decode_s = time.process_time() - t0
    quality = [psnr(a, b) for a, b in zip(clips_frames, decoded, strict=True)]
    probes = [(p, rng.randrange(len(f))) for p, f in zip(paths, clips_frames, strict=True)] * 4
    t0 = time.process_time()
    for path, t in probes:
        fmt.read_one(path, t)
    random_s = time.process_time() - t0
    return {
        "format": fmt.name,
        "kB/clip": np.mean(sizes) / 1024,
        "PSNR dB": float(np.mean([q for q in quality if np.isfinite(q)] or [float("inf")])),
        "encode fps": n_frames / encode_s,
        "seq decode fps": n_frames / decode_s,
        "random frame ms": 1000 * random_s / len(probes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/real", help="shared real clips folder")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--size", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--fps", type=float, default=25.0)
    args = parser.parse_args()
    import cv2

    cv2.setNumThreads(1)
    windows = pick_clips(Path(args.data), args.clips)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {len(windows)} clips")
    for size in args.size:
        frames = decode_windows(windows, size, args.fps)
        total = sum(len(f) for f in frames)
        print(f"\n## {size}x{size}, {total} frames ({total / len(frames):.1f} per clip)\n")
        print("| format | kB/clip | PSNR dB | encode fps | seq decode fps | random frame ms |")
        print("|---|---:|---:|---:|---:|---:|")
        formats = [
            jpeg_format(90),
            jpeg_format(80),
            h264_format(18, 16),
            h264_format(23, 16),
            npy_format(),
        ]
        for fmt in formats:
            with tempfile.TemporaryDirectory() as tmp:
                row = measure(fmt, frames, Path(tmp), seed=size)
            print(
                f"| {row['format']} | {row['kB/clip']:.1f} | {row['PSNR dB']:.1f} | "
                f"{row['encode fps']:.0f} | {row['seq decode fps']:.0f} | "
                f"{row['random frame ms']:.2f} |"
            )


if __name__ == "__main__":
    main()
