"""Lesion-level figures of a prediction: size bins, detection F1, false positives on tumour-free cases."""

from __future__ import annotations

import numpy as np
import pytest

from models.geometry import Box
from sim.evaluation import lesion_summary
from sim.prepared import LIVER, TUMOUR, PreparedCohort

SHAPE = (40, 40, 40)
SPACING = (1.0, 1.0, 1.0)  # 1 mm voxels: a ball of radius r mm is r voxels


def ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(SHAPE)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def cohort(labels: list[np.ndarray]) -> PreparedCohort:
    n = len(labels)
    return PreparedCohort(
        names=[f"c{i}" for i in range(n)], groups=[None] * n, images=[np.zeros(SHAPE, np.float32)] * n,
        labels=labels, rois=[Box((0, 0, 0), SHAPE)] * n, roi_found=np.ones(n, bool), roi_holds_liver=np.ones(n, bool),
        outside_liver=np.zeros(n, int), outside_tumour=np.zeros(n, int), embeddings=np.zeros((n, 2), np.float32),
    )


def test_lesions_are_binned_by_radius_found_or_missed_and_false_positives_counted():
    liver = np.full(SHAPE, LIVER, np.uint8)
    small, large = ball((8, 8, 8), 5), ball((26, 26, 26), 12)  # radius 5 and 12 mm
    with_lesions = liver.copy()
    with_lesions[small | large] = TUMOUR
    prediction = liver.copy()
    prediction[large] = TUMOUR  # the large lesion found exactly, the small one missed
    prediction[ball((8, 30, 8), 3)] = TUMOUR  # and a component touching no lesion
    free_prediction = liver.copy()
    free_prediction[ball((20, 20, 20), 2)] = TUMOUR  # a false call on the tumour-free case
    summary = lesion_summary(cohort([with_lesions, liver]), [0, 1], [prediction, free_prediction], SPACING)
    assert summary["lesions_r<10"] == 1 and summary["detected_r<10"] == 0 and summary["lesion_dice_r<10"] == 0
    assert summary["lesions_r10-20"] == 1 and summary["detected_r10-20"] == 1
    assert summary["lesion_dice_r10-20"] == pytest.approx(1.0)
    assert summary["lesions_r>20"] == 0 and np.isnan(summary["detected_r>20"])
    # one lesion found, one missed, one false component: F1 = 2·1 / (2·1 + 1 + 1)
    assert summary["detection_f1"] == pytest.approx(0.5) and summary["false_components"] == 1
    assert summary["fp_cases"] == 1.0 and summary["fp_ml"] == pytest.approx(ball((20, 20, 20), 2).sum() / 1000)
