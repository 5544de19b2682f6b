"""The sign vocabulary: handshapes, places, palm orientations, movements and the class set.

A sign is a handshape (and, for opening/closing movements, an end handshape), a place on or
near the body, a palm orientation, a movement and a hand mode (one hand, both hands mirrored,
both hands alternating, or the dominant hand acting over the non-dominant one as a base).

The class set is built in groups of three: a base sign, the same sign with another handshape
(a handshape minimal pair) and the same sign with another movement (a movement minimal pair).
It depends only on the number of classes, never on the dataset seed, so class `k` is the same
sign in every dataset.

Positions are in head heights relative to the base of the neck, with x measured outwards on
the hand's own side (see `render.Body.to_pixels`); orientations are (yaw, pitch, roll) degrees
of `hand.rotation` for that hand as if it were a right hand (a left hand is mirrored).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .hand import Handshape

_CURLED = (88.0, 98.0, 55.0)


def _finger(mcp: float, pip: float, dip: float, spread: float) -> tuple[float, ...]:
    return (mcp, pip, dip, spread)


def _curled(spread: float) -> tuple[float, ...]:
    return (*_CURLED, spread)


_THUMB_ACROSS = (15.0, 55.0, 40.0, 25.0)
HANDSHAPES: dict[str, Handshape] = {
    shape.name: shape
    for shape in (
        Handshape(
            "flat",
            (_finger(0, 5, 3, 3), _finger(0, 5, 3, 0), _finger(0, 5, 3, -3), _finger(0, 5, 3, -6)),
            (20, 15, 10, 5),
        ),
        Handshape(
            "five",
            (
                _finger(0, 3, 2, 14),
                _finger(0, 3, 2, 2),
                _finger(0, 3, 2, -10),
                _finger(0, 3, 2, -22),
            ),
            (55, 10, 5, 5),
        ),
        Handshape("fist", (_curled(3), _curled(0), _curled(-3), _curled(-6)), (15, 55, 35, 20)),
        Handshape("thumb", (_curled(3), _curled(0), _curled(-3), _curled(-6)), (8, 5, 0, 0)),
        Handshape(
            "point", (_finger(0, 4, 2, 3), _curled(0), _curled(-3), _curled(-6)), _THUMB_ACROSS
        ),
        Handshape(
            "hook", (_finger(10, 95, 60, 3), _curled(0), _curled(-3), _curled(-6)), _THUMB_ACROSS
        ),
        Handshape(
            "v",
            (_finger(0, 4, 2, 12), _finger(0, 4, 2, -8), _curled(-3), _curled(-6)),
            _THUMB_ACROSS,
        ),
        Handshape(
            "w",
            (_finger(0, 4, 2, 14), _finger(0, 4, 2, 0), _finger(0, 4, 2, -14), _curled(-6)),
            (10, 60, 45, 30),
        ),
        Handshape(
            "y", (_curled(3), _curled(0), _curled(-3), _finger(0, 3, 2, -25)), (60, 10, 0, 0)
        ),
        Handshape("l", (_finger(0, 4, 2, 3), _curled(0), _curled(-3), _curled(-6)), (80, 5, 0, 0)),
        Handshape(
            "horns",
            (_finger(0, 4, 2, 8), _curled(0), _curled(-3), _finger(0, 3, 2, -20)),
            _THUMB_ACROSS,
        ),
        Handshape(
            "c",
            (
                _finger(35, 40, 20, 3),
                _finger(35, 40, 20, 0),
                _finger(35, 40, 20, -3),
                _finger(35, 40, 20, -6),
            ),
            (35, 45, 15, 10),
        ),
        Handshape(
            "o",
            (
                _finger(50, 60, 35, 3),
                _finger(50, 60, 35, 0),
                _finger(50, 60, 35, -3),
                _finger(50, 60, 35, -6),
            ),
            (25, 65, 25, 25),
        ),
        Handshape(
            "claw",
            (
                _finger(15, 65, 50, 14),
                _finger(15, 65, 50, 2),
                _finger(15, 65, 50, -10),
                _finger(15, 65, 50, -22),
            ),
            (50, 25, 20, 20),
        ),
        Handshape(
            "bent",
            (
                _finger(80, 5, 5, 3),
                _finger(80, 5, 5, 0),
                _finger(80, 5, 5, -3),
                _finger(80, 5, 5, -6),
            ),
            (25, 20, 10, 5),
        ),
    )
}
"""Named handshapes (joint angles in degrees, see `hand.Handshape`)."""

RELAXED = Handshape(
    "relaxed",
    (
        _finger(20, 25, 10, 4),
        _finger(22, 28, 12, 0),
        _finger(25, 30, 12, -4),
        _finger(28, 32, 14, -8),
    ),
    (30, 25, 10, 10),
)
"""The handshape of a hand at rest."""

HANDSHAPE_PAIRS: dict[str, tuple[str, ...]] = {
    "flat": ("five", "bent"),
    "five": ("flat", "claw"),
    "fist": ("thumb", "point"),
    "thumb": ("fist", "y"),
    "point": ("v", "hook"),
    "hook": ("point",),
    "v": ("w", "point"),
    "w": ("v",),
    "y": ("horns", "l"),
    "l": ("point", "y"),
    "horns": ("y", "v"),
    "c": ("o",),
    "o": ("c",),
    "claw": ("five", "c"),
    "bent": ("flat",),
}
"""For each handshape, handshapes that make a visually close minimal pair with it."""

ORIENTATIONS: dict[str, tuple[float, float, float]] = {
    "palm_out": (0.0, 0.0, 10.0),
    "palm_in": (180.0, 0.0, 10.0),
    "palm_mid": (-45.0, 0.0, 15.0),
    "fingers_mid": (0.0, 0.0, 70.0),
    "back_mid": (180.0, 0.0, 70.0),
}
"""Palm orientations as (yaw, pitch, roll) degrees of a right hand."""


@dataclass(frozen=True)
class Place:
    """Where a sign is made: palm centre (x outwards, y down, depth) in head heights."""

    name: str
    xyz: tuple[float, float, float]
    orientations: tuple[str, ...]
    room: float  # movement amplitude that keeps the hand near the place, head heights


PLACES: dict[str, Place] = {
    place.name: place
    for place in (
        Place("forehead", (0.05, -0.95, -0.45), ("fingers_mid", "back_mid"), 0.2),
        Place("temple", (0.85, -0.5, -0.35), ("palm_mid", "palm_in"), 0.15),
        Place("chin", (0.05, -0.3, -0.5), ("palm_in", "palm_mid", "fingers_mid"), 0.25),
        Place("cheek", (0.45, -0.45, -0.35), ("palm_in", "palm_mid"), 0.2),
        Place("chest", (0.1, 0.6, -0.45), ("palm_out", "palm_in", "fingers_mid", "back_mid"), 0.32),
        Place("shoulder", (-0.4, 0.3, -0.4), ("palm_in", "back_mid", "palm_mid"), 0.25),
        Place(
            "neutral", (0.35, 1.05, -0.9), ("palm_out", "palm_mid", "fingers_mid", "palm_in"), 0.38
        ),
        Place("side", (0.75, 0.85, -0.6), ("palm_out", "palm_mid", "palm_in"), 0.32),
    )
}

MOVEMENTS = ("tap", "circle", "side", "updown", "arc", "zigzag", "twist", "wiggle", "open", "close")
"""Movement kinds; `open` and `close` also change the handshape (to `five` / to `fist`)."""

HAND_MODES = ("one", "one", "one", "sym", "alt", "base")
"""Hand modes, repeated to weight one-handed signs as in real vocabularies."""
TWO_HANDED_PLACES = ("temple", "cheek", "neutral", "side")
"""Places far enough from the midline for both hands to sign mirrored without colliding."""
BASE_PLACES = ("chest", "neutral")
"""Places where the non-dominant hand can serve as a base under the dominant one."""


@dataclass(frozen=True)
class Sign:
    """One class of the vocabulary."""

    handshape: str
    movement: str
    place: str
    orientation: str
    hands: str  # "one", "sym", "alt" or "base"

    @property
    def name(self) -> str:
        """Readable class name, unique within a class set, e.g. `five_circle_chest_palm-out_1h`."""
        hands = {"one": "1h", "sym": "2h", "alt": "2h-alt", "base": "2h-base"}[self.hands]
        orient = self.orientation.replace("_", "-")
        return f"{self.handshape}_{self.movement}_{self.place}_{orient}_{hands}"

    def end_handshape(self) -> str:
        """The handshape at the end of the movement (differs only for open/close)."""
        if self.movement == "open":
            return "five" if self.handshape != "five" else "claw"
        if self.movement == "close":
            return "fist" if self.handshape != "fist" else "o"
        return self.handshape


_MODE_CYCLE = ("one", "sym", "one", "base", "one", "alt")


def build_class_set(count: int) -> list[Sign]:
    """`count` distinct signs in groups of (base, handshape pair, movement pair).

    Places, handshapes, movements and hand modes are cycled with different periods so that even
    a small class set is varied. Deterministic and independent of the dataset seed:
    `build_class_set(n)[:k]` equals `build_class_set(k)`.
    """
    return list(_class_set(count))


@lru_cache(maxsize=16)
def _class_set(count: int) -> tuple[Sign, ...]:
    rng = np.random.default_rng(20241126)
    places = [str(p) for p in rng.permutation(sorted(PLACES))]
    shapes = [str(h) for h in rng.permutation(sorted(HANDSHAPES))]
    moves = [str(m) for m in rng.permutation(MOVEMENTS)]
    signs: list[Sign] = []
    seen: set[tuple[str, ...]] = set()

    def key(sign: Sign) -> tuple[str, ...]:
        return (
            sign.handshape,
            sign.end_handshape(),
            sign.movement,
            sign.place,
            sign.orientation,
            sign.hands,
        )

    group = 0
    while len(signs) < count:
        place = PLACES[places[group % len(places)]]
        shape = shapes[group % len(shapes)]
        move = moves[group % len(moves)]
        orientation = place.orientations[(group // len(places)) % len(place.orientations)]
        hands = _MODE_CYCLE[group % len(_MODE_CYCLE)]
        if group >= len(shapes) * len(moves):  # past the regular cycles: random combinations
            shape, move = str(rng.choice(shapes)), str(rng.choice(moves))
            orientation = str(rng.choice(place.orientations))
            hands = str(rng.choice(_MODE_CYCLE))
        if (hands in ("sym", "alt") and place.name not in TWO_HANDED_PLACES) or (
            hands == "base" and place.name not in BASE_PLACES
        ):
            hands = "one"
        pairs = HANDSHAPE_PAIRS[shape]
        other_shape = pairs[(group // len(shapes)) % len(pairs)]
        other_move = moves[(group + 3) % len(moves)]
        group_signs = [
            Sign(shape, move, place.name, orientation, hands),
            Sign(other_shape, move, place.name, orientation, hands),
            Sign(shape, other_move, place.name, orientation, hands),
        ]
        group += 1
        keys = [key(s) for s in group_signs]
        if len(set(keys)) < 3 or any(k in seen for k in keys):
            continue
        seen.update(keys)
        signs.extend(group_signs)
    return tuple(signs[:count])


# ---- per-frame plan ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HandState:
    """One hand in one frame, before it is placed on a particular body."""

    shape: Handshape
    yaw: float
    pitch: float
    roll: float
    xyz: tuple[float, float, float]  # palm centre, head heights (x outwards)


def _smooth(t: float) -> float:
    """Ease-in-out: 0 below 0, 1 above 1, smooth in between."""
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _movement(sign: Sign, s: float, amplitude: float, phase: float) -> tuple[float, ...]:
    """Offset (dx, dy, dz, dyaw) and handshape blend weight at stroke time s in [0, 1].

    `amplitude` is in head heights; `phase` shifts cyclic movements (alternating hands).
    """
    a = amplitude
    tau = 2 * np.pi
    dx = dy = dz = dyaw = blend = 0.0
    kind = sign.movement
    if kind == "tap":
        bounce = abs(np.sin(3 * np.pi * s + phase * np.pi))
        dy, dz = -0.45 * a * bounce, -0.3 * a * bounce
    elif kind == "circle":
        angle = tau * 1.5 * s + phase * np.pi
        dx, dy = a * (np.cos(angle) - 1.0) * 0.8, a * np.sin(angle) * 0.8
    elif kind == "side":
        dx = a * np.sin(tau * 2 * s + phase * np.pi)
    elif kind == "updown":
        dy = a * np.sin(tau * s + phase * np.pi)
    elif kind == "arc":
        dx = a * (1.6 * s - 0.8)
        dy = -0.8 * a * np.sin(np.pi * s)
    elif kind == "zigzag":
        tri = 2 * abs(((3 * s + phase) % 1.0) - 0.5) - 0.5
        dx, dy = 1.2 * a * tri, a * (1.6 * s - 0.8)
    elif kind == "twist":
        dyaw = 50.0 * np.sin(tau * 2 * s + phase * np.pi)
    elif kind == "wiggle":
        dx = 0.15 * a * np.sin(tau * s)
        blend = 0.5 + 0.5 * np.sin(tau * 3 * s + phase * np.pi)
    elif kind in ("open", "close"):
        blend = _smooth((s - 0.25) / 0.5)
        dy = 0.2 * a * (s - 0.5)
    return dx, dy, dz, dyaw, blend


def _wiggle_shape(shape: Handshape, weight: float) -> Handshape:
    """Fingers flexing in a wave (a finger-wiggle movement), weight in [0, 1]."""
    fingers = []
    for i, (mcp, pip, dip, spread) in enumerate(shape.fingers):
        w = 0.5 + 0.5 * np.sin(np.pi * (2 * weight + 0.4 * i))
        fingers.append((mcp + 35 * w, pip + 25 * w, dip + 10 * w, spread))
    return Handshape(shape.name, tuple(fingers), shape.thumb)


_REST_X = 0.7  # resting hands: outwards of the midline, apart from each other


@dataclass(frozen=True)
class Performance:
    """How one repetition is performed: timing, amplitude and small pose jitter."""

    start: float  # when the sign starts, fraction of the clip
    duration: float  # how long it takes, fraction of the clip
    amplitude: float  # scale on the place's movement room
    offset: tuple[float, float, float]  # head heights
    angle_jitter: tuple[float, float, float]  # degrees
    rest_in_view: bool
    rest_y: float  # head heights; lowest palm centre that keeps a resting hand in view


def perform(sign: Sign, t: float, perf: Performance) -> tuple[HandState, HandState]:
    """Dominant and non-dominant hand at clip time t in [0, 1]."""
    place = PLACES[sign.place]
    yaw0, pitch0, roll0 = ORIENTATIONS[sign.orientation]
    yaw0 += perf.angle_jitter[0]
    pitch0 += perf.angle_jitter[1]
    roll0 += perf.angle_jitter[2]
    start_shape = HANDSHAPES[sign.handshape]
    end_shape = HANDSHAPES[sign.end_handshape()]
    local = (t - perf.start) / perf.duration  # 0..1 inside the sign
    onset, offset = 0.2, 0.8
    base_xyz = np.asarray(place.xyz) + np.asarray(perf.offset)
    amplitude = place.room * perf.amplitude

    def stroke_state(phase: float) -> HandState:
        s = min(max((local - onset) / (offset - onset), 0.0), 1.0)
        dx, dy, dz, dyaw, blend = _movement(sign, s, amplitude, phase)
        if sign.movement == "wiggle":
            shape = _wiggle_shape(start_shape, blend)
        elif start_shape is end_shape:
            shape = start_shape
        else:
            shape = start_shape.blend(end_shape, blend)
        xyz = (float(base_xyz[0] + dx), float(base_xyz[1] + dy), float(base_xyz[2] + dz))
        return HandState(shape, yaw0 + dyaw, pitch0, roll0, xyz)

    def rest_state(x_out: float) -> HandState:
        if perf.rest_in_view:  # resting in front of the belly, fingers down and inwards
            return HandState(RELAXED, 170.0, 10.0, 40.0, (x_out, perf.rest_y, -0.7))
        return HandState(RELAXED, 175.0, 0.0, 175.0, (x_out + 0.35, 3.2, -0.2))

    def blend_states(a: HandState, b: HandState, w: float) -> HandState:
        w = _smooth(w)
        x, y, z = ((1 - w) * p + w * q for p, q in zip(a.xyz, b.xyz, strict=True))
        return HandState(
            a.shape.blend(b.shape, w),
            (1 - w) * a.yaw + w * b.yaw,
            (1 - w) * a.pitch + w * b.pitch,
            (1 - w) * a.roll + w * b.roll,
            (x, y, z),
        )

    def animate(active: HandState, rest: HandState) -> HandState:
        if local <= 0.0 or local >= 1.0:
            return rest
        if local < onset:
            return blend_states(rest, active, local / onset)
        if local > offset:
            return blend_states(active, rest, (local - offset) / (1.0 - offset))
        return active

    dominant = animate(stroke_state(0.0), rest_state(_REST_X))
    if sign.hands == "one":
        other = rest_state(_REST_X)
    elif sign.hands == "sym":
        other = animate(stroke_state(0.0), rest_state(_REST_X))
    elif sign.hands == "alt":
        other = animate(stroke_state(1.0), rest_state(_REST_X))
    else:  # base: a flat non-dominant hand held across the body below the dominant hand
        held = HandState(
            HANDSHAPES["flat"],
            10.0,
            0.0,
            45.0,
            (-base_xyz[0] + 0.5, min(base_xyz[1] + 0.9, 1.75), base_xyz[2] + 0.15),
        )
        other = animate(held, rest_state(_REST_X))
    return dominant, other
