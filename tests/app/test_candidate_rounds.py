"""Candidate subsets (docs/design.md, "Candidate subsets"): a new version's scoring batches put a stratified subset of
the pool first, and a round built once those are scored selects among them only. A real SQLite file, the tiny
cohort's real embeddings, the real planning, claim and work loop (only the per-volume score is drawn at random
instead of running a network)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from app.scoring import CANDIDATE_PRIORITY, candidate_seed, plan_scoring, version_candidates
from app.selection import SelectionUnavailable, build_round
from app.work import WorkSettings, work_through
from db.schema import WorkBatch, WorkItem
from db.scores import store_scores
from strategies.candidates import stratified_subset
from strategies.uncertainty import SCORE_METHODS
from tests.app.test_selection import ROUND, Selection, embedded_db, selection  # noqa: F401 (fixtures)

SETTINGS = WorkSettings(batch=4, candidates=8, strata=4)


def _work(selection: Selection, min_priority: int | None) -> int:
    rng = np.random.default_rng(0)

    def store(session, per_volume):
        for method in SCORE_METHODS:
            store_scores(session, method, "v0001", {i: s[method] for i, s in per_volume.items()})

    done = work_through(selection.datastore.sessions, "scoring", "v0001",
                        compute=lambda image_id: {m: float(rng.uniform(0.1, 1.0)) for m in SCORE_METHODS},
                        store=store, settings=SETTINGS, noun="scored", detail={}, min_priority=min_priority)
    return done.volumes


def test_a_new_version_scores_its_stratified_candidates_first_and_a_round_picks_only_among_them(selection: Selection):
    selection.publish_version("v0001")
    plan = plan_scoring(selection.datastore, "v0001", SETTINGS, selection.store)
    assert (plan.volumes, plan.batches) == (24, 6)
    ids, embeddings = selection.pool()
    expected = {ids[i] for i in stratified_subset(embeddings, 8, block_sizes=selection.blocks(), strata=4,
                                                  seed=candidate_seed("v0001"))}
    with selection.datastore.sessions() as session:
        rows = session.execute(select(WorkBatch.priority, WorkItem.image_id).join(WorkItem)
                               .where(WorkBatch.kind == "scoring")).all()
        assert version_candidates(session, "v0001") == expected
    tiers = {}
    for priority, image_id in rows:
        tiers.setdefault(priority, set()).add(image_id)
    assert tiers == {CANDIDATE_PRIORITY: expected, 0: set(ids) - expected}
    # planning again (another replica, a restart) adds nothing and keeps the tiers
    assert plan_scoring(selection.datastore, "v0001", SETTINGS, selection.store).volumes == 0

    with pytest.raises(SelectionUnavailable, match="candidate subset of model v0001: 8 of 8 volumes not scored"):
        build_round(selection.datastore, selection.store, "tesla", ROUND)

    # any worker claims the candidate batches before the rest: a plain claim loop stopped after 8 volumes
    assert _work(selection, CANDIDATE_PRIORITY) == 8
    round_id = build_round(selection.datastore, selection.store, "tesla", ROUND)
    built, ranked = selection.round("tesla")
    assert built.id == round_id and built.model_version == "v0001"
    assert len(ranked) == ROUND and set(ranked) <= expected
    assert built.config["candidates"] == 8 and built.config["pool"] == 24

    # once the rest of the pool is scored in the background, the next round ranks the whole pool again
    assert _work(selection, None) == 16
    build_round(selection.datastore, selection.store, "tesla", ROUND)
    built, ranked = selection.round("tesla")
    assert "candidates" not in built.config and built.config["pool"] == 24


def test_without_a_subset_the_whole_pool_is_one_tier_and_the_round_waits_for_it(selection: Selection):
    selection.publish_version("v0001")
    for settings in (WorkSettings(batch=4, candidates=0), WorkSettings(batch=4, candidates=24)):
        plan_scoring(selection.datastore, "v0001", settings, selection.store)
    with selection.datastore.sessions() as session:
        assert set(session.scalars(select(WorkBatch.priority).where(WorkBatch.kind == "scoring"))) == {0}
        assert version_candidates(session, "v0001") == set()
    assert _work(selection, CANDIDATE_PRIORITY) == 0  # nothing is a candidate
    with pytest.raises(SelectionUnavailable, match="'prompt_uncertainty' scores of model v0001 cover 0 of 24"):
        build_round(selection.datastore, selection.store, "tesla", ROUND)
