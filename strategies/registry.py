"""Strategies by name, for configuration files, the CLI and the MONAI Label app.

Order matters: the app lists strategies in this order and 3D Slicer preselects the first, so TESLA leads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from strategies.base import SelectionError, Strategy, UnknownStrategyError
from strategies.baselines import CoreSet, Entropy, Epistemic, First, ForegroundRandom, Random
from strategies.clasp import ClaSPEntropy
from strategies.tesla import TESLA

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (TESLA, Random, First, Entropy, Epistemic, CoreSet, ForegroundRandom, ClaSPEntropy)
}


def get_strategy(name: str, **config: Any) -> Strategy:
    """Build the strategy registered as ``name`` with the given options (see each class's ``config()``).

    Raises UnknownStrategyError for an unknown name and SelectionError for an unknown or invalid option.
    """
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}"
        ) from None
    unknown = sorted(set(config) - set(cls.option_names()))
    if unknown:
        options = ", ".join(cls.option_names()) or "none"
        raise SelectionError(f"strategy {name!r} has no option {', '.join(unknown)}; its options: {options}")
    return cls(**config)


def strategy_for_embeddings(name: str, block_sizes: Sequence[int]) -> Strategy:
    """``name`` set up for embeddings made of blocks of ``block_sizes`` dimensions: distance-based rules (TESLA,
    CoreSet) weigh each block equally; the others ignore the layout. Server and simulator build rules this way."""
    if "block_sizes" in STRATEGIES.get(name, Strategy).option_names():
        return get_strategy(name, block_sizes=list(block_sizes))
    return get_strategy(name)
