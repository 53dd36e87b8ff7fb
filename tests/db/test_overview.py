"""The campaign seen from above (db/overview.py), on SQLite and PostgreSQL: every figure is counted by hand below.

One small campaign, built with the real repository functions (claims, assignments, labels, rounds, archive, scores):

=========  =====  ===============================================================  =========  =============
volume     group  history                                                          at NOW     at NOW+2h
=========  =====  ===============================================================  =========  =============
case_0000  a      leased to ann at T0, final label by ann at T0+10m (2026-01-05)    labeled    labeled
case_0001  b      final label by bob at T0-1d (2026-01-04), version 2 at T0+30m     labeled    labeled
case_0002  a      in the ready round; assigned to ann T0+1h .. T0+3h                leased     queued
case_0003  b      claimed by eve at T0+90m (first free by id) .. T0+3h30            leased     unlabeled
case_0004  a      cat's draft label; lease to cat T0-2h .. T0-1h, never noticed     unlabeled  unlabeled
case_0005  a      in the ready round                                                queued     queued
case_0006  b      in the ready round                                                queued     queued
case_0007  b      in the superseded round; dan claimed it, then skipped it          skipped    skipped
case_0008  b      in the ready round, archived                                      archived   archived
case_0009  -      in the superseded round; dan claimed it, then released it         unlabeled  unlabeled
case_0010  -      final label imported (no annotator) at T0-2d (2026-01-03)         labeled    labeled
=========  =====  ===============================================================  =========  =============

NOW = T0 + 2 h. Volumes 0-5 were ingested at T0-3d, 6-10 at T0-2d.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import DBError, claim_next_volume, create_round, record_label, release_lease, store_scores, upsert_images
from db import write_session
from db.archive import archive_image
from db.claims import assign_volume
from db.overview import (
    LIST_SCORE_METHOD,
    VOLUME_STATUSES,
    VolumeFilter,
    active_assignment_of,
    active_assignments,
    assignments_of_annotator,
    labels_of_annotator,
    labels_per_day,
    list_rounds,
    list_volumes,
    round_items,
    status_totals,
    totals_by_annotator,
    totals_by_group,
)
from tests.db.conftest import image_record

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=2)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
GROUPS = {0: "a", 1: "b", 2: "a", 3: "b", 4: "a", 5: "a", 6: "b", 7: "b", 8: "b", 9: None, 10: None}


def case(n: int) -> str:
    return f"case_{n:04d}"


def cases(*numbers: int) -> list[str]:
    return [case(n) for n in numbers]


@dataclass(frozen=True)
class Campaign:
    ready_round: int
    old_round: int


@pytest.fixture
def campaign(sessions: sessionmaker[Session]) -> Campaign:
    with write_session(sessions) as session:
        upsert_images(session, [image_record(i, GROUPS[i]) for i in range(6)], now=T0 - 3 * DAY)
        upsert_images(session, [image_record(i, GROUPS[i]) for i in range(6, 11)], now=T0 - 2 * DAY)
        record_label(session, case(10), "final", "/l/10.nii.gz", None, now=T0 - 2 * DAY)
        assign_volume(session, case(0), "ann", now=T0)
        record_label(session, case(0), "final", "/l/0.v1.nii.gz", "ann", now=T0 + 10 * MINUTE)
        record_label(session, case(1), "final", "/l/1.v1.nii.gz", "bob", now=T0 - DAY)
        record_label(session, case(1), "final", "/l/1.v2.nii.gz", "bob", now=T0 + 30 * MINUTE)
        old_round = create_round(session, "tesla", cases(7, 9))
    # dan: Next Sample twice in the old round (skipping 7), then gives 9 back.
    assert claim_next_volume(sessions, "dan", "tesla", round_id=old_round, now=T0 + 20 * MINUTE) == case(7)
    assert claim_next_volume(sessions, "dan", "tesla", round_id=old_round, now=T0 + 25 * MINUTE) == case(9)
    with write_session(sessions) as session:
        assert release_lease(session, "dan", now=T0 + 30 * MINUTE) == [case(9)]
        ready_round = create_round(session, "tesla", cases(2, 5, 6, 8))  # supersedes the old one
        assign_volume(session, case(2), "ann", timedelta(hours=2), now=T0 + HOUR)
    assert claim_next_volume(sessions, "eve", "first", now=T0 + 90 * MINUTE) == case(3)
    with write_session(sessions) as session:
        record_label(session, case(4), "draft", "/l/4.draft.nii.gz", "cat", now=T0)
        # Written last, so no later claim notices that it ran out: its row still holds cat's lease.
        assign_volume(session, case(4), "cat", timedelta(hours=1), now=T0 - 2 * HOUR)
        archive_image(session, case(8))
        store_scores(session, LIST_SCORE_METHOD, "v1", {case(5): 0.9, case(9): 0.7, case(2): 0.5, case(6): 0.2})
        store_scores(session, LIST_SCORE_METHOD, "v0", {case(4): 0.99, case(0): 0.1})  # an older model's
        store_scores(session, "entropy", "v1", {case(3): 0.95})  # another method
    return Campaign(ready_round=ready_round, old_round=old_round)


def totals(**nonzero: int) -> dict[str, int]:
    return dict.fromkeys(VOLUME_STATUSES, 0) | nonzero


# --- totals ------------------------------------------------------------------------------------------------------

def test_status_totals_follow_the_precedence_and_the_leases_live_at_now(sessions, campaign) -> None:
    with sessions() as session:
        at_now = totals(labeled=3, leased=2, queued=2, skipped=1, archived=1, unlabeled=2)
        assert status_totals(session, NOW) == at_now | {"total": 11}
        # ann's lease on case_0002 ends at T0+3h: still live at that instant, gone a second later (it is queued again).
        assert status_totals(session, T0 + 3 * HOUR) == at_now | {"total": 11}
        after_ann = totals(labeled=3, leased=1, queued=3, skipped=1, archived=1, unlabeled=2)
        assert status_totals(session, T0 + 3 * HOUR + timedelta(seconds=1)) == after_ann | {"total": 11}
        # Every lease over: eve's case_0003 is plain unlabeled again.
        assert status_totals(session, NOW + 2 * HOUR) == totals(
            labeled=3, queued=3, skipped=1, archived=1, unlabeled=3
        ) | {"total": 11}


def test_totals_by_group_leave_out_volumes_of_unknown_group(sessions, campaign) -> None:
    with sessions() as session:
        assert totals_by_group(session, NOW) == {
            "a": totals(labeled=1, leased=1, unlabeled=1, queued=1),
            "b": totals(labeled=1, leased=1, queued=1, skipped=1, archived=1),
        }
        assert totals_by_group(session, NOW + 2 * HOUR) == {
            "a": totals(labeled=1, unlabeled=1, queued=2),
            "b": totals(labeled=1, unlabeled=1, queued=1, skipped=1, archived=1),
        }


def test_totals_by_annotator_count_final_labels_live_leases_and_skips(sessions, campaign) -> None:
    # cat (a draft label, an expired lease) and the import (no annotator) are nobody's work; bob's two versions are
    # one volume.
    with sessions() as session:
        assert totals_by_annotator(session, NOW) == {
            "ann": {"labeled": 1, "leased": 1, "skipped": 0},
            "bob": {"labeled": 1, "leased": 0, "skipped": 0},
            "dan": {"labeled": 0, "leased": 0, "skipped": 1},
            "eve": {"labeled": 0, "leased": 1, "skipped": 0},
        }
        assert totals_by_annotator(session, NOW + 2 * HOUR) == {
            "ann": {"labeled": 1, "leased": 0, "skipped": 0},
            "bob": {"labeled": 1, "leased": 0, "skipped": 0},
            "dan": {"labeled": 0, "leased": 0, "skipped": 1},
        }
        assert list(totals_by_annotator(session, NOW)) == ["ann", "bob", "dan", "eve"]  # sorted by name


def test_labels_per_day_count_first_final_versions_by_utc_day(sessions, campaign) -> None:
    # bob's second version (2026-01-05) is a correction, cat's draft is no final label.
    with sessions() as session:
        assert labels_per_day(session) == {"2026-01-03": 1, "2026-01-04": 1, "2026-01-05": 1}
        assert list(labels_per_day(session)) == sorted(labels_per_day(session))


def test_an_empty_campaign_has_zero_totals(sessions) -> None:
    with sessions() as session:
        assert status_totals(session, NOW) == totals() | {"total": 0}
        assert (totals_by_group(session, NOW), totals_by_annotator(session, NOW), labels_per_day(session)) == ({}, {}, {})


# --- the volume list ---------------------------------------------------------------------------------------------

def listed(session: Session, filters: VolumeFilter = VolumeFilter(), now: datetime = NOW, **options):
    """(total, [(id, status, lease holder shown), ...]) of one page."""
    total, rows = list_volumes(session, filters, model_version="v1", now=now, **options)
    return total, [(r.id, r.status, r.lease_holder) for r in rows]


def test_volume_list_derives_each_status_and_shows_only_live_lease_holders(sessions, campaign) -> None:
    with sessions() as session:
        total, rows = listed(session, limit=50)
        assert total == 11
        assert rows == [
            (case(0), "labeled", None), (case(1), "labeled", None), (case(2), "leased", "ann"),
            (case(3), "leased", "eve"), (case(4), "unlabeled", None), (case(5), "queued", None),
            (case(6), "queued", None), (case(7), "skipped", None), (case(8), "archived", None),
            (case(9), "unlabeled", None), (case(10), "labeled", None),
        ]
        # Before it ran out, cat's lease made case_0004 leased, held by cat.
        assert listed(session, now=T0 - 90 * MINUTE, only=case(4)) == (1, [(case(4), "leased", "cat")])
        _, rows = list_volumes(session, VolumeFilter(), model_version="v1", now=NOW, only=case(3))
        assert (rows[0].group, rows[0].ingested_at) == ("b", T0 - 3 * DAY)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (VolumeFilter(status="leased"), cases(2, 3)),
        (VolumeFilter(status="unlabeled"), cases(4, 9)),
        (VolumeFilter(status="queued"), cases(5, 6)),
        (VolumeFilter(status="archived"), cases(8)),
        (VolumeFilter(annotator="dan"), cases(7, 9)),  # held leases
        (VolumeFilter(annotator="bob"), cases(1)),  # saved labels
        (VolumeFilter(annotator="cat"), cases(4)),  # both
        (VolumeFilter(annotator="nobody"), []),
        (VolumeFilter(min_score=0.5), cases(2, 5, 9)),  # v1's prompt_uncertainty only: 0.5 is in, unscored are out
        (VolumeFilter(max_score=0.5), cases(2, 6)),
        (VolumeFilter(min_score=0.3, max_score=0.8), cases(2, 9)),
        (VolumeFilter(status="queued", min_score=0.5), cases(5)),
    ],
    ids=lambda value: repr(value) if isinstance(value, VolumeFilter) else None,
)
def test_volume_list_filters(sessions, campaign, filters: VolumeFilter, expected: list[str]) -> None:
    with sessions() as session:
        total, rows = listed(session, filters)
        assert (total, [row[0] for row in rows]) == (len(expected), expected)


def test_volume_list_filters_by_round(sessions, campaign) -> None:
    with sessions() as session:
        assert listed(session, VolumeFilter(round_id=campaign.ready_round)) == (4, [
            (case(2), "leased", "ann"), (case(5), "queued", None), (case(6), "queued", None),
            (case(8), "archived", None),
        ])
        assert listed(session, VolumeFilter(round_id=campaign.old_round)) == (2, [
            (case(7), "skipped", None), (case(9), "unlabeled", None),
        ])


def test_volume_list_sorts_and_pages(sessions, campaign) -> None:
    with sessions() as session:
        def ids(**options) -> list[str]:
            return [row[0] for row in listed(session, **options)[1]]

        unscored = cases(0, 1, 3, 4, 7, 8, 10)  # after the scored ones whichever way, by id
        assert ids(sort="-score") == cases(5, 9, 2, 6) + unscored
        assert ids(sort="score") == cases(6, 2, 9, 5) + unscored
        assert ids(sort="ingested") == cases(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
        assert ids(sort="-ingested") == cases(6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 5)
        assert listed(session, sort="id", offset=4, limit=3) == (11, [
            (case(4), "unlabeled", None), (case(5), "queued", None), (case(6), "queued", None),
        ])
        assert listed(session, sort="-score", offset=10, limit=5) == (11, [(case(10), "labeled", None)])
        _, rows = list_volumes(session, VolumeFilter(), model_version="v1", sort="-score", now=NOW, limit=2)
        assert [r.score for r in rows] == pytest.approx([0.9, 0.7])
        _, rows = list_volumes(session, VolumeFilter(), model_version=None, now=NOW, only=case(5))
        assert rows[0].score is None  # no model: no score


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: VolumeFilter(status="lost"), "unknown status 'lost'"),
        (lambda: VolumeFilter(min_score=0.6, max_score=0.4), "min_score 0.6 is above max_score 0.4"),
    ],
)
def test_bad_filters_are_refused(make, words: str) -> None:
    with pytest.raises(DBError, match=words):
        make()


def test_unknown_sort_is_refused(sessions) -> None:
    with sessions() as session, pytest.raises(DBError, match="unknown sort 'size'"):
        list_volumes(session, VolumeFilter(), model_version=None, sort="size")


# --- leases, people and rounds -----------------------------------------------------------------------------------

def test_leases_in_force_are_the_live_ones_oldest_first(sessions, campaign) -> None:
    with sessions() as session:
        assert [(a.image_id, a.annotator) for a in active_assignments(session, NOW)] == [
            (case(2), "ann"), (case(3), "eve"),
        ]
        assert [(a.image_id, a.annotator) for a in active_assignments(session, T0 + 3 * HOUR + MINUTE)] == [
            (case(3), "eve"),
        ]
        assert active_assignments(session, NOW + 2 * HOUR) == []
        assert active_assignment_of(session, case(2), NOW).annotator == "ann"
        assert active_assignment_of(session, case(2), T0 + 3 * HOUR + MINUTE) is None
        assert active_assignment_of(session, case(4), NOW) is None  # cat's ran out
        assert active_assignment_of(session, case(0), NOW) is None  # labeled


def test_an_annotators_history_is_newest_first(sessions, campaign) -> None:
    with sessions() as session:
        assert [(a.image_id, a.state) for a in assignments_of_annotator(session, "dan")] == [
            (case(9), "released"), (case(7), "skipped"),
        ]
        assert [(a.image_id, a.state) for a in assignments_of_annotator(session, "ann")] == [
            (case(2), "active"), (case(0), "labeled"),
        ]
        assert [(a.image_id, a.state) for a in assignments_of_annotator(session, "dan", limit=1)] == [
            (case(9), "released"),
        ]
        assert [(label.image_id, label.version) for label in labels_of_annotator(session, "bob")] == [
            (case(1), 2), (case(1), 1),
        ]
        assert [(label.image_id, label.tag) for label in labels_of_annotator(session, "cat")] == [(case(4), "draft")]


def test_rounds_are_listed_newest_first_with_their_items_by_rank(sessions, campaign) -> None:
    with sessions() as session:
        assert [(r.id, r.state) for r in list_rounds(session)] == [
            (campaign.ready_round, "ready"), (campaign.old_round, "superseded"),
        ]
        assert [r.id for r in list_rounds(session, limit=1, offset=1)] == [campaign.old_round]
        assert [(item.image_id, item.rank) for item in round_items(session, campaign.ready_round)] == [
            (case(2), 0), (case(5), 1), (case(6), 2), (case(8), 3),
        ]
