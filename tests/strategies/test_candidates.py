"""The stratified candidate subset (strategies/candidates.py) on pools with known clusters."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import SelectionError
from strategies.candidates import proportional_quotas, stratified_subset
from tests.strategies.test_tesla import gaussian_clusters

SIZES = (300, 200, 60, 40)


def test_the_subset_has_the_asked_size_and_each_cluster_in_proportion_within_rounding():
    embeddings, membership = gaussian_clusters(sizes=SIZES)
    picks = stratified_subset(embeddings, 60, strata=4, seed=3)
    assert len(picks) == 60 and len(set(picks.tolist())) == 60
    assert list(picks) == sorted(picks)
    taken = np.bincount(membership[picks], minlength=len(SIZES))
    exact = np.array(SIZES) * 60 / sum(SIZES)  # 30, 20, 6, 4
    assert np.all(np.abs(taken - exact) < 1), taken


def test_an_uneven_split_is_within_one_of_each_exact_share():
    embeddings, membership = gaussian_clusters(sizes=SIZES)
    picks = stratified_subset(embeddings, 37, strata=4, seed=0)
    taken = np.bincount(membership[picks], minlength=len(SIZES))
    exact = np.array(SIZES) * 37 / sum(SIZES)
    assert taken.sum() == 37
    assert np.all(np.abs(taken - exact) < 1), (taken, exact)


def test_the_subset_depends_only_on_the_inputs_and_the_seed():
    embeddings, _ = gaussian_clusters(sizes=SIZES)
    first = stratified_subset(embeddings, 50, strata=4, seed=7)
    assert np.array_equal(first, stratified_subset(embeddings, 50, strata=4, seed=7))
    assert not np.array_equal(first, stratified_subset(embeddings, 50, strata=4, seed=8))


@pytest.mark.parametrize("size", [0, 600, 10_000])
def test_the_whole_pool_when_the_setting_is_0_or_not_smaller_than_the_pool(size):
    embeddings, _ = gaussian_clusters(sizes=SIZES)
    assert np.array_equal(stratified_subset(embeddings, size), np.arange(600))


def test_quotas_never_exceed_a_stratum_and_sum_to_the_size():
    counts = [1, 1, 1, 97]
    quotas = proportional_quotas(counts, 50)
    assert quotas.sum() == 50 and np.all(quotas <= counts)
    assert list(proportional_quotas([3, 3, 3], 2)) == [1, 1, 0]  # ties go to the lower stratum


def test_bad_sizes_are_refused_with_a_message():
    embeddings, _ = gaussian_clusters(sizes=SIZES)
    with pytest.raises(SelectionError, match="size must be >= 0"):
        stratified_subset(embeddings, -1)
    with pytest.raises(SelectionError, match="cannot take 5 of 3"):
        proportional_quotas([1, 2], 5)
    with pytest.raises(SelectionError, match=r"\(N, D\)"):
        stratified_subset(np.zeros(5), 2)
