"""Selection logic on arrays: which unlabeled volumes to label next (SPEC §2).

Pure NumPy / scikit-learn: no torch, no server code. Every rule implements ``Strategy.select``.
"""

from strategies.base import SelectionError, Strategy, UnknownStrategyError
from strategies.baselines import CoreSet, Entropy, Epistemic, First, Random
from strategies.features import reduce, standardise
from strategies.registry import STRATEGIES, get_strategy, strategy_for_embeddings
from strategies.tesla import TESLA
from strategies.uncertainty import (
    SCORE_METHODS,
    bald,
    entropy,
    mean_pairwise_js_divergence,
    prompt_uncertainty,
    volume_scores,
)

__all__ = [
    "SCORE_METHODS",
    "STRATEGIES",
    "TESLA",
    "CoreSet",
    "Entropy",
    "Epistemic",
    "First",
    "Random",
    "SelectionError",
    "Strategy",
    "UnknownStrategyError",
    "bald",
    "entropy",
    "get_strategy",
    "strategy_for_embeddings",
    "mean_pairwise_js_divergence",
    "prompt_uncertainty",
    "reduce",
    "standardise",
    "volume_scores",
]
