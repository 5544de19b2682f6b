"""The hands' size in tokens at the model's input: the measure, and the demo's geometry."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from signmae_core.config import load_config
from signmae_core.eval.hand_size import boxes_in_tokens, hand_boxes, hand_size, summarize
from signmae_core.synth import generate, read_ground_truth

LEFT, RIGHT = 3, 4  # part labels of the hands (docs/EXTRACT.md)


def test_hand_boxes_are_the_extent_of_each_hands_pixels_as_shares_of_the_frame():
    maps = np.zeros((2, 50, 100), np.uint8)
    maps[0, 5:25, 10:20] = LEFT  # 10 px wide, 20 px tall
    maps[0, 30:31, 40:41] = RIGHT  # one pixel
    maps[0, 40:45, 60:62] = RIGHT  # the same hand in two pieces: x 40..61, y 30..44
    maps[1, 0:50, 0:100] = RIGHT  # frame 1: the right hand fills the frame, no left hand
    boxes = hand_boxes(maps)
    np.testing.assert_allclose(boxes[0, 0], [10 / 100, 20 / 50])
    np.testing.assert_allclose(boxes[0, 1], [22 / 100, 15 / 50])
    assert np.isnan(boxes[1, 0]).all()
    np.testing.assert_allclose(boxes[1, 1], [1.0, 1.0])


def test_tokens_scale_with_the_input_and_the_summary_counts_hands_at_least_2x2():
    boxes = np.array([[[0.1, 0.2], [np.nan, np.nan]], [[0.3, 0.05], [0.25, 0.25]]])
    tokens = boxes_in_tokens(boxes, img_size=160, patch_size=16)  # 10 tokens a side
    np.testing.assert_allclose(tokens, [[1.0, 2.0], [3.0, 0.5], [2.5, 2.5]])
    summary = summarize(tokens)
    assert summary["hands"] == 3
    assert summary["share_2x2"] == pytest.approx(1 / 3)
    assert summary["median_w"] == pytest.approx(2.5) and summary["median_h"] == pytest.approx(2.0)
    assert summary["sees_hands"] is False
    assert summarize(np.empty((0, 2)))["hands"] == 0


def test_the_demo_geometry_shows_a_hand_at_least_2x2_tokens_in_the_median_frame(tmp_path):
    """Measured on the ground truth of a small synthetic set made with the demo's settings (one
    repetition), scaled as the demo's clips are: the synthetic frame (square, so decode keeps
    all of it) resized to the model's input."""
    cfg = load_config("cpu_demo")
    synth = cfg.synth.model_copy(update={"reps": 1, "workers": 1})
    root = tmp_path / "synthetic"
    generate(root, synth)
    sizes = []  # (width, height) in tokens of every hand in view, frame by frame
    scale = cfg.model.img_size / synth.size / cfg.model.patch_size
    with open(root / "labels.csv", newline="") as f:
        videos = [row["path"] for row in csv.DictReader(f)]
    for video in videos:
        parts = read_ground_truth(root, video).parts
        for frame in parts:
            for label in (LEFT, RIGHT):
                ys, xs = np.nonzero(frame == label)
                if len(xs):
                    sizes.append(((xs.max() - xs.min() + 1) * scale,
                                  (ys.max() - ys.min() + 1) * scale))
    sizes = np.array(sizes)
    assert len(sizes) > 100
    share_2x2 = ((sizes[:, 0] >= 2) & (sizes[:, 1] >= 2)).mean()
    assert np.median(sizes[:, 0]) >= 2 and np.median(sizes[:, 1]) >= 2, np.median(sizes, axis=0)
    assert share_2x2 >= 0.5, share_2x2
    # the library's measure agrees with this one
    measured = hand_size((read_ground_truth(root, video).parts for video in videos),
                         cfg.model.img_size, cfg.model.patch_size)
    assert measured["hands"] == len(sizes)
    assert measured["share_2x2"] == pytest.approx(share_2x2)
