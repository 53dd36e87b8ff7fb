"""select_round: each rule's declared score and cold start, the one definition the server and the simulator use."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import (
    STRATEGIES,
    TESLA,
    ColdStart,
    Random,
    SelectionError,
    UnknownStrategyError,
    organ_fraction,
    select_round,
)
from strategies.uncertainty import SCORE_METHODS

BLOCKS = (4, 8, 7, 1)  # encoder, organ (7 HU statistics + the organ fraction), body, noise
rng = np.random.default_rng(0)
POOL = rng.normal(size=(10, sum(BLOCKS)))
POOL[:, 4 + 7] = [0.0, 0.2, 0.0, 0.0, 0.3, 0.0, 0.0, 0.1, 0.0, 0.0]  # the organ fraction: liver in 1, 4, 7
SCORES = rng.uniform(size=10)


def test_every_rule_declares_a_known_score_and_cold_start():
    for name, cls in STRATEGIES.items():
        assert set(cls.score_keys()) <= set(SCORE_METHODS), name
        assert isinstance(cls.cold_start, ColdStart)
        assert cls.requires_uncertainty == (cls.score is not None and cls.cold_start is not ColdStart.UNSCORED)
    declared = {name: (cls.score, cls.cold_start) for name, cls in STRATEGIES.items() if cls.score}
    assert declared == {
        "tesla": ("prompt_uncertainty", ColdStart.UNSCORED),
        "entropy": ("entropy", ColdStart.RANDOM),
        "epistemic": ("epistemic", ColdStart.RANDOM),
        "fg_random": ("foreground", ColdStart.ORGAN_FRACTION),
        "clasp_pe": (("class_entropy_2", "class_entropy_1"), ColdStart.RANDOM),
    }


def test_with_scores_each_rule_ranks_by_its_score():
    for name in ("tesla", "entropy", "epistemic", "fg_random"):
        chosen = select_round(name, POOL, 3, block_sizes=BLOCKS, scores=SCORES, seed=2)
        assert chosen.ranked_by == STRATEGIES[name].score
        assert chosen.rule.name == name
        expected = type(chosen.rule)(**chosen.rule.config()).select(POOL, 3, uncertainty=SCORES, seed=2)
        assert chosen.picks == expected
        # each pick carries the score it was ranked by
        assert [r["score"] for r in chosen.reasons] == pytest.approx(list(SCORES[chosen.picks]))
    assert select_round("entropy", POOL, 3, block_sizes=BLOCKS, scores=SCORES).picks == list(np.argsort(-SCORES)[:3])


def test_cold_start_of_tesla_is_its_diversity_rule():
    chosen = select_round("tesla", POOL, 3, block_sizes=BLOCKS, seed=1)
    assert chosen.ranked_by == "diversity" and chosen.rule.config()["block_sizes"] == list(BLOCKS)
    assert chosen.picks == TESLA(block_sizes=BLOCKS).select(POOL, 3, seed=1)
    # unscored: each pick says which cluster it stands for, and no score
    assert sorted(r["cluster"] for r in chosen.reasons) == [0, 1, 2]
    assert sum(r["cluster_size"] for r in chosen.reasons) == len(POOL)
    assert not any("score" in r for r in chosen.reasons)


@pytest.mark.parametrize("name", ["entropy", "epistemic"])
def test_cold_start_of_a_score_only_rule_is_random_with_the_same_seed(name):
    chosen = select_round(name, POOL, 4, block_sizes=BLOCKS, seed=5)
    assert chosen.ranked_by == "random" and chosen.rule.name == "random"
    assert chosen.picks == Random().select(POOL, 4, seed=5)


def test_cold_start_of_fg_random_draws_among_volumes_where_the_backbone_finds_liver():
    np.testing.assert_array_equal(organ_fraction(POOL, BLOCKS), POOL[:, 11])
    for seed in range(6):
        chosen = select_round("fg_random", POOL, 3, block_sizes=BLOCKS, seed=seed)
        assert chosen.ranked_by == "organ_fraction"
        assert sorted(chosen.picks) == [1, 4, 7]


def test_rules_without_a_score_ignore_scores():
    for name, ranking in (("random", "random"), ("first", "pool order"), ("coreset", "diversity")):
        with_scores = select_round(name, POOL, 3, block_sizes=BLOCKS, scores=SCORES, seed=0)
        assert with_scores.picks == select_round(name, POOL, 3, block_sizes=BLOCKS, seed=0).picks
        assert with_scores.ranked_by == ranking


def test_bad_input_names_the_problem():
    with pytest.raises(UnknownStrategyError, match="fg_random"):
        select_round("badge", POOL, 3, block_sizes=BLOCKS)
    with pytest.raises(SelectionError, match="do not describe 20-dimensional embeddings"):
        select_round("fg_random", POOL, 3, block_sizes=(10, 10))
    with pytest.raises(SelectionError, match=r"uncertainty has shape \(9,\)"):
        select_round("tesla", POOL, 3, block_sizes=BLOCKS, scores=SCORES[:9])
