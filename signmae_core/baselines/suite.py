"""The floors and the keypoint baseline on one train/test split, from per-clip features.

Three methods, each scored on the same test clips with the same metrics as the model
(`signmae_core.eval.metrics.classification_metrics`, within-group accuracy included):

- `raw-pixel 1-NN`: the training clips are the gallery, each test clip is a query;
  `NUM_FRAMES` frames, `PIXEL_SIZE` px grey (`features.pixel_features`);
- `hand-keypoint 1-NN`: the same on both hands' 21 landmarks, wrist-centred and palm-scaled
  (`features.hand_features`); the distance is the mean squared distance over the (frame, hand)
  slots found in both clips (`knn.masked_distances`): a hand missing in one clip costs nothing,
  rather than counting as a hand of zeros (on KArSL-70 the masked distance reached 54.3 % Top-1
  where zeros reached 44.3 %);
- `keypoint temporal conv`: `temporal.TemporalConv` trained on the training clips' hand and
  pose landmark sequences (`features.sequence_features`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from signmae_core.eval.metrics import ClassGroup, classification_metrics

from .knn import class_scores, masked_distances, nearest_class_scores

NUM_FRAMES = 16  # frames sampled per clip, for every method
PIXEL_SIZE = 32  # side of the grey frames of the raw-pixel 1-NN
PIXEL_1NN = "raw-pixel 1-NN"
HAND_1NN = "hand-keypoint 1-NN"
TEMPORAL = "keypoint temporal conv"
METHODS = (PIXEL_1NN, HAND_1NN, TEMPORAL)
DESCRIPTIONS = {
    PIXEL_1NN: f"1-nearest neighbour, {NUM_FRAMES} frames of {PIXEL_SIZE}x{PIXEL_SIZE} grey "
    "pixels, Euclidean; the training clips are the gallery",
    HAND_1NN: f"1-nearest neighbour, {NUM_FRAMES} frames of both hands' 21 landmarks, "
    "wrist-centred, palm-length-scaled; mean squared distance over the hands found in both clips",
    TEMPORAL: f"two 1-D convolutions over {NUM_FRAMES} frames of hand shapes, wrists and "
    "upper-body pose (body-centred, shoulder-scaled), trained on the training clips",
}


@dataclass
class ClipFeatures:
    """The features of a set of clips: labels (N,), pixels (N, NUM_FRAMES * PIXEL_SIZE**2),
    hands (N, NUM_FRAMES * 2, 42) with hands_found (N, NUM_FRAMES * 2), sequences
    (N, NUM_FRAMES, F)."""

    labels: np.ndarray
    pixels: np.ndarray
    hands: np.ndarray
    hands_found: np.ndarray
    sequences: np.ndarray


def _temporal_scores(train: ClipFeatures, test: ClipFeatures, num_classes: int) -> np.ndarray:
    from .temporal import train_temporal

    classifier = train_temporal(train.sequences, train.labels, num_classes)
    return classifier.scores(test.sequences)


def _hand_scores(train: ClipFeatures, test: ClipFeatures, num_classes: int) -> np.ndarray:
    distances = masked_distances(test.hands, test.hands_found, train.hands, train.hands_found)
    return class_scores(distances, train.labels, num_classes)


SCORERS: dict[str, Callable[[ClipFeatures, ClipFeatures, int], np.ndarray]] = {
    PIXEL_1NN: lambda tr, te, k: nearest_class_scores(te.pixels, tr.pixels, tr.labels, k),
    HAND_1NN: _hand_scores,
    TEMPORAL: _temporal_scores,
}


def run_baselines(
    train: ClipFeatures,
    test: ClipFeatures,
    class_names: Sequence[str],
    groups: Sequence[ClassGroup] = (),
    topk: Sequence[int] = (1, 5),
    methods: Sequence[str] = METHODS,
) -> dict[str, dict[str, Any]]:
    """Per method: `per_instance`, `per_class`, `class_groups` (as the model's metrics),
    `num_clips`, `seconds` (scoring, training included) and `description`."""
    if len(train.labels) == 0 or len(test.labels) == 0:
        raise ValueError("the baselines need training and test clips")
    results = {}
    for name in methods:
        started = time.perf_counter()
        scores = SCORERS[name](train, test, len(class_names))
        seconds = time.perf_counter() - started
        metrics = classification_metrics(scores, test.labels, class_names, topk, 0, groups)
        results[name] = {
            "per_instance": metrics["per_instance"],
            "per_class": metrics["per_class"],
            "class_groups": metrics["class_groups"],
            "num_clips": metrics["num_clips"],
            "seconds": round(seconds, 3),
            "description": DESCRIPTIONS[name],
        }
    return results
