"""Baseline selection rules (docs/design.md, "Baselines"): random, first, entropy, epistemic (BALD), core-set and foreground-aware random.

The score-based rules take the score from the caller as ``uncertainty``: the model side computes it
(``strategies.uncertainty.entropy`` of the mean prediction, ``strategies.uncertainty.bald`` of
MC-dropout samples) and reduces it to one number per volume. Rules that do not use a score ignore it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from strategies.base import ColdStart, Pool, SelectionError, Strategy, check_int_option
from strategies.diversity import k_center_greedy
from strategies.features import check_block_sizes, prepare


class Random(Strategy):
    """A seeded random permutation of the pool."""

    name = "random"
    description = (
        "Random: picks unlabeled volumes uniformly at random (reproducible for a given selection seed). "
        "The reference every other strategy must beat."
    )
    unscored_ranking = "random"

    def _rank(self, pool: Pool, n_picks: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).permutation(pool.embeddings.shape[0])[:n_picks]


class First(Strategy):
    """The pool in the order given (MONAI Label's stock "First")."""

    name = "first"
    description = (
        "First: takes unlabeled volumes in pool order (as listed by the datastore), like MONAI Label's "
        "stock First strategy. Useful for debugging and as a naive baseline."
    )
    unscored_ranking = "pool order"

    def _rank(self, pool: Pool, n_picks: int, seed: int) -> np.ndarray:
        return np.arange(n_picks)


class _TopScore(Strategy):
    """Highest ``uncertainty`` first; ties break by pool index. Needs a model's scores: random at a cold start."""

    cold_start = ColdStart.RANDOM

    def _rank(self, pool: Pool, n_picks: int, seed: int) -> np.ndarray:
        assert pool.uncertainty is not None  # guaranteed by requires_uncertainty
        order = np.lexsort((np.arange(pool.uncertainty.size), -pool.uncertainty))
        return order[:n_picks]


class Entropy(_TopScore):
    """Top predictive entropy: the caller passes the entropy of the mean prediction per volume."""

    name = "entropy"
    score = "entropy"
    description = (
        "Entropy: picks the volumes whose mean predicted segmentation is least certain (highest entropy "
        "of the averaged class probabilities over the predicted foreground). Needs a trained model's "
        "scores; ignores diversity, so it can pick many similar volumes."
    )


class Epistemic(_TopScore):
    """Top epistemic uncertainty: the caller passes a BALD / MC-dropout mutual information per volume."""

    name = "epistemic"
    score = "epistemic"
    description = (
        "Epistemic (BALD): picks the volumes where stochastic forward passes (MC dropout) disagree most, "
        "measured by the mutual information between prediction and model parameters. Needs a trained "
        "model's scores; ignores diversity."
    )


class ForegroundRandom(Strategy):
    """Uniformly random among the volumes with a positive foreground score, then random among the others.

    ``uncertainty`` is each volume's foreground score (N,): with a model, the fraction of voxels its mean prediction
    calls tumour (``strategies.uncertainty.volume_scores``'s ``"foreground"``); at a cold start, the fraction of the
    body the frozen backbone calls liver (``strategies.features.organ_fraction``). Only ``score > 0`` matters, not its
    size: the rule is random sampling restricted to volumes that show what is to be segmented, the strong baseline
    of the nnActive benchmark (Lüth et al.). When fewer volumes than the budget have foreground, the rest of the
    budget is random among the others, after all foreground ones.
    """

    name = "fg_random"
    score = "foreground"
    cold_start = ColdStart.ORGAN_FRACTION
    description = (
        "Foreground random: picks unlabeled volumes uniformly at random, but only among those where the current "
        "model predicts tumour (before any model exists: where the pre-trained backbone finds liver), so no label "
        "is spent on a volume without the structures to segment. Reproducible for a given selection seed. A strong "
        "baseline from the nnActive benchmark."
    )

    def _rank(self, pool: Pool, n_picks: int, seed: int) -> np.ndarray:
        assert pool.uncertainty is not None  # guaranteed by requires_uncertainty
        order = np.random.default_rng(seed).permutation(pool.uncertainty.size)
        # A stable sort keeps the random order within each group: foreground volumes first, then the others.
        has_foreground = pool.uncertainty[order] > 0
        return order[np.argsort(~has_foreground, kind="stable")][:n_picks]


START_RULES = ("farthest_from_mean", "random")


class CoreSet(Strategy):
    """Greedy k-center (core-set) selection on standardised embeddings.

    Centres are the labeled volumes plus the volumes picked so far; each pick is the pool volume
    farthest from its nearest centre. With no labeled volume the first pick follows ``start``:
    "farthest_from_mean" (default; the pool volume farthest from the pool mean, deterministic) or
    "random" (seeded). Standardisation, block balancing and PCA are fitted on pool and labeled volumes
    together, so both live in the same space.
    """

    name = "coreset"
    description = (
        "Core-set: greedy k-center selection on the backbone embeddings. Each pick is the unlabeled "
        "volume farthest from everything already labeled or picked, so the labeled set covers the "
        "embedding space with the smallest radius. Needs no model; tends to favour outliers."
    )

    def __init__(
        self,
        standardise: bool = True,
        pca_dims: int = 0,
        start: str = "farthest_from_mean",
        block_sizes: Sequence[int] = (),
    ) -> None:
        """standardise: scale each dimension to unit variance first. pca_dims: keep this many principal
        components (0 = no PCA). start: first pick without labeled volumes, one of START_RULES.
        block_sizes: sizes of the embedding's consecutive blocks (``models.embedding.embedding_blocks``);
        each block then weighs the same in distances. Empty (default): each dimension weighs the same."""
        if start not in START_RULES:
            raise SelectionError(f"start must be one of {', '.join(START_RULES)}; got {start!r}")
        self.standardise = bool(standardise)
        self.pca_dims = check_int_option("pca_dims", pca_dims, 0)
        self.start = start
        self.block_sizes = check_block_sizes(block_sizes)

    def config(self) -> dict[str, Any]:
        return {
            "standardise": self.standardise,
            "pca_dims": self.pca_dims,
            "start": self.start,
            "block_sizes": list(self.block_sizes),
        }

    def _rank(self, pool: Pool, n_picks: int, seed: int) -> list[int]:
        n_pool = pool.embeddings.shape[0]
        both = prepare(
            np.vstack([pool.embeddings, pool.labeled]),
            standardise_dims=self.standardise,
            pca_dims=self.pca_dims,
            block_sizes=self.block_sizes,
        )
        features, labeled = both[:n_pool], both[n_pool:]
        if labeled.shape[0] > 0:
            return k_center_greedy(features, n_picks, centres=labeled)
        if self.start == "random":
            first = int(np.random.default_rng(seed).integers(n_pool))
        else:
            first = int(np.argmax(np.linalg.norm(features - features.mean(axis=0), axis=1)))
        return k_center_greedy(features, n_picks, first=first)
