"""One extraction worker: a backend loaded once, and the extraction of one stored clip.

`ClipExtractor(cfg, dataset_root).extract(job)` reads a decoded clip (or the same frames from
the source video at a higher resolution), runs the backend and returns the clip's Parquet row.
It never raises for bad input: a clip that cannot be read or processed becomes a failed row with
the reason. Process-level failures (a crash or a hang inside MediaPipe) are the caller's to
catch: the pipeline runs each worker in its own process with a per-clip timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from signmae_core.clips import ClipMeta, read_clip, read_clip_meta, read_source_frames
from signmae_core.config import ExtractConfig
from signmae_core.ingest.adapters.base import resolve_inside
from signmae_core.parts import BACKGROUND

from .mediapipe_backend import MediaPipeBackend, MediaPipeParams
from .oracle_backend import oracle_extract
from .rasterize import RasterParams
from .schema import ClipExtraction, failed_row, ok_row


@dataclass(frozen=True)
class ClipJob:
    """One clip to extract: its stored clip file and the source video it was decoded from."""

    video_id: str
    clip_path: str
    source_path: str | None = None  # None: the dataset root joined with the clip's source path
    clip_key: str = ""
    num_frames: int = 0  # for scheduling: long clips first


def mediapipe_params(cfg: ExtractConfig) -> MediaPipeParams:
    """The MediaPipe backend settings of an `extract` config section."""
    return MediaPipeParams(
        hand_complexity=cfg.hand_model_complexity,
        max_num_hands=cfg.max_num_hands,
        min_detection_confidence=cfg.min_detection_confidence,
        min_tracking_confidence=cfg.min_tracking_confidence,
        pose=cfg.pose,
        person_threshold=cfg.person_threshold,
        mirrored_input=cfg.mirrored_input,
        handedness=cfg.handedness,
        max_wrist_distance=cfg.max_wrist_distance,
        second_look=cfg.second_look,
        second_look_crop=cfg.second_look_crop,
        second_look_size=cfg.second_look_size,
        raster=RasterParams(finger_width=cfg.finger_width, clip_to_person=cfg.clip_hands_to_person),
    )


def seg_shape(meta: ClipMeta, scale: float) -> tuple[int, int]:
    """(Hs, Ws) of the part maps of a clip: `scale` times the clip size, at least 8 pixels."""
    return max(8, round(meta.height * scale)), max(8, round(meta.width * scale))


def inside_source(meta: ClipMeta, shape: tuple[int, int]) -> np.ndarray:
    """(Hs, Ws) bool: the part-map pixels whose centres show the source frame, not padding.

    The crop box may reach past the source frame (a wide video padded to a square clip);
    nothing of the signer can be there, whatever a model guesses.
    """
    x0, y0, side = meta.crop_box
    height, width = shape
    u = (np.arange(width) + 0.5) / width * side + x0  # source x of each column's centre
    v = (np.arange(height) + 0.5) / height * side + y0
    cols = (u >= 0) & (u < meta.source_width)
    rows = (v >= 0) & (v < meta.source_height)
    return rows[:, None] & cols[None, :]


def source_size(meta: ClipMeta, cfg: ExtractConfig) -> int | None:
    """Side of the square source frames to extract from, or None to use the stored clip.

    `source` always reads the source; `auto` reads it when that gives larger frames than the
    clip. Frames are never read larger than the crop's own size in the source (no upsampling).
    """
    if cfg.frames_from == "clip":
        return None
    size = max(1, min(cfg.resolution, round(meta.crop_box[2])))
    if cfg.frames_from == "auto" and size <= max(meta.width, meta.height):
        return None
    return size


class ClipExtractor:
    """Extracts clips one at a time with one backend (models loaded once, in `__init__`)."""

    def __init__(self, cfg: ExtractConfig, dataset_root: str | Path) -> None:
        self.cfg = cfg
        self.dataset_root = Path(dataset_root)
        self.backend = None
        if cfg.backend == "mediapipe":
            self.backend = MediaPipeBackend(mediapipe_params(cfg))

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def extract(self, job: ClipJob) -> dict[str, Any]:
        """The Parquet row of one clip (`schema.ok_row` / `schema.failed_row`).

        A row may carry an extra `warning` key (not a column): e.g. the source video could not be
        read and the stored clip was used instead.
        """
        started, started_cpu = time.perf_counter(), time.process_time()
        try:
            clip, warning = self._extract(job)
        except Exception as exc:  # noqa: BLE001 - any failure on one clip fails that clip only
            reason = f"{type(exc).__name__}: {exc}"
            return failed_row(
                job.video_id, reason, self.cfg.backend, time.perf_counter() - started, job.clip_key
            )
        clip.seconds = time.perf_counter() - started
        clip.cpu_seconds = time.process_time() - started_cpu
        clip.clip_key = job.clip_key
        row = ok_row(clip)
        if warning:
            row["warning"] = warning
        return row

    def _extract(self, job: ClipJob) -> tuple[ClipExtraction, str | None]:
        meta = read_clip_meta(job.clip_path)
        shape = seg_shape(meta, self.cfg.seg_scale)
        if self.backend is None:
            clip = oracle_extract(self.dataset_root, meta, shape)
            clip.video_id = job.video_id
            return clip, None
        frames, frames_from, warning = self._frames(job, meta)
        clip = self.backend.process(frames, shape, job.video_id)
        clip.part_maps[:, ~inside_source(meta, shape)] = BACKGROUND
        clip.frames_from = frames_from
        clip.fps = meta.fps
        clip.clip_width, clip.clip_height = meta.width, meta.height
        return clip, warning

    def _frames(self, job: ClipJob, meta: ClipMeta) -> tuple[Any, str, str | None]:
        """(T, S, S, 3) frames to extract from, where they came from, and a warning or None."""
        size = source_size(meta, self.cfg)
        if size is None:
            return read_clip(job.clip_path), "clip", None
        video = self._source_video(job, meta)
        try:
            return read_source_frames(video, meta, size), "source", None
        except Exception as exc:  # noqa: BLE001 - the stored clip is a sound second choice
            warning = f"source video unreadable ({type(exc).__name__}: {exc}); used the clip"
            return read_clip(job.clip_path), "clip", " ".join(warning.split())[:300]

    def _source_video(self, job: ClipJob, meta: ClipMeta) -> Path:
        if job.source_path:
            return Path(job.source_path)
        path, _, error = resolve_inside(self.dataset_root, meta.source_path)
        if path is None:
            raise ValueError(f"source video: {error}")
        return path
