"""TESLA, TandEm Selective LAbeling (docs/design.md, "TESLA"): diversity first, then prompt-based uncertainty.

Our interpretation of the method (the paper's code is not public):

- Embeddings are standardised per dimension (``standardise``), given equal weight per block of the
  embedding (``block_sizes``, see ``features.balance_blocks``) and optionally PCA-reduced (``pca_dims``),
  all fitted on the unlabeled pool.
- The pool is partitioned into k = budget k-means clusters (scikit-learn ``KMeans``, or
  ``MiniBatchKMeans`` for large pools; ``cluster_method``), seeded with the selection seed.
- Cold start (no uncertainty yet): from each cluster, the member nearest its centroid. Picks are ranked
  by cluster size, largest first: the largest cluster stands for the most volumes, so if annotators
  label only the head of the queue, the labels still cover as much of the pool as possible.
- With uncertainty U(v) (``strategies.uncertainty.prompt_uncertainty``): from each cluster, its most
  uncertain member; picks are ranked by U descending.
- If the pool has fewer distinct embeddings than the budget (duplicates), k is capped at the number of
  distinct points and the remaining picks are filled round-robin: each cluster's second-best member,
  then third-best, ... (see ``diversity.round_robin``). Ties break by pool index, so the result depends
  only on the inputs and the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from strategies.base import Pool, Strategy, _check_pool, check_int_option, score_reason
from strategies.diversity import DEFAULT_MINIBATCH_THRESHOLD, check_cluster_method, partition, round_robin
from strategies.features import check_block_sizes, prepare


class TESLA(Strategy):
    """Tandem diversity + uncertainty selection; see the module docstring for the exact rule."""

    name = "tesla"
    score = "prompt_uncertainty"  # cold start: the rule runs unscored (pure diversity), see the module docstring
    description = (
        "TESLA (tandem selective labeling): groups the unlabeled volumes into as many clusters as "
        "volumes requested, using k-means on standardised backbone embeddings, and takes one volume from "
        "each cluster so the batch covers the whole variety of the data. Before any prompt model exists "
        "it takes the volume nearest each cluster centre, largest cluster first; once the model has "
        "scored the pool it takes each cluster's volume on which the diversified prompts disagree most, "
        "most uncertain first."
    )

    def __init__(
        self,
        cluster_method: str = "auto",
        standardise: bool = True,
        pca_dims: int = 0,
        n_init: int = 10,
        minibatch_threshold: int = DEFAULT_MINIBATCH_THRESHOLD,
        block_sizes: Sequence[int] = (),
    ) -> None:
        """cluster_method: "auto" (MiniBatchKMeans above ``minibatch_threshold`` pool volumes, else KMeans),
        "kmeans" or "minibatch". standardise: scale each embedding dimension to unit variance first.
        pca_dims: keep this many principal components (0 = no PCA). n_init: k-means restarts.
        block_sizes: sizes of the embedding's consecutive blocks (``models.embedding.embedding_blocks``);
        each block then weighs the same in distances. Empty (default): each dimension weighs the same."""
        self.cluster_method = check_cluster_method(cluster_method)
        self.standardise = bool(standardise)
        self.pca_dims = check_int_option("pca_dims", pca_dims, 0)
        self.block_sizes = check_block_sizes(block_sizes)
        self.n_init = check_int_option("n_init", n_init, 1)
        self.minibatch_threshold = check_int_option("minibatch_threshold", minibatch_threshold, 1)

    def config(self) -> dict[str, Any]:
        return {
            "cluster_method": self.cluster_method,
            "standardise": self.standardise,
            "pca_dims": self.pca_dims,
            "n_init": self.n_init,
            "minibatch_threshold": self.minibatch_threshold,
            "block_sizes": list(self.block_sizes),
        }

    def cluster(self, embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
        """The cluster of each pool volume, (N, D) -> (N,) ints: the partition ``select`` takes one volume from per
        cluster (same feature preparation, clustering and seed; ``select`` uses ``n_clusters = budget``)."""
        pool = _check_pool(embeddings, None, None)
        _, labels, _ = self._partition(pool.embeddings, check_int_option("n_clusters", n_clusters, 1), seed)
        return labels

    def _partition(self, embeddings: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prepared features, cluster label per volume, cluster centres)."""
        features = prepare(
            embeddings, standardise_dims=self.standardise, pca_dims=self.pca_dims, block_sizes=self.block_sizes
        )
        labels, centres = partition(
            features,
            n_clusters,
            method=self.cluster_method,
            seed=seed,
            n_init=self.n_init,
            minibatch_threshold=self.minibatch_threshold,
        )
        return features, labels, centres

    def _rank(self, pool: Pool, n_picks: int, seed: int) -> list[int]:
        return self._rank_with_reasons(pool, n_picks, seed)[0]

    def _rank_with_reasons(self, pool: Pool, n_picks: int, seed: int) -> tuple[list[int], list[dict[str, Any]]]:
        """The picks, and for each its cluster (numbered by size, 0 the largest), that cluster's size and the pick's
        uncertainty when it ranked by one: the "why" of a TESLA pick."""
        features, labels, centres = self._partition(pool.embeddings, n_picks, seed)
        clusters = [np.flatnonzero(labels == c) for c in range(len(centres))]
        clusters = [members for members in clusters if members.size]
        scores = pool.uncertainty

        if scores is None:
            # Within a cluster: nearest the centroid first (np.lexsort: last key is primary, index breaks ties).
            ranked = []
            for members in clusters:
                centre = centres[labels[members[0]]]
                distance = np.linalg.norm(features[members] - centre, axis=1)
                ranked.append(members[np.lexsort((members, distance))])
            ranked.sort(key=lambda m: (-m.size, int(m[0])))  # largest cluster first
            picks = round_robin(ranked, n_picks)
        else:
            # Within a cluster: most uncertain first; rounds are ordered by uncertainty too.
            ranked = [members[np.lexsort((members, -scores[members]))] for members in clusters]
            ranked.sort(key=lambda m: (-scores[m[0]], int(m[0])))
            picks = round_robin(ranked, n_picks, score=scores)
        by_size = sorted(ranked, key=lambda m: (-m.size, int(m[0])))
        number = {int(labels[members[0]]): (k, int(members.size)) for k, members in enumerate(by_size)}
        reasons = []
        for pick in picks:
            cluster, size = number[int(labels[pick])]
            reasons.append({"cluster": cluster, "cluster_size": size} | score_reason(pool, int(pick)))
        return [int(i) for i in picks], reasons
