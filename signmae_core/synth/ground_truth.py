"""Reading the synthetic dataset's per-frame ground truth (the extraction stage's oracle).

`read_ground_truth(root, "s00_c003_r01")` (or `"videos/s00_c003_r01.mp4"`) returns a
`GroundTruth` with the landmarks of both hands, their in-view flags and the part label maps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq

from signmae_core.errors import InputError

from .generate import GROUND_TRUTH_DIR, HANDS
from .hand import NUM_LANDMARKS


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of one clip.

    landmarks: (T, 2, 21, 2) float32 pixel (x, y) in the video's frame, (0, 0) the centre of
        the top-left pixel; hand 0 is the signer's anatomical LEFT hand, hand 1 the RIGHT
        (`HANDS`); the 21 points are in MediaPipe Hands order (0 wrist, 4 thumb tip, 8 index
        tip, 12 middle tip, 16 ring tip, 20 pinky tip).
    in_view: (T, 2) bool, True when all 21 landmarks of the hand lie inside the frame.
    parts: (T, H, W) uint8 part labels 0 background, 1 body, 2 face, 3 left hand,
        4 right hand; None when read with `parts=False`.
    meta: the clip's metadata (video path, size, fps, label, signer, dominant hand, ...).
    """

    video_id: str
    landmarks: np.ndarray
    in_view: np.ndarray
    parts: np.ndarray | None
    meta: dict[str, Any]


def ground_truth_path(root: Path, video: str | Path) -> Path:
    """Parquet file of a clip given its id (`s00_c003_r01`) or any path with that stem."""
    stem = Path(str(video)).stem
    if not stem or "/" in stem or stem.startswith("."):
        raise InputError(f"not a synthetic clip id: {video!r}")
    return Path(root) / GROUND_TRUTH_DIR / f"{stem}.parquet"


def decode_parts(png: bytes) -> np.ndarray:
    """One PNG-coded part map -> (H, W) uint8."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise InputError("corrupt part map in ground truth")
    return image


def read_ground_truth(root: Path, video: str | Path, parts: bool = True) -> GroundTruth:
    """Ground truth of one clip of the synthetic dataset at `root`.

    `video` is a clip id (`s00_c003_r01`), the video's path relative to the root
    (`videos/s00_c003_r01.mp4`, as in labels.csv) or any path with that file stem.
    Set `parts=False` to skip decoding the part maps (landmarks only, faster).
    Raises `InputError` when the clip has no ground truth.
    """
    path = ground_truth_path(root, video)
    if not path.is_file():
        raise InputError(f"no ground truth for {video!r} (expected {path})")
    columns = ["frame", "left_xy", "right_xy", "left_in_view", "right_in_view"]
    if parts:
        columns.append("parts_png")
    table = pq.read_table(path, columns=columns)
    t_count = table.num_rows
    landmarks = np.empty((t_count, 2, NUM_LANDMARKS, 2), np.float32)
    for h, hand in enumerate(HANDS):
        flat = table.column(f"{hand}_xy").combine_chunks().flatten().to_numpy()
        landmarks[:, h] = flat.reshape(t_count, NUM_LANDMARKS, 2)
    in_view = np.stack(
        [table.column(f"{hand}_in_view").to_numpy(zero_copy_only=False) for hand in HANDS],
        axis=1,
    ).astype(bool)
    maps = None
    if parts:
        maps = np.stack([decode_parts(png) for png in table.column("parts_png").to_pylist()])
    raw = (table.schema.metadata or {}).get(b"signmae.synth", b"{}")
    return GroundTruth(Path(path).stem, landmarks, in_view, maps, json.loads(raw))
