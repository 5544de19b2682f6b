"""How big the hands are at the model's input, in tokens, measured from the part maps.

A hand the model cannot resolve cannot be learned from: at 112 px and 16 px patches a synthetic
signer's hand is about 1.5 x 1.5 tokens, one patch's worth of pixels. The evaluation report
states the measured figure so a run says whether its geometry can see handshapes.

A hand's size in a frame is the box of its part-map pixels (labels `LEFT_HAND`, `RIGHT_HAND`),
as a share of the clip's width and height; at the model's input (the whole clip resized to
`img_size`, as the evaluation views are) that share times `img_size / patch_size` tokens. The
summary's `share_2x2` is the share of (frame, hand) boxes at least 2 tokens wide and tall; a run
*sees the hands* when the median box does, i.e. `share_2x2 >= 0.5`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from signmae_core.parts import LEFT_HAND, RIGHT_HAND

MIN_TOKENS = 2.0  # a hand must span at least 2 x 2 tokens


def hand_boxes(part_maps: np.ndarray) -> np.ndarray:
    """Part maps `(T, H, W)` uint8 -> `(T, 2, 2)` float: (width, height) of the left and the
    right hand's box as shares of the frame's width and height; NaN where a hand is absent."""
    frames, height, width = part_maps.shape
    boxes = np.full((frames, 2, 2), np.nan, np.float64)
    for h, label in enumerate((LEFT_HAND, RIGHT_HAND)):
        present = part_maps == label
        cols = present.any(axis=1)  # (T, W)
        rows = present.any(axis=2)  # (T, H)
        seen = cols.any(axis=1)
        if not seen.any():
            continue
        x0 = cols.argmax(axis=1)
        x1 = width - cols[:, ::-1].argmax(axis=1)
        y0 = rows.argmax(axis=1)
        y1 = height - rows[:, ::-1].argmax(axis=1)
        boxes[seen, h, 0] = (x1 - x0)[seen] / width
        boxes[seen, h, 1] = (y1 - y0)[seen] / height
    return boxes


def boxes_in_tokens(boxes: np.ndarray, img_size: int, patch_size: int) -> np.ndarray:
    """Hand boxes `(..., 2)` as shares of the frame -> `(M, 2)` (width, height) in tokens at a
    square `img_size` input with `patch_size` patches; absent hands (NaN) dropped."""
    flat = np.asarray(boxes, np.float64).reshape(-1, 2)
    flat = flat[~np.isnan(flat).any(axis=1)]
    return flat * (img_size / patch_size)


def summarize(tokens: np.ndarray) -> dict[str, Any]:
    """`(M, 2)` hand boxes in tokens -> the report's figure: how many boxes, the median width
    and height, the share at least 2 x 2, and whether the median box is (`sees_hands`)."""
    tokens = np.asarray(tokens, np.float64).reshape(-1, 2)
    if not len(tokens):
        return {"hands": 0, "median_w": None, "median_h": None, "share_2x2": None,
                "sees_hands": None}
    share = float((tokens >= MIN_TOKENS).all(axis=1).mean())
    return {
        "hands": int(len(tokens)),
        "median_w": round(float(np.median(tokens[:, 0])), 3),
        "median_h": round(float(np.median(tokens[:, 1])), 3),
        "share_2x2": share,
        "sees_hands": share >= 0.5,
    }


def hand_size(part_maps: Iterable[np.ndarray], img_size: int, patch_size: int) -> dict[str, Any]:
    """Summary of the hands' size in tokens over clips' part maps `(T, H, W)` each."""
    boxes = [hand_boxes(maps) for maps in part_maps]
    if not boxes:
        return summarize(np.empty((0, 2)))
    return summarize(boxes_in_tokens(np.concatenate(boxes), img_size, patch_size))
