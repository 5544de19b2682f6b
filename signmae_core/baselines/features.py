"""Per-clip features of the floors and the keypoint baseline: pixels and normalized landmarks.

Every feature samples the clip at the same `num_frames` frame indices (`sample_indices`),
spread evenly over the whole clip, so clips of any length compare frame for frame.

- Raw pixels: each sampled frame in grey, resized to `size x size` (area interpolation),
  values in [0, 1].
- Hand shapes: each hand's 21 (u, v) landmarks minus its wrist, divided by the hand's palm
  length (wrist to middle-finger knuckle, the median over the clip's frames where the hand was
  found), so position and distance to the camera drop out and the shape stays. A hand not
  found in a frame is all zeros there (every landmark "at the wrist") and flagged as missing:
  the 1-NN leaves such slots out of the distance (`knn.masked_distances`).
- Sequence features for the temporal classifier, per frame: both hand shapes as above, both
  wrists and 17 upper-body pose landmarks (nose, eyes, ears, mouth, shoulders, elbows, wrists)
  relative to the body (the median shoulder midpoint, divided by the median shoulder width),
  and three found-flags (left hand, right hand, pose). Missing values are zeros. Without any
  pose in the clip, positions are taken relative to the clip centre in clip units.

Landmarks are in the extraction's normalized clip coordinates (docs/EXTRACT.md); z is left out
(the synthetic oracle has none and MediaPipe's is relative).
"""

from __future__ import annotations

import numpy as np

WRIST, MIDDLE_MCP = 0, 9  # hand landmarks
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12  # pose landmarks
UPPER_BODY = np.arange(17)  # pose landmarks 0..16: face, shoulders, elbows, wrists
NUM_HAND = 21
MIN_SCALE = 1e-4  # a palm or shoulder span below this (normalized units) counts as not found


def sample_indices(num_frames: int, count: int) -> np.ndarray:
    """`count` frame indices spread evenly over `[0, num_frames)` (first and last included;
    repeats when the clip is shorter than `count`). (count,) int64."""
    if num_frames < 1:
        raise ValueError("a clip without frames has no features")
    return np.rint(np.linspace(0, num_frames - 1, count)).astype(np.int64)


def pixel_features(frames: np.ndarray, size: int = 32) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames (already sampled) -> (T * size * size,) float32 grey."""
    import cv2

    grey = [
        cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA)
        for f in frames
    ]
    return (np.stack(grey).astype(np.float32) / 255.0).reshape(-1)


def hand_shapes(hands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wrist-centred, palm-length-scaled hands and where they were found.

    hands: (T, 2, 21, >=2) landmarks, NaN where a hand was not found. Returns
    `(shapes (T, 2, 21, 2) float32, zeros where not found; found (T, 2) bool)`. A hand whose
    median palm length is below `MIN_SCALE` counts as not found in the whole clip.
    """
    xy = np.asarray(hands, dtype=np.float64)[..., :2]
    found = ~np.isnan(xy).any(axis=(2, 3))
    centred = xy - xy[:, :, WRIST : WRIST + 1]
    palm = np.linalg.norm(centred[:, :, MIDDLE_MCP], axis=-1)  # (T, 2)
    shapes = np.zeros(xy.shape, dtype=np.float64)
    for hand in range(xy.shape[1]):
        seen = found[:, hand]
        scale = float(np.median(palm[seen, hand])) if seen.any() else 0.0
        if scale < MIN_SCALE:
            found[:, hand] = False
            continue
        shapes[seen, hand] = centred[seen, hand] / scale
    return shapes.astype(np.float32), found


def hand_features(hands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hand-keypoint 1-NN's slots: (T, 2, 21, >=2) sampled hand landmarks ->
    `(slots (T * 2, 42) float32, found (T * 2,) bool)`, one slot per frame and hand
    (`hand_shapes`; the 1-NN compares only the slots found in both clips)."""
    shapes, found = hand_shapes(hands)
    return shapes.reshape(len(shapes) * 2, -1), found.reshape(-1)


def body_frame(pose: np.ndarray) -> tuple[np.ndarray, float]:
    """The clip's body reference: (centre (2,), scale) = the median shoulder midpoint and the
    median shoulder width over frames with both shoulders; ((0.5, 0.5), 1.0) without them.

    pose: (T, 33, >=2) landmarks, NaN where not found."""
    shoulders = np.asarray(pose, dtype=np.float64)[:, [LEFT_SHOULDER, RIGHT_SHOULDER], :2]
    seen = ~np.isnan(shoulders).any(axis=(1, 2))
    if seen.any():
        width = float(np.median(np.linalg.norm(shoulders[seen, 0] - shoulders[seen, 1], axis=-1)))
        if width >= MIN_SCALE:
            return np.median(shoulders[seen].mean(axis=1), axis=0), width
    return np.array([0.5, 0.5]), 1.0


def sequence_features(hands: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(T, F) float32 per-frame features of the temporal classifier (see the module docstring).

    hands: (T, 2, 21, >=2); pose: (T, 33, >=2); both NaN where not found, already sampled.
    F = 2 * 20 * 2 (hand shapes without the wrist) + 2 * 2 (wrists) + 17 * 2 (pose) + 3 flags.
    """
    shapes, found = hand_shapes(hands)
    centre, scale = body_frame(pose)
    wrists = (np.asarray(hands, dtype=np.float64)[:, :, WRIST, :2] - centre) / scale
    wrists = np.where(found[..., None], wrists, 0.0)
    body = (np.asarray(pose, dtype=np.float64)[:, UPPER_BODY, :2] - centre) / scale
    pose_found = ~np.isnan(body).any(axis=(1, 2))
    body = np.where(pose_found[:, None, None], body, 0.0)
    t = len(shapes)
    return np.concatenate(
        [
            shapes[:, :, 1:].reshape(t, -1),
            wrists.reshape(t, -1),
            body.reshape(t, -1),
            np.stack([found[:, 0], found[:, 1], pose_found], axis=1),
        ],
        axis=1,
    ).astype(np.float32)
