"""Label records: versions, the final label closing the lease, deletion, audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db import Assignment, DBError, NotFoundError, UnknownImageError, audit, audit_events, claim_next_volume
from db import archive_label, counts, get_image, labels_for, latest_label, record_label, restore_label, write_session

CHECKSUM = "SHA256:" + "0f" * 32


def test_final_label_marks_labeled_closes_lease_bumps_version_and_audits(sessions, ingest) -> None:
    a, b = ingest(2)
    assert claim_next_volume(sessions, "ann", "first") == a
    with write_session(sessions) as session:
        original = record_label(session, a, "original", "/l/a_original.nii.gz", None, meta={"model": "v0001"})
        first = record_label(session, a, "final", "/l/a_v1.nii.gz", "ann", checksum=CHECKSUM)
    with write_session(sessions) as session:
        second = record_label(session, a, "final", "/l/a_v2.nii.gz", "ann")
    assert (original.version, first.version, second.version) == (1, 1, 2)
    with sessions() as session:
        image = get_image(session, a)
        assert (image.label_status, image.lease_holder, image.lease_expires_at) == ("labeled", None, None)
        (assignment,) = session.scalars(select(Assignment)).all()
        assert assignment.state == "labeled" and assignment.closed_at == first.created_at
        assert latest_label(session, a, "final").path == "/l/a_v2.nii.gz"
        assert [(x.tag, x.version) for x in labels_for(session, a)] == [("final", 1), ("final", 2), ("original", 1)]
        assert latest_label(session, b, "final") is None
        saved = audit_events(session, image_id=a, action="label_saved")
        assert [(e.actor, e.detail["tag"], e.detail["version"]) for e in reversed(saved)] == [
            ("unknown", "original", 1),
            ("ann", "final", 1),
            ("ann", "final", 2),
        ]
        assert counts(session)["labeled"] == 1
    # A labeled volume is never offered again; ann's next claim does not "skip" it.
    assert claim_next_volume(sessions, "ann", "first") == b


def test_non_final_label_leaves_status_and_lease_alone(sessions, ingest) -> None:
    (a,) = ingest(1)
    claim_next_volume(sessions, "ann", "first")
    with write_session(sessions) as session:
        record_label(session, a, "original", "/l/a.nii.gz", None)
    with sessions() as session:
        image = get_image(session, a)
        assert (image.label_status, image.lease_holder) == ("unlabeled", "ann")


def test_archiving_the_final_label_makes_the_image_unlabeled_and_restoring_undoes_it(sessions, ingest) -> None:
    (a,) = ingest(1)
    with write_session(sessions) as session:
        record_label(session, a, "final", "/l/1", "ann")
        record_label(session, a, "final", "/l/2", "ann")
    with write_session(sessions) as session:
        archived = archive_label(session, a, "final", actor="admin")
    assert sorted(label.path for label in archived) == ["/l/1", "/l/2"]
    with sessions() as session:
        assert get_image(session, a).label_status == "unlabeled"
        assert labels_for(session, a) == []
        (event,) = audit_events(session, action="label_archived")
        assert (event.actor, event.image_id, sorted(event.detail["versions"])) == ("admin", a, [1, 2])
    with pytest.raises(NotFoundError, match="no label tagged 'final'"), write_session(sessions) as session:
        archive_label(session, a, "final", actor="admin")
    with write_session(sessions) as session:  # a new label meanwhile: its number is not one of the archived ones
        assert record_label(session, a, "final", "/l/3", "ann").version == 3
    with write_session(sessions) as session:
        restore_label(session, a, "final", actor="admin")
    with sessions() as session:
        assert [(label.version, label.path) for label in labels_for(session, a)] == [(1, "/l/1"), (2, "/l/2"), (3, "/l/3")]
        assert latest_label(session, a, "final").version == 3 and get_image(session, a).label_status == "labeled"
    with pytest.raises(NotFoundError, match="no archived label"), write_session(sessions) as session:
        restore_label(session, a, "final", actor="admin")


def test_bad_label_input_is_refused_without_writing(sessions, ingest) -> None:
    (a,) = ingest(1)
    with pytest.raises(UnknownImageError, match="case_9999"), write_session(sessions) as session:
        record_label(session, "case_9999", "final", "/l/x", "ann")
    with pytest.raises(DBError, match="checksum"), write_session(sessions) as session:
        record_label(session, a, "final", "/l/x", "ann", checksum="deadbeef")
    with pytest.raises(DBError, match="tag"), write_session(sessions) as session:
        record_label(session, a, "", "/l/x", "ann")
    with sessions() as session:
        assert labels_for(session, a) == [] and get_image(session, a).label_status == "unlabeled"


def test_audit_detail_must_be_json(sessions) -> None:
    with write_session(sessions) as session:
        audit(session, "admin", "tokens_rotated", count=3)
    with pytest.raises(DBError, match="not JSON-serialisable"), write_session(sessions) as session:
        audit(session, "admin", "bad", when=object())
    with sessions() as session:
        assert [(e.action, e.detail) for e in audit_events(session)] == [("tokens_rotated", {"count": 3})]


def test_a_label_file_named_after_its_version_is_written_under_the_row_lock(sessions, ingest) -> None:
    (a,) = ingest(1)
    written = []

    def write(version: int) -> str:
        written.append(version)
        return f"/l/a.v{version}.nii.gz"

    with write_session(sessions) as session:
        record_label(session, a, "final", write, "ann")
    with write_session(sessions) as session:
        assert record_label(session, a, "final", write, "ann").path == "/l/a.v2.nii.gz"

    def fail(version: int) -> str:
        raise OSError(f"disk full writing version {version}")

    with pytest.raises(OSError, match="version 3"):
        with write_session(sessions) as session:
            record_label(session, a, "final", fail, "ann")
    assert written == [1, 2]
    with sessions() as session:
        assert [x.version for x in labels_for(session, a)] == [1, 2]  # the failed write recorded nothing
