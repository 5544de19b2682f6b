"""Writing the synthetic signer dataset: videos, per-frame ground truth, labels, completion file.

Layout of a dataset folder (see docs/SYNTH.md)::

    labels.csv                        path,label,signer,split (paths relative to the folder)
    class_groups.json                 the minimal pairs: {"groups": [{"kind", "classes"}, ...]}
    videos/s00_c000_r00.mp4           H.264 (libx264, yuv420p), one sign per clip
    ground_truth/s00_c000_r00.parquet one row per frame: landmarks, in-view flags, part map
    _synth.json                       completion file: config, its hash, classes, signers

Every file is written under a temporary name and renamed into place; `_synth.json` is written
last and removed first, so a dataset without it is incomplete whatever else it holds.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from signmae_core.config import PipelineConfig, SynthConfig, config_hash
from signmae_core.errors import InputError
from signmae_core.ingest.class_groups import CLASS_GROUPS_NAME, class_groups_json
from signmae_core.parts import PART_NAMES

from .hand import NUM_LANDMARKS
from .render import (
    SUPERSAMPLE,
    Body,
    draw_background,
    draw_frame,
    draw_static,
    make_body,
    pose_hand,
)
from .signers import Signer, make_signer
from .signs import Performance, Sign, build_class_set, perform

CODE_VERSION = 1
"""Bumped whenever the output of the same config changes (drawing, format, layout)."""

COMPLETION_FILE = "_synth.json"
PARTIAL_FILE = "_synth.partial"  # written first, removed last: a folder being generated
LABELS_FILE = "labels.csv"
VIDEO_DIR = "videos"
GROUND_TRUTH_DIR = "ground_truth"
HANDS = ("left", "right")
"""Hand order of every ground-truth array: index 0 is the signer's anatomical LEFT hand."""
_TMP_PREFIX = ".tmp-"
_CLIP_NAME = re.compile(r"^s\d+_c\d+_r\d+\.(mp4|parquet)$")


@dataclass(frozen=True)
class Clip:
    """One rendered clip in memory.

    frames: (T, H, W, 3) uint8 RGB; parts: (T, H, W) uint8 part labels (see `PART_NAMES`);
    landmarks: (T, 2, 21, 2) float32 pixel (x, y), hands in `HANDS` order;
    in_view: (T, 2) bool, True when all 21 landmarks of that hand lie inside the frame.
    """

    video_id: str
    signer: Signer
    sign: Sign
    class_index: int
    rep: int
    frames: np.ndarray
    parts: np.ndarray
    landmarks: np.ndarray
    in_view: np.ndarray


def video_id(signer: int, class_index: int, rep: int) -> str:
    """File stem of a clip, e.g. `s01_c007_r02`."""
    return f"s{signer:02d}_c{class_index:03d}_r{rep:02d}"


def split_of(cfg: SynthConfig, signer: int) -> str:
    """The split of a signer: "test" for the last `cfg.test_signers` signers, else "train";
    "pretrain" for everyone in an unlabelled pool."""
    if cfg.unlabeled:
        return "pretrain"
    return "test" if signer >= cfg.signers - cfg.test_signers else "train"


def _performance(
    cfg: SynthConfig, signer: Signer, body: Body, class_index: int, rep: int
) -> Performance:
    """Timing, amplitude and jitter of one repetition (its own random stream)."""
    rng = np.random.default_rng([cfg.seed, 2, signer.index, class_index, rep])
    speed = signer.speed * rng.uniform(0.9, 1.1)
    duration = float(np.clip(0.92 / speed, 0.65, 1.0))
    start = float(rng.uniform(0.0, 1.0 - duration)) if duration < 1.0 else 0.0
    bottom = (body.size - 1 - body.neck[1]) / body.unit
    return Performance(
        start=start,
        duration=duration,
        amplitude=float(rng.uniform(0.85, 1.15)),
        offset=(float(rng.normal(0, 0.04)), float(rng.normal(0, 0.04)), 0.0),
        angle_jitter=(float(rng.normal(0, 6)), float(rng.normal(0, 4)), float(rng.normal(0, 6))),
        rest_in_view=signer.rest_in_view,
        rest_y=float(min(1.8, bottom - 0.38 * body.hand_length / body.unit)),
    )


@lru_cache(maxsize=8)
def _background(seed: int, signer_index: int, size: int) -> np.ndarray:
    """A signer's wall, the same in all their clips: (S, S, 3) uint8, read-only."""
    signer = make_signer(seed, signer_index)
    image = draw_background(signer, size, np.random.default_rng([seed, 4, signer_index]))
    image.setflags(write=False)
    return image


def render_clip(
    cfg: SynthConfig, signer_index: int, class_index: int, rep: int, sign: Sign | None = None
) -> Clip:
    """Render one clip of sign `class_index` by signer `signer_index` (deterministic)."""
    signer = make_signer(cfg.seed, signer_index)
    if sign is None:
        sign = build_class_set(class_index + 1)[class_index]
    rng = np.random.default_rng([cfg.seed, 3, signer_index, class_index, rep])
    jitter = (float(rng.normal(0, 0.01 * cfg.size)), float(rng.normal(0, 0.008 * cfg.size)))
    body = make_body(signer, cfg.size, jitter)
    background = _background(cfg.seed, signer_index, cfg.size)
    static_rgb, static_labels = draw_static(signer, body, background)
    perf = _performance(cfg, signer, body, class_index, rep)
    sides = {"dominant": signer.dominant, "other": "right" if signer.left_dominant else "left"}
    t_count = cfg.frames
    frames = np.empty((t_count, cfg.size, cfg.size, 3), np.uint8)
    parts = np.empty((t_count, cfg.size, cfg.size), np.uint8)
    landmarks = np.empty((t_count, 2, NUM_LANDMARKS, 2), np.float32)
    for i in range(t_count):
        dominant, other = perform(sign, i / (t_count - 1), perf)
        hands = []
        for role, state in (("dominant", dominant), ("other", other)):
            side = sides[role]
            centre = body.to_pixels(side, state.xyz)
            hands.append(
                pose_hand(
                    side, state.shape, state.yaw, state.pitch, state.roll, centre, body.hand_length
                )
            )
        frames[i], parts[i] = draw_frame(static_rgb, static_labels, signer, body, hands)
        for hand in hands:
            landmarks[i, HANDS.index(hand.side)] = hand.landmarks[:, :2]
    inside = (landmarks >= 0.0) & (landmarks <= cfg.size - 1)
    in_view = inside.all(axis=(2, 3))
    return Clip(
        video_id(signer_index, class_index, rep),
        signer,
        sign,
        class_index,
        rep,
        frames,
        parts,
        landmarks,
        in_view,
    )


# ---- writers -----------------------------------------------------------------------------------
@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only if the body succeeds."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_video(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264 MP4, byte-identical for equal input.

    One encoder thread and fixed x264 parameters make the output deterministic.
    """
    import av  # lazily: the GPU machines have no PyAV

    with _atomic(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            stream = container.add_stream(
                "libx264",
                rate=fps,
                options={
                    "crf": str(crf),
                    "preset": "veryfast",
                    "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0",
                },
            )
            stream.codec_context.thread_count = 1
            stream.width = frames.shape[2]
            stream.height = frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            for index, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = index
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()


def _png(labels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 2-D arrays
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


GROUND_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32()),
        pa.field("left_xy", pa.list_(pa.float32(), 2 * NUM_LANDMARKS)),
        pa.field("right_xy", pa.list_(pa.float32(), 2 * NUM_LANDMARKS)),
        pa.field("left_in_view", pa.bool_()),
        pa.field("right_in_view", pa.bool_()),
        pa.field("parts_png", pa.binary()),
    ]
)


def write_ground_truth(path: Path, clip: Clip, meta: dict[str, Any]) -> None:
    """One Parquet file per clip, one row per frame (schema `GROUND_TRUTH_SCHEMA`)."""
    t_count = clip.landmarks.shape[0]
    flat = clip.landmarks.reshape(t_count, 2, 2 * NUM_LANDMARKS)
    columns = [
        pa.array(np.arange(t_count, dtype=np.int32)),
        pa.FixedSizeListArray.from_arrays(pa.array(flat[:, 0].ravel()), 2 * NUM_LANDMARKS),
        pa.FixedSizeListArray.from_arrays(pa.array(flat[:, 1].ravel()), 2 * NUM_LANDMARKS),
        pa.array(clip.in_view[:, 0]),
        pa.array(clip.in_view[:, 1]),
        pa.array([_png(p) for p in clip.parts], type=pa.binary()),
    ]
    schema = GROUND_TRUTH_SCHEMA.with_metadata({"signmae.synth": json.dumps(meta, sort_keys=True)})
    table = pa.Table.from_arrays(columns, schema=schema)
    with _atomic(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _clip_meta(cfg: SynthConfig, clip: Clip) -> dict[str, Any]:
    return {
        "video": f"{VIDEO_DIR}/{clip.video_id}.mp4",
        "width": cfg.size,
        "height": cfg.size,
        "fps": cfg.fps,
        "frames": cfg.frames,
        "label": clip.sign.name,
        "class_index": clip.class_index,
        "signer": f"s{clip.signer.index:02d}",
        "dominant_hand": clip.signer.dominant,
        "hands": list(HANDS),
        "part_names": list(PART_NAMES),
        "coordinates": "pixels, (0,0) is the centre of the top-left pixel",
    }


def _manifest(cfg: SynthConfig, signs: list[Sign], clips: int) -> dict[str, Any]:
    signers = [make_signer(cfg.seed, s) for s in range(cfg.signers)]
    return {
        "config": cfg.output_dump(),
        "config_hash": synth_hash(cfg),
        "code_version": CODE_VERSION,
        "clips": clips,
        "classes": [
            {
                "index": i,
                "label": s.name,
                "handshape": s.handshape,
                "end_handshape": s.end_handshape(),
                "movement": s.movement,
                "place": s.place,
                "orientation": s.orientation,
                "hands": s.hands,
            }
            for i, s in enumerate(signs)
        ],
        "signers": [
            {
                "signer": f"s{s.index:02d}",
                "split": split_of(cfg, s.index),
                "dominant_hand": s.dominant,
                "skin": list(s.skin),
            }
            for s in signers
        ],
        "layout": {"labels": LABELS_FILE, "videos": VIDEO_DIR, "ground_truth": GROUND_TRUTH_DIR},
    }


def minimal_pairs(signs: list[Sign]) -> list[dict[str, Any]]:
    """The class groups of a class set (see `signs.build_class_set`): in each group of three
    (base, handshape pair, movement pair), the base with its handshape pair (kind `handshape`)
    and the base with its movement pair (kind `movement`); a group cut short by the class
    count gives the pairs it has."""
    groups = []
    for base in range(0, len(signs), 3):
        for offset, kind in ((1, "handshape"), (2, "movement")):
            if base + offset < len(signs):
                groups.append({"kind": kind,
                               "classes": [signs[base].name, signs[base + offset].name]})
    return groups


def write_class_groups(out: Path, signs: list[Sign], unlabeled: bool = False) -> None:
    """Write `class_groups.json` unless it already holds these groups (no needless mtime); an
    unlabelled pool has no classes to group, so none."""
    path = out / CLASS_GROUPS_NAME
    if unlabeled:
        path.unlink(missing_ok=True)
        return
    text = class_groups_json(minimal_pairs(signs))
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    with _atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def synth_hash(cfg: SynthConfig) -> str:
    """Hash of everything the dataset's bytes depend on: the config (less its runtime fields,
    e.g. `workers`, which change nothing written) and the code version."""
    code = {"code_version": CODE_VERSION, "supersample": SUPERSAMPLE}
    return config_hash(cfg.output_dump(), code)


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Delete temporary files and clips of an earlier, different dataset in the same folder."""
    for folder in (out / VIDEO_DIR, out / GROUND_TRUTH_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            stale = path.name.startswith(_TMP_PREFIX) or (
                _CLIP_NAME.match(path.name) is not None and path.stem not in keep
            )
            if stale and path.is_file():
                path.unlink()


def _write_clip(out: Path, cfg: SynthConfig, job: tuple[int, int, int]) -> tuple[str, ...]:
    """Render and write one clip (video + ground truth); returns its labels.csv row."""
    signer_index, class_index, rep = job
    sign = build_class_set(cfg.classes)[class_index]
    clip = render_clip(cfg, signer_index, class_index, rep, sign)
    video_rel = f"{VIDEO_DIR}/{clip.video_id}.mp4"
    write_video(out / video_rel, clip.frames, cfg.fps, cfg.crf)
    write_ground_truth(
        out / GROUND_TRUTH_DIR / f"{clip.video_id}.parquet", clip, _clip_meta(cfg, clip)
    )
    return (video_rel, sign.name, f"s{signer_index:02d}", split_of(cfg, signer_index))


def _worker_count(cfg: SynthConfig, jobs: int) -> int:
    """Processes to use: as configured (0: one per CPU, at most 8), but at least 4 clips
    per process, since starting a process costs about as much as rendering a few clips."""
    wanted = cfg.workers or min(os.cpu_count() or 1, 8)
    return max(1, min(wanted, jobs // 4))


def generate(out: Path, cfg: SynthConfig) -> dict[str, Any]:
    """Write the dataset described by `cfg` into `out` (created if missing).

    Clips are rendered by `cfg.workers` processes; the bytes written do not depend on it.
    Returns: {"clips": int, "classes": int, "signers": int, "config_hash": str}.
    """
    out = Path(out)
    refuse_foreign_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTIAL_FILE).touch()
    (out / COMPLETION_FILE).unlink(missing_ok=True)
    (out / VIDEO_DIR).mkdir(exist_ok=True)
    (out / GROUND_TRUTH_DIR).mkdir(exist_ok=True)
    signs = build_class_set(cfg.classes)
    jobs = [
        (signer_index, class_index, rep)
        for signer_index in range(cfg.signers)
        for class_index in range(cfg.classes)
        for rep in range(cfg.reps)
    ]
    workers = _worker_count(cfg, len(jobs))
    if workers == 1:
        rows = [_write_clip(out, cfg, job) for job in jobs]
    else:
        # fork starts workers at once; spawn is the safe choice when the caller runs threads.
        method = "fork" if threading.active_count() == 1 else "spawn"
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            rows = list(pool.map(partial(_write_clip, out, cfg), jobs, chunksize=4))
    _remove_stale(out, {Path(row[0]).stem for row in rows})
    with _atomic(out / LABELS_FILE) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", "label", "signer", "split"])
            writer.writerows(rows)
    write_class_groups(out, signs, cfg.unlabeled)
    manifest = _manifest(cfg, signs, len(rows))
    with _atomic(out / COMPLETION_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out / PARTIAL_FILE).unlink()
    return {
        "clips": len(rows),
        "classes": cfg.classes,
        "signers": cfg.signers,
        "config_hash": manifest["config_hash"],
    }


def refuse_foreign_folder(out: Path) -> None:
    """Raise `InputError` when `out` holds files that no synthetic generation put there: a
    real dataset (or anything else) is never written into, whatever a config says."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if (out / COMPLETION_FILE).is_file() or (out / PARTIAL_FILE).is_file():
        return
    raise InputError(
        f"{out} holds files and is not a synthetic dataset (no {COMPLETION_FILE}): refusing to "
        "generate one into it. Give the synthetic dataset an empty or new root, or remove the "
        "dataset's synth section."
    )


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The completion file of a dataset folder, or None when it is missing or unreadable."""
    try:
        return json.loads((Path(out) / COMPLETION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_generated(out: Path, cfg: SynthConfig) -> dict[str, Any]:
    """Generate the dataset unless `out` already holds a complete one for this config.

    Returns: {"clips": int, "status": "generated" | "up to date", "config_hash": str}.
    """
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("config_hash") == synth_hash(cfg):
        # datasets made before class groups existed get them
        write_class_groups(Path(out), build_class_set(cfg.classes), cfg.unlabeled)
        return {
            "clips": int(manifest["clips"]),
            "status": "up to date",
            "config_hash": manifest["config_hash"],
        }
    summary = generate(out, cfg)
    return {"clips": summary["clips"], "status": "generated", "config_hash": summary["config_hash"]}


def synthetic_datasets(cfg: PipelineConfig) -> list[tuple[str, Path, SynthConfig]]:
    """The datasets a config generates, as (name, root, settings): those with their own `synth`
    section, and the first dataset with the config's `synth` section when it has none and the
    config gives that section (or no datasets at all: the embedded default). A config of real
    datasets and no `synth` section generates nothing."""
    embedded = "synth" in cfg.model_fields_set or "datasets" not in cfg.model_fields_set
    found = []
    for index, dataset in enumerate(cfg.datasets):
        settings = dataset.synth or (cfg.synth if index == 0 and embedded else None)
        if settings is not None:
            found.append((dataset.name, Path(dataset.root), settings))
    return found


def ensure_config_datasets(cfg: PipelineConfig) -> list[tuple[str, Path, dict[str, Any]]]:
    """`ensure_generated` for every dataset of `synthetic_datasets(cfg)`; returns (name, root,
    summary) per dataset."""
    return [(name, root, ensure_generated(root, settings))
            for name, root, settings in synthetic_datasets(cfg)]
