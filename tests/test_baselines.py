"""The floors and the keypoint baseline: features, 1-NN and the temporal classifier on tiny
arrays whose answers are worked out by hand, and `signmae baselines` on a tiny synthetic set."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from signmae_core.baselines import ClipFeatures, run_baselines
from signmae_core.baselines.features import (
    body_frame,
    hand_features,
    hand_shapes,
    pixel_features,
    sample_indices,
    sequence_features,
)
from signmae_core.baselines.knn import masked_distances, nearest_class_scores
from signmae_core.baselines.temporal import TemporalSettings, train_temporal


def test_sample_indices_spread_over_the_clip_and_repeat_short_clips() -> None:
    assert sample_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_indices(2, 4).tolist() == [0, 0, 1, 1]  # linspace 0, 1/3, 2/3, 1 rounded
    assert sample_indices(1, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        sample_indices(0, 4)


def test_pixel_features_are_grey_and_area_resized() -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[:, :4] = 255  # left half white
    second = np.full((8, 8, 3), 51, np.uint8)  # grey 51 / 255 = 0.2 everywhere
    features = pixel_features(np.stack([frame, second]), size=2)
    np.testing.assert_allclose(features, [1, 0, 1, 0, 0.2, 0.2, 0.2, 0.2], atol=1e-6)


def _hand(wrist: tuple[float, float], palm: float) -> np.ndarray:
    """(21, 3): wrist at `wrist`, middle knuckle `palm` above it, index tip 2 palms above,
    every other landmark on the wrist."""
    hand = np.zeros((21, 3))
    hand[:, :2] = wrist
    hand[9, :2] = (wrist[0], wrist[1] - palm)
    hand[8, :2] = (wrist[0], wrist[1] - 2 * palm)
    return hand


def test_hand_shapes_are_wrist_centred_scaled_by_the_median_palm_and_zero_when_missing() -> None:
    left = np.stack([_hand((0.3, 0.5), 0.1), _hand((0.2, 0.6), 0.1), _hand((0.4, 0.4), 0.4)])
    right = np.full((3, 21, 3), np.nan)
    right[1] = _hand((0.7, 0.5), 0.05)
    shapes, found = hand_shapes(np.stack([left, right], axis=1))
    assert found.tolist() == [[True, False], [True, True], [True, False]]
    # left: median palm over its frames is 0.1 -> index tip at (0, -2), knuckle (0, -1);
    # in frame 2 the palm is 0.4 long, so its landmarks lie 4x farther out
    np.testing.assert_allclose(shapes[0, 0, 8], [0, -2], atol=1e-6)
    np.testing.assert_allclose(shapes[1, 0, 9], [0, -1], atol=1e-6)
    np.testing.assert_allclose(shapes[2, 0, 8], [0, -8], atol=1e-6)
    np.testing.assert_allclose(shapes[:, 0, 0], 0)  # the wrist is the origin
    # right: one frame, its own palm (0.05) is the scale; missing frames are zeros
    np.testing.assert_allclose(shapes[1, 1, 8], [0, -2], atol=1e-6)
    assert not shapes[[0, 2], 1].any()
    slots, slot_found = hand_features(np.stack([left, right], axis=1))
    assert slots.shape == (3 * 2, 42)  # one slot per frame and hand: frame 1's right is slot 3
    assert slot_found.tolist() == [True, False, True, True, True, False]
    np.testing.assert_allclose(slots[3, 16:18], [0, -2], atol=1e-6)


def _pose(shoulders: tuple[tuple[float, float], tuple[float, float]]) -> np.ndarray:
    pose = np.full((33, 4), 0.5)
    pose[11, :2], pose[12, :2] = shoulders
    return pose


def test_body_frame_is_the_median_shoulder_midpoint_and_width() -> None:
    pose = np.stack([_pose(((0.4, 0.5), (0.6, 0.5))), _pose(((0.4, 0.5), (0.6, 0.5))),
                     np.full((33, 4), np.nan)])
    centre, scale = body_frame(pose)
    np.testing.assert_allclose(centre, [0.5, 0.5])
    assert scale == pytest.approx(0.2)
    centre, scale = body_frame(np.full((2, 33, 4), np.nan))  # no pose: the clip's centre
    assert centre.tolist() == [0.5, 0.5] and scale == 1.0


def test_sequence_features_put_the_wrists_in_shoulder_widths_from_the_body() -> None:
    hands = np.full((2, 2, 21, 3), np.nan)
    hands[:, 1] = _hand((0.7, 0.3), 0.1)  # right hand in both frames
    pose = np.stack([_pose(((0.4, 0.5), (0.6, 0.5))), np.full((33, 4), np.nan)])
    features = sequence_features(hands, pose)
    assert features.shape == (2, 2 * 20 * 2 + 2 * 2 + 17 * 2 + 3)
    shapes, wrists = features[:, :80], features[:, 80:84]
    # right hand's index tip (landmark 8 -> column 7 without the wrist) at (0, -2)
    np.testing.assert_allclose(shapes[0, 40 + 7 * 2: 40 + 7 * 2 + 2], [0, -2], atol=1e-6)
    # the body frame: centre (0.5, 0.5), shoulder width 0.2 -> wrist (0.7, 0.3) is (1, -1)
    np.testing.assert_allclose(wrists[:, 2:], [[1, -1], [1, -1]], atol=1e-6)
    assert not wrists[:, :2].any()  # the left hand is missing
    np.testing.assert_allclose(features[:, -3:], [[0, 1, 1], [0, 1, 0]])
    assert not features[1, 84:-3].any()  # no pose in frame 1: zeros


def test_nearest_class_scores_are_minus_the_distance_to_each_class_nearest_clip() -> None:
    gallery = np.array([[0.0], [10.0], [11.0]])
    scores = nearest_class_scores(np.array([[9.0], [1.0]]), gallery, np.array([0, 1, 1]), 3)
    # query 9: class 0 at 81, class 1 nearest at 10 -> 1; class 2 has no gallery clip
    np.testing.assert_allclose(scores[:, :2], [[-81, -1], [-1, -81]])
    assert np.isneginf(scores[:, 2]).all()


def test_masked_distances_average_over_the_slots_found_in_both_clips() -> None:
    # two slots of 1-D vectors; query: slot 0 = 1, slot 1 = 5
    query = np.array([[[1.0], [5.0]]])
    gallery = np.array([[[1.0], [2.0]], [[3.0], [99.0]], [[0.0], [0.0]]])
    query_found = np.array([[True, True]])
    gallery_found = np.array([[True, True], [True, False], [False, False]])
    distances = masked_distances(query, query_found, gallery, gallery_found)
    # clip 0: (0 + 9) / 2; clip 1: only slot 0 shared -> (1 - 3)^2 = 4; clip 2: nothing shared
    np.testing.assert_allclose(distances[0, :2], [4.5, 4.0])
    assert np.isinf(distances[0, 2])
    # a slot missing in the query is left out too, whatever the gallery holds there
    only_first = masked_distances(query, np.array([[True, False]]), gallery, gallery_found)
    np.testing.assert_allclose(only_first[0, :2], [0.0, 4.0])


def _features(labels: list[int], values: np.ndarray) -> ClipFeatures:
    n = len(labels)
    return ClipFeatures(np.asarray(labels), values.reshape(n, -1), values.reshape(n, 4, -1),
                        np.ones((n, 4), bool), values.reshape(n, 4, -1))


def test_run_baselines_scores_every_method_on_the_same_clips() -> None:
    # one training clip per class, each test clip a noisy copy of the other class's clip except
    # the first: the 1-NN methods get exactly 1 of 3 right
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(3, 4, 2))
    test = gallery[[0, 2, 1]] + 0.01
    groups = [("handshape", np.array([1, 2]))]
    result = run_baselines(_features([0, 1, 2], gallery), _features([0, 1, 2], test),
                           ["a", "b", "c"], groups, topk=[1], methods=["raw-pixel 1-NN",
                                                                       "hand-keypoint 1-NN"])
    for metrics in result.values():
        assert metrics["per_instance"]["top1"] == pytest.approx(1 / 3)
        assert metrics["class_groups"]["handshape"]["accuracy"] == 0.0
        assert metrics["num_clips"] == 3


def test_the_temporal_classifier_learns_a_separable_toy_problem_in_seconds() -> None:
    # class 0: feature 0 rises over time; class 1: it falls; feature 1 is noise. The sum over
    # time is the same for both classes, so only the temporal order separates them.
    rng = np.random.default_rng(1)
    ramp = np.linspace(-1, 1, 8)

    def clips(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 2
        x = rng.normal(scale=0.3, size=(n, 8, 2)).astype(np.float32)
        x[:, :, 0] += np.where(labels[:, None] == 0, ramp, -ramp)
        return x, labels

    x, y = clips(40)
    started = time.perf_counter()
    classifier = train_temporal(x, y, 2, TemporalSettings(steps=60))
    assert time.perf_counter() - started < 5
    test_x, test_y = clips(20)
    scores = classifier.scores(test_x)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert (scores.argmax(axis=1) == test_y).mean() == 1.0


# ---- the command on a tiny synthetic set --------------------------------------------------------
@pytest.mark.slow
def test_baselines_command_on_a_tiny_synthetic_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    from pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", "data", "-c", "ci_tiny"]) == 0
    overrides = ["--set", "store.root=artifacts", "--set", "datasets.0.root=data",
                 "--set", "extract.backend=oracle"]
    assert main(["run", "ingest", "decode", "extract", "-c", "ci_tiny", *overrides]) == 0
    assert main(["baselines", "-c", "ci_tiny", *overrides, "--out", "b.json"]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    # ci_tiny: 3 classes (one group: base, handshape pair, movement pair), signer 0 trains,
    # signer 1 tests, one clip each
    assert (result["train_clips"], result["test_clips"], result["num_classes"]) == (3, 3, 3)
    assert list(result["methods"]) == ["raw-pixel 1-NN", "hand-keypoint 1-NN",
                                       "keypoint temporal conv"]
    for metrics in result["methods"].values():
        groups = metrics["class_groups"]
        # handshape pair {c0, c1} and movement pair {c0, c2}: two test clips each, chance 1/2
        assert {k: (g["trials"], g["chance"]) for k, g in groups.items()} == {
            "handshape": (2, 0.5), "movement": (2, 0.5)
        }
        assert metrics["per_instance"]["top1"] <= metrics["per_instance"]["top5"] == 1.0
