"""The body-part labels of part maps, defined once.

A part map is an `(H, W)` uint8 array of these labels, whoever makes it (the synthetic
renderer's ground truth, the extraction backends) or reads it (the masks stage's fields, the
figures, the benches). Hands are the signer's anatomical left and right.
"""

from __future__ import annotations

PART_NAMES: tuple[str, ...] = ("background", "body", "face", "left_hand", "right_hand")
"""Name of each label value: `PART_NAMES[label]`."""

BACKGROUND, BODY, FACE, LEFT_HAND, RIGHT_HAND = range(len(PART_NAMES))
NUM_PARTS = len(PART_NAMES)

PART_LABELS_TEXT = ", ".join(f"{i} {name.replace('_', ' ')}" for i, name in enumerate(PART_NAMES))
"""`0 background, 1 body, 2 face, 3 left hand, 4 right hand`, for file metadata and docs."""

__all__ = [
    "BACKGROUND",
    "BODY",
    "FACE",
    "LEFT_HAND",
    "NUM_PARTS",
    "PART_LABELS_TEXT",
    "PART_NAMES",
    "RIGHT_HAND",
]
