"""Test-set Dice of a trained network on the prepared cohort, as the server's cascade would segment it.

Per test case, one forward pass of all K prompts over the case's inference ROI (:class:`sim.prepared.PreparedCohort`);
the prediction is the argmax of the mean of the K softmax maps. Labelled voxels outside the ROI count as missed.
Liver Dice is over the whole liver (labels >= 1, tumour included, the LiTS convention); tumour Dice per case is
averaged over the test cases that have tumour; global tumour Dice pools all test voxels.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from models.inference import prompt_probabilities
from models.quality import dice, lesion_components
from models.slpt import SLPTNet
from sim.prepared import LIVER, TUMOUR, PreparedCohort


def evaluate(network: SLPTNet, cohort: PreparedCohort, test: list[int]) -> tuple[dict[str, float], list[dict]]:
    """-> (summary {tumour_dice, tumour_dice_global, liver_dice, group -> tumour Dice}, per-case rows)."""
    return score_predictions(cohort, test, (mean_probabilities(network, cohort, i).argmax(axis=0) for i in test))


def mean_probabilities(network: SLPTNet, cohort: PreparedCohort, case: int, overlap: float = 0.25) -> np.ndarray:
    """The mean of the K prompts' softmax maps over a case's inference ROI: (C, *roi) float32."""
    return prompt_probabilities(network, cohort.roi_image(case), overlap=overlap).mean(dim=0).numpy()


def score_predictions(
    cohort: PreparedCohort, test: list[int], predictions: Iterable[np.ndarray]
) -> tuple[dict[str, float], list[dict]]:
    """Dice of label maps (one (*roi) class map per test case, in order; consumed one at a time) -> (summary,
    per-case rows) as :func:`evaluate` returns them."""
    per_case = []
    pooled = np.zeros(3, dtype=np.int64)  # tumour overlap, predicted, truth over all test cases
    has_tumour = cohort.has_tumour()
    for i, prediction in zip(test, predictions, strict=True):
        label = cohort.roi_label(i)
        tumour = _counts(prediction == TUMOUR, label == TUMOUR, int(cohort.outside_tumour[i]))
        liver = _counts(prediction >= LIVER, label >= LIVER, int(cohort.outside_liver[i]))
        pooled += tumour
        per_case.append({
            "case": cohort.names[i], "group": cohort.groups[i] or "", "has_tumour": int(has_tumour[i]),
            "tumour_dice": dice(*tumour) if has_tumour[i] else float("nan"), "liver_dice": dice(*liver),
        })
    tumour_cases = [c["tumour_dice"] for c in per_case if c["has_tumour"]]
    summary = {
        "tumour_dice": float(np.mean(tumour_cases)) if tumour_cases else float("nan"),
        "tumour_dice_global": dice(*pooled),
        "liver_dice": float(np.mean([c["liver_dice"] for c in per_case])),
    }
    for group in sorted({c["group"] for c in per_case if c["group"]}):
        values = [c["tumour_dice"] for c in per_case if c["group"] == group and c["has_tumour"]]
        summary[group] = float(np.mean(values)) if values else float("nan")
    return summary, per_case


def _counts(prediction: np.ndarray, truth: np.ndarray, truth_outside: int) -> np.ndarray:
    """(overlap, predicted, truth) voxel counts; truth outside the ROI was never predicted."""
    return np.array([int((prediction & truth).sum()), int(prediction.sum()), int(truth.sum()) + truth_outside])


#: Lesion size bins by equivalent-sphere radius (mm): small lesions are where a half-resolution head failed.
RADIUS_BINS_MM = ((0.0, 10.0, "r<10"), (10.0, 20.0, "r10-20"), (20.0, float("inf"), "r>20"))


def lesion_summary(
    cohort: PreparedCohort, test: list[int], predictions: Iterable[np.ndarray], spacing: tuple[float, float, float]
) -> dict[str, float]:
    """Lesion-level figures of label maps (one (*roi) class map per test case, in order), at ``spacing`` mm:

    - per radius bin (:data:`RADIUS_BINS_MM`, equivalent sphere of the labelled lesion): ``lesions_<bin>`` (count),
      ``detected_<bin>`` (share with any predicted tumour voxel inside) and ``lesion_dice_<bin>`` (mean Dice of each
      lesion against the predicted tumour components that touch it);
    - ``detection_f1`` over all test cases with tumour: a labelled lesion is found when a predicted tumour component
      touches it; a predicted component that touches no labelled lesion is a false positive;
    - on tumour-free test cases: ``fp_cases`` (share with any predicted tumour) and ``fp_ml`` (mean predicted tumour
      volume, ml).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    found = {name: [] for *_, name in RADIUS_BINS_MM}
    lesion_dice = {name: [] for *_, name in RADIUS_BINS_MM}
    hits = misses = false_components = 0
    fp_any, fp_ml = [], []
    has_tumour = cohort.has_tumour()
    for i, prediction in zip(test, predictions, strict=True):
        predicted, _ = lesion_components(prediction == TUMOUR)
        if not has_tumour[i]:
            fp_any.append(bool(predicted.any()))
            fp_ml.append(float((predicted > 0).sum()) * voxel_ml)
            continue
        truth, n_lesions = lesion_components(cohort.roi_label(i) == TUMOUR)
        touched = set(np.unique(predicted[truth > 0])) - {0}
        false_components += len(set(np.unique(predicted)) - {0} - touched)
        for lesion in range(1, n_lesions + 1):
            mask = truth == lesion
            radius = (3 * mask.sum() * voxel_ml * 1000.0 / (4 * np.pi)) ** (1 / 3)
            name = next(n for low, high, n in RADIUS_BINS_MM if low <= radius < high)
            components = set(np.unique(predicted[mask])) - {0}
            matched = np.isin(predicted, list(components)) if components else np.zeros_like(mask)
            found[name].append(bool(components))
            lesion_dice[name].append(dice(int((matched & mask).sum()), int(matched.sum()), int(mask.sum())))
            hits, misses = hits + bool(components), misses + (not components)
    summary = {}
    for *_, name in RADIUS_BINS_MM:
        summary[f"lesions_{name}"] = float(len(found[name]))
        summary[f"detected_{name}"] = float(np.mean(found[name])) if found[name] else float("nan")
        summary[f"lesion_dice_{name}"] = float(np.mean(lesion_dice[name])) if lesion_dice[name] else float("nan")
    f1_denominator = 2 * hits + false_components + misses
    summary["detection_f1"] = 2 * hits / f1_denominator if f1_denominator else float("nan")
    summary["false_components"] = float(false_components)
    summary["fp_cases"] = float(np.mean(fp_any)) if fp_any else float("nan")
    summary["fp_ml"] = float(np.mean(fp_ml)) if fp_ml else float("nan")
    return summary
