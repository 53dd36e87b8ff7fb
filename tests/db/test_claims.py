"""Leases: claim order, skip, expiry, exhaustion, rounds, and many annotators claiming at once."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import (
    Assignment,
    DBError,
    Image,
    active_lease,
    claim_next_sample,
    claim_next_volume,
    counts,
    create_round,
    current_round,
    record_label,
    release_lease,
    round_remaining,
    write_session,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def _assignments(sessions: sessionmaker[Session]) -> list[Assignment]:
    with sessions() as session:
        return list(session.scalars(select(Assignment).order_by(Assignment.id)))


def test_first_order_hands_out_distinct_volumes_by_id(sessions, ingest) -> None:
    ids = ingest(5)
    claimed = [claim_next_volume(sessions, f"ann{i}", "first", now=T0) for i in range(5)]
    assert claimed == ids
    with sessions() as session:
        image = session.get(Image, ids[2])
        assert (image.lease_holder, image.lease_expires_at) == ("ann2", T0 + timedelta(hours=2))
        assert counts(session, now=T0) == {"total": 5, "labeled": 0, "unlabeled": 5, "leased": 5}
        assert active_lease(session, "ann2", now=T0) == ids[2]
    rows = _assignments(sessions)
    assert [(a.image_id, a.annotator, a.strategy, a.state) for a in rows] == [
        (ids[i], f"ann{i}", "first", "active") for i in range(5)
    ]


def test_the_claim_returns_the_answer_of_next_sample_read_under_the_lease(sessions, ingest) -> None:
    ids = ingest(3)
    claimed = claim_next_sample(sessions, "ann", "first", now=T0)
    with sessions() as session:
        image = session.get(Image, ids[0])
        assert image.lease_holder == "ann"
        expected = (image.id, image.path, image.name, image.checksum, image.shape, image.spacing, image.grp,
                    image.label_status, image.meta)
    assert tuple(claimed) == expected


def test_nothing_left_returns_none_and_writes_nothing(sessions, ingest) -> None:
    ingest(2)
    assert claim_next_volume(sessions, "a", "first", now=T0) is not None
    assert claim_next_volume(sessions, "b", "first", now=T0) is not None
    assert claim_next_volume(sessions, "c", "first", now=T0) is None
    assert len(_assignments(sessions)) == 2


def test_skip_releases_the_previous_lease_and_offers_it_again_last(sessions, ingest) -> None:
    a, b, c = ingest(3)
    assert claim_next_volume(sessions, "ann", "first", now=T0) == a
    # Next Sample again: a is skipped and goes back to the pool, but ann is offered b.
    assert claim_next_volume(sessions, "ann", "first", now=T0 + HOUR) == b
    # Another annotator now gets a (free again), then c.
    assert claim_next_volume(sessions, "other", "first", now=T0 + HOUR) == a
    with write_session(sessions) as session:
        release_lease(session, "other", now=T0 + HOUR)
    # ann skips b: a and c are free, the lowest other than b is a.
    assert claim_next_volume(sessions, "ann", "first", now=T0 + 2 * HOUR) == a
    assert claim_next_volume(sessions, "other", "first", now=T0 + 2 * HOUR) == b
    assert claim_next_volume(sessions, "third", "first", now=T0 + 2 * HOUR) == c
    # Nothing else is free, so ann's skipped volume comes straight back to ann.
    assert claim_next_volume(sessions, "ann", "first", now=T0 + 3 * HOUR) == a
    states = [(x.image_id, x.annotator, x.state) for x in _assignments(sessions)]
    assert states == [
        (a, "ann", "skipped"),
        (b, "ann", "skipped"),
        (a, "other", "released"),
        (a, "ann", "skipped"),
        (b, "other", "active"),
        (c, "third", "active"),
        (a, "ann", "active"),
    ]
    first = _assignments(sessions)[0]
    assert first.closed_at == T0 + HOUR


def test_expired_lease_returns_the_volume_to_the_pool(sessions, ingest) -> None:
    a, b = ingest(2)
    assert claim_next_volume(sessions, "ann", "first", lease=HOUR, now=T0) == a
    assert claim_next_volume(sessions, "bob", "first", lease=HOUR, now=T0 + HOUR / 2) == b
    assert claim_next_volume(sessions, "cat", "first", now=T0 + HOUR / 2) is None
    # At T0 + 61 min ann's lease is over (bob's is not): cat gets a.
    later = T0 + HOUR + timedelta(minutes=1)
    assert claim_next_volume(sessions, "cat", "first", now=later) == a
    rows = {(x.image_id, x.annotator): x for x in _assignments(sessions)}
    assert rows[(a, "ann")].state == "expired"
    assert rows[(a, "ann")].closed_at == T0 + HOUR  # when the lease ran out
    assert rows[(b, "bob")].state == "active"
    assert rows[(a, "cat")].state == "active"
    with sessions() as session:
        assert active_lease(session, "ann", now=later) is None
        assert active_lease(session, "bob", now=later) == b


def test_random_order_is_reproducible_by_seed_and_not_the_first_ids(sessions, ingest) -> None:
    ids = ingest(200)

    def draw() -> list[str | None]:
        got = [claim_next_volume(sessions, f"r{i}", "random", order="random", seed=i, now=T0) for i in range(10)]
        with write_session(sessions) as session:
            for i in range(10):
                release_lease(session, f"r{i}", now=T0)
        return got

    first, second = draw(), draw()
    assert first == second
    assert len(set(first)) == 10 and set(first) <= set(ids)
    assert set(first) != set(ids[:10])


def test_round_orders_claims_by_rank_and_ends_with_the_round(sessions, ingest) -> None:
    ids = ingest(6)
    ranked = [ids[4], ids[1], ids[3]]
    with write_session(sessions) as session:
        stale = create_round(session, "tesla", [ids[0]], model_version=None)
        round_id = create_round(session, "tesla", ranked, model_version="v0001", config={"k": 3})
        assert current_round(session).id == round_id
        assert round_remaining(session, round_id, now=T0) == 3
    claims = [claim_next_volume(sessions, f"a{i}", "tesla", round_id=round_id, now=T0) for i in range(4)]
    assert claims == [*ranked, None]
    with sessions() as session:
        assert round_remaining(session, round_id, now=T0) == 0
        assert round_remaining(session, stale, now=T0) == 1
    assert {a.round_id for a in _assignments(sessions)} == {round_id}


def test_claim_inside_the_callers_session_commits_with_it(sessions, ingest) -> None:
    (a,) = ingest(1)
    with sessions() as session:
        assert claim_next_volume(session, "ann", "first", now=T0) == a
        session.rollback()
    assert _assignments(sessions) == []
    with sessions() as session:
        assert claim_next_volume(session, "ann", "first", now=T0) == a
        session.commit()
    assert [x.image_id for x in _assignments(sessions)] == [a]


def test_bad_claim_arguments_are_refused(sessions, ingest) -> None:
    ingest(1)
    with pytest.raises(DBError, match="claim order"):
        claim_next_volume(sessions, "ann", "x", order="best")
    with pytest.raises(DBError, match="annotator"):
        claim_next_volume(sessions, "", "first")
    with pytest.raises(DBError, match="naive datetime"):
        claim_next_volume(sessions, "ann", "first", now=datetime(2026, 1, 1))
    with pytest.raises(DBError, match="lease must be positive"):
        claim_next_volume(sessions, "ann", "first", lease=timedelta(0))
    with pytest.raises(DBError, match="unknown selection round 99"):
        claim_next_volume(sessions, "ann", "first", round_id=99)
    assert _assignments(sessions) == []


def test_concurrent_claims_never_hand_one_volume_to_two_annotators(sessions, ingest) -> None:
    """32 annotators x 20 Next Samples over 400 volumes; a quarter of the claims are labeled at once.

    Half the annotators claim in id order, all contending for the same lowest free id.
    """
    ingest(400)
    threads, claims_each = 32, 20
    start = threading.Barrier(threads)

    def annotate(index: int) -> list[str | None]:
        annotator, rng = f"annotator_{index:02d}", random.Random(index)
        order = "first" if index % 2 == 0 else "random"
        start.wait()
        got = []
        for _ in range(claims_each):
            image_id = claim_next_volume(sessions, annotator, order, order=order, seed=rng.randrange(10**9))
            got.append(image_id)
            if image_id is not None and rng.random() < 0.25:
                with write_session(sessions) as session:
                    record_label(session, image_id, "final", f"/labels/{image_id}.nii.gz", annotator)
        return got

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(annotate, range(threads)))
    assert all(image_id is not None for got in results for image_id in got)

    rows = _assignments(sessions)
    assert len(rows) == threads * claims_each
    by_image: dict[str, list[Assignment]] = defaultdict(list)
    for row in rows:
        by_image[row.image_id].append(row)
    for image_id, history in by_image.items():
        history.sort(key=lambda a: (a.claimed_at, a.id))
        assert sum(a.state == "active" for a in history) <= 1, image_id
        # Each lease ended before the volume was handed to anyone else.
        for before, after in zip(history, history[1:]):
            assert before.state != "active" and before.closed_at is not None, (image_id, before.id)
            assert before.closed_at <= after.claimed_at, (image_id, before.id, after.id)
    active = [a for a in rows if a.state == "active"]
    assert len({a.annotator for a in active}) == len(active)  # nobody holds two volumes
    with sessions() as session:
        leased = select(Image.id, Image.lease_holder).where(Image.lease_holder.is_not(None))
        holders = {image_id: holder for image_id, holder in session.execute(leased)}
        labeled = set(session.scalars(select(Image.id).where(Image.label_status == "labeled")))
    assert holders == {a.image_id: a.annotator for a in active}
    assert labeled == {a.image_id for a in rows if a.state == "labeled"}
    assert {a.state for a in rows} <= {"active", "skipped", "labeled"}
