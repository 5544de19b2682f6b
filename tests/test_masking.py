"""Mask fields, pooling, storage and the leakage metric, on hand-made part maps and tracks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from signmae_core.masking import (
    FIELD_NAMES,
    FieldParams,
    ScoreWeights,
    combine,
    compute_fields,
    hand_leakage,
    pool_fields,
    token_maps,
)
from signmae_core.masking.fields import (
    blur_fields,
    cell_grid,
    compute_fields_batch,
    dilate,
    motion_field,
    presence_fields,
)
from signmae_core.masking.resample import area_resample, overlap_matrix
from signmae_core.masking.storage import FieldReader, FieldRow, write_field_file
from signmae_core.parts import BODY, FACE, LEFT_HAND, RIGHT_HAND

F = {name: i for i, name in enumerate(FIELD_NAMES)}


def square_points(x0: float, y0: float, side: float) -> np.ndarray:
    """21 landmarks spread over a square hand (x, y) in pixels: (21, 2)."""
    u = np.linspace(0, 1, 21)
    return np.stack([x0 + side * u, y0 + side * ((u * 7) % 1)], axis=-1)


def synthetic_clip(frames: int = 8, size: int = 64, scale: int = 2, step: int = 4):
    """A clip whose left hand moves right by `step` px per frame and right hand stays still.

    Returns part maps (T, size/scale, size/scale) uint8 and the two hands' landmarks (T, 21, 2)
    in clip pixels (the right hand missing in the last frame).
    """
    side = size // scale
    maps = np.zeros((frames, side, side), np.uint8)
    maps[:, side // 2 :, :] = BODY
    maps[:, 2:10, 12:20] = FACE
    left = np.full((frames, 21, 2), np.nan)
    right = np.full((frames, 21, 2), np.nan)
    for t in range(frames):
        x = 4 + t * step  # clip pixels
        maps[t, 20:24, x // scale : x // scale + 4] = LEFT_HAND
        left[t] = square_points(x, 40, 8)
        if t < frames - 1:
            maps[t, 20:24, 24:28] = RIGHT_HAND
            right[t] = square_points(48, 40, 8)
    return maps, left, right


# ---- resampling ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_out", "n_in"), [(4, 8), (3, 8), (7, 5), (14, 28), (1, 9)])
def test_overlap_rows_sum_to_one_and_conserve_mass(n_out: int, n_in: int) -> None:
    a = overlap_matrix(n_out, n_in)
    assert np.allclose(a.sum(axis=1), 1.0, atol=1e-6)
    x = np.random.default_rng(0).random(n_in)
    # mass = mean value * length: the output mean equals the input mean
    assert np.isclose((a @ x).mean(), x.mean(), atol=1e-6)


def test_area_resample_box_outside_counts_as_zero() -> None:
    ones = np.ones((4, 4), np.float32)
    out = area_resample(ones, (2, 2), box=(-2, -2, 2, 2))  # half the box lies outside
    assert np.allclose(out, [[0, 0], [0, 1]])


# ---- presence ----------------------------------------------------------------------------------
def test_presence_is_the_covered_fraction_of_each_cell() -> None:
    maps = np.zeros((1, 8, 8), np.uint8)  # part map at half the clip size (16 px clip)
    maps[0, 0:2, 0:2] = LEFT_HAND  # exactly cell (0, 0) of a 4-px-cell grid on the 16 px clip
    maps[0, 2:4, 2:3] = RIGHT_HAND  # half of cell (1, 1)
    maps[0, 4:8, :] = BODY
    presence = presence_fields(maps, cell_grid(16, 16, 4))
    assert presence.shape == (4, 1, 4, 4)
    assert presence[0, 0, 0, 0] == 1.0 and presence[0].sum() == 1.0
    assert presence[1, 0, 1, 1] == 0.5 and presence[1].sum() == 0.5
    assert np.allclose(presence[3, 0, 2:], 1.0) and presence[2].sum() == 0


def test_presence_at_a_non_integer_ratio_keeps_the_area() -> None:
    maps = np.zeros((1, 30, 30), np.uint8)
    maps[0, 3:17, 5:20] = LEFT_HAND
    presence = presence_fields(maps, (7, 7))  # 30 part pixels onto 7 cells
    cell_area = (30 / 7) ** 2
    assert np.isclose(presence[0].sum() * cell_area, 14 * 15, rtol=1e-4)


def test_dilation_grows_masks_by_a_square() -> None:
    masks = np.zeros((1, 9, 9), bool)
    masks[0, 4, 4] = True
    grown = dilate(masks, 2)
    assert grown.sum() == 25 and grown[0, 2:7, 2:7].all()
    maps = np.zeros((1, 16, 16), np.uint8)
    maps[0, 6:10, 6:10] = LEFT_HAND
    plain = presence_fields(maps, (4, 4))[0].sum()
    wider = presence_fields(maps, (4, 4), dilation=2)[0].sum()
    assert wider == pytest.approx(plain * (8 * 8) / (4 * 4))


def test_blur_spreads_presence_and_stays_a_fraction() -> None:
    field = np.zeros((1, 9, 9), np.float32)
    field[0, 4, 4] = 1.0
    blurred = blur_fields(field, 1.0)
    assert blurred.max() < 1.0 and blurred[0, 4, 3] > 0
    assert np.isclose(blurred.sum(), 1.0, atol=0.02)
    assert blurred.min() >= 0 and blurred.max() <= 1


# ---- motion ------------------------------------------------------------------------------------
def test_motion_follows_the_moving_hand_only() -> None:
    maps, left, right = synthetic_clip()
    fields = compute_fields(maps, left, right, (64, 64), FieldParams(cell=8, motion_scale=0.25))
    assert fields.dtype == np.float16 and fields.shape == (len(FIELD_NAMES), 8, 8, 8)
    left_motion, right_motion = fields[F["left_motion"]], fields[F["right_motion"]]
    # the left hand moves 4 px per frame, half its 8 px size: saturated where present
    present = fields[F["left_hand"]] > 0
    assert np.allclose(left_motion[present], fields[F["left_hand"]][present], atol=1e-3)
    assert (left_motion[~present] == 0).all()
    # the right hand never moves; it is missing in the last frame
    assert (right_motion == 0).all()
    assert fields[F["right_hand"], -1].sum() == 0
    assert fields[F["face"]].sum() > 0 and fields[F["body"]].sum() > 0


def test_motion_is_graded_below_saturation() -> None:
    presence = np.ones((3, 2, 2), np.float32)
    points = np.stack([square_points(t * 1.0, 0, 10) for t in range(3)])  # 0.1 hand size / frame
    motion = motion_field(points, presence, (16, 16), motion_scale=0.4)
    assert np.allclose(motion, 0.25, atol=1e-6)


def test_motion_uses_one_sided_differences_at_gaps() -> None:
    presence = np.ones((7, 1, 1), np.float32)
    points = np.stack([square_points(t * 2.0, 0, 10) for t in range(7)])
    points[[2, 5]] = np.nan  # hand lost in frames 2 and 5: frame 6 has no found neighbour
    presence[[2, 5]] = 0
    motion = motion_field(points, presence, (8, 8), motion_scale=1.0)
    assert np.allclose(motion[:, 0, 0], [0.2, 0.2, 0.0, 0.2, 0.2, 0.0, 0.0], atol=1e-6)


# ---- storage -----------------------------------------------------------------------------------
def test_field_file_round_trip_and_failed_rows(tmp_path) -> None:
    maps, left, right = synthetic_clip()
    fields = compute_fields(maps, left, right, (64, 64), FieldParams())
    rows = [FieldRow(f"clip{i}", fields + np.float16(i)) for i in range(9)]
    rows.append(FieldRow("broken", error="no part maps"))
    path = tmp_path / "part-00000.parquet"
    assert write_field_file(path, rows, {"cell": 8, "clip_height": 64}) == 10
    reader = FieldReader([str(path)])
    assert len(reader) == 9 and "broken" not in reader
    assert reader.failed == {"broken": "no part maps"}
    assert reader.metadata["field_names"] == list(FIELD_NAMES) and reader.metadata["cell"] == 8
    for i in (7, 0, 8, 3):
        got = reader.get(f"clip{i}")
        assert got.dtype == np.float16 and np.array_equal(got, fields + np.float16(i))
    assert reader.get("broken") is None and reader.get("unknown") is None
    clone = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(clone.get("clip5"), fields + np.float16(5))

    import pandas as pd

    frame = pd.read_parquet(path)
    assert list(frame.columns)[:3] == ["video_id", "status", "error"]
    assert (frame.status == "ok").sum() == 9


# ---- pooling -----------------------------------------------------------------------------------
def test_pooling_is_the_block_mean_when_the_grid_divides() -> None:
    fields = torch.rand(2, len(FIELD_NAMES), 8, 14, 14)
    pooled = pool_fields(fields, (4, 7, 7))
    expected = fields.reshape(2, len(FIELD_NAMES), 4, 2, 7, 2, 7, 2).mean(dim=(3, 5, 7))
    assert torch.allclose(pooled, expected, atol=1e-6)


def test_scores_follow_the_weights_without_recompute() -> None:
    fields = torch.zeros(1, len(FIELD_NAMES), 2, 2, 2)
    fields[0, F["left_hand"], :, 0, 0] = 1.0
    fields[0, F["face"], :, 1, 1] = 1.0
    fields[0, F["right_motion"], :, 0, 1] = 0.5
    pooled = pool_fields(fields, (1, 2, 2))
    score = combine(pooled, ScoreWeights(hand=2.0, face=0.5, body=0.0, motion=4.0))
    assert torch.allclose(score, torch.tensor([[2.0, 2.0, 0.0, 0.5]]))
    maps = token_maps(fields, (1, 2, 2), ScoreWeights(), hand_threshold=0.05)
    assert maps.hands.shape == (1, 2, 4)
    assert maps.hands[0, 0].tolist() == [True, False, False, False]
    assert maps.hand_presence[0].tolist() == [1.0, 0.0, 0.0, 0.0]


# ---- leakage -----------------------------------------------------------------------------------
def test_leakage_counts_hands_visible_in_neighbouring_slots() -> None:
    grid = (3, 1, 3)
    hands = torch.zeros(1, 2, 9, dtype=torch.bool)
    hands[0, 0, [0, 4, 8]] = True  # left hand moves along the diagonal of (t, w)
    # a tube mask hiding column 1 only: the hand at t=1 is masked, visible at t=0 and t=2
    tube = torch.tensor([[False, True, False] * 3])
    leak = hand_leakage(tube, hands, grid)
    assert (leak.masked_hand_tokens, leak.leaked_tokens, leak.hand_tokens) == (1, 1, 3)
    assert leak.share == 1.0
    # masking every hand token: nothing to copy from
    follow = hands[:, 0].clone()
    assert hand_leakage(follow, hands, grid).share == 0.0
    # masked at t=0 and t=1 but visible at t=2: only t=1 leaks (t=0 has no visible neighbour)
    partial = torch.zeros(1, 9, dtype=torch.bool)
    partial[0, [0, 4]] = True
    leak = hand_leakage(partial, hands, grid)
    assert (leak.masked_hand_tokens, leak.leaked_tokens) == (2, 1)
    # the other hand being visible next door does not count
    hands[0, 1, [2, 5]] = True  # right hand, visible at t=0 and t=1
    leak = hand_leakage(follow, hands, grid)
    assert (leak.masked_hand_tokens, leak.leaked_tokens, leak.hand_tokens) == (3, 0, 5)


def test_block_and_exact_area_paths_agree() -> None:
    maps, _, _ = synthetic_clip()
    fast = presence_fields(maps, (8, 8))  # 32 px part maps: 4 x 4 blocks per cell
    labels = np.array([LEFT_HAND, RIGHT_HAND, FACE, BODY], np.uint8)[:, None, None, None]
    exact = area_resample((maps[None] == labels).astype(np.float32), (8, 8))
    assert np.allclose(fast, exact, atol=1e-6)
    with pytest.raises(ValueError, match="not one of"):
        presence_fields(np.full((1, 4, 4), 9, np.uint8), (2, 2))


def test_a_batch_of_clips_equals_each_clip_alone() -> None:
    """Clips laid end to end: no motion step crosses a clip boundary."""
    a = synthetic_clip(frames=6, step=4)
    b = synthetic_clip(frames=5, step=0)
    b[1][:] += 20.0  # far from where clip a ends: a crossing step would show as motion
    params = FieldParams(cell=8, dilation=1)
    together = compute_fields_batch([a, b], (64, 64), params)
    for clip, fields in zip((a, b), together, strict=True):
        assert np.array_equal(fields, compute_fields(*clip, (64, 64), params))
    assert together[1].shape[1] == 5 and not together[1][F["left_motion"]].any()
