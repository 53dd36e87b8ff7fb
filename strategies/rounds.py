"""One selection round of a named strategy, cold start included: what the server and the simulator both call.

Each rule declares the per-volume score it ranks by (``Strategy.score``, a key of
``strategies.uncertainty.volume_scores``) and its behaviour before any model has scored the pool
(``Strategy.cold_start``). :func:`select_round` applies them, so "which score, and what at a cold start" has one
definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from strategies.base import ColdStart, Strategy
from strategies.features import organ_fraction
from strategies.registry import strategy_for_embeddings


@dataclass(frozen=True)
class RoundSelection:
    """The picks of one round and how they were made.

    picks: pool indices, best first. ranked_by: what ordered them: the rule's score (e.g. ``"prompt_uncertainty"``),
    ``"organ_fraction"``, or, for a rule run without a score, its ``unscored_ranking`` (``"diversity"``,
    ``"random"``, ``"pool order"``). rule: the rule that ran, with its options: the strategy itself, or ``random``
    at a cold start of a rule that cannot work without its score. reasons: why each pick was made, one dict per pick
    (:meth:`strategies.base.Strategy.select_with_reasons`: its score, and TESLA's cluster).
    """

    picks: list[int]
    ranked_by: str
    rule: Strategy
    reasons: list[dict[str, Any]] = field(default_factory=list)


def select_round(
    name: str,
    embeddings: np.ndarray,
    budget: int,
    *,
    block_sizes: Sequence[int],
    scores: np.ndarray | None = None,
    labeled_embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> RoundSelection:
    """Run strategy ``name`` over the unlabeled pool.

    embeddings: (N, D) backbone embeddings of the pool; block_sizes: their layout
    (``models.embedding.embedding_blocks``); scores: (N,) the strategy's ``score`` of each pool volume from the newest
    model ((N, S) for a rule with S score keys, columns in ``score_keys()`` order), or None while no model has scored the pool (then the rule's ``cold_start`` applies; rules without a score
    ignore it); labeled_embeddings: (M, D) of the labeled volumes, or None. Raises ``UnknownStrategyError`` and
    ``SelectionError`` (bad budget or shapes) like ``Strategy.select``.
    """
    rule = strategy_for_embeddings(name, block_sizes)  # an unknown name raises, listing the known ones
    cls = type(rule)
    if cls.score is None:
        scores, ranked_by = None, cls.unscored_ranking
    elif scores is not None:
        ranked_by = "+".join(cls.score_keys())
    elif cls.cold_start is ColdStart.ORGAN_FRACTION:
        scores, ranked_by = organ_fraction(embeddings, block_sizes), ColdStart.ORGAN_FRACTION.value
    elif cls.cold_start is ColdStart.RANDOM:
        rule = strategy_for_embeddings("random", block_sizes)
        ranked_by = rule.unscored_ranking
    else:
        ranked_by = cls.unscored_ranking
    picks, reasons = rule.select_with_reasons(
        embeddings, budget, uncertainty=scores, labeled_embeddings=labeled_embeddings, seed=seed
    )
    return RoundSelection(picks=picks, ranked_by=ranked_by, rule=rule, reasons=reasons)
