"""Selection rounds, model versions and background jobs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from db import DBError, NotFoundError, UnknownImageError, create_round, current_round, finish_job, get_job
from db import latest_model_version, list_jobs, list_model_versions, next_model_version_id, record_model_version
from db import round_image_ids, set_round_state, start_job, update_job, write_session
from db.schema import SelectionRound

T0 = datetime(2026, 2, 1, tzinfo=timezone.utc)


def test_a_new_round_supersedes_the_ready_one_of_its_strategy(sessions, ingest) -> None:
    ids = ingest(4)
    with write_session(sessions) as session:
        first = create_round(session, "tesla", [ids[3], ids[0]], model_version="v0001", config={"b": 2})
        second = create_round(session, "tesla", [ids[1]], budget=5)
        other = create_round(session, "random", [ids[2]])
    with sessions() as session:
        assert session.get(SelectionRound, first).state == "superseded"
        assert current_round(session, "tesla").id == second
        assert current_round(session).id == other  # newest of any strategy
        assert round_image_ids(session, first) == [ids[3], ids[0]]
        newest = session.get(SelectionRound, second)
        assert (newest.strategy, newest.budget, newest.config, newest.state) == ("tesla", 5, {}, "ready")
    with write_session(sessions) as session:
        set_round_state(session, second, "exhausted")
        assert current_round(session, "tesla") is None
        with pytest.raises(DBError, match="unknown round state"):
            set_round_state(session, second, "done")
        with pytest.raises(NotFoundError):
            set_round_state(session, 999, "ready")


def test_bad_rounds_are_refused(sessions, ingest) -> None:
    ids = ingest(2)
    with pytest.raises(DBError, match="at most once"), write_session(sessions) as session:
        create_round(session, "tesla", [ids[0], ids[0]])
    with pytest.raises(UnknownImageError, match="case_9999"), write_session(sessions) as session:
        create_round(session, "tesla", [ids[0], "case_9999"])
    with sessions() as session:
        assert current_round(session) is None


def test_current_model_is_the_newest_published_version(sessions) -> None:
    with write_session(sessions) as session:
        assert latest_model_version(session) is None and next_model_version_id(session) == "v0001"
        record_model_version(session, "v0001", path="/m/1.pt", kind="prompt", metrics={"dice": 0.5}, created_at=T0)
        record_model_version(session, "v0002", path="/m/2.pt", kind="prompt", tunable_params=1234,
                             created_at=T0 + timedelta(hours=1))
        record_model_version(session, "v0003", path="/m/3.pt", kind="finetune", state="failed",
                             created_at=T0 + timedelta(hours=2))
    with sessions() as session:
        current = latest_model_version(session)
        assert (current.id, current.tunable_params) == ("v0002", 1234)
        assert [v.id for v in list_model_versions(session)] == ["v0003", "v0002", "v0001"]
        assert next_model_version_id(session) == "v0004"
    with write_session(sessions) as session:
        with pytest.raises(DBError, match="already exists"):
            record_model_version(session, "v0002", path="/m/x.pt", kind="prompt")
        with pytest.raises(DBError, match="unknown model kind"):
            record_model_version(session, "v0009", path="/m/x.pt", kind="lora")


def test_job_lifecycle_is_visible_from_another_session(sessions) -> None:
    with write_session(sessions) as session:
        queued = start_job(session, "scoring", queued=True, detail={"model": "v0002"})
        running = start_job(session, "train", message="starting")
    assert (queued.state, queued.started_at) == ("queued", None)
    with write_session(sessions) as session:
        update_job(session, queued.id, progress=0.25, message="scored 5/20")
        with pytest.raises(DBError, match=r"\[0, 1\]"):
            update_job(session, queued.id, progress=1.5)
    with sessions() as session:
        seen = get_job(session, queued.id)
        assert (seen.state, seen.progress, seen.message) == ("running", 0.25, "scored 5/20")
        assert seen.started_at is not None
    with write_session(sessions) as session:
        finish_job(session, queued.id, detail={"scored": 20})
        finish_job(session, running.id, "failed", message="out of memory")
    with sessions() as session:
        done, failed = get_job(session, queued.id), get_job(session, running.id)
        assert (done.state, done.progress, done.detail) == ("done", 1.0, {"model": "v0002", "scored": 20})
        assert done.finished_at >= done.started_at
        assert (failed.state, failed.message) == ("failed", "out of memory")
        assert {j.id for j in list_jobs(session)} == {queued.id, running.id}
        assert [j.id for j in list_jobs(session, kind="train", state="failed")] == [running.id]
    with write_session(sessions) as session:
        with pytest.raises(DBError, match="already finished"):
            update_job(session, queued.id, progress=0.5)
        with pytest.raises(DBError, match="finishes as one of"):
            finish_job(session, running.id, "running")
        with pytest.raises(NotFoundError):
            finish_job(session, "nope")
        with pytest.raises(DBError, match="unknown job kind"):
            start_job(session, "export")
