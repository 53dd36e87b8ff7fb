"""The candidate subset a selection round scores first: a random sample of the pool, stratified by TESLA's clusters
(docs/design.md, "Candidate subsets").

Pool-based active learning on large pools commonly scores a random subset of the unlabeled pool each round instead of
the whole pool; we draw that subset stratified by TESLA's k-means clusters over the backbone embeddings, so every
region of the pool is represented in proportion to its size, and a rule that takes one volume per cluster still finds
each region's volumes among the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.base import SelectionError, check_int_option
from strategies.tesla import TESLA

#: Clusters the pool is stratified by (capped at the subset size and at the pool's distinct embeddings).
DEFAULT_STRATA = 32


def proportional_quotas(counts: Sequence[int], size: int) -> np.ndarray:
    """Split ``size`` over strata of ``counts`` members in proportion to their size (largest remainder: each stratum
    gets the floor of its exact share, the leftover goes to the largest fractional parts, ties to the lower stratum).
    Every quota is within 1 of its exact share and never above its stratum's count; ``size`` <= sum(counts)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= size <= total:
        raise SelectionError(f"cannot take {size} of {total} volumes")
    exact = counts * size / total if total else np.zeros(len(counts))
    quotas = np.floor(exact).astype(np.int64)
    leftover = size - int(quotas.sum())
    order = np.lexsort((np.arange(len(counts)), -(exact - quotas)))  # largest fractional part first
    quotas[order[:leftover]] += 1
    return quotas


def stratified_subset(
    embeddings: np.ndarray,
    size: int,
    *,
    block_sizes: Sequence[int] = (),
    strata: int = DEFAULT_STRATA,
    seed: int = 0,
) -> np.ndarray:
    """Pool indices (sorted) of a subset of ``size`` volumes, drawn at random within TESLA's clusters in proportion to
    each cluster's size; the whole pool when ``size`` is 0 or at least the pool size. The clustering is TESLA's own
    (:meth:`strategies.tesla.TESLA.cluster`: same feature preparation and k-means, ``strata`` clusters), so the result
    depends only on the embeddings, the sizes and ``seed``."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise SelectionError(f"embeddings must be (N, D), not shape {embeddings.shape}")
    size = check_int_option("size", size, 0)
    strata = check_int_option("strata", strata, 1)
    n = embeddings.shape[0]
    if size == 0 or size >= n:
        return np.arange(n)
    labels = TESLA(block_sizes=block_sizes).cluster(embeddings, min(strata, size), seed=seed)
    clusters = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    quotas = proportional_quotas([len(members) for members in clusters], size)
    rng = np.random.default_rng(seed)
    picks = [rng.choice(members, quota, replace=False) for members, quota in zip(clusters, quotas) if quota]
    return np.sort(np.concatenate(picks))
