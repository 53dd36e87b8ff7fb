"""Selection logic on arrays: which unlabeled volumes to label next (docs/design.md, "TESLA", "Baselines").

Pure NumPy / scikit-learn: no torch, no server code. Every rule implements ``Strategy.select``.
"""

from strategies.base import ColdStart, SelectionError, Strategy, UnknownStrategyError
from strategies.baselines import CoreSet, Entropy, Epistemic, First, ForegroundRandom, Random
from strategies.features import organ_fraction, reduce, standardise
from strategies.registry import STRATEGIES, get_strategy, strategy_for_embeddings
from strategies.rounds import RoundSelection, select_round
from strategies.tesla import TESLA
from strategies.uncertainty import (
    SCORE_METHODS,
    bald,
    entropy,
    mean_pairwise_js_divergence,
    prompt_uncertainty,
    target_fraction,
    volume_scores,
)

__all__ = [
    "SCORE_METHODS",
    "STRATEGIES",
    "TESLA",
    "ColdStart",
    "CoreSet",
    "Entropy",
    "Epistemic",
    "First",
    "ForegroundRandom",
    "Random",
    "RoundSelection",
    "SelectionError",
    "Strategy",
    "UnknownStrategyError",
    "bald",
    "entropy",
    "get_strategy",
    "strategy_for_embeddings",
    "mean_pairwise_js_divergence",
    "organ_fraction",
    "prompt_uncertainty",
    "reduce",
    "select_round",
    "standardise",
    "target_fraction",
    "volume_scores",
]
