"""Uncertainty scores from class-probability maps (NumPy arrays only; natural logarithm throughout).

Shapes: C classes (index 0 = background), K prompts, T stochastic passes, ``*spatial`` any voxel grid.
Probabilities are clipped to [eps, 1] before taking logarithms, so 0 * log 0 contributes ~0 instead of
NaN, and divergences are clamped at 0 against rounding.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from strategies.base import SelectionError

EPS = 1e-12


def entropy(probs: np.ndarray, axis: int = 0) -> np.ndarray:
    """Shannon entropy over the class axis: (C, ...) -> (...) with the default axis=0.

    Maximal (log C) for a uniform distribution, 0 for a one-hot one.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)
    return -(p * np.log(p)).sum(axis=axis)


def _mutual_information(member_probs: np.ndarray) -> np.ndarray:
    """Entropy of the mean minus mean entropy over axis 0: (S, C, ...) -> (...), >= 0."""
    mean_entropy = entropy(member_probs.mean(axis=0), axis=0)
    entropy_mean = entropy(member_probs, axis=1).mean(axis=0)
    return np.maximum(mean_entropy - entropy_mean, 0.0)


def mean_pairwise_js_divergence(prompt_probs: np.ndarray) -> np.ndarray:
    """Voxel-wise mean over prompt pairs of the Jensen-Shannon divergence: (K, C, *spatial) -> (*spatial).

    JS(p, q) = H((p + q) / 2) - (H(p) + H(q)) / 2, in nats: 0 for identical maps, at most log 2.
    Needs K >= 2 prompts.
    """
    probs = _check_member_probs(prompt_probs, "prompt_probs", "(K prompts, C classes, *spatial)")
    pairs = list(combinations(range(probs.shape[0]), 2))
    total = sum(_mutual_information(probs[[i, j]]) for i, j in pairs)
    return total / len(pairs)


def any_prompt_foreground(prompt_probs: np.ndarray, foreground_threshold: float | None = None) -> np.ndarray:
    """Voxels that at least one prompt calls foreground: (K, C, *spatial) -> (*spatial) bool.

    A prompt calls a voxel foreground when its argmax is not background, or (with ``foreground_threshold``) when its
    foreground probability 1 - p[background] exceeds the threshold. The one definition of "foreground" for scores and
    the server's prediction summaries alike.
    """
    probs = np.asarray(prompt_probs)
    foreground = probs.argmax(axis=1) != 0
    if foreground_threshold is not None:
        foreground |= 1.0 - probs[:, 0] > foreground_threshold
    return foreground.any(axis=0)


def prompt_uncertainty(prompt_probs: np.ndarray, foreground_threshold: float = 0.5) -> float:
    """Prompt-based uncertainty U(v) of one volume (docs/design.md, "Uncertainty scores"): (K, C, *spatial) -> float.

    Per voxel: mean pairwise JS divergence of the K prompt maps + entropy of their mean map. U(v) is the
    average over the voxels that any prompt calls foreground: its argmax is not background, or its
    foreground probability (1 - p[background]) exceeds ``foreground_threshold``. Restricting to those
    voxels keeps the vast, confidently-empty background from diluting the score. 0.0 when no voxel is
    foreground for any prompt.
    """
    probs = _check_member_probs(prompt_probs, "prompt_probs", "(K prompts, C classes, *spatial)")
    any_foreground = any_prompt_foreground(probs, foreground_threshold)
    if not any_foreground.any():
        return 0.0
    voxel_score = mean_pairwise_js_divergence(probs) + entropy(probs.mean(axis=0), axis=0)
    return float(voxel_score[any_foreground].mean())


def bald(mc_probs: np.ndarray) -> np.ndarray:
    """BALD mutual information of T stochastic passes (e.g. MC dropout): (T, C, ...) -> (...).

    H(mean_t p_t) - mean_t H(p_t): 0 when all passes agree. A (T, C) input gives a 0-d array.
    """
    probs = _check_member_probs(mc_probs, "mc_probs", "(T passes, C classes, ...)")
    return _mutual_information(probs)


def _check_member_probs(array: np.ndarray, what: str, shape_doc: str) -> np.ndarray:
    probs = np.asarray(array, dtype=np.float64)
    if probs.ndim < 2:
        raise SelectionError(f"{what} must have shape {shape_doc}, got {probs.shape}")
    if probs.shape[0] < 2:
        raise SelectionError(f"{what} needs at least 2 members along axis 0 to disagree, got {probs.shape[0]}")
    if probs.shape[1] < 2:
        raise SelectionError(f"{what} needs at least 2 classes along axis 1, got {probs.shape[1]}")
    return probs


#: Classes from this index on are the targets beyond the organ (class 0 background, 1 liver, 2 tumour).
TARGET_CLASS = 2
#: Foreground classes that get a class-wise entropy score (``class_entropy_<c>``; class-stratified rules rank by them).
CLASS_ENTROPY_CLASSES = (1, 2)
#: Per-volume scores of :func:`volume_scores`, one per score-based strategy (TESLA, entropy, epistemic,
#: fg_random, clasp_pe); each strategy names the ones it ranks by in its ``score`` attribute.
SCORE_METHODS = (
    "prompt_uncertainty", "entropy", "epistemic", "foreground", *(f"class_entropy_{c}" for c in CLASS_ENTROPY_CLASSES)
)


def class_entropies(prompt_probs: np.ndarray) -> dict[str, float]:
    """``{"class_entropy_<c>": mean entropy of the mean map over the voxels it labels c}`` for each class of
    :data:`CLASS_ENTROPY_CLASSES`: (K, C, *spatial) -> floats, 0.0 where the mean map labels no voxel c (or the model
    has no class c). A volume's uncertainty about each structure apart, so a rare class (the tumour) is not averaged
    away by a common one (the liver)."""
    probs = _check_member_probs(prompt_probs, "prompt_probs", "(K prompts, C classes, *spatial)")
    mean = probs.mean(axis=0)
    voxel_entropy, label = entropy(mean, axis=0), mean.argmax(axis=0)
    scores = {}
    for c in CLASS_ENTROPY_CLASSES:
        voxels = label == c
        scores[f"class_entropy_{c}"] = float(voxel_entropy[voxels].mean()) if voxels.any() else 0.0
    return scores


def target_fraction(prompt_probs: np.ndarray) -> float:
    """Fraction of voxels whose mean prediction over the K prompts is a target class (argmax >= TARGET_CLASS, the
    tumour): (K, C, *spatial) -> float in [0, 1]. 0.0 for a model with fewer than TARGET_CLASS + 1 classes."""
    probs = _check_member_probs(prompt_probs, "prompt_probs", "(K prompts, C classes, *spatial)")
    return float((probs.mean(axis=0).argmax(axis=0) >= TARGET_CLASS).mean())


def volume_scores(prompt_probs: np.ndarray) -> dict[str, float]:
    """The scores of one volume from its K prompt maps (K >= 2, C, *spatial), one per :data:`SCORE_METHODS` key.

    ``prompt_uncertainty`` (TESLA, :func:`prompt_uncertainty`), ``entropy`` (entropy of the mean map) and
    ``epistemic`` (BALD with the K prompts as the ensemble), the last two averaged over the voxels any
    prompt labels foreground (all three 0.0 when no prompt finds foreground), ``foreground``
    (fg_random, :func:`target_fraction`: the fraction of all voxels the mean prediction calls tumour), and the
    class-wise entropies of :func:`class_entropies` (clasp_pe). Used by the server's scoring job and by the offline
    simulator, so both rank volumes by the same numbers.
    """
    probs = _check_member_probs(prompt_probs, "prompt_probs", "(K prompts, C classes, *spatial)")
    foreground = any_prompt_foreground(probs)
    target = target_fraction(probs)
    if not foreground.any():
        return {**dict.fromkeys(SCORE_METHODS, 0.0), "foreground": target}
    return {
        "prompt_uncertainty": float(prompt_uncertainty(probs)),
        "entropy": float(entropy(probs.mean(axis=0), axis=0)[foreground].mean()),
        "epistemic": float(np.asarray(bald(probs))[foreground].mean()),
        "foreground": target,
        **class_entropies(probs),
    }
