"""The MONAI Label strategies the app serves, and the selection rounds they claim from (docs/design.md,
"Selection rounds"; "Next Sample: one database claim").

Every "Next Sample" is a database claim: a strategy only decides the order in which volumes are offered; the claim
itself (one transaction, a lease, skips released) is :meth:`db.datastore.SQLDatastore.claim_next`, so two annotators
never get the same volume. ``random`` and ``first`` need no round: the claim's SQL orders the free volumes itself
(:class:`ClaimStrategy`). Every other ``strategies`` rule is served through rounds (:class:`RoundStrategy`).

Selection is batch work; serving is a database claim. A round runs one ``strategies`` rule over the unlabeled pool (the
stored embeddings, and the uncertainty scores of the newest model version) and stores the ranked volumes. Next Sample
claims the best-ranked free volume of the strategy's current round. When that round is used up, or the model version
changed since it was made, a new round is built in a background thread; a request that arrives meanwhile is served at
once from a fast fallback — the stale round's remaining volumes if any, else a random free volume — instead of waiting.
Which score a rule ranks by, and what it does before a model exists, is the rule's own declaration
(:func:`strategies.rounds.select_round`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from monailabel.interfaces.tasks.strategy import Strategy as MONAILabelStrategy

from app.modelstore import ModelStore, NoModelError
from app.scoring import candidates_pending, compute_missing_embeddings, embedding_key, version_candidates
from app.work import WorkSettings
from db.datastore import SQLDatastore
from db.engine import write_session
from db.images import lease_holder_count
from db.rounds import create_round, current_round, round_remaining
from db.scores import load_embeddings, load_scores
from models.cascade import CascadeConfig
from models.embedding import embedding_blocks
from strategies import STRATEGIES, get_strategy, select_round

logger = logging.getLogger(__name__)

#: Rules served by a plain claim in this order (``db.claims``), without rounds: the SQL orders the free volumes itself.
CLAIM_ORDERS = {"random": "random", "first": "first"}


class SelectionUnavailable(RuntimeError):
    """A round cannot be built yet: embeddings missing, or the newest model's scores not (all) stored yet."""


def round_size(datastore: SQLDatastore, configured: int) -> int:
    """``configured`` if > 0, else 2 × the annotators holding a live lease (at least 1)."""
    if configured > 0:
        return configured
    with datastore.sessions() as session:
        active = lease_holder_count(session)
    return max(1, 2 * active)


def build_round(datastore: SQLDatastore, store: ModelStore, strategy_name: str, budget: int, seed: int = 0) -> int:
    """Run ``strategy_name`` over the unlabeled pool and store its ranked picks as the strategy's current round.

    ``budget`` is clipped to 1 … pool size (a round never asks for more volumes than are left). Before any model
    exists the rule's cold start applies; once one does, the round waits (:class:`SelectionUnavailable`) until that
    model's scores cover the pool, or, when the version scores a candidate subset first, until the candidates are
    scored: it then selects among the scored candidates (docs/design.md, "Candidate subsets").
    """
    version = store.latest_version()
    key = embedding_key(store)
    methods = STRATEGIES[strategy_name].score_keys() if version else ()
    with datastore.sessions() as session:
        pool = datastore.get_unlabeled_images()
        ids, embeddings = load_embeddings(session, key, pool)
        labeled_ids, labeled = load_embeddings(session, key, datastore.get_labeled_images())
        stored = {method: load_scores(session, method, version, ids) for method in methods}
        candidates = version_candidates(session, version) if methods else set()
        waiting = candidates_pending(session, version) if candidates else 0
    if not pool:
        raise SelectionUnavailable("no unlabeled volume is left")
    if len(ids) < len(pool):
        raise SelectionUnavailable(f"{len(pool) - len(ids)} of {len(pool)} unlabeled volumes have no embedding yet")
    scored = [i for i in ids if all(i in stored[method] for method in methods)]
    scope = {"pool": len(ids)}
    if len(scored) < len(ids):
        # The version scores a candidate subset first (docs/design.md, "Candidate subsets"): once no candidate batch
        # is open, the round selects among the candidates that have scores; the rest of the pool joins once it is
        # all scored. Without a subset (or before its batches are done) the round waits for the whole pool.
        if not candidates or waiting:
            method = next(m for m in methods if len(stored[m]) < len(ids))
            raise SelectionUnavailable(
                f"the candidate subset of model {version}: {waiting} of {len(candidates)} volumes not scored yet"
                if candidates else
                f"{method!r} scores of model {version} cover {len(stored[method])} of {len(ids)} volumes so far")
        keep = [n for n, i in enumerate(ids) if i in candidates and all(i in stored[m] for m in methods)]
        if not keep:
            raise SelectionUnavailable(f"no candidate of model {version} is unlabeled and scored")
        ids, embeddings = [ids[n] for n in keep], embeddings[keep]
        scope["candidates"] = len(ids)
    # one column per score key; a single key gives the (N,) vector rules take
    table = np.array([[stored[method][i] for method in methods] for i in ids]) if methods else None
    chosen = select_round(
        strategy_name,
        embeddings.reshape(len(ids), -1),
        max(1, min(budget, len(ids))),
        block_sizes=embedding_blocks(store.backbone()[0]),
        scores=None if table is None else (table[:, 0] if len(methods) == 1 else table),
        labeled_embeddings=labeled if len(labeled_ids) else None,
        seed=seed,
    )
    ranked = [ids[i] for i in chosen.picks]
    config = {**chosen.rule.config(), "rule": chosen.rule.name, "budget": budget, "ranked_by": chosen.ranked_by,
              **scope}
    with write_session(datastore.sessions) as session:
        round_id = create_round(
            session, strategy_name, ranked, model_version=version, config=config, reasons=chosen.reasons
        )
    logger.info(f"round {round_id} ({strategy_name}, model {version}): {ranked}")
    return round_id


class RoundBuilder:
    """Builds rounds in a background thread, at most one at a time per strategy."""

    def __init__(self, datastore: SQLDatastore, store: ModelStore, configured_size: int, cascade: CascadeConfig,
                 work: WorkSettings = WorkSettings()):
        self.datastore = datastore
        self.store = store
        self.configured_size = configured_size
        self.cascade = cascade
        self.work = work
        self._building: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def request(self, strategy_name: str) -> None:
        with self._lock:
            thread = self._building.get(strategy_name)
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(target=self._build, args=(strategy_name,), name=f"round-{strategy_name}", daemon=True)
            self._building[strategy_name] = thread
            thread.start()

    def wait(self, strategy_name: str, timeout: float | None = None) -> None:
        thread = self._building.get(strategy_name)
        if thread is not None:
            thread.join(timeout)

    def _build(self, strategy_name: str) -> None:
        try:
            # new volumes since the last round (batches other replicas hold are left to them)
            compute_missing_embeddings(self.datastore, self.store, self.cascade, self.work)
            build_round(self.datastore, self.store, strategy_name, round_size(self.datastore, self.configured_size))
        except (SelectionUnavailable, NoModelError) as exc:
            logger.info(f"no new {strategy_name} round yet: {exc}")
        except Exception:
            logger.exception(f"building a {strategy_name} round failed")


class ServedStrategy(MONAILabelStrategy):
    """A ``strategies`` rule as MONAI Label sees it: its description and options (what Slicer shows), and a call that
    claims a volume for ``request["annotator"]`` (set by the REST layer, ``app.api.deps.annotator_key``)."""

    def __init__(self, name: str):
        self.rule = get_strategy(name)
        super().__init__(self.rule.description)
        self.name = name

    def info(self) -> dict[str, Any]:
        return self.rule.info()


class ClaimStrategy(ServedStrategy):
    """Offer unlabeled volumes in a fixed order that the claim's SQL applies (:data:`CLAIM_ORDERS`)."""

    def __call__(self, request: dict[str, Any], datastore: SQLDatastore) -> dict[str, Any] | None:
        return datastore.claim_next(request["annotator"], self.name, order=CLAIM_ORDERS[self.name])


class RoundStrategy(ServedStrategy):
    """A ``strategies`` rule served through rounds: claims the best-ranked free volume of the current round."""

    def __init__(self, name: str, builder: RoundBuilder):
        super().__init__(name)
        self.builder = builder

    def __call__(self, request: dict[str, Any], datastore: SQLDatastore) -> dict[str, Any] | None:
        annotator = request["annotator"]
        with datastore.sessions() as session:
            selection = current_round(session, self.name)
            fresh = selection is not None and selection.model_version == self.builder.store.latest_version()
            remaining = round_remaining(session, selection.id) if selection is not None else 0
        if not fresh or remaining <= 1:
            self.builder.request(self.name)  # refill ahead of time: the next request finds a ready round
        if selection is not None and remaining > 0:
            answer = datastore.claim_next(annotator, self.name, round_id=selection.id)
            if answer:
                return {**answer, "round": selection.id}
        answer = datastore.claim_next(annotator, f"{self.name}-fallback", order="random")
        return {**answer, "round": None} if answer else None


class ReviewStrategy(MONAILabelStrategy):
    """Next Sample for reviewers: the oldest submitted final label of a single-read volume that is not the reviewer's
    own or held for another reviewer (:func:`db.reviews.next_to_review`, which holds it for the caller a while; no
    volume lease changes), and a review of a version that changed meanwhile is refused as stale. The route lets only
    reviewers and admins call it (``reviewers_only``)."""

    name = "review"
    reviewers_only = True

    def __init__(self):
        super().__init__("Review: the oldest label waiting for review, never your own (reviewers and admins)")

    def __call__(self, request: dict[str, Any], datastore: SQLDatastore) -> dict[str, Any] | None:
        return datastore.next_to_review(request["annotator"])


def served_strategies(builder: RoundBuilder) -> dict[str, MONAILabelStrategy]:
    """Every registered rule, in the registry's order (3D Slicer preselects the first: TESLA), then ``review``."""
    served: dict[str, MONAILabelStrategy] = {
        name: ClaimStrategy(name) if name in CLAIM_ORDERS else RoundStrategy(name, builder) for name in STRATEGIES
    }
    return {**served, ReviewStrategy.name: ReviewStrategy()}


def review_only_strategies() -> dict[str, MONAILabelStrategy]:
    """What a server without a model serves (``no_model``): the claim orders that need no model, and ``review``."""
    return {**{name: ClaimStrategy(name) for name in CLAIM_ORDERS}, ReviewStrategy.name: ReviewStrategy()}
