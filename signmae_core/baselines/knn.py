"""1-nearest-neighbour classification: the floors any learned model must beat.

A query's score for class k is minus its distance to the nearest gallery clip of class k
(minus infinity for a class without gallery clips), so the class of the nearest clip ranks
first, Top-5 ranks classes by their nearest clip, and the argmax restricted to a group of
classes is the group's nearest class. Distances: squared Euclidean (`squared_distances`), or,
for landmarks that are sometimes missing, the mean squared distance over the slots (a hand in
a frame) present in both clips (`masked_distances`).
"""

from __future__ import annotations

import numpy as np


def squared_distances(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(M, D) and (N, D) -> (M, N) squared Euclidean distances (float64, never negative)."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * q @ g.T
    return np.maximum(d, 0.0)


def masked_distances(
    queries: np.ndarray, queries_found: np.ndarray, gallery: np.ndarray, gallery_found: np.ndarray
) -> np.ndarray:
    """(M, N) mean over shared slots of the squared distance between slot vectors.

    queries: (M, S, D) and gallery: (N, S, D) slot vectors (e.g. S = frames x hands, D = 21 x 2
    landmark coordinates); *_found: (M, S) and (N, S) bool, whether the slot holds a value.
    Only slots found in both clips count; a pair without any shared slot is infinitely far.
    """
    qf = np.asarray(queries_found, dtype=np.float64)
    gf = np.asarray(gallery_found, dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64) * qf[..., None]  # missing slots -> zeros
    g = np.asarray(gallery, dtype=np.float64) * gf[..., None]
    shared = qf @ gf.T
    total = (q * q).sum(-1) @ gf.T + qf @ (g * g).sum(-1).T - 2.0 * np.einsum("msd,nsd->mn", q, g)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(shared > 0, np.maximum(total, 0.0) / shared, np.inf)


def class_scores(distances: np.ndarray, gallery_labels: np.ndarray, num_classes: int
                 ) -> np.ndarray:
    """(M, N) query-to-gallery distances -> (M, K) minus the distance to each class's nearest
    gallery clip; -inf for classes without gallery clips (or only infinitely far ones)."""
    labels = np.asarray(gallery_labels, dtype=np.int64)
    nearest = np.full((distances.shape[0], num_classes), np.inf)
    for k in np.unique(labels):
        nearest[:, k] = distances[:, labels == k].min(axis=1)
    return -nearest


def nearest_class_scores(
    queries: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """(M, K) scores: minus the squared Euclidean distance to each class's nearest gallery clip.

    queries: (M, D); gallery: (N, D); gallery_labels: (N,) in [0, K). Classes without gallery
    clips score -inf.
    """
    return class_scores(squared_distances(queries, gallery), gallery_labels, num_classes)


def weighted_knn_scores(
    queries: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, num_classes: int,
    k: int = 10, temperature: float = 0.07,
) -> np.ndarray:
    """(M, K) class scores of a weighted k-nearest-neighbour vote on cosine similarity.

    queries: (M, D); gallery: (N, D); gallery_labels: (N,) in [0, K). Each query's k most similar
    gallery clips (k capped at N) vote for their class with weight exp(similarity / temperature)
    (Wu et al., 2018, the usual probe of self-supervised features); a class no neighbour belongs
    to scores 0.
    """
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    similarity = q @ g.T  # (M, N)
    k = min(k, g.shape[0])
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]  # (M, k)
    weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / temperature)
    labels = np.asarray(gallery_labels, dtype=np.int64)[nearest]  # (M, k)
    scores = np.zeros((q.shape[0], num_classes))
    np.add.at(scores, (np.arange(q.shape[0])[:, None], labels), weights)
    return scores
