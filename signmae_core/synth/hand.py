"""A 3-D articulated hand skeleton in MediaPipe's 21-landmark order.

Landmark order (MediaPipe Hands)::

    0 wrist
    1 thumb CMC   2 thumb MCP   3 thumb IP    4 thumb tip
    5 index MCP   6 index PIP   7 index DIP   8 index tip
    9 middle MCP 10 middle PIP 11 middle DIP 12 middle tip
   13 ring MCP   14 ring PIP   15 ring DIP   16 ring tip
   17 pinky MCP  18 pinky PIP  19 pinky DIP  20 pinky tip

A hand is built as an anatomical RIGHT hand in its own frame (axis 0 radial, towards the thumb;
axis 1 distal, towards the fingertips; axis 2 volar, out of the palm), posed by a rotation into
image space (x right, y down, z away from the camera), and mirrored in x to make a LEFT hand.
Lengths are in units of the hand length (wrist to the tip of the extended middle finger).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_LANDMARKS = 21
FINGER_CHAINS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4),
    (5, 6, 7, 8),
    (9, 10, 11, 12),
    (13, 14, 15, 16),
    (17, 18, 19, 20),
)
"""Landmark indices of thumb, index, middle, ring and pinky, from the base to the tip."""

# Knuckle (MCP) positions in the hand frame (radial, distal), and phalanx lengths
# (proximal, middle, distal) of index, middle, ring and pinky; all in hand lengths.
_MCP = np.array([[0.165, 0.43], [0.055, 0.45], [-0.055, 0.43], [-0.155, 0.385]])
_PHALANX = np.array(
    [[0.25, 0.15, 0.11], [0.27, 0.165, 0.115], [0.255, 0.155, 0.11], [0.205, 0.12, 0.1]]
)
_THUMB_CMC = np.array([0.105, 0.085, 0.03])
_THUMB_BONES = np.array([0.19, 0.155, 0.125])  # metacarpal, proximal, distal
FINGER_WIDTH = (0.105, 0.095, 0.095, 0.09, 0.08)
"""Drawn width of thumb, index, middle, ring and pinky, in hand lengths."""


@dataclass(frozen=True)
class Handshape:
    """Joint angles of one handshape, in degrees.

    `fingers[i] = (mcp_flex, pip_flex, dip_flex, spread)` for index, middle, ring and pinky:
    flexion bends towards the palm, spread turns the finger in the palm plane (positive towards
    the thumb). `thumb = (spread, opposition, mcp_flex, ip_flex)`: spread opens the thumb away
    from the index in the palm plane, opposition lifts it out of the palm plane in front of the
    palm, and the flexions curl it across the palm.
    """

    name: str
    fingers: tuple[tuple[float, float, float, float], ...]
    thumb: tuple[float, float, float, float]

    def blend(self, other: Handshape, weight: float) -> Handshape:
        """Joint angles linearly interpolated towards `other` (weight 0 -> self, 1 -> other)."""

        def mix(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
            m = [(1 - weight) * x + weight * y for x, y in zip(a, b, strict=True)]
            return (m[0], m[1], m[2], m[3])

        fingers = tuple(mix(a, b) for a, b in zip(self.fingers, other.fingers, strict=True))
        return Handshape(f"{self.name}>{other.name}", fingers, mix(self.thumb, other.thumb))


def hand_skeleton(shape: Handshape) -> tuple[np.ndarray, np.ndarray]:
    """The 21 landmarks of a right hand in its own frame, in hand lengths, and bone normals.

    Each finger bends in the plane of its (spread-turned) straight direction and the palm
    normal, so a phalanx after cumulative flexion `a` points along cos(a) straight + sin(a)
    volar and its palm side faces -sin(a) straight + cos(a) volar.

    Returns:
        points: (21, 3) float64, columns (radial, distal, volar); the wrist is the origin.
        normals: (21, 3) unit palm-side normal of the bone that ends at each landmark (the palm
            normal for the wrist, the thumb's CMC and the knuckles). A bone whose normal points
            away from the camera shows its back (nail, knuckles).
    """
    points = np.zeros((NUM_LANDMARKS, 3))
    normals = np.zeros((NUM_LANDMARKS, 3))
    normals[:, 2] = 1.0
    joints = np.deg2rad(np.asarray(shape.fingers, dtype=np.float64))  # (4, 4)
    spread = joints[:, 3]
    angles = np.cumsum(joints[:, :3], axis=1)  # (4, 3) cumulative flexion per phalanx
    straight = np.stack([np.sin(spread), np.cos(spread), np.zeros(4)], axis=1)  # (4, 3)
    cos_a, sin_a = np.cos(angles)[..., None], np.sin(angles)[..., None]  # (4, 3, 1)
    volar = np.array([0.0, 0.0, 1.0])
    directions = cos_a * straight[:, None, :] + sin_a * volar  # (4, 3, 3)
    bone_normals = -sin_a * straight[:, None, :] + cos_a * volar
    knuckles = np.concatenate([_MCP, np.zeros((4, 1))], axis=1)  # (4, 3)
    chain = knuckles[:, None, :] + np.cumsum(_PHALANX[..., None] * directions, axis=1)
    for finger in range(4):
        base = 5 + 4 * finger
        points[base] = knuckles[finger]
        points[base + 1 : base + 4] = chain[finger]
        normals[base + 1 : base + 4] = bone_normals[finger]
    spread, opposition, mcp_flex, ip_flex = shape.thumb
    s, o = np.deg2rad(spread), np.deg2rad(opposition)
    in_plane = np.array([np.sin(s), np.cos(s), 0.0])
    metacarpal = np.cos(o) * in_plane + np.array([0.0, 0.0, np.sin(o)])
    # The thumb curls across the palm: towards the ulnar side and in front of the palm; its pad
    # faces that way too.
    across = np.array([-1.0, 0.25, 0.9])
    across -= across.dot(metacarpal) * metacarpal
    across /= np.linalg.norm(across)
    points[1] = _THUMB_CMC
    points[2] = points[1] + _THUMB_BONES[0] * metacarpal
    normals[2] = across
    angle = 0.0
    for k, flex in enumerate((mcp_flex, ip_flex)):
        angle += np.deg2rad(flex)
        direction = np.cos(angle) * metacarpal + np.sin(angle) * across
        points[3 + k] = points[2 + k] + _THUMB_BONES[1 + k] * direction
        normals[3 + k] = -np.sin(angle) * metacarpal + np.cos(angle) * across
    return points, normals


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation from the hand frame into image space for a right hand, angles in degrees.

    At (0, 0, 0) the palm faces the camera with the fingers up (thumb towards image right, as a
    right hand held up towards the viewer). `roll` turns the fingers in the image plane (positive
    is clockwise on screen, fingers towards image right), `yaw` turns the palm about the finger
    axis (positive shows the thumb side, 90 is side-on, 180 shows the back), `pitch` tips the
    fingers towards the camera.

    Returns: (3, 3) matrix whose columns are the hand's radial, distal and volar axes.
    """
    base = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]).T
    y, p, r = np.deg2rad([yaw, pitch, roll])
    about_radial = np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(p), -np.sin(p)], [0.0, np.sin(p), np.cos(p)]]
    )
    about_view = np.array(
        [[np.cos(r), -np.sin(r), 0.0], [np.sin(r), np.cos(r), 0.0], [0.0, 0.0, 1.0]]
    )
    # yaw in the hand's own frame first, then pitch about image x, then roll about the view axis.
    return about_view @ about_radial @ base @ _hand_yaw(y)


def _hand_yaw(angle_rad: float) -> np.ndarray:
    """Rotation about the hand's own distal axis (turning the palm), in the hand frame."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


PALM_OUTLINE = np.array(
    [
        [0.13, -0.01, 0.0],
        [0.175, 0.16, 0.02],
        [0.2, 0.33, 0.01],
        [0.19, 0.44, 0.0],
        [0.11, 0.475, 0.0],
        [0.0, 0.485, 0.0],
        [-0.11, 0.465, 0.0],
        [-0.19, 0.41, 0.0],
        [-0.205, 0.26, 0.0],
        [-0.17, 0.1, 0.0],
        [-0.12, -0.01, 0.0],
    ]
)
"""Outline of the palm (wrist to knuckles) in the hand frame, in hand lengths: (11, 3)."""

PALM_LINES = (
    np.array([[-0.2, 0.35, 0.01], [-0.05, 0.37, 0.01], [0.1, 0.4, 0.01]]),
    np.array([[0.19, 0.31, 0.01], [0.02, 0.28, 0.01], [-0.14, 0.24, 0.01]]),
    np.array([[0.18, 0.3, 0.01], [0.09, 0.2, 0.01], [0.06, 0.03, 0.01]]),
)
"""Heart, head and life lines of the palm as polylines in the hand frame, in hand lengths."""

PALM_CENTRE = np.array([0.0, 0.25, 0.0])
"""The point a hand is positioned by (the middle of the palm), in the hand frame."""


def pose_points(
    local: np.ndarray,
    rot: np.ndarray,
    centre_xyz: tuple[float, float, float],
    length_px: float,
    left: bool,
) -> np.ndarray:
    """Place points given in the right-hand frame (hand lengths) into image space.

    The palm centre lands on `centre_xyz` (pixels; depth grows away from the camera); a left
    hand is the mirror image of the right hand (x negated about the palm centre).

    Args:
        local: (N, 3) points in the hand frame, e.g. `hand_skeleton(shape)` or `PALM_OUTLINE`.
        rot: (3, 3) `rotation(...)` of the right hand.

    Returns: (N, 3) float64 (x, y, depth) in pixels.
    """
    points = ((local - PALM_CENTRE) * length_px) @ rot.T
    if left:
        points[:, 0] = -points[:, 0]
    return points + np.asarray(centre_xyz, dtype=np.float64)


def pose_directions(local: np.ndarray, rot: np.ndarray, left: bool) -> np.ndarray:
    """Rotate (N, 3) directions (e.g. bone normals) from the hand frame into image space."""
    directions = local @ rot.T
    if left:
        directions[:, 0] = -directions[:, 0]
    return directions
