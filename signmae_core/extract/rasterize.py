"""Part maps from landmarks and a person mask: hands, face and body on a small pixel grid.

- **Hand**: the palm is the convex hull of the wrist, the thumb base and the four knuckles, grown
  by half a finger width; each finger is a chain of thick segments through its joints. Widths
  scale with the hand: `finger_width` palm lengths (wrist to middle knuckle), thinner towards the
  pinky. Shapes are drawn `SUPERSAMPLE` times finer than the grid and area-averaged, so a pixel is
  hand when more than half of it is covered (sub-pixel fingers are not lost or doubled).
- **Clipping**: a hand is intersected with the person mask (grown by one pixel) when most of the
  hand lies on it; when the segmentation missed the hand (most of it off the person) the mask
  is kept as drawn. The face ellipse is clipped the same way.
- **Face**: an ellipse around the head (hair included) from the pose's face landmarks.
- **Body**: the person mask minus face and hands.

Label order where parts overlap: hands over face over body; where the two hands overlap, the
larger hand (nearer the camera) is drawn on top.
All functions take points in pixels of the target grid, `(0, 0)` the centre of the top-left pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from signmae_core.parts import BODY, FACE, LEFT_HAND, RIGHT_HAND

SUPERSAMPLE = 8
PALM_STROKE = 0.5  # the palm outline is drawn this many finger widths thick
AREA_THRESHOLD = 127  # a grid pixel belongs to a shape covering more than this share of 255
FINGER_CHAINS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4),
    (5, 6, 7, 8),
    (9, 10, 11, 12),
    (13, 14, 15, 16),
    (17, 18, 19, 20),
)
PALM_POINTS = (0, 1, 2, 5, 9, 13, 17)
# Palm outline points the landmarks miss (the wrist's sides and the heel below the little
# finger), as `wrist + a * (index knuckle - little knuckle) + b * (middle knuckle - wrist)`:
# both vectors lie in the palm's plane, so the points follow the hand's 3-D turn. (a, b) per point.
PALM_TEMPLATE = ((0.42, -0.06), (-0.38, 0.02), (-0.58, 0.28), (-0.75, 0.65), (-0.76, 0.99))
# Width of thumb, index, middle, ring and pinky relative to the configured finger width.
FINGER_WIDTH_FACTORS = (1.1, 1.0, 1.0, 0.95, 0.85)
# Palm length (wrist -> middle knuckle) estimated from four distances, robust to one bad point:
# (from, to, that distance in palm lengths for an average hand).
_SCALE_REFERENCES = ((0, 9, 1.0), (0, 5, 1.02), (0, 17, 0.915), (5, 17, 0.71))

# Pose landmarks of the face (MediaPipe Pose order).
_LEFT_EYE, _RIGHT_EYE, _LEFT_EAR, _RIGHT_EAR, _MOUTH_LEFT, _MOUTH_RIGHT = 2, 5, 7, 8, 9, 10


@dataclass(frozen=True)
class RasterParams:
    """How shapes are drawn; the defaults fit the synthetic hands and real adult hands."""

    finger_width: float = 0.24  # finger width in palm lengths
    clip_to_person: bool = True
    min_on_person: float = 0.5  # clip only when this share of the shape lies on the person
    face_height: float = 3.4  # head height in eye-to-mouth distances
    face_aspect: float = 0.8  # head width / head height when the ears are not visible
    min_visibility: float = 0.5  # pose landmarks below this visibility are ignored


def hand_scale(points: np.ndarray) -> float:
    """Palm length (wrist to middle knuckle) of a hand, from `(21, 2)` or `(21, 3)` points.

    The median of four distance-based estimates, in 3-D when depth is given (so a hand pointing
    at the camera keeps its size). Returns 0 for a degenerate hand.
    """
    estimates = [
        float(np.linalg.norm(points[b] - points[a])) / ratio for a, b, ratio in _SCALE_REFERENCES
    ]
    value = float(np.median(estimates))
    return value if np.isfinite(value) else 0.0


def _fixed(points: np.ndarray, factor: int) -> np.ndarray:
    """Pixel-centre points -> int32 coordinates on a grid `factor` times finer (pixel centres)."""
    return np.round((points[..., :2] + 0.5) * factor - 0.5).astype(np.int32)


def _area_threshold(canvas: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A supersampled 0/1 canvas -> `shape` bool, True where more than half is covered."""
    small = cv2.resize(canvas, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return small > AREA_THRESHOLD


def palm_outline(points: np.ndarray) -> np.ndarray:
    """(21, >=2) hand landmarks -> (12, 2) points whose convex hull is the palm."""
    xy = points[:, :2]
    across = xy[5] - xy[17]
    along = xy[9] - xy[0]
    extra = np.array([xy[0] + a * across + b * along for a, b in PALM_TEMPLATE])
    return np.concatenate([xy[list(PALM_POINTS)], extra])


def rasterize_hand(
    shape: tuple[int, int], points: np.ndarray, params: RasterParams = RasterParams()
) -> np.ndarray:
    """Mask of one hand on an `(H, W)` grid from its 21 landmarks in that grid's pixels.

    points: (21, 2) or (21, 3) float (x, y[, z]); z in the same pixel scale as x.
    Returns: (H, W) bool.
    """
    points = np.asarray(points, dtype=np.float64)
    if not np.isfinite(points[:, :2]).all():
        return np.zeros(shape, dtype=bool)
    depth = points if points.shape[1] == 3 and np.isfinite(points).all() else points[:, :2]
    scale = hand_scale(depth)
    width = max(params.finger_width * scale, 1e-3)
    outline = palm_outline(points)
    # Draw on a fine canvas covering only the hand's box (plus a finger width).
    low = np.floor(np.minimum(points[:, :2].min(0), outline.min(0)) - width).astype(int)
    high = np.ceil(np.maximum(points[:, :2].max(0), outline.max(0)) + width).astype(int) + 1
    low = np.maximum(low, 0)
    high = np.minimum(high, (shape[1], shape[0]))
    mask = np.zeros(shape, dtype=bool)
    if (high <= low).any():
        return mask
    factor = SUPERSAMPLE
    box_w, box_h = high - low
    canvas = np.zeros((box_h * factor, box_w * factor), dtype=np.uint8)
    offset = points[:, :2] - low
    grid = _fixed(offset, factor)
    width_px = max(1.0, width * factor)
    palm = cv2.convexHull(_fixed(outline - low, factor))
    cv2.fillConvexPoly(canvas, palm, 255)
    cv2.polylines(canvas, [palm], True, 255, thickness=max(1, int(round(width_px * PALM_STROKE))))
    for chain, factor_w in zip(FINGER_CHAINS, FINGER_WIDTH_FACTORS, strict=True):
        thickness = max(1, int(round(width_px * factor_w)))
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            cv2.line(canvas, tuple(grid[a]), tuple(grid[b]), 255, thickness)
        for joint in chain:
            cv2.circle(canvas, tuple(grid[joint]), max(1, thickness // 2), 255, -1)
    mask[low[1] : high[1], low[0] : high[0]] = _area_threshold(canvas, (box_h, box_w))
    return mask


def face_ellipse(
    pose: np.ndarray, params: RasterParams = RasterParams()
) -> tuple[tuple[float, float], tuple[float, float], float] | None:
    """Head ellipse `((cx, cy), (width, height), angle_deg)` from `(33, 4)` pose landmarks
    (x, y in grid pixels, z, visibility); None when the eyes or the mouth are not visible."""
    visible = np.isfinite(pose[:, 0]) & (np.nan_to_num(pose[:, 3]) >= params.min_visibility)
    if not (visible[[_LEFT_EYE, _RIGHT_EYE, _MOUTH_LEFT, _MOUTH_RIGHT]]).all():
        return None
    xy = pose[:, :2].astype(np.float64)
    eyes = (xy[_LEFT_EYE] + xy[_RIGHT_EYE]) / 2
    mouth = (xy[_MOUTH_LEFT] + xy[_MOUTH_RIGHT]) / 2
    down = mouth - eyes
    eye_mouth = float(np.linalg.norm(down))
    if eye_mouth < 1e-6:
        return None
    height = params.face_height * eye_mouth
    width = params.face_aspect * height
    if visible[_LEFT_EAR] and visible[_RIGHT_EAR]:
        width = max(width, 1.15 * float(np.linalg.norm(xy[_LEFT_EAR] - xy[_RIGHT_EAR])))
    # The eyes sit near the middle of the head's height (hair included).
    centre = eyes + down / eye_mouth * 0.05 * height
    angle = float(np.degrees(np.arctan2(down[1], down[0]))) - 90.0
    return (float(centre[0]), float(centre[1])), (width, height), angle


def rasterize_ellipse(
    shape: tuple[int, int], ellipse: tuple[tuple[float, float], tuple[float, float], float]
) -> np.ndarray:
    """An `((cx, cy), (width, height), angle)` ellipse in grid pixels -> `(H, W)` bool."""
    factor = SUPERSAMPLE
    canvas = np.zeros((shape[0] * factor, shape[1] * factor), dtype=np.uint8)
    (cx, cy), (w, h), angle = ellipse
    centre = (int(round((cx + 0.5) * factor - 0.5)), int(round((cy + 0.5) * factor - 0.5)))
    axes = (max(1, int(round(w * factor / 2))), max(1, int(round(h * factor / 2))))
    cv2.ellipse(canvas, centre, axes, angle, 0, 360, 255, -1)
    return _area_threshold(canvas, shape)


def clip_to_person(
    mask: np.ndarray, person: np.ndarray | None, params: RasterParams = RasterParams()
) -> np.ndarray:
    """`mask & grown person` when most of `mask` lies on the person; else `mask` unchanged."""
    if person is None or not params.clip_to_person or not mask.any() or not person.any():
        return mask
    grown = cv2.dilate(person.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    inside = mask & grown
    if inside.sum() < params.min_on_person * mask.sum():
        return mask
    return inside


def compose_part_map(
    shape: tuple[int, int],
    person: np.ndarray | None,
    face: np.ndarray | None,
    hands: list[tuple[int, np.ndarray, float]],
) -> np.ndarray:
    """One `(H, W)` uint8 part map from part masks.

    person, face: (H, W) bool or None. hands: `(label, mask, palm_length)` per found hand; the
    larger hand is drawn last (on top).
    """
    labels = np.zeros(shape, dtype=np.uint8)
    if person is not None:
        labels[person] = BODY
    if face is not None:
        labels[face] = FACE
    for label, mask, _ in sorted(hands, key=lambda item: item[2]):
        labels[mask] = label
    return labels


def rasterize_frame(
    shape: tuple[int, int],
    left: np.ndarray | None,
    right: np.ndarray | None,
    pose: np.ndarray | None,
    person: np.ndarray | None,
    params: RasterParams = RasterParams(),
) -> np.ndarray:
    """The part map of one frame on an `(H, W)` grid.

    left, right: (21, 3) hand landmarks (x, y, z) in grid pixels, or None when not found.
    pose: (33, 4) pose landmarks (x, y, z, visibility) in grid pixels, or None.
    person: (H, W) bool person mask, or None. Returns (H, W) uint8 labels.
    """
    face = None
    if pose is not None:
        ellipse = face_ellipse(pose, params)
        if ellipse is not None:
            face = clip_to_person(rasterize_ellipse(shape, ellipse), person, params)
    hands = []
    for label, points in ((LEFT_HAND, left), (RIGHT_HAND, right)):
        if points is None:
            continue
        mask = clip_to_person(rasterize_hand(shape, points, params), person, params)
        hands.append((label, mask, hand_scale(points)))
    return compose_part_map(shape, person, face, hands)


def normalized_to_grid(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(..., >=2) normalized (u, v[, z, ...]) -> grid pixels (x, y[, z * W, ...]) of `(H, W)`.

    z (MediaPipe's depth, in the scale of u) is scaled by the width; other columns are kept.
    """
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * shape[1] - 0.5
    out[..., 1] = out[..., 1] * shape[0] - 0.5
    if out.shape[-1] >= 3:
        out[..., 2] = out[..., 2] * shape[1]
    return out


def face_box(part_map: np.ndarray) -> tuple[float, float, float, float] | None:
    """Normalized `(u0, v0, u1, v1)` box of the face label in an `(H, W)` part map, or None."""
    rows, cols = np.nonzero(part_map == FACE)
    if rows.size == 0:
        return None
    height, width = part_map.shape
    return (
        cols.min() / width,
        rows.min() / height,
        (cols.max() + 1) / width,
        (rows.max() + 1) / height,
    )
