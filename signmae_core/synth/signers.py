"""Signer appearance: skin tone, clothing, body, framing, background, speed, dominant hand.

Every signer is drawn from its own random stream (`seed`, signer index), so adding signers never
changes the existing ones. Colours are RGB uint8 triples.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

SKIN_TONES = np.array(
    [
        [241, 206, 180],
        [226, 184, 152],
        [205, 158, 122],
        [184, 132, 96],
        [158, 108, 76],
        [124, 84, 58],
        [96, 64, 46],
    ],
    dtype=np.float64,
)
"""Anchor skin tones from light to dark; a signer's tone is a blend of two neighbours."""

HAIR_COLOURS = np.array(
    [[25, 20, 18], [55, 38, 28], [96, 66, 42], [170, 130, 80], [150, 150, 150], [120, 52, 30]],
    dtype=np.float64,
)
BACKGROUND_KINDS = ("noise", "stripes", "tiles", "gradient")
HAIR_STYLES = ("short", "long", "bun", "none")


@dataclass(frozen=True)
class Signer:
    """How one signer looks and moves.

    Lengths are relative: `scale` is the head height as a fraction of the frame size, body
    proportions are multiples of the head height, offsets are fractions of the frame size.
    """

    index: int
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    shirt: tuple[int, int, int]
    long_sleeves: bool
    background: tuple[int, int, int]
    background_accent: tuple[int, int, int]
    background_kind: str
    scale: float
    offset_x: float
    offset_y: float
    shoulder_width: float
    head_width: float
    hand_length: float
    speed: float
    left_dominant: bool
    rest_in_view: bool

    @property
    def dominant(self) -> str:
        """The signer's dominant hand (anatomical): "left" or "right"."""
        return "left" if self.left_dominant else "right"


def _colour(values: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(round(float(v))) for v in values)
    return (r, g, b)


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _luma(colour: tuple[int, int, int] | np.ndarray) -> float:
    r, g, b = (float(c) for c in colour)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _shirt_colour(rng: np.random.Generator, skin: tuple[int, int, int]) -> tuple[int, int, int]:
    """A clothing colour that stands apart from the skin (hue or brightness)."""
    skin_luma = _luma(skin)
    for _ in range(50):
        hue = rng.uniform(0.0, 1.0)
        if 0.02 < hue < 0.14:  # orange-brown hues look like skin
            continue
        colour = _rgb(hue, rng.uniform(0.35, 0.9), rng.uniform(0.18, 0.85))
        if abs(_luma(colour) - skin_luma) > 45:
            return colour
    return (30, 30, 40) if skin_luma > 110 else (225, 225, 230)


def _background_colours(
    rng: np.random.Generator, shirt: tuple[int, int, int], skin: tuple[int, int, int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A muted wall colour that differs from both the shirt and the skin, and an accent."""
    for _ in range(50):
        colour = _rgb(rng.uniform(0, 1), rng.uniform(0.05, 0.45), rng.uniform(0.3, 0.95))
        if abs(_luma(colour) - _luma(shirt)) > 40 and abs(_luma(colour) - _luma(skin)) > 45:
            break
    accent = _rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.25, 0.95))
    return colour, accent


def make_signer(seed: int, index: int) -> Signer:
    """The signer number `index` for a dataset seed: deterministic, independent of the others.

    Every third signer (index 1, 4, 7, ...) is left-dominant, so the train split of any dataset
    with 3 or more signers has both.
    """
    rng = np.random.default_rng([seed, 1, index])
    # Skin tones step through the range by the golden ratio from a seed-chosen start, so any
    # few consecutive signers differ in tone.
    start = np.random.default_rng([seed, 5]).uniform(0.0, 1.0)
    tone = ((start + 0.618034 * index) % 1.0) * (len(SKIN_TONES) - 1)
    low = int(np.floor(tone))
    high = min(low + 1, len(SKIN_TONES) - 1)
    skin_arr = SKIN_TONES[low] + (tone - low) * (SKIN_TONES[high] - SKIN_TONES[low])
    skin = _colour(skin_arr)
    shirt = _shirt_colour(rng, skin)
    background, accent = _background_colours(rng, shirt, skin)
    hair = _colour(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))])
    return Signer(
        index=index,
        skin=skin,
        hair=hair,
        hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))],
        shirt=shirt,
        long_sleeves=bool(rng.random() < 0.6),
        background=background,
        background_accent=accent,
        background_kind=BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))],
        scale=float(rng.uniform(0.235, 0.275)),
        offset_x=float(rng.uniform(-0.06, 0.06)),
        offset_y=float(rng.uniform(-0.02, 0.03)),
        shoulder_width=float(rng.uniform(0.85, 1.05)),
        head_width=float(rng.uniform(0.7, 0.8)),
        hand_length=float(rng.uniform(1.12, 1.22)),
        speed=float(rng.uniform(0.8, 1.25)),
        left_dominant=index % 3 == 1,
        rest_in_view=bool(rng.random() < 0.5),
    )
