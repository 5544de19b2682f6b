"""Evaluation metrics on hand-made predictions whose figures are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from signmae_core.eval.metrics import (
    average_views,
    classification_metrics,
    confusion_matrix,
    group_accuracy,
    group_indices,
    most_confused_pairs,
    topk_hits,
)

CLASSES = ["a", "b", "c"]


def one_hot_scores(predicted: list[int], num_classes: int = 3) -> np.ndarray:
    scores = np.zeros((len(predicted), num_classes))
    scores[np.arange(len(predicted)), predicted] = 1.0
    return scores


def test_per_class_differs_from_per_instance_on_an_imbalanced_set() -> None:
    # class a: 8 clips, all right; class b: 1 clip, wrong (-> a); class c: 1 clip, right.
    labels = np.array([0] * 8 + [1, 2])
    predicted = [0] * 8 + [0, 2]
    metrics = classification_metrics(one_hot_scores(predicted), labels, CLASSES, topk=[1])
    assert metrics["per_instance"]["top1"] == pytest.approx(9 / 10)
    assert metrics["per_class"]["top1"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert metrics["per_class_accuracy"] == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert metrics["confusion_matrix"] == [[8, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert metrics["most_confused"] == [
        {"true": "b", "predicted": "a", "count": 1, "share_of_true": 1.0}
    ]


def test_top_k_counts_the_true_class_among_the_k_best() -> None:
    scores = np.array(
        [
            [0.5, 0.3, 0.2, 0.0],  # true 1: second best -> top-2 hit, top-1 miss
            [0.1, 0.2, 0.3, 0.4],  # true 0: last -> miss at k=2 and 3, hit at k=4
            [0.9, 0.05, 0.05, 0.0],  # true 0: best
        ]
    )
    labels = np.array([1, 0, 0])
    assert topk_hits(scores, labels, 1).tolist() == [False, False, True]
    assert topk_hits(scores, labels, 2).tolist() == [True, False, True]
    assert topk_hits(scores, labels, 4).tolist() == [True, True, True]
    assert topk_hits(scores, labels, 9).tolist() == [True, True, True]  # k beyond K: all classes
    metrics = classification_metrics(scores, labels, ["w", "x", "y", "z"], topk=[1, 2])
    assert metrics["per_instance"] == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}
    # per class: class 0 has 2 clips (1 hit at top-1, 1 at top-2), class 1 has 1 clip
    assert metrics["per_class"]["top1"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["per_class"]["top2"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["num_classes_tested"] == 2
    assert metrics["per_class_accuracy"]["y"] is None  # no test clips: left out of the mean


def test_view_averaging_uses_the_mean_softmax() -> None:
    # one clip, two views: view 1 is confidently wrong, view 2 mildly right; the softmax mean
    # of the two is the figure a multi-view evaluation reports
    logits = np.array([[[4.0, 0.0], [0.0, 1.0]]])
    averaged = average_views(logits)
    expected = (np.exp([4.0, 0.0]) / np.exp([4.0, 0.0]).sum() + np.exp([0.0, 1.0]) / np.exp(
        [0.0, 1.0]
    ).sum()) / 2
    np.testing.assert_allclose(averaged[0], expected)
    assert averaged.shape == (1, 2)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="views"):
        average_views(np.zeros((2, 3)))


def test_confusion_matrix_and_most_confused_pairs_are_ordered_by_count() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([1, 1, 0, 0, 1, 0, 1, 2])
    matrix = confusion_matrix(labels, predicted, 3)
    assert matrix.tolist() == [[1, 2, 0], [1, 1, 0], [1, 1, 1]]
    pairs = most_confused_pairs(matrix, CLASSES, limit=3)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("a", "b", 2),
        ("b", "a", 1),
        ("c", "a", 1),
    ]
    assert pairs[0]["share_of_true"] == pytest.approx(2 / 3)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="classes"):
        classification_metrics(np.zeros((2, 4)), np.array([0, 1]), CLASSES)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(np.zeros((2, 3)), np.array([0, 3]), CLASSES)
    with pytest.raises(ValueError, match="no test clips"):
        classification_metrics(np.zeros((0, 3)), np.array([], dtype=int), CLASSES)


# ---- within-group accuracy ----------------------------------------------------------------------
def test_group_accuracy_takes_the_argmax_within_the_true_class_group() -> None:
    # classes 0..4; a handshape pair {0, 1}, a movement pair {0, 2} and a movement triple
    # {3, 4, 1}. The overall argmax of every clip is class 4, so overall Top-1 is 1/6, while
    # inside the groups the scores decide as worked out per clip below.
    groups = [
        ("handshape", np.array([0, 1])),
        ("movement", np.array([0, 2])),
        ("movement", np.array([1, 3, 4])),
    ]
    scores = np.array(
        [
            #  0    1    2    3    4
            [0.3, 0.2, 0.1, 0.0, 0.9],  # true 0: hand {0,1} -> 0 hit; move {0,2} -> 0 hit
            [0.1, 0.2, 0.3, 0.0, 0.9],  # true 0: hand -> 1 miss; move -> 2 miss
            [0.1, 0.2, 0.3, 0.0, 0.9],  # true 1: hand -> 1 hit; move {1,3,4} -> 4 miss
            [0.1, 0.0, 0.2, 0.0, 0.9],  # true 2: move {0,2} -> 2 hit
            [0.0, 0.0, 0.0, 0.5, 0.9],  # true 3: move {1,3,4} -> 4 miss
            [0.0, 0.0, 0.0, 0.0, 0.9],  # true 4: move {1,3,4} -> 4 hit
        ]
    )
    labels = np.array([0, 0, 1, 2, 3, 4])
    result = group_accuracy(scores, labels, groups)
    # handshape: clips 0, 1, 2 (classes 0, 1) -> hits 1, 0, 1
    assert result["handshape"] == {
        "accuracy": pytest.approx(2 / 3), "trials": 3, "clips": 3, "groups": 1,
        "chance": pytest.approx(0.5),
    }
    # movement: {0,2} holds clips 0, 1, 3 -> hits 1, 0, 1; {1,3,4} holds clips 2, 4, 5 ->
    # hits 0, 0, 1; chance (3 * 1/2 + 3 * 1/3) / 6
    assert result["movement"] == {
        "accuracy": pytest.approx(3 / 6), "trials": 6, "clips": 6, "groups": 2,
        "chance": pytest.approx((3 / 2 + 3 / 3) / 6),
    }
    metrics = classification_metrics(scores, labels, list("abcde"), topk=[1], groups=groups)
    assert metrics["per_instance"]["top1"] == pytest.approx(1 / 6)
    assert metrics["class_groups"] == result


def test_a_clip_in_two_groups_of_one_kind_is_two_trials_and_ties_go_low() -> None:
    groups = [("handshape", np.array([0, 1])), ("handshape", np.array([0, 2])),
              ("place", np.array([1, 2]))]
    scores = np.array([[0.5, 0.5, 0.9]])  # true 0: {0,1} tie -> 0 hit; {0,2} -> 2 miss
    result = group_accuracy(scores, np.array([0]), groups)
    assert result["handshape"]["accuracy"] == pytest.approx(0.5)
    assert (result["handshape"]["trials"], result["handshape"]["clips"]) == (2, 1)
    # a kind whose groups hold no test clip is reported without an accuracy
    assert result["place"] == {"accuracy": None, "trials": 0, "clips": 0, "groups": 0,
                               "chance": None}


def test_group_indices_map_names_and_drop_what_the_model_does_not_know() -> None:
    groups = [
        {"kind": "handshape", "classes": ["c", "a"]},
        {"kind": "movement", "classes": ["a", "zzz"]},  # one known class left: dropped
        {"kind": "movement", "classes": ["b", "c", "zzz"]},
    ]
    found = group_indices(groups, ["a", "b", "c"])
    assert [(kind, ids.tolist()) for kind, ids in found] == [
        ("handshape", [0, 2]), ("movement", [1, 2])
    ]
    assert classification_metrics(np.eye(3), np.arange(3), ["a", "b", "c"])["class_groups"] == {}
