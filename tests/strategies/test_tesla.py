"""TESLA on constructed pools: well-separated Gaussian clusters with known membership."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans

from strategies import TESLA, SelectionError, reduce, standardise
from strategies.diversity import make_clusterer

CLUSTER_SIZES = (30, 20, 14, 8)


def gaussian_clusters(sizes=CLUSTER_SIZES, dims=6, spread=0.3, seed=0):
    """Pool (N, D) of len(sizes) tight clusters far apart, shuffled; returns (embeddings, cluster id per row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dims)) * 20
    membership = np.repeat(np.arange(len(sizes)), sizes)
    embeddings = centres[membership] + rng.normal(scale=spread, size=(membership.size, dims))
    order = rng.permutation(membership.size)
    return embeddings[order], membership[order]


def test_cold_start_takes_the_member_nearest_each_cluster_centre_largest_cluster_first():
    embeddings, membership = gaussian_clusters()
    picks = TESLA().select(embeddings, budget=4)

    # Largest cluster first, one pick per cluster.
    assert list(membership[picks]) == [0, 1, 2, 3]
    # For well-separated clusters the k-means centroid is the cluster mean (in standardised space).
    scaled = standardise(embeddings)
    for pick in picks:
        members = np.flatnonzero(membership == membership[pick])
        distance = np.linalg.norm(scaled[members] - scaled[members].mean(axis=0), axis=1)
        assert pick == members[np.argmin(distance)]


def test_with_uncertainty_takes_the_most_uncertain_member_of_each_cluster_ranked_by_uncertainty():
    embeddings, membership = gaussian_clusters()
    uncertainty = np.random.default_rng(1).uniform(size=membership.size)
    # The globally most uncertain volumes all sit in one cluster: pure top-k would take only that cluster.
    uncertainty[membership == 2] += 1.0

    picks = TESLA().select(embeddings, budget=4, uncertainty=uncertainty)

    expected = [np.flatnonzero(membership == c)[np.argmax(uncertainty[membership == c])] for c in range(4)]
    assert sorted(picks) == sorted(expected)
    assert list(uncertainty[picks]) == sorted(uncertainty[picks], reverse=True)
    assert membership[picks[0]] == 2


def test_same_seed_same_result_on_an_ambiguous_pool():
    embeddings = np.random.default_rng(3).normal(size=(120, 5))  # no cluster structure: k-means depends on seed
    runs = {seed: TESLA(n_init=1).select(embeddings, budget=7, seed=seed) for seed in range(6)}
    assert runs[0] == TESLA(n_init=1).select(embeddings, budget=7, seed=0)
    assert len({tuple(r) for r in runs.values()}) > 1


def test_fewer_distinct_points_than_budget_fills_round_robin_without_warnings():
    distinct = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    counts = (5, 3, 2)
    embeddings = np.repeat(distinct, counts, axis=0)
    value_of = np.repeat(np.arange(3), counts)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. sklearn's "fewer distinct clusters than n_clusters"
        picks = TESLA().select(embeddings, budget=6)

    assert len(picks) == len(set(picks)) == 6
    # First round: one volume per distinct value, largest group first; then the second members, ...
    assert list(value_of[picks]) == [0, 1, 2, 0, 1, 2]
    assert TESLA().select(embeddings, budget=6) == picks


def test_fill_rounds_with_uncertainty_are_ranked_by_uncertainty():
    embeddings = np.repeat([[0.0, 0.0], [10.0, 0.0]], 3, axis=0)  # two distinct points, three copies each
    uncertainty = np.array([0.9, 0.1, 0.2, 0.5, 0.8, 0.4])
    # Round 1: the top of each cluster (0.9, 0.8); round 2: the runners-up (0.5 > 0.2); round 3: 0.4 > 0.1.
    assert TESLA().select(embeddings, budget=6, uncertainty=uncertainty) == [0, 4, 3, 2, 5, 1]


def test_all_identical_embeddings_still_fill_the_budget():
    picks = TESLA().select(np.ones((5, 3)), budget=3, uncertainty=np.array([0.1, 0.5, 0.2, 0.9, 0.3]))
    assert picks == [3, 1, 4]


def test_standardise_option_lets_a_small_scale_dimension_decide_the_clusters():
    rng = np.random.default_rng(0)
    group = np.repeat([0, 1], 40)
    # Dimension 0 separates two groups on a small scale; dimension 1 is wide uniform noise.
    embeddings = np.column_stack([group + rng.normal(scale=0.01, size=80), rng.uniform(0, 1000, size=80)])

    scaled_picks = TESLA(standardise=True).select(embeddings, budget=2)
    raw_picks = TESLA(standardise=False).select(embeddings, budget=2)

    assert sorted(group[scaled_picks]) == [0, 1]
    # Unscaled, k-means splits the wide noise dimension: the picks lie at its two ends instead.
    assert abs(embeddings[raw_picks[0], 1] - embeddings[raw_picks[1], 1]) > 300
    assert raw_picks != scaled_picks


def test_pca_option_clusters_in_the_reduced_space():
    embeddings, _ = gaussian_clusters(dims=8)
    with_pca = TESLA(pca_dims=2).select(embeddings, budget=4)
    by_hand = TESLA(standardise=False).select(reduce(standardise(embeddings), 2), budget=4)
    assert with_pca == by_hand


def test_auto_cluster_method_switches_to_minibatch_for_large_pools():
    assert isinstance(make_clusterer("auto", 5, 6000, seed=0, n_init=3), MiniBatchKMeans)
    assert isinstance(make_clusterer("auto", 5, 500, seed=0, n_init=3), KMeans)
    assert not isinstance(make_clusterer("auto", 5, 500, seed=0, n_init=3), MiniBatchKMeans)
    assert isinstance(make_clusterer("minibatch", 5, 500, seed=0, n_init=3), MiniBatchKMeans)
    assert isinstance(make_clusterer("auto", 5, 600, seed=0, n_init=3, minibatch_threshold=500), MiniBatchKMeans)


def test_large_pool_goes_through_minibatch_kmeans_and_still_covers_every_cluster():
    sizes = (2400, 1800, 1200, 600, 300)
    embeddings, membership = gaussian_clusters(sizes=sizes, dims=4)
    uncertainty = np.random.default_rng(2).uniform(size=membership.size)

    start = time.perf_counter()
    cold = TESLA(n_init=3).select(embeddings, budget=5)
    tandem = TESLA(n_init=3).select(embeddings, budget=5, uncertainty=uncertainty)
    elapsed = time.perf_counter() - start

    assert list(membership[cold]) == [0, 1, 2, 3, 4]
    expected = {np.flatnonzero(membership == c)[np.argmax(uncertainty[membership == c])] for c in range(5)}
    assert set(tandem) == expected
    assert elapsed < 20, f"MiniBatchKMeans path took {elapsed:.1f} s on 6,300 points"


def test_invalid_options_are_rejected_with_the_option_name():
    with pytest.raises(SelectionError, match="cluster_method"):
        TESLA(cluster_method="spectral")
    with pytest.raises(SelectionError, match="pca_dims"):
        TESLA(pca_dims=-1)
    with pytest.raises(SelectionError, match="n_init"):
        TESLA(n_init=0)


def test_config_reflects_options():
    tesla = TESLA(cluster_method="kmeans", standardise=False, pca_dims=4)
    assert tesla.config() == {
        "cluster_method": "kmeans",
        "standardise": False,
        "pca_dims": 4,
        "n_init": 10,
        "minibatch_threshold": 5000,
        "block_sizes": [],
    }
    assert TESLA(**tesla.config()).config() == tesla.config()


def test_block_sizes_let_a_small_block_decide_the_clusters():
    group = np.repeat([0, 1], 40)
    covered = {"balanced": 0, "unbalanced": 0}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        # One informative dimension next to a block of 60 noise dimensions: per-dimension standardisation
        # alone lets the noise block decide; balanced blocks weigh the informative dimension as much as it.
        embeddings = np.column_stack([rng.normal(size=(80, 60)), group + rng.normal(scale=0.05, size=80)])
        for name, sizes in (("balanced", [60, 1]), ("unbalanced", [])):
            picks = TESLA(block_sizes=sizes).select(embeddings, budget=2)
            covered[name] += sorted(group[picks]) == [0, 1]
    assert covered["balanced"] == 5
    assert covered["unbalanced"] < 5


def test_block_sizes_are_checked():
    assert TESLA(block_sizes=(60, 1)).config()["block_sizes"] == [60, 1]
    with pytest.raises(SelectionError, match="another layout"):
        TESLA(block_sizes=[60, 2]).select(np.zeros((5, 61)), budget=2)
    with pytest.raises(SelectionError, match="block size"):
        TESLA(block_sizes=[60, 0])
    with pytest.raises(SelectionError, match="block_sizes"):
        TESLA(block_sizes=61)


def test_cluster_is_the_partition_select_draws_one_volume_from_per_cluster():
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0]])
    membership = np.repeat(np.arange(3), 8)
    pool = centres[membership] + rng.normal(scale=0.5, size=(24, 2))
    tesla = TESLA()
    labels = tesla.cluster(pool, 3, seed=1)
    assert labels.shape == (24,)
    assert len({(m, c) for m, c in zip(membership, labels)}) == 3  # the three groups, whatever the label numbers
    picks = tesla.select(pool, 3, seed=1)
    assert sorted(labels[picks]) == [0, 1, 2]  # one pick per cluster of that same partition
    with pytest.raises(SelectionError, match="n_clusters"):
        tesla.cluster(pool, 0)


def test_each_pick_names_its_cluster_and_that_clusters_size():
    embeddings, membership = gaussian_clusters()
    uncertainty = np.random.default_rng(2).uniform(size=membership.size)
    for scores in (None, uncertainty):
        picks, reasons = TESLA().select_with_reasons(embeddings, budget=4, uncertainty=scores)
        assert picks == TESLA().select(embeddings, budget=4, uncertainty=scores)
        # Clusters are numbered by size, largest first, and the size is the true cluster's.
        for pick, reason in zip(picks, reasons):
            true_size = int((membership == membership[pick]).sum())
            assert reason["cluster_size"] == true_size
            assert reason["cluster"] == sorted(CLUSTER_SIZES, reverse=True).index(true_size)
            assert ("score" in reason) == (scores is not None)
            if scores is not None:
                assert reason["score"] == pytest.approx(uncertainty[pick])
