"""A model version whose scoring died half-way is scored completely at the next start, and rounds use those scores.

A kill -9 half-way through scoring leaves batches leased by a process that is gone: the restarted server of the same
host gives them back at once (no wait for the lease to expire) and scores them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import delete, select, update

from db.jobs import start_job
from db.rounds import current_round
from db.schema import Job, Score, WorkBatch, WorkItem, utcnow
from db.scores import load_scores
from tests.app.conftest import start_server, studies_db, submit_ground_truth, wait_for, wait_for_model_version

CONF = {"train_steps": "2", "roi_size": "16", "round_size": "4", "work_batch": "4"}
LABELED = ["case_0000", "case_0001"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_half_scored_version_is_scored_after_a_restart_and_the_next_round_uses_it(
    served_cohort: Path, backbone_file: Path, tmp_path: Path
):
    conf = {**CONF, "backbone": str(backbone_file)}
    with start_server(served_cohort, tmp_path, **conf) as server:
        submit_ground_truth(server, served_cohort, LABELED)
        assert httpx.post(f"{server.url}/train/slpt", json={}, timeout=60).status_code == 200

        version = wait_for_model_version(server, served_cohort)
        unlabeled = sorted(set(p.name.removesuffix(".nii.gz") for p in (served_cohort / "imagesTr").iterdir()) - set(LABELED))

        def scored():
            with studies_db(served_cohort) as session:
                return set(unlabeled) <= set(load_scores(session, "prompt_uncertainty", version)) or None

        wait_for(scored, 400, "the first scoring", server)

    # What a kill -9 half-way through scoring leaves: two batches leased by the dead process and their volumes
    # unscored, and a job still "running" for it.
    pid = dead_pid()
    with studies_db(served_cohort) as session:
        interrupted = list(session.scalars(select(WorkBatch.id).where(WorkBatch.target == version)
                                           .order_by(WorkBatch.id).limit(2)))
        lost = list(session.scalars(select(WorkItem.image_id).where(WorkItem.batch_id.in_(interrupted))))
        session.execute(delete(Score).where(Score.model_version == version, Score.image_id.in_(lost)))
        session.execute(update(WorkBatch).where(WorkBatch.id.in_(interrupted)).values(
            state="leased", holder=f"{os.uname().nodename}:{pid}:killed", finished_at=None,
            lease_expires_at=utcnow() + timedelta(days=1)))  # only its process's death frees it within the test
        stale = start_job(session, "scoring", detail={"host": os.uname().nodename, "pid": pid,
                                                      "model_version": version}).id
        session.commit()
        assert len(lost) == 8 and len(load_scores(session, "prompt_uncertainty", version)) == len(unlabeled) - 8

    with start_server(served_cohort, tmp_path, **conf) as server:
        wait_for(scored, 400, "scores completed after the restart", server)
        with studies_db(served_cohort) as session:
            job = session.get(Job, stale)
            assert job.state == "failed" and "interrupted" in job.message
            retaken = list(session.scalars(select(WorkBatch).where(WorkBatch.id.in_(interrupted))))
            assert all(b.state == "done" and b.claims == 2 and ":killed" not in b.holder for b in retaken)
            done_items = select(WorkItem.image_id).join(WorkBatch, WorkBatch.id == WorkItem.batch_id).where(
                WorkBatch.target == version, WorkBatch.state == "done")
            per_volume = Counter(session.scalars(done_items))
            assert sorted(per_volume) == unlabeled and set(per_volume.values()) == {1}  # each volume scored once

        def tesla_round_of_the_version():
            httpx.post(f"{server.url}/activelearning/tesla", json={"client_id": "after"}, timeout=60)
            with studies_db(served_cohort) as session:
                selection = current_round(session, "tesla")
                return selection if selection and selection.model_version == version else None

        selection = wait_for(tesla_round_of_the_version, 300, "a TESLA round on the re-scored version", server)
        assert selection.config["ranked_by"] == "prompt_uncertainty"  # the version's scores, not a cold start
