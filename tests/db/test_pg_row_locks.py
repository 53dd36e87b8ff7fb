"""PostgreSQL only: an open claim locks the one row it takes (SQLite locks the whole database per write, by design)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db import Image, claim_next_volume
from tests.pg import postgres_unavailable_reason


@pytest.fixture(scope="session")
def backend() -> str:
    if reason := postgres_unavailable_reason():
        pytest.fail(reason)
    return "postgresql"


def test_an_open_claim_locks_only_the_volume_it_takes(sessions, ingest, backend) -> None:
    ingest(50)
    for order in ("first", "random"):
        with sessions() as holder:
            taken = claim_next_volume(holder, f"holder_{order}", order, order=order, seed=3)
            with sessions() as probe:
                lockable = probe.scalars(
                    select(Image.id).with_for_update(skip_locked=True).where(Image.label_status == "unlabeled")
                ).all()
                assert taken not in lockable and len(lockable) == 49
            holder.commit()
