"""Diversity building blocks: k-means partitions of the pool and round-robin picking across clusters.

Clustering uses scikit-learn: ``KMeans`` for ordinary pools and ``MiniBatchKMeans`` for large ones, where
full Lloyd iterations over every volume cost more than they add.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min

from strategies.base import SelectionError

CLUSTER_METHODS = ("auto", "kmeans", "minibatch")
# Above this pool size "auto" switches to MiniBatchKMeans.
DEFAULT_MINIBATCH_THRESHOLD = 5000
_MINIBATCH_BATCH_SIZE = 1024


def check_cluster_method(method: str) -> str:
    """Return ``method`` if it is one of CLUSTER_METHODS, else raise SelectionError."""
    if method not in CLUSTER_METHODS:
        raise SelectionError(f"cluster_method must be one of {', '.join(CLUSTER_METHODS)}; got {method!r}")
    return method


def make_clusterer(
    method: str,
    n_clusters: int,
    n_samples: int,
    *,
    seed: int,
    n_init: int,
    minibatch_threshold: int = DEFAULT_MINIBATCH_THRESHOLD,
) -> KMeans | MiniBatchKMeans:
    """The scikit-learn estimator for ``method``: "kmeans", "minibatch", or "auto" (MiniBatchKMeans when
    n_samples > minibatch_threshold, else KMeans). Seeded with ``seed`` so results are reproducible."""
    check_cluster_method(method)
    use_minibatch = method == "minibatch" or (method == "auto" and n_samples > minibatch_threshold)
    if use_minibatch:
        return MiniBatchKMeans(
            n_clusters=n_clusters, n_init=n_init, random_state=seed, batch_size=_MINIBATCH_BATCH_SIZE
        )
    return KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)


def count_distinct(X: np.ndarray) -> int:
    """Number of distinct rows of X (N, D)."""
    return int(np.unique(X, axis=0).shape[0])


def partition(
    X: np.ndarray,
    n_clusters: int,
    *,
    method: str,
    seed: int,
    n_init: int,
    minibatch_threshold: int = DEFAULT_MINIBATCH_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Partition the rows of X (N, D) into at most ``n_clusters`` k-means clusters.

    k is capped at the number of distinct rows: asking k-means for more clusters than distinct points
    only yields duplicate centres. Returns (labels (N,) int, centres (k, D)); every label in 0..k-1
    names a row of ``centres``, though a cluster may end up empty.
    """
    k = min(n_clusters, count_distinct(X))
    clusterer = make_clusterer(
        method, k, X.shape[0], seed=seed, n_init=n_init, minibatch_threshold=minibatch_threshold
    )
    clusterer.fit(X)
    return clusterer.predict(X), clusterer.cluster_centers_


def round_robin(
    ranked_members: Sequence[np.ndarray], n_picks: int, score: np.ndarray | None = None
) -> list[int]:
    """Take the 1st member of every cluster, then the 2nd of every cluster, ... until ``n_picks``.

    ranked_members: one index array per cluster, clusters in rank order, each cluster's members best
    first. score: optional (N,) array; if given, each round is ordered by score descending (ties keep
    cluster rank), otherwise by cluster rank. The first round is the one-per-cluster selection; later
    rounds fill a budget larger than the number of non-empty clusters (e.g. a pool with fewer distinct
    points than the budget) while still spreading picks over clusters.
    """
    picks: list[int] = []
    depth = 0
    while len(picks) < n_picks:
        round_picks = [int(m[depth]) for m in ranked_members if depth < len(m)]
        if not round_picks:
            break
        if score is not None:
            round_picks.sort(key=lambda i: -score[i])  # list.sort is stable: ties keep cluster rank
        picks.extend(round_picks[: n_picks - len(picks)])
        depth += 1
    return picks


def k_center_greedy(
    X: np.ndarray, n_picks: int, *, centres: np.ndarray | None = None, first: int | None = None
) -> list[int]:
    """Greedy k-center (core-set) selection over the rows of X (N, D).

    Repeatedly picks the row farthest (Euclidean) from its nearest current centre, where the centres are
    ``centres`` (M, D; e.g. the labeled volumes) plus the rows picked so far. With no centres the first
    pick is ``first``, which is then required. Ties break by lowest index; rows already picked are never
    picked again, so duplicates of a centre still fill a budget. Returns ``n_picks`` indices in pick order.
    """
    if n_picks > X.shape[0]:
        raise SelectionError(f"cannot pick {n_picks} distinct rows from {X.shape[0]}")
    has_centres = centres is not None and centres.shape[0] > 0
    if has_centres:
        # Chunked in scikit-learn, so an (N, M) distance matrix never has to fit in memory at once.
        _, nearest_centre = pairwise_distances_argmin_min(X, centres)
    elif first is None:
        raise SelectionError("k-center greedy needs centres or a first pick")
    else:
        nearest_centre = np.full(X.shape[0], np.inf)

    picked = np.zeros(X.shape[0], dtype=bool)
    picks: list[int] = []
    for _ in range(n_picks):
        if picks or has_centres:
            pick = int(np.argmax(np.where(picked, -np.inf, nearest_centre)))
        else:
            pick = int(first)
        picks.append(pick)
        picked[pick] = True
        nearest_centre = np.minimum(nearest_centre, np.linalg.norm(X - X[pick], axis=1))
    return picks
