"""Exact area resampling between grids: the one operation behind cells, crops and pooling.

A value on a grid is taken as constant over its cell. Resampling a box of the input grid onto an
output grid gives each output cell the area-weighted mean of the input cells it overlaps; parts of
the box that fall outside the input count as zero (nothing is present there). Presence fractions
therefore stay fractions of area, for any ratio of sizes, integer or not.

The 1-D weights form an `overlap_matrix` `A` (n_out, n_in); a 2-D field `X` (..., H, W) becomes
`A_y @ X @ A_x.T`, and time is handled the same way.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def overlap_matrix(
    n_out: int, n_in: int, start: float = 0.0, stop: float | None = None
) -> np.ndarray:
    """Weights (n_out, n_in) that average input cells over `n_out` equal bins of [start, stop).

    Coordinates are in input cells: input cell `i` spans [i, i + 1). Row `o` holds, for each input
    cell, the length of its overlap with output bin `o` divided by the bin length, so a row sums
    to the share of the bin that lies inside [0, n_in).
    """
    stop = float(n_in) if stop is None else float(stop)
    if n_out < 1 or n_in < 1 or stop <= start:
        raise ValueError(f"bad resample geometry: n_out={n_out}, n_in={n_in}, [{start}, {stop})")
    return _overlap_matrix(n_out, n_in, float(start), stop).copy()


@lru_cache(maxsize=256)
def _overlap_matrix(n_out: int, n_in: int, start: float, stop: float) -> np.ndarray:
    edges = np.linspace(start, stop, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]  # (n_out, 1)
    cells = np.arange(n_in, dtype=np.float64)[None, :]  # (1, n_in)
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return (overlap / (hi - lo)).astype(np.float32)


def area_resample(
    field: np.ndarray,
    out_hw: tuple[int, int],
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Resample the last two axes of `field` (..., H, W) onto (..., out_h, out_w).

    `box` = (y0, x0, y1, x1) in input cells selects the region mapped onto the output (default:
    the whole grid); it may be fractional and may reach outside the grid (zeros there).
    Returns float32.
    """
    height, width = field.shape[-2:]
    y0, x0, y1, x1 = box if box is not None else (0.0, 0.0, float(height), float(width))
    a_y = _overlap_matrix(out_hw[0], height, float(y0), float(y1))
    a_x = _overlap_matrix(out_hw[1], width, float(x0), float(x1))
    lead = field.shape[:-2]
    # two plain matrix products over all leading axes at once (fast even for many frames)
    flat = field.reshape(-1, width).astype(np.float32, copy=False) @ a_x.T  # (L*H, Wo)
    columns = flat.reshape(-1, height, out_hw[1]).transpose(1, 0, 2).reshape(height, -1)
    out = (a_y @ columns).reshape(out_hw[0], -1, out_hw[1]).transpose(1, 0, 2)
    return np.ascontiguousarray(out).reshape(*lead, out_hw[0], out_hw[1])
