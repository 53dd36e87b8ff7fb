"""Uncertainty scores on hand-built probability maps, checked against closed forms and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from strategies import (
    SCORE_METHODS,
    SelectionError,
    bald,
    entropy,
    mean_pairwise_js_divergence,
    prompt_uncertainty,
    target_fraction,
    volume_scores,
)


def two_class(p_foreground):
    """(C=2, *shape) map from a foreground-probability array."""
    p = np.asarray(p_foreground, dtype=float)
    return np.stack([1 - p, p])


def test_entropy_is_maximal_at_uniform_and_zero_for_one_hot():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200).T  # (C=4, 200)
    assert entropy(np.full((4,), 0.25)) == pytest.approx(np.log(4))
    assert (entropy(probs) < np.log(4)).all()
    assert entropy(np.array([0.0, 1.0, 0.0, 0.0])) == pytest.approx(0.0, abs=1e-9)
    assert entropy(probs.T, axis=1).shape == (200,)
    np.testing.assert_allclose(entropy(probs.T, axis=1), entropy(probs))


def test_js_divergence_is_zero_for_identical_prompts():
    prompt = two_class(np.random.default_rng(0).uniform(size=(4, 5, 6)))
    js = mean_pairwise_js_divergence(np.stack([prompt, prompt, prompt]))
    assert js.shape == (4, 5, 6)
    assert np.abs(js).max() < 1e-12


def test_js_divergence_grows_monotonically_with_disagreement():
    gaps = np.linspace(0.0, 0.5, 11)
    js = [float(mean_pairwise_js_divergence(np.stack([two_class(0.5 + d), two_class(0.5 - d)]))) for d in gaps]
    assert all(a < b for a, b in zip(js, js[1:]))
    assert js[-1] == pytest.approx(np.log(2))  # disjoint one-hot maps: the maximum, log 2 nats


def test_js_divergence_matches_scipy_and_averages_over_pairs():
    rng = np.random.default_rng(1)
    prompts = rng.dirichlet(np.ones(3), size=(3, 7)).transpose(0, 2, 1)  # (K=3, C=3, 7 voxels)
    js = mean_pairwise_js_divergence(prompts)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = [np.mean([jensenshannon(prompts[i, :, v], prompts[j, :, v]) ** 2 for i, j in pairs]) for v in range(7)]
    np.testing.assert_allclose(js, expected, rtol=1e-9)


def test_prompt_uncertainty_averages_over_voxels_any_prompt_calls_foreground():
    # 4 voxels: 0 background for all, 1 foreground for prompt 0 only, 2 foreground for all, 3 background but
    # the prompts disagree (must not count: it is not foreground for any prompt).
    prompts = np.stack([two_class([0.05, 0.8, 0.9, 0.4]), two_class([0.05, 0.2, 0.7, 0.1])])
    score = prompt_uncertainty(prompts)

    per_voxel = mean_pairwise_js_divergence(prompts) + entropy(prompts.mean(axis=0))
    assert score == pytest.approx(per_voxel[[1, 2]].mean())
    assert score != pytest.approx(per_voxel.mean())


def test_prompt_uncertainty_threshold_and_argmax_rules():
    # Multi-class voxel: background is the argmax (0.4) but foreground probability is 0.6.
    multiclass = np.array([[0.4, 0.3, 0.3], [0.5, 0.25, 0.25]])[..., None]  # (K=2, C=3, 1 voxel)
    assert prompt_uncertainty(multiclass) > 0
    assert prompt_uncertainty(multiclass, foreground_threshold=0.7) == 0.0
    # Argmax foreground counts even under a high threshold.
    argmax_fg = np.stack([two_class([0.7]), two_class([0.6])])
    assert prompt_uncertainty(argmax_fg, foreground_threshold=0.9) > 0


def test_prompt_uncertainty_is_zero_without_foreground_and_ranks_disagreement():
    assert prompt_uncertainty(np.stack([two_class(np.full((3, 3, 3), 0.1))] * 3)) == 0.0
    agree = np.stack([two_class(np.full((3, 3, 3), 0.9))] * 3)
    disagree = np.stack([two_class(np.full((3, 3, 3), p)) for p in (0.9, 0.6, 0.3)])
    assert 0 < prompt_uncertainty(agree) < prompt_uncertainty(disagree)


def test_bald_is_mutual_information_and_matches_js_for_two_passes():
    rng = np.random.default_rng(2)
    mc = rng.dirichlet(np.ones(2), size=(2, 5)).transpose(0, 2, 1)  # (T=2, C=2, 5)
    np.testing.assert_allclose(bald(mc), mean_pairwise_js_divergence(mc), rtol=1e-12)
    same = np.stack([two_class([0.3, 0.6])] * 4)
    assert np.abs(bald(same)).max() < 1e-12
    scalar = bald(np.array([[0.9, 0.1], [0.1, 0.9]]))
    assert scalar.shape == () and float(scalar) > 0.3


@pytest.mark.parametrize("function", [mean_pairwise_js_divergence, prompt_uncertainty, bald])
def test_too_few_members_or_classes_are_rejected(function):
    with pytest.raises(SelectionError, match="at least 2 members"):
        function(np.stack([two_class([0.3, 0.6])]))
    with pytest.raises(SelectionError, match="at least 2 classes"):
        function(np.ones((3, 1, 4)))
    with pytest.raises(SelectionError, match="must have shape"):
        function(np.ones(3))


def three_class(liver, tumour):
    """(C=3, *shape) map from liver and tumour probability arrays (background takes the rest)."""
    liver, tumour = np.asarray(liver, dtype=float), np.asarray(tumour, dtype=float)
    return np.stack([1 - liver - tumour, liver, tumour])


def test_foreground_score_is_the_fraction_of_voxels_the_mean_prediction_calls_tumour():
    # 4 voxels: tumour for both prompts, tumour for the mean only (0.7 and 0.3 average to 0.5 > liver 0.3 and
    # background 0.2), liver, background.
    prompts = np.stack(
        [three_class([0.1, 0.1, 0.8, 0.0], [0.8, 0.7, 0.1, 0.1]), three_class([0.1, 0.5, 0.8, 0.0], [0.8, 0.3, 0.1, 0.1])]
    )
    assert target_fraction(prompts) == pytest.approx(0.5)
    assert volume_scores(prompts)["foreground"] == pytest.approx(0.5)
    # Liver everywhere, no tumour: foreground 0, while the uncertainty scores see a foreground (the liver).
    liver_only = np.stack([three_class(np.full(4, 0.9), np.full(4, 0.05))] * 2)
    scores = volume_scores(liver_only)
    assert scores["foreground"] == 0.0 and scores["entropy"] > 0
    assert set(volume_scores(liver_only)) == set(SCORE_METHODS)
    # A two-class (organ-only) model never predicts the tumour class.
    assert target_fraction(np.stack([two_class([0.9, 0.8])] * 2)) == 0.0
