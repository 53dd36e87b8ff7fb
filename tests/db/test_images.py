"""Ingestion (idempotent upsert) and label-status queries."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from db import DBError, Image, ImageRecord, UnknownImageError, claim_next_volume, counts, get_image, image_ids
from db import record_label, require_image, upsert_images, write_session
from tests.db.conftest import image_record


def test_upsert_is_idempotent_and_keeps_status_on_reingest(sessions) -> None:
    records = [image_record(i) for i in range(30)]
    with write_session(sessions) as session:
        upsert_images(session, records)
    first_ingest = get_image(sessions(), "case_0003").ingested_at
    assert claim_next_volume(sessions, "ann", "first") == "case_0000"
    with write_session(sessions) as session:
        record_label(session, "case_0003", "final", "/labels/case_0003.nii.gz", "ann")
    moved = replace(records[3], path="/moved/case_0003.nii.gz", grp="b", meta={"moved": True})
    with write_session(sessions) as session:
        upsert_images(session, [moved if r.id == moved.id else r for r in records])
    with write_session(sessions) as session:
        upsert_images(session, [moved])  # and once more: nothing changes
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 30
        image = require_image(session, "case_0003")
        assert (image.path, image.grp, image.meta) == ("/moved/case_0003.nii.gz", "b", {"moved": True})
        assert image.label_status == "labeled" and image.ingested_at == first_ingest
        assert get_image(session, "case_0000").lease_holder == "ann"  # a re-ingest keeps leases too
        assert image.shape == [32, 32, 16] and image.spacing == [1.0, 1.0, 2.5]


def test_image_ids_and_counts_follow_label_status(sessions, ingest) -> None:
    ids = ingest(6)
    with write_session(sessions) as session:
        for image_id in ids[:2]:
            record_label(session, image_id, "final", f"/l/{image_id}", "ann")
    claim_next_volume(sessions, "bob", "first")
    with sessions() as session:
        assert image_ids(session) == ids
        assert image_ids(session, "labeled") == ids[:2]
        assert image_ids(session, "unlabeled") == ids[2:]
        assert counts(session) == {"total": 6, "labeled": 2, "unlabeled": 4, "leased": 1}
        with pytest.raises(DBError, match="unknown label status"):
            image_ids(session, "done")
        with pytest.raises(UnknownImageError, match="case_9999"):
            require_image(session, "case_9999")
        assert get_image(session, "case_9999") is None


def test_bad_records_are_refused_before_anything_is_written(sessions) -> None:
    good = image_record(0)
    with pytest.raises(DBError, match="SHA256:<64 hex digits>"):
        replace(good, checksum="ab" * 32)  # a bare digest breaks Slicer's download check
    with pytest.raises(DBError, match="invalid image id"):
        ImageRecord(id="../etc", path="/x", name="x", shape=[1], spacing=[1.0], checksum=good.checksum)
    with pytest.raises(DBError, match="duplicate image ids"), write_session(sessions) as session:
        upsert_images(session, [good, image_record(1), good])
    with sessions() as session:
        assert image_ids(session) == []
