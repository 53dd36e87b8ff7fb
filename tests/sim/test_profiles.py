"""The one schedule rule of a study, steps(n_labels) (sim.profiles.StepRule)."""

from __future__ import annotations

import pytest

from sim.design import COMPUTE_MATCHED, FULL_DATA, reference_labels, study_of
from sim.profiles import PROFILES, StepRule


def test_steps_grow_with_the_labels_between_their_bounds():
    rule = StepRule(base_labels=10, base_steps=300, power=0.95, min_steps=200, max_steps=3200)
    assert rule.steps(10) == 300
    assert rule.steps(1) == 200  # 300 · 0.1^0.95 = 34, raised to the floor
    assert rule.steps(500) == 3200  # capped
    counts = [rule.steps(n) for n in range(1, 400)]
    assert counts == sorted(counts)
    assert rule.steps(21) == round(300 * 2.1 ** 0.95)


@pytest.mark.parametrize("bad", [
    dict(min_steps=0), dict(min_steps=500, max_steps=400), dict(base_labels=0), dict(power=-1.0),
])
def test_an_impossible_rule_is_refused(bad):
    with pytest.raises(ValueError, match="impossible step rule"):
        StepRule(**{**dict(base_labels=10, base_steps=300, power=1.0, min_steps=1, max_steps=1000), **bad})


def test_a_model_without_labels_has_no_schedule():
    with pytest.raises(ValueError, match="at least one labelled volume"):
        PROFILES["lesion"].steps.steps(0)


def test_both_tunings_and_every_reference_follow_the_same_rule():
    profile = PROFILES["lesion"]
    study = study_of(profile)
    pool = 207
    budget_labels = reference_labels(study, pool, COMPUTE_MATCHED)
    assert budget_labels == round(0.05 * pool)
    prompt, finetune = profile.schedule("prompt", budget_labels), profile.schedule("finetune", budget_labels)
    assert prompt.steps == finetune.steps == profile.steps.steps(budget_labels)
    assert (prompt.lr, finetune.lr) == (profile.prompt_lr, profile.finetune_lr)
    full = profile.schedule("prompt", reference_labels(study, pool, FULL_DATA))
    assert full.steps == profile.steps.steps(pool) > prompt.steps
