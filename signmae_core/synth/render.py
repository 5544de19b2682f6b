"""Drawing the synthetic signer: one RGB frame and its part label map per call.

Colour frames are drawn at `SUPERSAMPLE` times the output size with anti-aliased OpenCV
primitives and shrunk with area averaging; the part label map is drawn at the output size from
the same primitives, in the same back-to-front order, without anti-aliasing.

Pixel coordinates follow OpenCV: (0, 0) is the centre of the top-left pixel, x to the right,
y down; depth grows away from the camera. Every length is derived from `Body.unit`, the head
height in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from signmae_core.parts import BODY, FACE, LEFT_HAND, RIGHT_HAND

from .hand import (
    FINGER_CHAINS,
    FINGER_WIDTH,
    PALM_LINES,
    PALM_OUTLINE,
    Handshape,
    hand_skeleton,
    pose_directions,
    pose_points,
    rotation,
)
from .signers import Signer

SUPERSAMPLE = 2
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT

Colour = tuple[int, int, int]
Point = Sequence[float]
"""(x, y) or (x, y, depth) in output pixels: a tuple, list or array row."""


@dataclass(frozen=True)
class Body:
    """Where the signer's body is in the frame, in output pixels.

    `neck` is the base of the neck (between the shoulders); `unit` is the head height; the
    signer's right side is towards image LEFT (the signer faces the camera).
    """

    size: int
    neck: tuple[float, float]
    unit: float
    shoulder_half: float
    head_half_width: float
    hand_length: float
    upper_arm: float
    forearm: float

    def shoulder(self, side: str) -> np.ndarray:
        """3-D shoulder joint (x, y, depth) of the "left" or "right" arm, in pixels."""
        sign = 1.0 if side == "left" else -1.0
        x = self.neck[0] + sign * 0.8 * self.shoulder_half
        return np.array([x, self.neck[1] + 0.18 * self.unit, 0.0])

    def to_pixels(self, side: str, xyz: tuple[float, float, float]) -> np.ndarray:
        """Body coordinates of one hand -> pixels.

        `xyz` is in head heights relative to the neck base with x measured OUTWARDS on the
        hand's own side (negative crosses the midline), y down and depth towards the camera
        negative.
        """
        sign = 1.0 if side == "left" else -1.0
        x, y, z = xyz
        return np.array(
            [self.neck[0] + sign * x * self.unit, self.neck[1] + y * self.unit, z * self.unit]
        )


def make_body(signer: Signer, size: int, jitter: tuple[float, float] = (0.0, 0.0)) -> Body:
    """Body geometry of a signer framed in a `size` x `size` frame; `jitter` shifts it (pixels)."""
    unit = signer.scale * size
    neck_x = size * (0.5 + signer.offset_x) + jitter[0]
    neck_y = size * (0.06 + signer.offset_y) + 1.37 * unit + jitter[1]
    return Body(
        size=size,
        neck=(neck_x, neck_y),
        unit=unit,
        shoulder_half=signer.shoulder_width * unit,
        head_half_width=0.5 * signer.head_width * unit,
        hand_length=signer.hand_length * unit,
        upper_arm=1.3 * unit,
        forearm=1.12 * unit,
    )


# ---- low-level drawing -------------------------------------------------------------------------
# Drawing runs ~100 primitives per frame, so the helpers below use plain Python numbers: small
# NumPy operations would cost more than the drawing itself.
def _fixed(points: np.ndarray, scale: float) -> np.ndarray:
    """(N, 2) pixel coordinates -> OpenCV fixed-point int32 at `scale` times the output size."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    return np.round(((pts + 0.5) * scale - 0.5) * _ONE).astype(np.int32)


def _fx(value: float, scale: float) -> int:
    """One pixel coordinate -> OpenCV fixed point at `scale` times the output size."""
    return int(round(((value + 0.5) * scale - 0.5) * _ONE))


class Canvas:
    """A colour image at `SUPERSAMPLE` x size and a label map at 1 x size, drawn together.

    Points are (x, y[, depth]) sequences in output pixels; widths are in output pixels.
    """

    def __init__(self, rgb: np.ndarray, labels: np.ndarray) -> None:
        self.rgb = rgb
        self.labels = labels
        self.scale = rgb.shape[0] / labels.shape[0]

    def polygon(self, points: np.ndarray, colour: Colour, label: int | None) -> None:
        """Filled polygon; points (N, 2)."""
        cv2.fillPoly(self.rgb, [_fixed(points, self.scale)], colour, cv2.LINE_AA, _SHIFT)
        if label is not None:
            cv2.fillPoly(self.labels, [_fixed(points, 1.0)], label, cv2.LINE_8, _SHIFT)

    def outline(self, points: np.ndarray, colour: Colour, width: float) -> None:
        """Closed polyline in colour only."""
        thickness = max(1, int(round(width * self.scale)))
        cv2.polylines(
            self.rgb, [_fixed(points, self.scale)], True, colour, thickness, cv2.LINE_AA, _SHIFT
        )

    def capsule(
        self, p0: Point, p1: Point, width: float, colour: Colour, label: int | None
    ) -> None:
        """A round-capped segment from p0 to p1."""
        k = self.scale
        cv2.line(
            self.rgb,
            (_fx(p0[0], k), _fx(p0[1], k)),
            (_fx(p1[0], k), _fx(p1[1], k)),
            colour,
            max(1, int(round(width * k))),
            cv2.LINE_AA,
            _SHIFT,
        )
        if label is not None:
            cv2.line(
                self.labels,
                (_fx(p0[0], 1.0), _fx(p0[1], 1.0)),
                (_fx(p1[0], 1.0), _fx(p1[1], 1.0)),
                label,
                max(1, int(round(width))),
                cv2.LINE_8,
                _SHIFT,
            )

    def ellipse(
        self,
        centre: Point,
        axes: tuple[float, float],
        colour: Colour,
        label: int | None,
        angle: float = 0.0,
        arc: tuple[float, float] = (0.0, 360.0),
    ) -> None:
        """Filled ellipse (or the sector `arc`, degrees) with half-axes `axes`."""
        k = self.scale
        cv2.ellipse(
            self.rgb,
            (_fx(centre[0], k), _fx(centre[1], k)),
            (int(round(axes[0] * k * _ONE)), int(round(axes[1] * k * _ONE))),
            angle,
            arc[0],
            arc[1],
            colour,
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
        if label is not None:
            cv2.ellipse(
                self.labels,
                (_fx(centre[0], 1.0), _fx(centre[1], 1.0)),
                (int(round(axes[0] * _ONE)), int(round(axes[1] * _ONE))),
                angle,
                arc[0],
                arc[1],
                label,
                -1,
                cv2.LINE_8,
                _SHIFT,
            )

    def limb(
        self,
        p0: Point,
        p1: Point,
        w0: float,
        w1: float,
        colour: Colour,
        label: int | None,
        edge: Colour | None = None,
    ) -> None:
        """An arm segment from p0 to p1 about (w0 + w1) / 2 wide, with an optional darker edge.

        Drawn as round-capped thick lines: three OpenCV calls instead of a tapered polygon's
        dozen, which matters at ~100 primitives per frame.
        """
        width = 0.5 * (w0 + w1)
        if edge is not None:
            self.capsule(p0, p1, width + 1.2, edge, None)
        self.capsule(p0, p1, width, colour, label)


def _scaled(colour: Sequence[float], factor: float, tint: Colour = (0, 0, 0)) -> Colour:
    """colour * factor + tint, clipped to 0..255."""
    return (
        min(255, max(0, int(colour[0] * factor + tint[0]))),
        min(255, max(0, int(colour[1] * factor + tint[1]))),
        min(255, max(0, int(colour[2] * factor + tint[2]))),
    )


# ---- static parts: background, torso, head -----------------------------------------------------
def draw_background(signer: Signer, size: int, rng: np.random.Generator) -> np.ndarray:
    """The textured wall behind the signer at supersampled size: (S, S, 3) uint8."""
    s = size * SUPERSAMPLE
    base = np.asarray(signer.background, dtype=np.float32)
    accent = np.asarray(signer.background_accent, dtype=np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    if signer.background_kind == "noise":
        low = rng.random((6, 6)).astype(np.float32)
        mix = cv2.resize(low, (s, s), interpolation=cv2.INTER_CUBIC) * 0.45
    elif signer.background_kind == "stripes":
        period = rng.uniform(0.08, 0.2)
        mix = 0.25 + 0.2 * np.sin(2 * np.pi * xx / period + rng.uniform(0, 6.3))
    elif signer.background_kind == "tiles":
        n = int(rng.integers(4, 8))
        cells = rng.random((n, n)).astype(np.float32) * 0.3
        mix = cv2.resize(cells, (s, s), interpolation=cv2.INTER_NEAREST)
        grout = (np.abs(((xx * n) % 1.0) - 0.5) > 0.47) | (np.abs(((yy * n) % 1.0) - 0.5) > 0.47)
        mix = np.where(grout, 0.8, mix)
    else:
        mix = 0.1 + 0.5 * yy
    mix = np.clip(mix, 0, 1)[..., None]
    image = base * (1 - mix) + accent * mix
    vignette = 1.0 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.45) ** 2)[..., None]
    grain = rng.normal(0.0, 4.0, (s, s, 1)).astype(np.float32)
    return np.clip(image * vignette + grain, 0, 255).astype(np.uint8)


def _shade_region(rgb: np.ndarray, mask: np.ndarray, depth_px: float, dark: float) -> None:
    """Darken a region towards its edges so it looks rounded (in place).

    mask: (S, S) uint8 of the region; depth_px: how far from the edge the shading fades out.
    """
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    factor = 1.0 - dark * np.clip(1.0 - dist / max(depth_px, 1.0), 0.0, 1.0) ** 2
    inside = mask > 0
    rgb[inside] = np.clip(rgb[inside] * factor[inside][:, None], 0, 255).astype(np.uint8)


def draw_static(
    signer: Signer, body: Body, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Background, torso, neck and head: the part of a frame that does not move.

    Returns: rgb (S, S, 3) uint8 at supersampled size and labels (size, size) uint8.
    """
    size = body.size
    rgb = background.copy()
    labels = np.zeros((size, size), np.uint8)
    u = body.unit
    nx, ny = body.neck
    sh = body.shoulder_half
    skin = signer.skin
    shirt = signer.shirt
    canvas = Canvas(rgb, labels)

    head_c = (nx, ny - 0.87 * u)
    head_axes = (body.head_half_width, 0.5 * u)
    if signer.hair_style == "long":
        hair_back = np.array(
            [
                [nx - head_axes[0] * 1.15, head_c[1] - 0.1 * u],
                [nx + head_axes[0] * 1.15, head_c[1] - 0.1 * u],
                [nx + head_axes[0] * 1.25, ny + 0.35 * u],
                [nx - head_axes[0] * 1.25, ny + 0.35 * u],
            ]
        )
        canvas.polygon(hair_back, _scaled(signer.hair, 0.85), FACE)

    # Torso (shirt) from the shoulders to below the frame.
    torso = np.array(
        [
            [nx - 0.35 * sh, ny - 0.12 * u],
            [nx + 0.35 * sh, ny - 0.12 * u],
            [nx + 0.8 * sh, ny + 0.0 * u],
            [nx + 0.98 * sh, ny + 0.25 * u],
            [nx + 0.95 * sh, ny + 0.9 * u],
            [nx + 0.85 * sh, ny + 3.2 * u],
            [nx - 0.85 * sh, ny + 3.2 * u],
            [nx - 0.95 * sh, ny + 0.9 * u],
            [nx - 0.98 * sh, ny + 0.25 * u],
            [nx - 0.8 * sh, ny + 0.0 * u],
        ]
    )
    canvas.polygon(torso, shirt, BODY)
    torso_mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(torso_mask, [_fixed(torso, SUPERSAMPLE)], 1, cv2.LINE_8, _SHIFT)
    _shade_region(rgb, torso_mask, 0.5 * u * SUPERSAMPLE, 0.35)
    # Folds and a seam give the shirt some texture.
    for k in (-1, 1):
        fold = np.array([[nx + k * 0.55 * sh, ny + 0.6 * u], [nx + k * 0.45 * sh, ny + 2.6 * u]])
        canvas.capsule(fold[0], fold[1], 0.03 * u, _scaled(shirt, 0.85), None)

    # Neck and collar.
    neck = np.array(
        [
            [nx - 0.17 * u, ny - 0.45 * u],
            [nx + 0.17 * u, ny - 0.45 * u],
            [nx + 0.2 * u, ny - 0.05 * u],
            [nx - 0.2 * u, ny - 0.05 * u],
        ]
    )
    canvas.polygon(neck, _scaled(skin, 0.86), BODY)
    canvas.ellipse(
        (nx, ny - 0.08 * u), (0.26 * u, 0.16 * u), _scaled(shirt, 0.7), BODY, arc=(0, 180)
    )
    canvas.ellipse((nx, ny - 0.1 * u), (0.2 * u, 0.12 * u), _scaled(skin, 0.8), BODY, arc=(0, 180))

    # Head: ears, face, hair, features.
    for k in (-1, 1):
        canvas.ellipse(
            (nx + k * head_axes[0] * 0.98, head_c[1] + 0.02 * u),
            (0.07 * u, 0.12 * u),
            _scaled(skin, 0.85),
            FACE,
        )
    canvas.ellipse(head_c, head_axes, skin, FACE)
    head_mask = np.zeros(rgb.shape[:2], np.uint8)
    Canvas(head_mask, np.zeros((size, size), np.uint8)).ellipse(head_c, head_axes, 1, None)
    _shade_region(rgb, head_mask, 0.3 * u * SUPERSAMPLE, 0.3)
    if signer.hair_style != "none":
        hair_axes = (head_axes[0] * 1.06, head_axes[1] * 0.62)
        canvas.ellipse(
            (head_c[0], head_c[1] - 0.22 * u), hair_axes, signer.hair, FACE, arc=(180, 360)
        )
        if signer.hair_style == "bun":
            canvas.ellipse(
                (head_c[0], head_c[1] - 0.55 * u), (0.16 * u, 0.12 * u), signer.hair, FACE
            )
    eye_y = head_c[1] + 0.02 * u
    for k in (-1, 1):
        ex = head_c[0] + k * 0.17 * u
        canvas.capsule(
            np.array([ex - 0.08 * u, eye_y - 0.1 * u]),
            np.array([ex + 0.08 * u, eye_y - 0.11 * u]),
            0.025 * u,
            _scaled(signer.hair, 0.9),
            None,
        )
        canvas.ellipse((ex, eye_y), (0.075 * u, 0.035 * u), (235, 235, 230), None)
        canvas.ellipse((ex, eye_y), (0.032 * u, 0.032 * u), (60, 45, 35), None)
        canvas.ellipse((ex, eye_y), (0.014 * u, 0.014 * u), (10, 10, 10), None)
    canvas.capsule(
        np.array([head_c[0] + 0.02 * u, head_c[1] + 0.05 * u]),
        np.array([head_c[0] + 0.04 * u, head_c[1] + 0.17 * u]),
        0.03 * u,
        _scaled(skin, 0.78),
        None,
    )
    canvas.ellipse(
        (head_c[0], head_c[1] + 0.3 * u), (0.1 * u, 0.035 * u), _scaled(skin, 0.7, (40, 0, 5)), None
    )
    canvas.capsule(
        np.array([head_c[0] - 0.09 * u, head_c[1] + 0.3 * u]),
        np.array([head_c[0] + 0.09 * u, head_c[1] + 0.3 * u]),
        0.012 * u,
        _scaled(skin, 0.45),
        None,
    )
    return rgb, labels


# ---- moving parts: arms and hands --------------------------------------------------------------
@dataclass(frozen=True)
class HandDrawing:
    """One posed hand in output pixels (x, y, depth; depth grows away from the camera).

    landmarks: (21, 3); normals: (21, 3) palm-side normal of the bone ending at each landmark;
    outline: (11, 3) palm outline; lines: the palm's crease polylines, each (3, 3).
    """

    side: str
    landmarks: np.ndarray
    normals: np.ndarray
    outline: np.ndarray
    lines: tuple[np.ndarray, ...]
    length: float


def pose_hand(
    side: str,
    shape: Handshape,
    yaw: float,
    pitch: float,
    roll: float,
    centre: np.ndarray,
    length: float,
) -> HandDrawing:
    """Pose a hand of handshape `shape` with its palm centre at `centre` (x, y, depth px)."""
    rot = rotation(yaw, pitch, roll)
    left = side == "left"
    points, normals = hand_skeleton(shape)
    # one transform for the landmarks, the palm outline and the palm lines together
    posed = pose_points(np.concatenate([points, _PALM_SHAPES]), rot, tuple(centre), length, left)
    n, m = len(points), len(PALM_OUTLINE)
    lines = tuple(posed[n + a : n + b] for a, b in _PALM_LINE_SPANS)
    return HandDrawing(
        side=side,
        landmarks=posed[:n],
        normals=pose_directions(normals, rot, left),
        outline=posed[n : n + m],
        lines=lines,
        length=length,
    )


_PALM_SHAPES = np.concatenate([PALM_OUTLINE, *PALM_LINES])
_PALM_LINE_ENDS = np.cumsum([len(PALM_OUTLINE)] + [len(line) for line in PALM_LINES])
_PALM_LINE_SPANS = tuple(
    zip(_PALM_LINE_ENDS[:-1].tolist(), _PALM_LINE_ENDS[1:].tolist(), strict=True)
)
"""(start, end) rows of each palm line within `_PALM_SHAPES`."""


def elbow_position(
    shoulder: np.ndarray, wrist: np.ndarray, upper: float, fore: float, side: str
) -> np.ndarray:
    """Elbow of a two-bone arm reaching from `shoulder` to `wrist` (3-D pixels).

    Below the shoulder the elbow hangs down and slightly back, like a relaxed signing arm; as
    the hand rises above the shoulder the elbow swings outwards and forwards.
    """
    d = wrist - shoulder
    dist = float(np.linalg.norm(d))
    dist = min(max(dist, 1e-6), 0.999 * (upper + fore))
    axis = d / max(float(np.linalg.norm(d)), 1e-6)
    along = (upper**2 - fore**2 + dist**2) / (2 * dist)
    radius = np.sqrt(max(upper**2 - along**2, 0.0))
    outward = 1.0 if side == "left" else -1.0
    raised = float(np.clip((shoulder[1] - wrist[1]) / (0.55 * (upper + fore)), 0.0, 1.0))
    low_pole = np.array([0.45 * outward, 1.0, 0.35])
    high_pole = np.array([1.0 * outward, 0.6, -0.3])
    pole = (1.0 - raised) * low_pole + raised * high_pole
    pole = pole - pole.dot(axis) * axis
    pole /= max(float(np.linalg.norm(pole)), 1e-6)
    return shoulder + along * axis + radius * pole


def _arm(canvas: Canvas, signer: Signer, body: Body, hand: HandDrawing) -> None:
    """Upper arm, forearm and wrist of one side, ending at the hand's wrist landmark."""
    u = body.unit
    shoulder = body.shoulder(hand.side)
    wrist = hand.landmarks[0]
    reach = wrist - shoulder
    total = body.upper_arm + body.forearm
    if np.linalg.norm(reach) > 0.999 * total:  # out of reach: the shoulder follows the hand
        shoulder = wrist - reach * (0.999 * total / np.linalg.norm(reach))
    elbow = elbow_position(shoulder, wrist, body.upper_arm, body.forearm, hand.side)
    shirt = signer.shirt
    skin = signer.skin
    sleeve_edge = _scaled(shirt, 0.7)
    shoulder, elbow, wrist = shoulder.tolist(), elbow.tolist(), wrist.tolist()
    canvas.limb(shoulder, elbow, 0.36 * u, 0.29 * u, _scaled(shirt, 0.95), BODY, sleeve_edge)
    cuff = [e + 0.8 * (w - e) for e, w in zip(elbow, wrist, strict=True)]
    cuff_end = [c + 0.05 * (w - e) for c, e, w in zip(cuff, elbow, wrist, strict=True)]
    wrist_width = 0.26 * hand.length
    if signer.long_sleeves:
        canvas.limb(elbow, cuff, 0.29 * u, 0.25 * u, _scaled(shirt, 0.95), BODY, sleeve_edge)
        canvas.limb(
            cuff,
            wrist,
            0.9 * wrist_width,
            wrist_width,
            _scaled(skin, 0.9),
            BODY,
            _scaled(skin, 0.7),
        )
        canvas.capsule(cuff, cuff_end, 0.26 * u, _scaled(shirt, 0.8), BODY)
    else:
        canvas.limb(
            elbow, wrist, 0.25 * u, wrist_width, _scaled(skin, 0.9), BODY, _scaled(skin, 0.7)
        )


_PALM_TINT = (238, 190, 170)
_NAIL_TINT = (245, 226, 218)
_LIGHT = (-0.3, -0.5, -0.81)  # towards the light: above, left and in front of the signer


def _mix(a: Colour, b: Colour, weight: float) -> Colour:
    m = [int(round((1 - weight) * x + weight * y)) for x, y in zip(a, b, strict=True)]
    return (m[0], m[1], m[2])


def _lit(colour: Colour, normal: list[float], back: bool) -> Colour:
    """Lambert-like shading of a surface whose visible side has `normal` (negated if back)."""
    sign = -1.0 if back else 1.0
    dot = sign * (normal[0] * _LIGHT[0] + normal[1] * _LIGHT[1] + normal[2] * _LIGHT[2])
    return _scaled(colour, 0.72 + 0.36 * max(0.0, dot))


def _across(a: list[float], b: list[float], at: float, half: float) -> tuple[tuple, tuple]:
    """A short segment across the bone a->b at fraction `at`, `half` pixels each side."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy) or 1.0
    cx, cy = a[0] + at * dx, a[1] + at * dy
    nx, ny = -dy / n * half, dx / n * half
    return (cx - nx, cy - ny), (cx + nx, cy + ny)


def _hand(canvas: Canvas, signer: Signer, hand: HandDrawing) -> None:
    """Palm and fingers of one hand, back to front.

    Outlines separate the fingers; the palm side is lighter and pinker with creases, the back
    shows knuckles and nails, as on real hands (cues MediaPipe uses to tell left from right).
    """
    label = LEFT_HAND if hand.side == "left" else RIGHT_HAND
    pts = hand.landmarks.tolist()
    normals = hand.normals.tolist()
    scale = canvas.scale
    fine = [tuple(p) for p in _fixed(hand.landmarks, scale).tolist()]
    coarse = [tuple(p) for p in _fixed(hand.landmarks, 1.0).tolist()]
    length = hand.length
    skin = signer.skin
    luma = 0.299 * skin[0] + 0.587 * skin[1] + 0.114 * skin[2]
    palm_skin = _mix(skin, _PALM_TINT, 0.15 + 0.4 * (1.0 - luma / 255.0))
    back_skin = _scaled(skin, 0.97)
    edge = _scaled(skin, 0.5)
    palm_normal = normals[0]
    palm_visible = palm_normal[2] < 0  # the palm's normal points towards the camera
    # (depth, segment) items; the palm is the item with segment None.
    items: list[tuple[float, tuple[int, int, int] | None]] = [
        (float(hand.outline[:, 2].mean()), None)
    ]
    for finger, chain in enumerate(FINGER_CHAINS):
        start = 1 if finger == 0 else 0  # the thumb's metacarpal is part of the palm drawing
        for k in range(start, len(chain) - 1):
            a, b = pts[chain[k]], pts[chain[k + 1]]
            # Segments level with the palm get a small bias so they are drawn after it.
            items.append(((a[2] + b[2]) / 2 - 0.02 * length, (finger, k, chain[k + 1])))
    items.sort(key=lambda item: -item[0])
    for _, segment in items:
        if segment is None:
            _palm(
                canvas,
                hand,
                pts,
                palm_skin if palm_visible else back_skin,
                edge,
                label,
                palm_visible,
            )
            continue
        finger, k, ib = segment
        ia = FINGER_CHAINS[finger][k]
        a, b = pts[ia], pts[ib]
        width = FINGER_WIDTH[finger] * length * (1.0 - 0.08 * k)
        back = normals[ib][2] > 0  # this bone shows its back to the camera
        colour = _lit(back_skin if back else palm_skin, normals[ib], back)
        # outline (also the label), then the fill; fixed-point ends computed once per hand
        cv2.line(
            canvas.rgb,
            fine[ia],
            fine[ib],
            edge,
            max(1, int(round((width + 0.9) * scale))),
            cv2.LINE_AA,
            _SHIFT,
        )
        cv2.line(
            canvas.labels,
            coarse[ia],
            coarse[ib],
            label,
            max(1, int(round(width + 0.9))),
            cv2.LINE_8,
            _SHIFT,
        )
        cv2.line(
            canvas.rgb,
            fine[ia],
            fine[ib],
            colour,
            max(1, int(round((width - 0.3) * scale))),
            cv2.LINE_AA,
            _SHIFT,
        )
        is_tip = ib == FINGER_CHAINS[finger][-1]
        if back and is_tip:
            nail_a = (a[0] + 0.4 * (b[0] - a[0]), a[1] + 0.4 * (b[1] - a[1]))
            nail_b = (a[0] + 0.88 * (b[0] - a[0]), a[1] + 0.88 * (b[1] - a[1]))
            canvas.capsule(nail_a, nail_b, 0.78 * width, _scaled(colour, 0.8), None)
            canvas.capsule(nail_a, nail_b, 0.62 * width, _mix(colour, _NAIL_TINT, 0.6), None)
        elif back:
            for at in (0.92, 1.08):
                p, q = _across(a, b, at, 0.32 * width)
                canvas.capsule(p, q, 0.02 * length, _scaled(colour, 0.75), None)
        elif not is_tip:
            p, q = _across(a, b, 1.0, 0.35 * width)
            canvas.capsule(p, q, 0.025 * length, _scaled(colour, 0.72), None)


def _palm(
    canvas: Canvas,
    hand: HandDrawing,
    pts: list[list[float]],
    colour: Colour,
    edge: Colour,
    label: int,
    palm_visible: bool,
) -> None:
    """The palm polygon with the thenar pad, and creases (palm side) or knuckles (back)."""
    length = hand.length
    colour = _lit(colour, hand.normals[0].tolist(), not palm_visible)
    canvas.polygon(hand.outline, colour, label)
    canvas.outline(hand.outline, edge, 0.6)
    thenar = 1.35 if palm_visible else 1.0  # the thenar pad shows on the palm side only
    canvas.capsule(pts[1], pts[2], FINGER_WIDTH[0] * length * thenar, colour, label)
    if palm_visible:
        crease = _scaled(colour, 0.7)
        for line in hand.lines:
            cv2.polylines(
                canvas.rgb,
                [_fixed(line, canvas.scale)],
                False,
                crease,
                max(1, int(round(0.018 * length * canvas.scale))),
                cv2.LINE_AA,
                _SHIFT,
            )
    else:
        knuckle = _scaled(colour, 1.12)
        tendon = _scaled(colour, 1.05)
        wrist = pts[0]
        for index in (5, 9, 13, 17):
            p = pts[index]
            mid = (0.4 * wrist[0] + 0.6 * p[0], 0.4 * wrist[1] + 0.6 * p[1])
            canvas.capsule(mid, p, 0.035 * length, tendon, None)
            canvas.ellipse(p, (0.06 * length, 0.06 * length), knuckle, None)


def draw_frame(
    static_rgb: np.ndarray,
    static_labels: np.ndarray,
    signer: Signer,
    body: Body,
    hands: list[HandDrawing],
) -> tuple[np.ndarray, np.ndarray]:
    """Arms and hands over the static layer.

    Returns: rgb (size, size, 3) uint8 and labels (size, size) uint8.
    """
    canvas = Canvas(static_rgb.copy(), static_labels.copy())
    # The arm whose hand is further from the camera is drawn first.
    for hand in sorted(hands, key=lambda h: -float(h.landmarks[:, 2].mean())):
        _arm(canvas, signer, body, hand)
        _hand(canvas, signer, hand)
    rgb = cv2.resize(canvas.rgb, (body.size, body.size), interpolation=cv2.INTER_AREA)
    return rgb, canvas.labels
