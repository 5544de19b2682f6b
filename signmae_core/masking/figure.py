"""A figure for people: what the mask fields, the score and each sampler do to one clip.

One row per time slot (tubelet) of the token grid; columns: the slot's first frame, the part
fields (left hand, right hand, face, body, motion of both hands) at field resolution, the pooled
score per token, then one mask per sampler drawn over the frame (masked tokens greyed out, the
visible ones as they are).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .fields import FIELD_INDEX
from .pooling import Grid

_FIELD_COLUMNS = (
    ("left hand", ("left_hand",)),
    ("right hand", ("right_hand",)),
    ("face", ("face",)),
    ("body", ("body",)),
    ("motion", ("left_motion", "right_motion")),
)


def _masked_frame(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 frame and (H', W') bool token mask -> frame with masked tokens greyed."""
    height, width = frame.shape[:2]
    rows = np.repeat(np.arange(mask.shape[0]), -(-height // mask.shape[0]))[:height]
    cols = np.repeat(np.arange(mask.shape[1]), -(-width // mask.shape[1]))[:width]
    hidden = mask[rows][:, cols]
    out = frame.astype(np.float32)
    out[hidden] = 0.25 * out[hidden] + 0.75 * 128
    return out.astype(np.uint8)


def save_mask_figure(
    path: str | Path,
    frames: np.ndarray,
    fields: np.ndarray,
    scores: np.ndarray,
    masks: Mapping[str, np.ndarray],
    grid: Grid,
    title: str = "",
) -> Path:
    """Write the PNG grid.

    frames: (T, H, W, 3) uint8, the model's input frames; fields: (F, T, Hc, Wc) after the same
    transform; scores: (N,) pooled scores; masks: sampler name -> (N,) bool, True = masked;
    grid: (T', H', W') with N = T'H'W'. Returns the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slots, grid_h, grid_w = grid
    tubelet = frames.shape[0] // slots
    score_grid = scores.reshape(slots, grid_h, grid_w)
    mask_grids = {name: m.reshape(slots, grid_h, grid_w) for name, m in masks.items()}
    columns = ["frame"] + [name for name, _ in _FIELD_COLUMNS] + ["score"] + list(masks)
    figure, axes = plt.subplots(
        slots, len(columns), figsize=(1.6 * len(columns), 1.6 * slots + 0.4), squeeze=False
    )
    score_max = max(float(scores.max()), 1e-6)
    for slot in range(slots):
        t = slot * tubelet
        panels: list[tuple[np.ndarray, dict]] = [(frames[t], {})]
        for _, names in _FIELD_COLUMNS:
            value = sum(fields[FIELD_INDEX[n], t].astype(np.float32) for n in names)
            panels.append((value, {"cmap": "magma", "vmin": 0, "vmax": 1}))
        panels.append((score_grid[slot], {"cmap": "viridis", "vmin": 0, "vmax": score_max}))
        for name in masks:
            panels.append((_masked_frame(frames[t], mask_grids[name][slot]), {}))
        for column, (image, style) in enumerate(panels):
            axis = axes[slot, column]
            axis.imshow(image, interpolation="nearest", **style)
            axis.set_xticks([])
            axis.set_yticks([])
            if slot == 0:
                axis.set_title(columns[column], fontsize=8)
        axes[slot, 0].set_ylabel(f"t={t}", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
