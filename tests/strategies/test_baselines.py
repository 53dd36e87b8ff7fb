"""Baselines: Random, First, Entropy, Epistemic and CoreSet on small constructed pools."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import CoreSet, Entropy, Epistemic, First, ForegroundRandom, Random, SelectionError


def test_random_is_a_seeded_permutation():
    pool = np.zeros((50, 3))
    picks = Random().select(pool, budget=10, seed=7)
    assert len(set(picks)) == 10 and all(0 <= i < 50 for i in picks)
    assert Random().select(pool, budget=10, seed=7) == picks
    assert Random().select(pool, budget=10, seed=8) != picks
    assert sorted(Random().select(pool, budget=50, seed=7)) == list(range(50))


def test_first_takes_pool_order():
    assert First().select(np.zeros((6, 2)), budget=4) == [0, 1, 2, 3]


@pytest.mark.parametrize("strategy_class", [Entropy, Epistemic])
def test_score_rules_take_the_top_scores_in_order_ties_by_index(strategy_class):
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.7])
    assert strategy_class().select(np.zeros((6, 2)), budget=4, uncertainty=scores) == [1, 3, 5, 2]


@pytest.mark.parametrize("strategy_class", [Entropy, Epistemic])
def test_score_rules_require_uncertainty(strategy_class):
    with pytest.raises(SelectionError, match="uncertainty"):
        strategy_class().select(np.zeros((6, 2)), budget=2)


def test_coreset_picks_the_point_farthest_from_the_labeled_set_first():
    pool = np.arange(1.0, 11.0)[:, None]  # points 1..10 on a line, index = value - 1
    labeled = np.array([[0.0]])
    picks = CoreSet().select(pool, budget=2, labeled_embeddings=labeled)
    # 10 is farthest from 0; then 5 is farthest from both 0 and 10.
    assert list(pool[picks, 0]) == [10.0, 5.0]


def test_coreset_greedy_covers_separated_groups_before_revisiting_one():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    membership = np.repeat(np.arange(4), 10)
    pool = centres[membership] + rng.normal(scale=0.5, size=(40, 2))
    labeled = centres[:1] + 0.1
    picks = CoreSet().select(pool, budget=3, labeled_embeddings=labeled)
    assert sorted(membership[picks]) == [1, 2, 3]  # group 0 is already covered by the labeled volume


def test_coreset_without_labels_starts_farthest_from_the_pool_mean():
    pool = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [8.0, 8.0], [1.0, 1.0]])
    picks = CoreSet(standardise=False).select(pool, budget=2)
    assert picks[0] == 3
    assert picks[1] == 0  # farthest from (8, 8)


def test_coreset_random_start_is_seeded():
    pool = np.random.default_rng(0).normal(size=(30, 4))
    coreset = CoreSet(start="random")
    assert coreset.select(pool, budget=5, seed=1) == coreset.select(pool, budget=5, seed=1)
    assert len({coreset.select(pool, budget=1, seed=s)[0] for s in range(8)}) > 1


def test_coreset_fills_the_budget_from_duplicates():
    picks = CoreSet().select(np.ones((4, 3)), budget=3, labeled_embeddings=np.ones((2, 3)))
    assert len(set(picks)) == 3


def test_coreset_standardise_option_changes_the_metric():
    # Dimension 1 has a far larger raw scale; standardised, dimension 0's outlier is the farthest point.
    pool = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 100.0], [0.0, 110.0], [0.1, 90.0], [0.2, 5.0]])
    labeled = np.zeros((1, 2))
    assert CoreSet(standardise=False).select(pool, budget=1, labeled_embeddings=labeled) == [3]
    assert CoreSet(standardise=True).select(pool, budget=1, labeled_embeddings=labeled) == [1]


def test_coreset_rejects_unknown_start():
    with pytest.raises(SelectionError, match="start"):
        CoreSet(start="centre")


def test_fg_random_picks_only_volumes_with_foreground_while_there_are_enough():
    scores = np.array([0.0, 0.2, 0.0, 0.01, 0.0, 0.5, 0.0, 0.3])
    with_foreground = {1, 3, 5, 7}
    for seed in range(10):
        picks = ForegroundRandom().select(np.zeros((8, 2)), budget=3, uncertainty=scores, seed=seed)
        assert len(set(picks)) == 3 and set(picks) <= with_foreground
    # Uniform among them, not by score size: over seeds every foreground volume leads at times.
    leaders = {ForegroundRandom().select(np.zeros((8, 2)), budget=1, uncertainty=scores, seed=s)[0] for s in range(40)}
    assert leaders == with_foreground


def test_fg_random_tops_up_with_random_others_after_every_foreground_volume():
    scores = np.array([0.0, 0.0, 0.4, 0.0, 0.0, 0.1])
    picks = ForegroundRandom().select(np.zeros((6, 2)), budget=4, uncertainty=scores, seed=3)
    assert set(picks[:2]) == {2, 5} and len(set(picks)) == 4 and not set(picks[2:]) & {2, 5}
    assert ForegroundRandom().select(np.zeros((6, 2)), budget=4, uncertainty=scores, seed=3) == picks
    assert len({tuple(ForegroundRandom().select(np.zeros((6, 2)), budget=4, uncertainty=scores, seed=s)) for s in range(8)}) > 1
    # No volume with foreground at all: plain seeded random.
    none = ForegroundRandom().select(np.zeros((6, 2)), budget=6, uncertainty=np.zeros(6), seed=1)
    assert sorted(none) == list(range(6))


def test_fg_random_requires_its_score():
    with pytest.raises(SelectionError, match="uncertainty"):
        ForegroundRandom().select(np.zeros((6, 2)), budget=2)
