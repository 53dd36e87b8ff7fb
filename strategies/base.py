"""The selection-rule interface shared by every strategy, and its input checks.

A strategy ranks volumes of the unlabeled pool for labeling. It sees only arrays:

- ``embeddings``: (N, D) float, one row per unlabeled volume (the pool);
- ``uncertainty``: optional (N,) float, one score per pool volume, larger = more informative;
- ``labeled_embeddings``: optional (M, D) float, the volumes that already have labels.

``select`` returns ``min(budget, N)`` distinct pool indices, best first. A budget larger than the pool is
clipped to the pool size (a selection round may ask for more than is left); a budget <= 0 is an error.

Each rule also declares which per-volume score it ranks by (``score``, a key of
``strategies.uncertainty.volume_scores``) and what it does at a cold start, before any model has scored the pool
(``cold_start``, a :class:`ColdStart`). ``strategies.rounds.select_round`` applies both; the server and the simulator
call it, so they read one definition.
"""

from __future__ import annotations

import inspect
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np


class SelectionError(ValueError):
    """Bad input to a selection rule (budget, array shapes, options)."""


class UnknownStrategyError(SelectionError):
    """A strategy name that the registry does not know."""


class ColdStart(str, Enum):
    """What a rule does while no model has scored the pool (no ``score`` values exist yet)."""

    #: Run the rule itself without a score (TESLA: pure diversity). Rules that never use a score do this too.
    UNSCORED = "unscored"
    #: The rule cannot work without its score: pick as ``random`` does (same seed) until a model exists.
    RANDOM = "random"
    #: Rank by the frozen backbone's predicted organ fraction, read from the embedding
    #: (``strategies.features.organ_fraction``), in place of the score.
    ORGAN_FRACTION = "organ_fraction"


@dataclass(frozen=True)
class Pool:
    """Validated inputs of one selection.

    embeddings: (N, D) float64; uncertainty: (N,) float64, (N, S) for a rule that ranks by S scores, or None;
    labeled: (M, D) float64 (M may be 0).
    """

    embeddings: np.ndarray
    uncertainty: np.ndarray | None
    labeled: np.ndarray


class Strategy(ABC):
    """One selection rule: ``select`` validates inputs, ``_rank`` holds the rule itself.

    Subclasses set ``name`` (the registry key), ``description`` (one paragraph, shown in 3D Slicer), and for
    score-based rules ``score`` (the ``volume_scores`` key passed as ``uncertainty``, or a tuple of S keys whose
    scores come as the columns of an (N, S) ``uncertainty``) and ``cold_start``.
    ``requires_uncertainty`` follows from those two: a rule with a score that does not run unscored at a cold start
    needs ``uncertainty`` in ``select``. ``unscored_ranking`` names what orders the picks when the rule runs without
    a score (recorded with each round). Constructor keyword arguments are the rule's options; ``config()`` returns
    them.
    """

    name: str
    description: str
    score: str | tuple[str, ...] | None = None
    cold_start: ColdStart = ColdStart.UNSCORED
    unscored_ranking: str = "diversity"
    requires_uncertainty: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.requires_uncertainty = cls.score is not None and cls.cold_start is not ColdStart.UNSCORED

    def select(
        self,
        embeddings: np.ndarray,
        budget: int,
        *,
        uncertainty: np.ndarray | None = None,
        labeled_embeddings: np.ndarray | None = None,
        seed: int = 0,
    ) -> list[int]:
        """Rank ``min(budget, N)`` distinct pool indices, best first.

        embeddings: (N, D) unlabeled pool; uncertainty: (N,) or None; labeled_embeddings: (M, D) or None.
        Raises SelectionError for budget <= 0, non-finite values or mismatched shapes. N == 0 gives [].
        """
        return self.select_with_reasons(
            embeddings, budget, uncertainty=uncertainty, labeled_embeddings=labeled_embeddings, seed=seed
        )[0]

    def select_with_reasons(
        self,
        embeddings: np.ndarray,
        budget: int,
        *,
        uncertainty: np.ndarray | None = None,
        labeled_embeddings: np.ndarray | None = None,
        seed: int = 0,
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """:meth:`select`, and why each pick was made: one JSON-ready dict per pick (the score it ranked by,
        ``"score"``; a clustering rule adds its ``"cluster"`` and ``"cluster_size"``), what the dashboard shows."""
        n_picks = check_int_option("budget", budget, 1)
        pool = _check_pool(embeddings, uncertainty, labeled_embeddings, len(self.score_keys()))
        if self.requires_uncertainty and pool.uncertainty is None:
            raise SelectionError(
                f"strategy {self.name!r} ranks by an uncertainty score: pass uncertainty=(N,) array"
            )
        n_pool = pool.embeddings.shape[0]
        if n_pool == 0:
            return [], []
        picks, reasons = self._rank_with_reasons(pool, min(n_picks, n_pool), seed)
        return [int(i) for i in picks], reasons

    def _rank_with_reasons(self, pool: Pool, n_picks: int, seed: int) -> tuple[list[int], list[dict[str, Any]]]:
        """:meth:`_rank` and, per pick, the score it ranked by. Rules that know more about a pick override this."""
        picks = [int(i) for i in self._rank(pool, n_picks, seed)]
        return picks, [score_reason(pool, i) for i in picks]

    @classmethod
    def score_keys(cls) -> tuple[str, ...]:
        """The ``volume_scores`` keys the rule ranks by, in the order of ``uncertainty``'s columns (none, one or S)."""
        if cls.score is None:
            return ()
        return (cls.score,) if isinstance(cls.score, str) else tuple(cls.score)

    @abstractmethod
    def _rank(self, pool: Pool, n_picks: int, seed: int) -> list[int] | np.ndarray:
        """Return ``n_picks`` (1 <= n_picks <= N) distinct indices into ``pool``, best first."""

    def config(self) -> dict[str, Any]:
        """The rule's options as constructor keyword arguments (empty for option-free rules)."""
        return {}

    def info(self) -> dict[str, Any]:
        """What a MONAI Label strategy ``info()`` shows in Slicer's options table."""
        return {"description": self.description, "config": self.config()}

    @classmethod
    def option_names(cls) -> list[str]:
        """Names of the constructor's keyword options."""
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        # Option-free rules inherit object.__init__, whose *args/**kwargs are not options.
        return [p.name for p in parameters if p.kind in named]


def score_reason(pool: Pool, index: int) -> dict[str, Any]:
    """Why pool volume ``index`` was picked, as far as its score says: ``{"score": value}`` (a list for a rule with
    several scores), or nothing for a rule that ranks without one."""
    if pool.uncertainty is None:
        return {}
    score = pool.uncertainty[index]
    return {"score": score.tolist() if np.ndim(score) else float(score)}


def check_int_option(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int if it is an integer >= minimum, else raise SelectionError naming it."""
    # bool is an Integral too, but True as a count is certainly a caller bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SelectionError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise SelectionError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _as_finite_matrix(array: Any, what: str, shape_doc: str) -> np.ndarray:
    matrix = np.asarray(array, dtype=np.float64)
    if matrix.ndim != 2:
        raise SelectionError(f"{what} must be a 2-D array {shape_doc}, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise SelectionError(f"{what} contains NaN or infinite values")
    return matrix


def _check_pool(
    embeddings: Any, uncertainty: Any | None, labeled_embeddings: Any | None, n_scores: int = 1
) -> Pool:
    pool = _as_finite_matrix(embeddings, "embeddings", "(N volumes x D features)")
    n_pool, n_dims = pool.shape

    scores = None
    if uncertainty is not None:
        scores = np.asarray(uncertainty, dtype=np.float64)
        expected = (n_pool, n_scores) if n_scores > 1 else (n_pool,)
        if scores.shape != expected:
            raise SelectionError(
                f"uncertainty has shape {scores.shape}, expected {expected}: "
                + ("one score per pool volume" if n_scores <= 1 else f"{n_scores} scores per pool volume")
            )
        if not np.isfinite(scores).all():
            raise SelectionError("uncertainty contains NaN or infinite values")

    if labeled_embeddings is None:
        labeled = np.empty((0, n_dims))
    else:
        labeled = _as_finite_matrix(labeled_embeddings, "labeled_embeddings", "(M volumes x D features)")
        if labeled.shape[1] != n_dims:
            raise SelectionError(
                f"labeled_embeddings have {labeled.shape[1]} features per volume, "
                f"the pool embeddings have {n_dims}"
            )
    return Pool(embeddings=pool, uncertainty=scores, labeled=labeled)
