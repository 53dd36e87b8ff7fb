"""A model version whose scoring died half-way is scored completely at the next start, and rounds use those scores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import delete

from db.jobs import start_job
from db.rounds import current_round
from db.schema import Job, Score
from db.scores import load_scores
from tests.app.conftest import start_server, studies_db, submit_ground_truth, wait_for, wait_for_model_version

CONF = {"train_steps": "2", "roi_size": "16", "round_size": "4"}
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

    # What a kill -9 half-way through scoring leaves: half the scores, and a job still "running" for a dead process.
    with studies_db(served_cohort) as session:
        session.execute(delete(Score).where(Score.model_version == version, Score.image_id.in_(unlabeled[::2])))
        stale = start_job(session, "scoring", detail={"host": os.uname().nodename, "pid": dead_pid(),
                                                      "model_version": version}).id
        session.commit()
        assert len(load_scores(session, "prompt_uncertainty", version)) < len(unlabeled)

    with start_server(served_cohort, tmp_path, **conf) as server:
        wait_for(scored, 400, "scores completed after the restart", server)
        with studies_db(served_cohort) as session:
            job = session.get(Job, stale)
            assert job.state == "failed" and "interrupted" in job.message

        def tesla_round_of_the_version():
            httpx.post(f"{server.url}/activelearning/tesla", json={"client_id": "after"}, timeout=60)
            with studies_db(served_cohort) as session:
                selection = current_round(session, "tesla")
                return selection if selection and selection.model_version == version else None

        selection = wait_for(tesla_round_of_the_version, 300, "a TESLA round on the re-scored version", server)
        assert selection.config["ranked_by"] == "prompt_uncertainty"  # the version's scores, not a cold start
