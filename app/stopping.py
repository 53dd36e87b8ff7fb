"""When to stop labelling: a saturating learning curve fitted to prospective tumour Dice against the number of
labels each model version was trained on (docs/design.md, "Stopping advice")."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

#: A three-parameter curve needs a fourth point before its fit says anything about its own error.
MIN_POINTS = 4


def saturating(labels: np.ndarray, plateau: float, scale: float, rate: float) -> np.ndarray:
    """The inverse power law of learning curves: quality rises towards ``plateau`` ever more slowly."""
    return plateau - scale * np.power(labels, -rate)


@dataclass(frozen=True)
class StoppingAdvice:
    points: int
    next_labels: int
    threshold: float
    gain: float | None = None  # expected tumour-Dice gain of the next ``next_labels`` labels
    low: float | None = None  # its 95 % interval
    high: float | None = None
    plateau: float | None = None  # the fitted curve: plateau - scale * labels ** -rate
    scale: float | None = None
    rate: float | None = None
    advice: str = "too few points"
    sentence: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fit(labels: np.ndarray, quality: np.ndarray) -> np.ndarray:
    start = (min(1.0, float(quality.max()) + 0.05), max(float(quality.max() - quality.min()), 0.05), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        parameters, _ = curve_fit(saturating, labels, quality, p0=start, bounds=([0.0, 0.0, 0.05], [1.0, 10.0, 3.0]),
                                  maxfev=5000)
    return parameters


def stopping_advice(
    labels: list[float], quality: list[float], next_labels: int, threshold: float, resamples: int = 300, seed: int = 0,
) -> StoppingAdvice:
    """Fit the curve to (labels, quality) points, one per model version, and predict the gain of ``next_labels``
    more labels from the newest point, with a 95 % interval from a residual bootstrap (refit on the fitted curve plus
    resampled residuals). "Consider stopping" only when the whole interval lies below ``threshold``: a noisy curve
    must not stop a campaign that may still be rising."""
    x = np.asarray(labels, dtype=float)
    y = np.asarray(quality, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    base = StoppingAdvice(points=int(len(np.unique(x))), next_labels=next_labels, threshold=threshold)
    if base.points < MIN_POINTS:
        return StoppingAdvice(**{**base.as_dict(), "sentence": (
            f"too few points to tell: {base.points} model version(s) with measured labels, {MIN_POINTS} needed; "
            "keep labelling")})
    try:
        parameters = _fit(x, y)
    except (RuntimeError, ValueError) as error:
        return StoppingAdvice(**{**base.as_dict(), "advice": "no fit",
                                 "sentence": f"the learning curve could not be fitted ({error}); keep labelling"})
    newest = float(x.max())

    def gain_of(p: np.ndarray) -> float:
        return float(saturating(np.array([newest + next_labels]), *p)[0] - saturating(np.array([newest]), *p)[0])

    fitted = saturating(x, *parameters)
    residuals = y - fitted
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(resamples):
        try:
            gains.append(gain_of(_fit(x, fitted + rng.choice(residuals, size=len(residuals), replace=True))))
        except (RuntimeError, ValueError):
            continue
    gain = gain_of(parameters)
    low, high = (float(np.percentile(gains, 2.5)), float(np.percentile(gains, 97.5))) if gains else (gain, gain)
    stop = high < threshold
    sentence = (
        f"gains below {threshold:.3f}: consider stopping (the next {next_labels} labels are expected to add "
        f"{gain:+.3f} tumour Dice, 95 % interval {low:+.3f} to {high:+.3f})"
        if stop else
        f"keep labelling: the next {next_labels} labels are expected to add {gain:+.3f} tumour Dice "
        f"(95 % interval {low:+.3f} to {high:+.3f}; stop below {threshold:.3f})"
    )
    return StoppingAdvice(points=base.points, next_labels=next_labels, threshold=threshold, gain=gain, low=low,
                          high=high, plateau=float(parameters[0]), scale=float(parameters[1]),
                          rate=float(parameters[2]), advice="stop" if stop else "keep labelling",
                          sentence=sentence)
