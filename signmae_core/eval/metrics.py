"""Classification metrics: per-instance and per-class Top-k, confusion matrix, confused pairs.

Per-instance Top-k is the share of test clips whose true class is among the k highest scores.
Per-class Top-k is the mean over classes of each class's Top-k accuracy, counting only classes
that have test clips, so every class weighs the same however many clips it has.

Within-group accuracy, for datasets that declare class groups (`class_groups.json`, e.g. the
synthetic set's handshape-only and movement-only minimal pairs): for each test clip whose true
class is in a group of kind K, is the highest score among that group's classes the true class's
(the argmax restricted to the group)? Reported per kind with its number of clips and its chance
level (the mean of 1 / group size over the clips).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along `axis`."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def average_views(view_logits: np.ndarray) -> np.ndarray:
    """(M, V, K) logits of V temporal views per clip -> (M, K) mean of the views' softmax."""
    if view_logits.ndim != 3:
        raise ValueError(f"expected (clips, views, classes) logits, got shape {view_logits.shape}")
    return softmax(view_logits.astype(np.float64), axis=-1).mean(axis=1)


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(M,) bool: is the true class among the k highest scores of (M, K) `scores`?

    Ties are broken towards the lower class index (a stable sort of the negated scores).
    """
    k = min(k, scores.shape[1])
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (ranked == labels[:, None]).any(axis=1)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def per_class_accuracy(hits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) accuracy of each class (NaN for a class without test clips)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    correct = np.bincount(labels, weights=hits.astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, correct / counts, np.nan)


def most_confused_pairs(
    matrix: np.ndarray, class_names: Sequence[str], limit: int = 10
) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most clips: true class, predicted class, count, share."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    order = sorted(zip(rows, cols, strict=True), key=lambda rc: (-off[rc], rc[0], rc[1]))
    totals = matrix.sum(axis=1)
    return [
        {
            "true": class_names[r],
            "predicted": class_names[c],
            "count": int(off[r, c]),
            "share_of_true": float(off[r, c] / totals[r]),
        }
        for r, c in order[:limit]
    ]


ClassGroup = tuple[str, np.ndarray]  # (kind, class indices in ascending order)


def group_indices(
    groups: Sequence[Mapping[str, Any]], class_names: Sequence[str]
) -> list[ClassGroup]:
    """`[{"kind": str, "classes": [name, ...]}]` -> `[(kind, ascending class indices)]`.

    Names that are not in `class_names` are dropped (the model knows no such class); a group
    left with fewer than two classes is dropped.
    """
    index = {name: i for i, name in enumerate(class_names)}
    found = []
    for group in groups:
        ids = sorted({index[c] for c in group["classes"] if c in index})
        if len(ids) >= 2:
            found.append((str(group["kind"]), np.asarray(ids, dtype=np.int64)))
    return found


def group_accuracy(
    scores: np.ndarray, labels: np.ndarray, groups: Sequence[ClassGroup]
) -> dict[str, dict[str, Any]]:
    """Per kind of group: the accuracy of the argmax restricted to the true class's group.

    scores: (M, K); labels: (M,); groups: `(kind, class indices)`. Each (clip, group holding its
    true class) pair is one trial: hit when the true class has the highest score among the
    group's classes (ties go to the lower class index, as in `topk_hits`). Returns, per kind in
    order of first appearance: `accuracy` (None without trials), `trials`, `clips` (distinct
    clips; fewer than trials only when a class sits in two groups of one kind), `groups` (groups
    with at least one trial) and `chance` (mean over trials of 1 / group size).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    kinds: dict[str, dict[str, Any]] = {}
    for kind, members in groups:
        tally = kinds.setdefault(kind, {"hits": [], "chance": [], "clips": set(), "groups": 0})
        rows = np.flatnonzero(np.isin(labels, members))
        if len(rows) == 0:
            continue
        chosen = members[np.argmax(scores[np.ix_(rows, members)], axis=1)]
        tally["hits"] += (chosen == labels[rows]).tolist()
        tally["chance"] += [1.0 / len(members)] * len(rows)
        tally["clips"].update(rows.tolist())
        tally["groups"] += 1
    return {
        kind: {
            "accuracy": float(np.mean(t["hits"])) if t["hits"] else None,
            "trials": len(t["hits"]),
            "clips": len(t["clips"]),
            "groups": t["groups"],
            "chance": float(np.mean(t["chance"])) if t["chance"] else None,
        }
        for kind, t in kinds.items()
    }


def classification_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    topk: Sequence[int] = (1, 5),
    confused_pairs: int = 10,
    groups: Sequence[ClassGroup] = (),
) -> dict[str, Any]:
    """Every evaluation figure from (M, K) class scores and (M,) true labels.

    Returns a JSON-ready dict: `per_instance` and `per_class` {"top1": ..., "top5": ...},
    `per_class_accuracy` {class: top-1 or None}, `confusion_matrix` (K, K) lists,
    `most_confused` pairs, `num_clips` and `num_classes` (with test clips / in total), and
    `class_groups`, the within-group accuracy per kind of `groups` (see `group_accuracy`; {}
    without groups).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(class_names)
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(f"scores {scores.shape} do not match {num_classes} classes")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels {labels.shape} do not match {scores.shape[0]} score rows")
    if len(labels) == 0:
        raise ValueError("no test clips to evaluate")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError("labels outside the class list")
    per_instance: dict[str, float] = {}
    per_class: dict[str, float] = {}
    class_top1 = None
    for k in topk:
        hits = topk_hits(scores, labels, k)
        accuracy = per_class_accuracy(hits, labels, num_classes)
        per_instance[f"top{k}"] = float(hits.mean())
        per_class[f"top{k}"] = float(np.nanmean(accuracy))
        if k == 1:
            class_top1 = accuracy
    if class_top1 is None:
        class_top1 = per_class_accuracy(topk_hits(scores, labels, 1), labels, num_classes)
    matrix = confusion_matrix(labels, scores.argmax(axis=1), num_classes)
    return {
        "num_clips": int(len(labels)),
        "num_classes": num_classes,
        "num_classes_tested": int(np.count_nonzero(np.bincount(labels, minlength=num_classes))),
        "per_instance": per_instance,
        "per_class": per_class,
        "per_class_accuracy": {
            name: (None if np.isnan(acc) else float(acc))
            for name, acc in zip(class_names, class_top1, strict=True)
        },
        "confusion_matrix": matrix.tolist(),
        "most_confused": most_confused_pairs(matrix, class_names, confused_pairs),
        "class_groups": group_accuracy(scores, labels, groups),
    }
