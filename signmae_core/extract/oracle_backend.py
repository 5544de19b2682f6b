"""The oracle backend: the synthetic dataset's ground truth, mapped onto the stored clip.

For experiments that separate segmentation errors from the method: it gives the landmarks and
part maps the synthetic renderer drew, in the same schema as the MediaPipe backend. It needs the
dataset's `ground_truth/` folder and is never the default (real data has no ground truth).

- Landmarks: the source frame of each clip frame (`meta.frame_indices`), mapped through the
  clip's crop box to normalized clip coordinates; z is 0 (the renderer stores 2-D points).
- Found: a hand is found in a frame when it is wholly in view or any of its pixels is in the
  clip's part map; its score is 1.
- Part maps: the rendered label map warped through the crop box onto a grid `SUPERSAMPLE`
  times finer than the part map, then each part-map pixel takes the label covering most of it.
- Face box: the bounding box of the face label; no pose (NaN).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from signmae_core.clips import ClipMeta, crop_warp_matrix, source_to_clip
from signmae_core.parts import BACKGROUND, LEFT_HAND, NUM_PARTS, RIGHT_HAND
from signmae_core.synth import read_ground_truth

from .rasterize import SUPERSAMPLE, face_box
from .schema import ClipExtraction, ExtractionError, empty_extraction


def warp_labels(labels: np.ndarray, meta: ClipMeta, shape: tuple[int, int]) -> np.ndarray:
    """Source-frame label maps `(T, H, W)` uint8 -> `(T, Hs, Ws)` on the clip's grid.

    The crop box maps source pixels to the clip; each output pixel takes the label that covers
    most of it (measured on a grid `SUPERSAMPLE` times finer); outside the source is background.
    """
    height, width = shape
    fine_h, fine_w = height * SUPERSAMPLE, width * SUPERSAMPLE
    x0, y0, side = meta.crop_box
    matrix = crop_warp_matrix(x0, y0, fine_w / side, fine_h / side)
    out = np.empty((len(labels), height, width), dtype=np.uint8)
    for t, frame in enumerate(labels):
        fine = cv2.warpAffine(
            frame, matrix, (fine_w, fine_h), flags=cv2.INTER_NEAREST, borderValue=0
        )
        blocks = fine.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE)
        counts = np.stack([(blocks == k).sum(axis=(1, 3)) for k in range(NUM_PARTS)])
        out[t] = counts.argmax(axis=0).astype(np.uint8)
    return out


def oracle_extract(root: str | Path, meta: ClipMeta, seg_shape: tuple[int, int]) -> ClipExtraction:
    """The ground truth of the synthetic clip behind `meta`, as a `ClipExtraction`.

    root: the synthetic dataset's root (holding `ground_truth/`). seg_shape: (Hs, Ws).
    Raises `ExtractionError` when the ground truth does not cover the clip's frames.
    """
    started = time.perf_counter()
    truth = read_ground_truth(Path(root), meta.source_path)
    indices = np.asarray(meta.frame_indices, dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(truth.landmarks)):
        raise ExtractionError(
            f"ground truth of {meta.video_id} has {len(truth.landmarks)} frames; the clip uses "
            f"source frames up to {int(indices.max())}"
        )
    out = empty_extraction(meta.video_id, len(indices), seg_shape)
    out.part_maps = warp_labels(truth.parts[indices], meta, seg_shape)
    # Ground truth pixels have (0, 0) at the centre of the top-left pixel; the crop box and
    # normalized coordinates count from the pixel's corner.
    clip_px = source_to_clip(truth.landmarks[indices] + 0.5, meta)  # (T, 2, 21, 2)
    normalized = clip_px / np.array([meta.width, meta.height])
    for hand, (label, coords, scores) in enumerate(
        ((LEFT_HAND, out.left_hand, out.left_score), (RIGHT_HAND, out.right_hand, out.right_score))
    ):
        found = truth.in_view[indices, hand] | (out.part_maps == label).any(axis=(1, 2))
        coords[found, :, :2] = normalized[found, hand]
        coords[found, :, 2] = 0.0
        scores[found] = 1.0
    for t in range(len(indices)):
        box = face_box(out.part_maps[t])
        if box is not None:
            out.face_box[t] = box
            out.face_score[t] = 1.0
    out.person_found = (out.part_maps != BACKGROUND).any(axis=(1, 2))
    out.backend = "oracle"
    out.frames_from = "ground_truth"
    out.fps = meta.fps
    out.clip_width, out.clip_height = meta.width, meta.height
    out.extract_width, out.extract_height = meta.source_width, meta.source_height
    out.seconds = time.perf_counter() - started
    return out
