"""Stopping advice on learning curves generated with known plateaus."""

from __future__ import annotations

import numpy as np

from app.stopping import MIN_POINTS, saturating, stopping_advice

PLATEAU, SCALE, RATE = 0.62, 0.9, 0.7


def curve(labels: list[int], noise: float, seed: int = 1) -> list[float]:
    rng = np.random.default_rng(seed)
    clean = saturating(np.asarray(labels, dtype=float), PLATEAU, SCALE, RATE)
    return list(clean + rng.normal(0.0, noise, size=len(labels)))


def test_early_in_a_rising_curve_it_says_keep_labelling_and_the_true_gain_is_inside_the_interval():
    labels = [4, 8, 12, 16, 20]
    advice = stopping_advice(labels, curve(labels, noise=0.005), next_labels=8, threshold=0.01)
    true_gain = float(saturating(np.array([28.0]), PLATEAU, SCALE, RATE)[0] - saturating(np.array([20.0]), PLATEAU, SCALE, RATE)[0])
    assert advice.advice == "keep labelling" and advice.sentence.startswith("keep labelling")
    assert advice.low <= true_gain <= advice.high
    assert abs(advice.gain - true_gain) < 0.01
    assert abs(advice.plateau - PLATEAU) < 0.1


def test_on_the_plateau_it_says_consider_stopping():
    labels = [20, 60, 120, 200, 300, 400]
    advice = stopping_advice(labels, curve(labels, noise=0.002), next_labels=8, threshold=0.01)
    assert advice.advice == "stop"
    assert advice.sentence.startswith("gains below 0.010: consider stopping")
    assert advice.high < 0.01 and advice.gain >= 0


def test_a_higher_bar_stops_earlier_on_the_same_curve():
    labels = [4, 8, 12, 16, 20]
    values = curve(labels, noise=0.005)
    assert stopping_advice(labels, values, next_labels=8, threshold=0.01).advice == "keep labelling"
    assert stopping_advice(labels, values, next_labels=8, threshold=0.2).advice == "stop"


def test_too_few_points_is_said_plainly():
    labels = [4, 8, 12]
    advice = stopping_advice(labels, curve(labels, noise=0.0), next_labels=8, threshold=0.01)
    assert advice.advice == "too few points" and advice.gain is None
    assert f"{MIN_POINTS} needed" in advice.sentence
    # Several versions trained on the same number of labels are one point of the curve, not several.
    assert stopping_advice([5, 5, 5, 5], [0.1, 0.2, 0.3, 0.4], next_labels=8, threshold=0.01).advice == "too few points"
