"""Review states and double reading in the database: transitions and their audit rows, stale and own reviews, the
return of a sent-back volume, and k distinct readers per double-read volume under concurrent claims."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from db import Image, Label, claim_next_volume, record_label, write_session
from db.datastore import SQLDatastore
from db.reviews import (
    REVIEW_HOLD,
    OwnLabelError,
    ReviewConflictError,
    StaleReviewError,
    blinded_images,
    next_to_review,
    reader_labels,
    review_history,
    review_label,
    review_totals,
    set_readers,
    visible_final_label,
)
from db.errors import DBError, NotFoundError

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def _label(sessions, image_id: str, annotator: str, when: datetime = T0) -> int:
    with write_session(sessions) as session:
        return record_label(session, image_id, "final", f"/labels/{image_id}.{annotator}.nii.gz", annotator,
                            now=when).version


def test_a_final_label_is_submitted_then_approved_with_an_audit_row_per_transition(sessions, ingest) -> None:
    (image_id,) = ingest(1)
    _label(sessions, image_id, "ann")
    with write_session(sessions) as session:
        review_label(session, image_id, 1, "approved", "rev", comment="fine", now=T0 + timedelta(minutes=5))
    with sessions() as session:
        assert session.scalar(select(Label.review_status)) == "approved"
        history = [(r.version, r.from_status, r.to_status, r.actor, r.at, r.comment)
                   for r in review_history(session, image_id)]
    assert history == [(1, None, "submitted", "ann", T0, None),
                       (1, "submitted", "approved", "rev", T0 + timedelta(minutes=5), "fine")]


def test_bad_reviews_are_refused_and_write_nothing(sessions, ingest) -> None:
    first, second, unlabeled = ingest(3)
    _label(sessions, first, "ann")
    _label(sessions, first, "ann")  # version 2
    _label(sessions, second, "rev")
    cases = [
        (first, 1, "approved", "rev", None, StaleReviewError),
        (second, 1, "approved", "rev", None, OwnLabelError),
        (first, 2, "rejected", "rev", None, DBError),
        (first, 2, "approved", "rev", "x" * 5000, DBError),
        (unlabeled, None, "approved", "rev", None, NotFoundError),
        ("nope", None, "approved", "rev", None, NotFoundError),
    ]
    for image_id, version, status, actor, comment, error in cases:
        with pytest.raises(error):
            with write_session(sessions) as session:
                review_label(session, image_id, version, status, actor, comment=comment)
    with pytest.raises(StaleReviewError) as stale:
        with write_session(sessions) as session:
            review_label(session, first, 1, "approved", "rev")
    assert stale.value.newest == 2
    with write_session(sessions) as session:  # an admin may approve their own
        review_label(session, second, 1, "approved", "rev", may_review_own=True)
    with pytest.raises(ReviewConflictError):
        with write_session(sessions) as session:
            review_label(session, second, 1, "approved", "rev2")
    with sessions() as session:
        statuses = dict(session.execute(select(Label.image_id, Label.review_status).where(Label.version == 1)).all())
        assert statuses == {first: "submitted", second: "approved"}
        assert [r.to_status for r in review_history(session, first)] == ["submitted", "submitted"]


def test_a_sent_back_volume_returns_to_its_annotator_first_and_a_correction_starts_review_again(sessions, ingest):
    ids = ingest(3)
    assert claim_next_volume(sessions, "ann", "first", now=T0) == ids[0]
    _label(sessions, ids[0], "ann")
    assert claim_next_volume(sessions, "ann", "first", now=T0) == ids[1]  # working on the next one
    with write_session(sessions) as session:
        review_label(session, ids[0], 1, "changes_requested", "rev", comment="tumour missed", now=T0)
    with sessions() as session:
        assert session.get(Image, ids[0]).label_status == "unlabeled"
    # Someone else never gets it while it is returned; its annotator gets it before anything else.
    assert claim_next_volume(sessions, "other", "first", now=T0) == ids[2]
    assert claim_next_volume(sessions, "ann", "first", now=T0) == ids[0]
    _label(sessions, ids[0], "ann")
    with sessions() as session:
        label = session.scalar(select(Label).where(Label.image_id == ids[0], Label.version == 2))
        assert (label.review_status, session.get(Image, ids[0]).label_status) == ("submitted", "labeled")
        assert next_to_review(session, "rev").image_id == ids[0]
        assert next_to_review(session, "ann") is None  # never one's own


def test_the_review_queue_gives_the_oldest_submitted_label_never_the_reviewers_own(sessions, ingest) -> None:
    ids = ingest(3)
    _label(sessions, ids[2], "ann", T0)
    _label(sessions, ids[0], "ann", T0 + timedelta(minutes=1))
    _label(sessions, ids[1], "rev", T0 - timedelta(minutes=1))
    with write_session(sessions) as session:
        assert next_to_review(session, "rev", now=T0).image_id == ids[2]
        assert next_to_review(session, "third", now=T0).image_id == ids[1]
    with write_session(sessions) as session:
        review_label(session, ids[2], 1, "approved", "rev")
    with write_session(sessions) as session:
        assert next_to_review(session, "rev", now=T0).image_id == ids[0]


def test_a_label_served_to_a_reviewer_is_held_for_them_until_the_hold_lapses(sessions, ingest) -> None:
    ids = ingest(2)
    _label(sessions, ids[0], "ann", T0)
    _label(sessions, ids[1], "ann", T0 + timedelta(minutes=1))
    asked = T0 + timedelta(minutes=2)

    def next_for(reviewer: str, when: datetime = asked) -> str | None:
        with write_session(sessions) as session:
            label = next_to_review(session, reviewer, now=when)
            return None if label is None else label.image_id

    assert (next_for("r1"), next_for("r2")) == (ids[0], ids[1])  # the second reviewer gets the next label
    assert next_for("r1") == ids[0]  # asking again: the label one holds
    assert next_for("r3") is None  # both held
    assert next_for("r3", asked + REVIEW_HOLD) == ids[0]  # a hold lapses


def test_reviewers_asking_at_the_same_moment_are_served_different_labels(sessions, ingest) -> None:
    ids = ingest(6)
    for n, image_id in enumerate(ids):
        _label(sessions, image_id, "ann", T0 + timedelta(seconds=n))
    start, served, lock = threading.Barrier(6), [], threading.Lock()

    def reviewer(n: int) -> None:
        start.wait()
        with write_session(sessions) as session:
            label = next_to_review(session, f"r{n}", now=T0 + timedelta(minutes=1))
            image_id = label.image_id if label else None
        with lock:
            served.append(image_id)

    threads = [threading.Thread(target=reviewer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(served) == sorted(ids)  # six reviewers, six labels, none twice


def test_a_double_read_volume_waits_for_k_readers_and_blinds_them_from_each_other(sessions, ingest) -> None:
    ids = ingest(2)
    with write_session(sessions) as session:
        set_readers(session, [ids[0]], 2, "admin")
    assert claim_next_volume(sessions, "a", "first", now=T0) == ids[0]
    _label(sessions, ids[0], "a")
    with sessions() as session:
        assert session.get(Image, ids[0]).label_status == "unlabeled"
        assert visible_final_label(session, ids[0], "b") is None
        assert visible_final_label(session, ids[0], "a").annotator == "a"
        assert blinded_images(session) == {ids[0]}
    # "a" read it already: never again, even with nothing else left.
    assert claim_next_volume(sessions, "a", "first", now=T0) == ids[1]
    _label(sessions, ids[1], "a")
    assert claim_next_volume(sessions, "a", "first", now=T0) is None
    assert claim_next_volume(sessions, "b", "first", now=T0) == ids[0]
    _label(sessions, ids[0], "b")
    with sessions() as session:
        assert session.get(Image, ids[0]).label_status == "labeled"
        assert sorted(reader_labels(session, ids[0])) == ["a", "b"]
        assert next_to_review(session, "rev") .image_id == ids[1]  # double-read volumes are adjudicated instead
    with pytest.raises(ReviewConflictError):
        with write_session(sessions) as session:
            review_label(session, ids[0], None, "approved", "rev")
    with pytest.raises(ReviewConflictError):  # its reading is over
        with write_session(sessions) as session:
            set_readers(session, [ids[0]], 3, "admin")
    with pytest.raises(DBError):
        with write_session(sessions) as session:
            set_readers(session, [ids[1]], 4, "admin")


def test_concurrent_annotators_read_each_double_read_volume_k_times_by_distinct_readers(sessions, ingest) -> None:
    """16 annotators claim and label at once; half the volumes need 2 readers, a quarter 3."""
    ids = ingest(40)
    with write_session(sessions) as session:
        set_readers(session, ids[:20], 2, "admin")
        set_readers(session, ids[20:30], 3, "admin")
    threads = 16
    start = threading.Barrier(threads)

    def annotate(index: int) -> None:
        annotator, rng = f"annotator_{index:02d}", random.Random(index)
        start.wait()
        while (image_id := claim_next_volume(sessions, annotator, "random", order="random",
                                             seed=rng.randrange(10**9))) is not None:
            if rng.random() < 0.2:
                continue  # skipped: claiming again releases it
            with write_session(sessions) as session:
                record_label(session, image_id, "final", f"/labels/{image_id}.{annotator}.nii.gz", annotator)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(annotate, range(threads)))
    # An annotator stops at the first "nothing left" although a volume leased to someone else may need them later.
    drained = False
    while not drained:
        drained = True
        for index in range(threads):
            annotator = f"annotator_{index:02d}"
            while (image_id := claim_next_volume(sessions, annotator, "first")) is not None:
                drained = False
                with write_session(sessions) as session:
                    record_label(session, image_id, "final", f"/labels/{image_id}.{annotator}.nii.gz", annotator)
    with sessions() as session:
        readers = defaultdict(list)
        for image_id, annotator in session.execute(select(Label.image_id, Label.annotator)):
            readers[image_id].append(annotator)
        status = dict(session.execute(select(Image.id, Image.label_status)).all())
    expected = {**{i: 2 for i in ids[:20]}, **{i: 3 for i in ids[20:30]}, **{i: 1 for i in ids[30:]}}
    for image_id, k in expected.items():
        assert len(readers[image_id]) == k, (image_id, readers[image_id])  # exactly k reads, none twice
        assert len(set(readers[image_id])) == k, (image_id, readers[image_id])
        assert status[image_id] == "labeled"


@pytest.mark.parametrize("train_on", ["final", "approved"])
def test_what_trains_by_setting_and_a_double_read_volume_only_once_adjudicated(sessions, ingest, tmp_path,
                                                                               train_on) -> None:
    submitted, approved, read_twice, adjudicated = ingest(4)
    _label(sessions, submitted, "a")
    _label(sessions, approved, "a")
    with write_session(sessions) as session:
        review_label(session, approved, 1, "approved", "rev")
        set_readers(session, [read_twice, adjudicated], 2, "admin")
    for volume in (read_twice, adjudicated):
        _label(sessions, volume, "a")
        _label(sessions, volume, "b")
    with write_session(sessions) as session:
        record_label(session, adjudicated, "final", "/labels/adjudicated.nii.gz", "rev",
                     meta={"adjudication": {"method": "majority"}})
        review_label(session, adjudicated, 3, "approved", "rev", may_review_own=True)
    with sessions() as session:
        assert blinded_images(session) == {read_twice}  # read by both, hidden until adjudicated
        totals = review_totals(session)
    assert (totals["double_read"], totals["double_read_complete"], totals["adjudicated"]) == (2, 2, 1)
    datastore = SQLDatastore(sessions, tmp_path, tmp_path, {1, 2}, train_on=train_on)
    trains = {pair["id"]: pair["label"] for pair in datastore.datalist()}
    expected = {approved: f"/labels/{approved}.a.nii.gz", adjudicated: "/labels/adjudicated.nii.gz"}
    if train_on == "final":
        expected[submitted] = f"/labels/{submitted}.a.nii.gz"
    assert trains == expected
