"""Mask fields of one clip: per frame, per part presence and per hand motion on a cell grid.

Inputs (from the extraction stage): a part map per frame, (T, Hs, Ws) uint8 with labels
{0 background, 1 body, 2 face, 3 left hand, 4 right hand} at any resolution covering the whole
stored frame, and the 21 landmarks of each hand per frame in stored-clip pixels (NaN when the hand
was not found).

Output: float16 (F, T, Hc, Wc) with F = len(FIELD_NAMES) on a grid of `cell`-pixel cells of the
stored clip (Hc = round(H / cell), Wc = round(W / cell)):

- presence `left_hand, right_hand, face, body`: the fraction of each cell the part covers, after
  an optional square dilation of the part mask (in part-map pixels) and an optional Gaussian blur
  (in cells);
- motion `left_motion, right_motion`: the hand's presence in the cell times how fast the nearest
  of its landmarks moves, in hand sizes per stored frame, saturating at 1 when the speed reaches
  `motion_scale`.

Why landmark displacement rather than frame difference: it belongs to one hand by construction
(a frame difference inside a dilated hand mask also sees the other hand, the face or a moving
background behind it), it is immune to lighting changes and compression noise, it is scale-free
(hand sizes per frame), and it needs only the extraction output, so the stage never decodes video.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from signmae_core.parts import BODY, FACE, LEFT_HAND, PART_NAMES, RIGHT_HAND

from .resample import area_resample

PRESENCE_LABELS = (LEFT_HAND, RIGHT_HAND, FACE, BODY)  # label of each presence field, in order
FIELD_NAMES: tuple[str, ...] = (
    *(PART_NAMES[label] for label in PRESENCE_LABELS),  # left_hand, right_hand, face, body
    "left_motion",
    "right_motion",
)
FIELD_INDEX = {name: i for i, name in enumerate(FIELD_NAMES)}
# What a horizontal flip does to the field axis: left and right swap.
FLIP_PERMUTATION: tuple[int, ...] = (1, 0, 2, 3, 5, 4)
NUM_LANDMARKS = 21


@dataclass(frozen=True)
class FieldParams:
    """The settings the fields depend on (a `MasksConfig` converts with `from_config`)."""

    cell: int = 8
    dilation: int = 0
    blur: float = 0.0
    motion_scale: float = 0.25

    @classmethod
    def from_config(cls, config: object) -> FieldParams:
        return cls(
            cell=int(config.cell),  # type: ignore[attr-defined]
            dilation=int(config.dilation),  # type: ignore[attr-defined]
            blur=float(config.blur),  # type: ignore[attr-defined]
            motion_scale=float(config.motion_scale),  # type: ignore[attr-defined]
        )


def cell_grid(height: int, width: int, cell: int) -> tuple[int, int]:
    """(Hc, Wc) of a `height` x `width` stored clip cut into cells of about `cell` pixels."""
    return max(1, round(height / cell)), max(1, round(width / cell))


def dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (..., H, W) bool masks by a (2r+1) x (2r+1) square."""
    if radius <= 0:
        return masks
    out = masks.copy()
    for axis in (-2, -1):
        grown = out.copy()
        size = out.shape[axis]
        for shift in range(1, min(radius, size - 1) + 1):
            ahead = [slice(None)] * out.ndim
            behind = [slice(None)] * out.ndim
            ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(ahead)] |= out[tuple(behind)]
            grown[tuple(behind)] |= out[tuple(ahead)]
        out = grown
    return out


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) matrix that blurs a 1-D signal with a Gaussian, zeros outside the grid."""
    positions = np.arange(size, dtype=np.float64)
    weights = np.exp(-0.5 * ((positions[:, None] - positions[None, :]) / sigma) ** 2)
    radius = max(1, int(np.ceil(3 * sigma)))
    kernel_sum = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).sum()
    return (weights / kernel_sum).astype(np.float32)


def blur_fields(fields: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the last two axes of (..., Hc, Wc), sigma in cells; clipped to [0, 1]."""
    if sigma <= 0:
        return fields
    g_y = _gaussian_matrix(fields.shape[-2], sigma)
    g_x = _gaussian_matrix(fields.shape[-1], sigma)
    return np.clip(g_y @ fields @ g_x.T, 0.0, 1.0)


def presence_fields(
    part_maps: np.ndarray, grid: tuple[int, int], dilation: int = 0, blur: float = 0.0
) -> np.ndarray:
    """Cell coverage of each part: (T, Hs, Ws) uint8 labels -> (4, T, Hc, Wc) float32.

    Order: left hand, right hand, face, body (`PRESENCE_LABELS`). The part map must cover the
    whole stored frame; its resolution may be anything (coverage is computed by exact area).
    """
    if part_maps.ndim != 3:
        raise ValueError(f"part maps must be (T, H, W), got shape {part_maps.shape}")
    if part_maps.size and int(part_maps.max()) > max(PRESENCE_LABELS):
        raise ValueError(f"part label {int(part_maps.max())} is not one of 0..4")
    _, height, width = part_maps.shape
    if dilation == 0 and height % grid[0] == 0 and width % grid[1] == 0:
        coverage = _block_coverage(part_maps, grid)
    else:
        labels = np.asarray(PRESENCE_LABELS, dtype=part_maps.dtype)[:, None, None, None]
        masks = dilate(part_maps[None] == labels, dilation)  # (4, T, Hs, Ws)
        coverage = area_resample(masks.view(np.uint8), grid)
    return blur_fields(coverage, blur)


def _block_coverage(part_maps: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The same as the exact-area path when cells are whole blocks of part-map pixels, by
    integer block sums (a few vectorized passes over the maps). Returns (4, T, Hc, Wc)."""
    frames, height, width = part_maps.shape
    block_y, block_x = height // grid[0], width // grid[1]
    labels = np.asarray(PRESENCE_LABELS, dtype=part_maps.dtype)[:, None, None, None]
    count_type = np.uint8 if block_y * block_x < 256 else np.uint32
    counts = (part_maps[None] == labels).view(np.uint8).astype(count_type, copy=False)
    counts = functools.reduce(np.add, [counts[..., j::block_x] for j in range(block_x)])
    counts = functools.reduce(np.add, [counts[..., i::block_y, :] for i in range(block_y)])
    return counts.astype(np.float32) / np.float32(block_y * block_x)


def _landmark_speed(points: np.ndarray, first_frame: np.ndarray) -> np.ndarray:
    """Speed of each landmark in hand sizes per frame: (..., T, 21, 2) px -> (..., T, 21).

    The mean length of the landmark's steps to the neighbouring frames (t - 1, t + 1) in which
    the hand was found, divided by the hand's size at t (the longer side of its landmarks'
    bounding box); 0 where the hand is missing at t or in both neighbours. `first_frame` (T,)
    bool marks where a clip starts when several clips are laid end to end: no step crosses it.
    """
    found = np.isfinite(points).all(axis=(-2, -1))  # (..., T)
    paired = found[..., 1:] & found[..., :-1] & ~first_frame[1:]  # (..., T-1)
    diff = points[..., 1:, :, :] - points[..., :-1, :, :]
    steps = np.sqrt((diff**2).sum(axis=-1))  # (..., T-1, 21), NaN where a hand is missing
    steps = np.where(paired[..., None], steps, np.float32(0))
    total = np.zeros(points.shape[:-1], np.float32)
    count = np.zeros(found.shape, np.float32)
    total[..., 1:, :] += steps  # the step from t - 1
    total[..., :-1, :] += steps  # the step to t + 1
    count[..., 1:] += paired
    count[..., :-1] += paired
    xs, ys = points[..., 0], points[..., 1]  # (..., T, 21); reductions over the last axis are fast
    extent = np.maximum(xs.max(axis=-1) - xs.min(axis=-1), ys.max(axis=-1) - ys.min(axis=-1))
    extent = np.nan_to_num(extent, nan=1.0)  # (..., T)
    scale = np.maximum(count, 1.0) * np.maximum(extent, 1.0)
    return total / scale[..., None]


def motion_field(
    points: np.ndarray,
    presence: np.ndarray,
    clip_hw: tuple[int, int],
    motion_scale: float,
    first_frame: np.ndarray | None = None,
) -> np.ndarray:
    """Motion per cell: presence x saturated speed of the nearest landmark of the same hand.

    points: (..., T, 21, 2) (x, y) in stored-clip pixels, NaN where the hand was not found;
    presence: (..., T, Hc, Wc) of the same hand(s); leading axes (e.g. left/right) match.
    `first_frame` (T,) bool marks clip starts (default: only frame 0).
    Returns float32 (..., T, Hc, Wc) in [0, 1].
    """
    *lead, num_frames, grid_h, grid_w = presence.shape
    if points.shape != (*lead, num_frames, NUM_LANDMARKS, 2):
        raise ValueError(f"hand landmarks must be {(*lead, num_frames, 21, 2)}, got {points.shape}")
    if first_frame is None:
        first_frame = np.zeros(num_frames, bool)
        first_frame[:1] = True
    speed = np.minimum(_landmark_speed(points, first_frame) / motion_scale, 1.0)
    motion = np.zeros(presence.shape, dtype=np.float32)
    where = np.nonzero(presence > 0)  # (..., t, y, x) indices of cells holding the hand
    if where[0].size == 0:
        return motion
    hand_frame, y, x = where[:-2], where[-2], where[-1]
    center_x = (x + 0.5) * (clip_hw[1] / grid_w)  # (K,) cell centres in pixels
    center_y = (y + 0.5) * (clip_hw[0] / grid_h)
    near = points[hand_frame]  # (K, 21, 2); NaN where the hand is missing, then its speed is 0
    dist = (near[..., 0] - center_x[:, None]) ** 2 + (near[..., 1] - center_y[:, None]) ** 2
    nearest = np.argmin(dist, axis=1)  # (K,)
    motion[where] = presence[where] * speed[(*hand_frame, nearest)]
    return motion


def compute_fields(
    part_maps: np.ndarray,
    left_points: np.ndarray,
    right_points: np.ndarray,
    clip_hw: tuple[int, int],
    params: FieldParams,
) -> np.ndarray:
    """All fields of one clip: float16 (len(FIELD_NAMES), T, Hc, Wc), see the module docstring.

    part_maps: (T, Hs, Ws) uint8 labels covering the stored frame of size `clip_hw` (H, W).
    left_points, right_points: (T, 21, 2) (x, y) in stored-clip pixels, NaN when not found.
    """
    return compute_fields_batch([(part_maps, left_points, right_points)], clip_hw, params)[0]


def compute_fields_batch(
    clips: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    clip_hw: tuple[int, int],
    params: FieldParams,
) -> list[np.ndarray]:
    """`compute_fields` of several clips of one geometry at once (the same part-map size).

    The clips are laid end to end in time and computed in one pass (per-frame work does not
    care, and no motion step crosses a clip boundary), which saves the per-call overhead of
    many small arrays. Returns one float16 (F, T_i, Hc, Wc) array per clip.
    """
    if not clips:
        return []
    lengths = [len(maps) for maps, _, _ in clips]
    for (_, left, right), length in zip(clips, lengths, strict=True):
        if left.shape != (length, NUM_LANDMARKS, 2) or right.shape != left.shape:
            raise ValueError(f"hand landmarks must be ({length}, 21, 2), got {left.shape}")
    part_maps = np.concatenate([maps for maps, _, _ in clips])
    points = np.stack(
        [np.concatenate([c[1] for c in clips]), np.concatenate([c[2] for c in clips])]
    ).astype(np.float32)  # (2, sum T, 21, 2)
    first_frame = np.zeros(len(part_maps), bool)
    first_frame[np.cumsum([0, *lengths[:-1]])] = True
    grid = cell_grid(clip_hw[0], clip_hw[1], params.cell)
    presence = presence_fields(part_maps, grid, params.dilation, params.blur)
    motion = motion_field(points, presence[:2], clip_hw, params.motion_scale, first_frame)
    presence, motion = _to_float16(presence), _to_float16(motion)
    bounds = np.cumsum([0, *lengths])
    return [
        np.concatenate([presence[:, start:end], motion[:, start:end]])  # one contiguous copy
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def _to_float16(values: np.ndarray) -> np.ndarray:
    """float32 -> float16 (torch's vectorized conversion: numpy's is ~50x slower)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).half().numpy()
