"""The MediaPipe backend: hands, pose, person mask and part maps for the frames of one clip.

Models (legacy `mediapipe.solutions`, bundled in the 0.10.21 wheel, so fully offline): Hands
(tracking mode, `model_complexity` 0 or 1), Pose (complexity 1 only: 0 and 2 try to download a
model), Selfie Segmentation (the person mask). They are loaded once per `MediaPipeBackend` and
reset between clips, so tracking never carries over from one clip to the next. `mediapipe` is
imported only when a backend is made (machines without it can import this module).

Handedness. MediaPipe Hands labels hands as if the image were mirrored (a selfie camera): on
ordinary video its "Left" is the signer's RIGHT hand. Labels are swapped unless
`mirrored_input` is set. With `handedness="pose"` (the default) hands are matched to the pose's
wrists (anatomical left and right, from the whole body) whenever the match is clear, which fixes
the classifier's occasional swaps; the swapped classifier label decides otherwise, and two hands
in one frame never get the same side. With the pose, a found hand whose wrist lies far from both
pose wrists (`max_wrist_distance` palm lengths) is dropped: it is not attached to an arm.

Second look. Hands' palm detector sees the whole frame, where a signer's hand at 448 px can be
20 pixels across. With `second_look` (and the pose), a side whose hand was not found but whose
pose wrist is visible gets a second try: a square crop around the pose's hand points (side
`second_look_crop` wrist-to-knuckle lengths, centred at the pose knuckles), upscaled to
`second_look_size` pixels, goes to a second Hands model in static-image mode that looks for one
hand. What it finds is that side's hand if its wrist lies near that pose wrist (nearer than to
the other, within `max_wrist_distance`) and it is not the other side's hand seen again.
MediaPipe Holistic takes its hand regions from the pose in a similar way on every frame; here it
runs only where tracking missed a hand.

Output coordinates are normalized to the frames given, which show exactly the clip's field of
view, so they are normalized clip coordinates (see `schema.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from signmae_core.clips import crop_warp_matrix

from .rasterize import (
    RasterParams,
    face_box,
    hand_scale,
    normalized_to_grid,
    rasterize_frame,
)
from .schema import ClipExtraction, empty_extraction

# Pose landmarks (MediaPipe Pose order) used here.
POSE_LEFT_WRIST, POSE_RIGHT_WRIST = 15, 16
POSE_HAND_POINTS = {"left": (15, 17, 19), "right": (16, 18, 20)}  # wrist, pinky, index knuckles
UPPER_BODY = slice(0, 17)
FACE_POINTS = slice(0, 11)


@dataclass(frozen=True)
class MediaPipeParams:
    """Settings of the MediaPipe backend (built from the `extract` config section)."""

    hand_complexity: Literal[0, 1] = 1
    max_num_hands: int = 2
    min_detection_confidence: float = 0.3
    min_tracking_confidence: float = 0.3
    pose: bool = True
    person_threshold: float = 0.5
    mirrored_input: bool = False
    handedness: Literal["pose", "classifier"] = "pose"
    pose_match_ratio: float = 0.8  # a pose match is clear when best cost < ratio * other cost
    max_wrist_distance: float | None = 3.0  # palm lengths from a pose wrist; None: no check
    duplicate_overlap: float = 0.8  # hand boxes nested this much are one hand seen twice
    second_look: bool = True  # with pose: look again for a missed hand in a crop at its wrist
    second_look_crop: float = 8.0  # crop side in wrist-to-knuckle lengths of the pose
    second_look_size: int = 256  # pixels the crop is resized to
    second_look_min_crop: int = 48  # smallest crop side in frame pixels
    min_wrist_visibility: float = 0.5  # pose wrist visibility needed for a second look
    raster: RasterParams = field(default_factory=RasterParams)


@dataclass
class _Hand:
    points: np.ndarray  # (21, 3) normalized (u, v, z)
    side: str  # "left" or "right", anatomical, from the (swapped) classifier label
    score: float


def _landmarks_array(landmarks: Any, with_visibility: bool) -> np.ndarray:
    """A MediaPipe NormalizedLandmarkList -> (N, 3) or (N, 4) float32."""
    if with_visibility:
        return np.array(
            [(p.x, p.y, p.z, p.visibility) for p in landmarks.landmark], dtype=np.float32
        )
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark], dtype=np.float32)


def classifier_side(label: str, mirrored_input: bool) -> str:
    """MediaPipe's handedness label -> the signer's anatomical side ("left" / "right").

    MediaPipe assumes a mirrored (selfie) image; on ordinary video its labels are swapped.
    """
    side = label.strip().lower()
    if side not in ("left", "right"):
        raise ValueError(f"unknown handedness label {label!r}")
    if mirrored_input:
        return side
    return "right" if side == "left" else "left"


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of the bounding boxes of two (21, >=2) point sets over the smaller box."""
    low = np.maximum(a[:, :2].min(0), b[:, :2].min(0))
    high = np.minimum(a[:, :2].max(0), b[:, :2].max(0))
    inter = float(np.prod(np.clip(high - low, 0, None)))
    area_a = float(np.prod(np.ptp(a[:, :2], axis=0)))
    smaller = min(area_a, float(np.prod(np.ptp(b[:, :2], axis=0))))
    return inter / smaller if smaller > 0 else 0.0


def wrist_distances(points: np.ndarray, pose: np.ndarray, aspect: float) -> np.ndarray:
    """(2,) distances from a hand's wrist to the pose's left and right wrists, in the hand's
    palm lengths (NaN where the pose has no wrist).

    points: (21, >=2) normalized hand landmarks; pose: (33, >=2) normalized pose landmarks;
    aspect: frame width / height (distances are measured in pixel proportions).
    """
    scale = np.array([aspect, 1.0])
    span = hand_scale(points[:, :2] * scale) or 1e-3
    wrists = pose[[POSE_LEFT_WRIST, POSE_RIGHT_WRIST], :2]
    return np.linalg.norm((wrists - points[0, :2]) * scale, axis=1) / span


def near_pose_wrist(hand: _Hand, pose: np.ndarray, aspect: float, max_distance: float) -> bool:
    """Whether a found hand's wrist lies within `max_distance` palm lengths of one of the pose's
    wrists: a hand is attached to an arm. True when the pose has no wrists to compare with.

    Catches the phantom hands that Hands' tracker keeps on a face, beard or sleeve after the real
    hand has left the frame (seen on the ISL clips at low tracking thresholds).
    """
    distances = wrist_distances(hand.points, pose, aspect)
    if not np.isfinite(distances).all():
        return True
    return bool(distances.min() <= max_distance)


def drop_duplicates(hands: list[_Hand], max_overlap: float) -> list[_Hand]:
    """Hands by falling score, without a detection whose box lies mostly (`max_overlap`) inside
    or around a better one's: MediaPipe's tracker sometimes reports one hand twice, nested."""
    kept: list[_Hand] = []
    for hand in sorted(hands, key=lambda h: -h.score):
        if all(box_overlap(hand.points, other.points) <= max_overlap for other in kept):
            kept.append(hand)
    return kept


def assign_sides(
    hands: list[_Hand], pose: np.ndarray | None, aspect: float, params: MediaPipeParams
) -> dict[str, _Hand]:
    """Decide which detected hand is the signer's left and which the right.

    hands: up to two detections with classifier sides. pose: (33, 4) normalized pose landmarks
    or None. aspect: frame width / height (distances are measured in pixels' proportions).
    Returns {"left": hand, "right": hand} with at most one hand per side.
    """
    hands = drop_duplicates(hands, params.duplicate_overlap)[:2]
    if params.handedness == "pose" and pose is not None:
        matched = _match_to_pose(hands, pose, aspect, params)
        if matched is not None:
            return matched
    out: dict[str, _Hand] = {}
    for hand in hands:  # the more confident hand keeps its label, the other takes the rest
        side = hand.side if hand.side not in out else ("left" if hand.side == "right" else "right")
        out[side] = hand
    return out


def _match_to_pose(
    hands: list[_Hand], pose: np.ndarray, aspect: float, params: MediaPipeParams
) -> dict[str, _Hand] | None:
    """Hands matched to the pose wrists by distance, or None when the match is not clear."""
    wrists = pose[[POSE_LEFT_WRIST, POSE_RIGHT_WRIST]]
    if not np.isfinite(wrists).all() or not hands:
        return None
    cost = [wrist_distances(hand.points, pose, aspect) for hand in hands]  # [hand][side]
    if len(hands) == 1:
        to_left, to_right = cost[0]
        if min(to_left, to_right) >= params.pose_match_ratio * max(to_left, to_right):
            return None
        return {"left" if to_left < to_right else "right": hands[0]}
    straight = cost[0][0] + cost[1][1]  # hand 0 left, hand 1 right
    crossed = cost[0][1] + cost[1][0]
    if min(straight, crossed) >= params.pose_match_ratio * max(straight, crossed):
        return None
    if straight < crossed:
        return {"left": hands[0], "right": hands[1]}
    return {"left": hands[1], "right": hands[0]}


def hand_crop_box(
    pose: np.ndarray, side: str, frame_shape: tuple[int, int], params: MediaPipeParams
) -> tuple[float, float, float] | None:
    """The square (x0, y0, side_px) in frame pixels (corner coordinates) where the second look
    searches for `side`'s hand, or None when the pose's wrist is not visible enough or the
    square misses the frame.

    pose: (33, 4) normalized pose landmarks; frame_shape: (H, W).
    The square is centred at the pose's knuckles (mean of its pinky and index points), its side
    `second_look_crop` times the wrist-to-knuckle distance (at least `second_look_min_crop`).
    """
    height, width = frame_shape
    wrist_i, pinky_i, index_i = POSE_HAND_POINTS[side]
    if not pose[wrist_i, 3] >= params.min_wrist_visibility:  # also False for NaN
        return None
    scale = np.array([width, height], dtype=np.float64)
    wrist = pose[wrist_i, :2] * scale
    knuckles = (pose[pinky_i, :2] + pose[index_i, :2]) / 2 * scale
    if not (np.isfinite(wrist).all() and np.isfinite(knuckles).all()):
        return None
    span = float(np.linalg.norm(knuckles - wrist))
    side_px = max(params.second_look_crop * span, float(params.second_look_min_crop))
    x0, y0 = knuckles - side_px / 2
    if x0 >= width or y0 >= height or x0 + side_px <= 0 or y0 + side_px <= 0:
        return None
    return float(x0), float(y0), side_px


def crop_square(frame: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """(size, size, 3) uint8: the square `box` = (x0, y0, side_px) of `frame` (H, W, 3),
    resized; parts outside the frame are black. A point at normalized (u, v) of the crop lies
    at frame pixel (x0 + u * side_px, y0 + v * side_px) (corner coordinates)."""
    import cv2

    x0, y0, side_px = box
    zoom = size / side_px
    matrix = crop_warp_matrix(x0, y0, zoom, zoom)
    interpolation = cv2.INTER_LINEAR if zoom >= 1 else cv2.INTER_AREA
    return cv2.warpAffine(
        frame, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT
    )


def uncrop_points(
    points: np.ndarray, box: tuple[float, float, float], frame_shape: tuple[int, int]
) -> np.ndarray:
    """(21, 3) landmarks normalized to a crop -> normalized to the frame.

    z (MediaPipe's relative depth, in units of the image width) is rescaled like u."""
    x0, y0, side_px = box
    height, width = frame_shape
    out = points.astype(np.float32, copy=True)
    out[:, 0] = (x0 + points[:, 0] * side_px) / width
    out[:, 1] = (y0 + points[:, 1] * side_px) / height
    out[:, 2] = points[:, 2] * side_px / width
    return out


def accept_second_look(
    hand: _Hand,
    side: str,
    pose: np.ndarray,
    found: dict[str, _Hand],
    aspect: float,
    params: MediaPipeParams,
) -> bool:
    """Whether a hand found in `side`'s crop is that side's hand: its wrist is nearer to that
    pose wrist than to the other one (and within `max_wrist_distance` palm lengths when set), and
    it is not the other side's found hand seen again."""
    to_left, to_right = wrist_distances(hand.points, pose, aspect)
    own, other = (to_left, to_right) if side == "left" else (to_right, to_left)
    if not own < other:
        return False
    if params.max_wrist_distance is not None and own > params.max_wrist_distance:
        return False
    return all(
        box_overlap(hand.points, seen.points) <= params.duplicate_overlap for seen in found.values()
    )


class MediaPipeBackend:
    """MediaPipe models, loaded once; `process(frames)` extracts one clip."""

    def __init__(self, params: MediaPipeParams | None = None) -> None:
        import mediapipe as mp  # lazy: heavy, and absent on some machines

        self.params = params or MediaPipeParams()
        solutions = mp.solutions
        p = self.params
        self.hands = solutions.hands.Hands(
            static_image_mode=False,
            max_num_hands=p.max_num_hands,
            model_complexity=p.hand_complexity,
            min_detection_confidence=p.min_detection_confidence,
            min_tracking_confidence=p.min_tracking_confidence,
        )
        self.pose = (
            solutions.pose.Pose(
                static_image_mode=False,
                model_complexity=1,  # 0 and 2 download their model at first use
                min_detection_confidence=0.5,
                min_tracking_confidence=0.5,
            )
            if p.pose
            else None
        )
        self.crop_hands = (
            solutions.hands.Hands(
                static_image_mode=True,  # crops of different places: nothing to track
                max_num_hands=1,
                model_complexity=p.hand_complexity,
                min_detection_confidence=p.min_detection_confidence,
                min_tracking_confidence=p.min_tracking_confidence,
            )
            if p.pose and p.second_look
            else None
        )
        self.person = solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def _models(self) -> list[Any]:
        """The MediaPipe models this backend runs."""
        return [m for m in (self.hands, self.pose, self.crop_hands, self.person) if m is not None]

    def close(self) -> None:
        for model in self._models():
            model.close()

    def reset(self) -> None:
        """Forget the tracking state (called before every clip)."""
        for model in self._models():
            model.reset()

    def process(
        self, frames: np.ndarray, seg_shape: tuple[int, int], video_id: str = ""
    ) -> ClipExtraction:
        """Extract one clip.

        frames: (T, H, W, 3) uint8 RGB showing the clip's field of view (any resolution).
        seg_shape: (Hs, Ws) of the part maps. Returns normalized clip coordinates.
        """
        started = time.perf_counter()
        self.reset()
        out = empty_extraction(video_id, frames.shape[0], seg_shape)
        for t in range(frames.shape[0]):
            self._frame(np.ascontiguousarray(frames[t]), t, out)
        out.backend = "mediapipe"
        out.extract_width, out.extract_height = frames.shape[2], frames.shape[1]
        out.seconds = time.perf_counter() - started
        return out

    def _frame(self, frame: np.ndarray, t: int, out: ClipExtraction) -> None:
        """Run the models on frame t (`(H, W, 3)` uint8) and fill row t of `out`."""
        import cv2

        seg_shape = out.part_maps.shape[1:]
        pose = self._pose(frame)
        if pose is not None:
            out.pose[t] = pose
            out.pose_score[t] = float(np.mean(pose[UPPER_BODY, 3]))
        aspect = frame.shape[1] / frame.shape[0]
        hands = self._hands(frame)
        if pose is not None and self.params.max_wrist_distance is not None:
            limit = self.params.max_wrist_distance
            hands = [h for h in hands if near_pose_wrist(h, pose, aspect, limit)]
        sides = assign_sides(hands, pose, aspect, self.params)
        if self.crop_hands is not None and pose is not None:
            for side in ("left", "right"):
                if side not in sides:
                    hand = self._second_look(frame, pose, side, sides)
                    if hand is not None:
                        sides[side] = hand
                        out.second_look_hands += 1
        grid_hands = {}
        for side, coords, scores in (
            ("left", out.left_hand, out.left_score),
            ("right", out.right_hand, out.right_score),
        ):
            if side in sides:
                coords[t] = sides[side].points
                scores[t] = sides[side].score
                grid_hands[side] = normalized_to_grid(coords[t], seg_shape)
        person = None
        mask = self.person.process(frame).segmentation_mask
        if mask is not None:
            small = cv2.resize(mask, (seg_shape[1], seg_shape[0]), interpolation=cv2.INTER_AREA)
            person = small > self.params.person_threshold
            out.person_found[t] = bool(person.any())
        out.part_maps[t] = rasterize_frame(
            seg_shape,
            grid_hands.get("left"),
            grid_hands.get("right"),
            None if pose is None else normalized_to_grid(pose, seg_shape),
            person if out.person_found[t] else None,
            self.params.raster,
        )
        box = face_box(out.part_maps[t])
        if box is not None:
            out.face_box[t] = box
            out.face_score[t] = float(np.nanmean(out.pose[t, FACE_POINTS, 3]))

    def _pose(self, frame: np.ndarray) -> np.ndarray | None:
        if self.pose is None:
            return None
        result = self.pose.process(frame)
        if result.pose_landmarks is None:
            return None
        return _landmarks_array(result.pose_landmarks, with_visibility=True)

    def _second_look(
        self, frame: np.ndarray, pose: np.ndarray, side: str, found: dict[str, _Hand]
    ) -> _Hand | None:
        """`side`'s hand found in a crop at its pose wrist (see the module docstring), or None.

        frame: (H, W, 3) uint8; pose: (33, 4) normalized; found: the hands found so far."""
        shape = frame.shape[:2]
        box = hand_crop_box(pose, side, shape, self.params)
        if box is None:
            return None
        crop = crop_square(frame, box, self.params.second_look_size)
        hands = self._hands(crop, self.crop_hands)
        if not hands:
            return None
        hand = hands[0]
        hand.points = uncrop_points(hand.points, box, shape)
        hand.side = side
        aspect = shape[1] / shape[0]
        return hand if accept_second_look(hand, side, pose, found, aspect, self.params) else None

    def _hands(self, frame: np.ndarray, model: Any = None) -> list[_Hand]:
        """Hands that `model` (default: the tracking model) finds in `frame` (H, W, 3) uint8,
        with (21, 3) points normalized to that frame and classifier sides."""
        result = (self.hands if model is None else model).process(frame)
        if not result.multi_hand_landmarks:
            return []
        hands = []
        for landmarks, handedness in zip(
            result.multi_hand_landmarks, result.multi_handedness, strict=True
        ):
            best = handedness.classification[0]
            hands.append(
                _Hand(
                    points=_landmarks_array(landmarks, with_visibility=False),
                    side=classifier_side(best.label, self.params.mirrored_input),
                    score=float(best.score),
                )
            )
        return hands
