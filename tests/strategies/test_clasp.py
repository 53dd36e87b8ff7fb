"""ClaSP PE at volume level: class-stratified turns, power noise that fades with the labeled share, class entropies."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import SelectionError
from strategies.clasp import ClaSPEntropy
from strategies.rounds import select_round
from strategies.uncertainty import class_entropies, volume_scores

EMBEDDINGS = np.random.default_rng(0).normal(size=(8, 3))
# columns: tumour score, liver score (the rule's score order)
SCORES = np.array([
    [0.0, 0.9],
    [0.5, 0.1],
    [0.0, 0.8],
    [0.9, 0.2],
    [0.0, 0.7],
    [0.2, 0.3],
    [0.0, 0.6],
    [0.0, 0.5],
])


def test_turns_go_to_the_tumour_then_the_liver_each_by_its_own_score():
    rule = ClaSPEntropy(tau=0.0)
    assert rule.select(EMBEDDINGS, 6, uncertainty=SCORES) == [3, 0, 1, 2, 5, 4]
    # a plain ranking by either column alone would differ: stratification is what orders the picks
    assert rule.select(EMBEDDINGS, 2, uncertainty=SCORES) != list(np.argsort(-SCORES[:, 0])[:2])
    assert rule.select(EMBEDDINGS, 2, uncertainty=SCORES) != list(np.argsort(-SCORES[:, 1])[:2])


def test_a_class_predicted_nowhere_passes_its_turn():
    no_tumour = SCORES.copy()
    no_tumour[:, 0] = 0.0
    assert ClaSPEntropy(tau=0.0).select(EMBEDDINGS, 4, uncertainty=no_tumour) == [0, 2, 4, 6]


def test_power_noise_spreads_early_picks_and_fades_with_the_labeled_share():
    rule = ClaSPEntropy(tau=1.0, decay_until=0.2)
    assert rule.temperature(0, 8) == 1.0
    assert rule.temperature(1, 9) == pytest.approx(0.5)
    assert rule.temperature(2, 8) == 0.0
    early = {tuple(rule.select(EMBEDDINGS, 3, uncertainty=SCORES, seed=s)) for s in range(20)}
    assert len(early) > 1  # noise: different seeds pick differently before any label
    labeled = np.zeros((2, 3))  # 2 labeled beside 8 unlabeled: share 0.2, the noise is gone
    late = {tuple(rule.select(EMBEDDINGS, 3, uncertainty=SCORES, labeled_embeddings=labeled, seed=s))
            for s in range(20)}
    assert late == {(3, 0, 1)}


def test_bad_scores_and_options_are_explained():
    with pytest.raises(SelectionError, match=r"expected \(8, 2\)"):
        ClaSPEntropy().select(EMBEDDINGS, 2, uncertainty=SCORES[:, 0])
    with pytest.raises(SelectionError, match="tau"):
        ClaSPEntropy(tau=-1)
    with pytest.raises(SelectionError, match="decay_until"):
        ClaSPEntropy(decay_until=0)


def test_a_round_ranks_by_both_class_scores_and_falls_back_to_random_before_a_model():
    chosen = select_round("clasp_pe", EMBEDDINGS, 2, block_sizes=[3], scores=SCORES, seed=0)
    assert chosen.ranked_by == "class_entropy_2+class_entropy_1" and len(chosen.picks) == 2
    cold = select_round("clasp_pe", EMBEDDINGS, 2, block_sizes=[3], scores=None, seed=4)
    assert cold.ranked_by == "random"
    assert cold.picks == select_round("random", EMBEDDINGS, 2, block_sizes=[3], seed=4).picks


def test_class_entropies_average_over_the_voxels_of_each_class():
    # 2 prompts, 3 classes, 4 voxels: voxel 0 sure background, 1 unsure liver, 2 sure liver, 3 unsure tumour
    probs = np.array([
        [[1.0, 0.0, 0.0], [0.3, 0.7, 0.0], [0.0, 1.0, 0.0], [0.0, 0.4, 0.6]],
        [[1.0, 0.0, 0.0], [0.3, 0.7, 0.0], [0.0, 1.0, 0.0], [0.0, 0.4, 0.6]],
    ]).transpose(0, 2, 1)  # (K, C, voxels)
    h = lambda *p: -sum(x * np.log(x) for x in p)  # noqa: E731
    scores = class_entropies(probs)
    assert scores["class_entropy_1"] == pytest.approx((h(0.3, 0.7) + 0.0) / 2, abs=1e-9)
    assert scores["class_entropy_2"] == pytest.approx(h(0.4, 0.6), abs=1e-9)
    assert {"class_entropy_1", "class_entropy_2"} <= set(volume_scores(probs))
    assert class_entropies(probs[:, :2])["class_entropy_2"] == 0.0  # a model without the class
