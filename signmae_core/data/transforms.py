"""Temporal sampling, random resized crop and horizontal flip, for a clip and its mask fields.

The clip and its fields go through the same transform: the same frame indices, the same crop box
(in stored-clip pixels; the fields take it in cell units) and the same flip. Fields are resampled
by exact area, so a cell's value stays the share of it a part covers; a flip mirrors the fields
and swaps the left- and right-hand fields (a left hand seen in a mirror is a right hand).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from signmae_core.masking.fields import FLIP_PERMUTATION
from signmae_core.masking.resample import area_resample

Box = tuple[int, int, int, int]  # (y0, x0, height, width) in stored-clip pixels


def sample_frame_indices(
    num_stored: int,
    num_frames: int,
    stride: int,
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
) -> np.ndarray:
    """Which stored frames to read: (num_frames,) int64.

    Frames `start, start + stride, ...` spanning `(num_frames - 1) * stride + 1` stored frames.
    With `rng` the start is uniform (training); without it, view `v` of `num_views` starts at the
    centre of the v-th of `num_views` equal parts of the possible starts (evaluation views).
    A clip shorter than the span is stretched instead: `num_frames` indices spread evenly over
    the whole clip (repeating frames when it has fewer than `num_frames`).
    """
    if num_stored < 1:
        raise ValueError("a clip without frames cannot be sampled")
    span = (num_frames - 1) * stride + 1
    if num_stored < span:
        return np.round(np.linspace(0, num_stored - 1, num_frames)).astype(np.int64)
    last_start = num_stored - span
    if rng is not None:
        start = int(rng.integers(0, last_start + 1))
    else:
        start = int(round((view + 0.5) / num_views * last_start))
    return start + stride * np.arange(num_frames, dtype=np.int64)


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
) -> Box:
    """A random crop box with area share in `scale` and aspect ratio (w/h) in `ratio`.

    As torchvision's RandomResizedCrop: up to `attempts` draws (log-uniform ratio); if none fits,
    the largest centred box whose ratio is within `ratio`.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            y0 = int(rng.integers(0, height - crop_h + 1))
            x0 = int(rng.integers(0, width - crop_w + 1))
            return y0, x0, crop_h, crop_w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_h, crop_w = height, int(round(height * ratio[1]))
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def transform_clip(frames: np.ndarray, box: Box, out_size: int, flip: bool) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> crop `box`, resize to `out_size` square, flip -> (3, T, S, S) uint8."""
    y0, x0, crop_h, crop_w = box
    crop = torch.from_numpy(np.ascontiguousarray(frames[:, y0 : y0 + crop_h, x0 : x0 + crop_w]))
    return resize_crop(crop.permute(0, 3, 1, 2), out_size, flip)


def resize_crop(crop: torch.Tensor, out_size: int, flip: bool) -> torch.Tensor:
    """A cropped clip (T, 3, h, w) uint8, on any device -> resized to `out_size` square
    (antialiased bilinear, rounded), mirrored when `flip` -> (3, T, S, S) uint8. The one resize
    of the CPU loader (`transform_clip`) and of the device decoder (`signmae_core.data.device`).
    """
    if tuple(crop.shape[-2:]) != (out_size, out_size):
        resized = F.interpolate(
            crop.float(),
            size=(out_size, out_size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        crop = resized.round_().clamp_(0, 255).to(torch.uint8)
    if flip:
        crop = crop.flip(-1)
    return crop.permute(1, 0, 2, 3).contiguous()


def transform_fields(
    fields: np.ndarray,
    box: Box,
    clip_hw: tuple[int, int],
    out_grid: tuple[int, int],
    flip: bool,
) -> np.ndarray:
    """(F, T, Hc, Wc) fields of a `clip_hw` clip -> the fields of the transformed clip.

    `box` is the clip's crop box in stored pixels; the result covers it on an `out_grid` cell
    grid, mirrored with the hands swapped when `flip`. Returns float16 (F, T, Ho, Wo).
    """
    y0, x0, crop_h, crop_w = box
    cells_y = fields.shape[-2] / clip_hw[0]
    cells_x = fields.shape[-1] / clip_hw[1]
    cell_box = (y0 * cells_y, x0 * cells_x, (y0 + crop_h) * cells_y, (x0 + crop_w) * cells_x)
    out = area_resample(fields, out_grid, box=cell_box)
    if flip:
        out = out[list(FLIP_PERMUTATION), ..., ::-1]
    return np.ascontiguousarray(out, dtype=np.float16)
