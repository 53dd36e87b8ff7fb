"""TESLA end to end on a real server: embeddings -> diversity round -> labels -> training -> re-scoring with the new
version -> a round ranked by prompt uncertainty within clusters. Two annotators never get the same volume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from db.rounds import current_round, round_image_ids
from db.schema import Assignment, Embedding, ModelVersion
from db.scores import load_embeddings, load_scores
from strategies import TESLA
from tests.app.conftest import start_server, studies_db, submit_ground_truth, wait_for

ROUND_SIZE = 4


@pytest.fixture(scope="module")
def server(served_cohort: Path, backbone_file: Path, tmp_path_factory):
    conf = {
        "backbone": str(backbone_file),
        "train_steps": "4",
        "roi_size": "16",
        "embed_size": "16",
        "round_size": str(ROUND_SIZE),
    }
    with start_server(served_cohort, tmp_path_factory.mktemp("logs"), **conf) as proc:
        yield proc


def next_sample(server, client: str) -> dict:
    answer = httpx.post(f"{server.url}/activelearning/tesla", json={"client_id": client}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def tesla_round(studies: Path):
    with studies_db(studies) as session:
        selection = current_round(session, "tesla")
        return (selection, round_image_ids(session, selection.id)) if selection else None


def test_tesla_is_the_default_strategy_with_options(server):
    strategies = httpx.get(f"{server.url}/info/", timeout=30).json()["strategies"]
    assert list(strategies)[0] == "tesla"
    assert {"tesla", "random", "first", "entropy", "epistemic", "coreset"} <= set(strategies)
    assert strategies["tesla"]["config"] and strategies["tesla"]["description"]


def test_cold_start_round_is_diverse_and_served_in_rank_order(server, served_cohort: Path):
    volumes = len(list((served_cohort / "imagesTr").glob("*.nii.gz")))
    def embedded():
        with studies_db(served_cohort) as session:  # a new session per poll: one would keep its first snapshot
            return session.scalar(select(Embedding).limit(1)) is not None

    wait_for(embedded, 300, "embeddings", server)
    selection, ranked = wait_for(lambda: tesla_round(served_cohort), 300, "a first TESLA round", server)
    with studies_db(served_cohort) as session:
        ids, embeddings = load_embeddings(session, _key(session))
    assert len(ids) == volumes, "every volume is embedded once, at ingestion"
    assert selection.model_version is None and selection.config["ranked_by"] == "diversity"
    # The stored round is exactly the cold-start TESLA choice over the stored embeddings, with the embedding's
    # block layout (encoder, organ, body, noise) that the round records.
    blocks = selection.config["block_sizes"]
    assert len(blocks) == 4 and sum(blocks) == embeddings.shape[1]
    expected = [ids[i] for i in TESLA(block_sizes=blocks).select(embeddings, ROUND_SIZE, seed=0)]
    assert ranked == expected

    first, second = next_sample(server, "ann-a"), next_sample(server, "ann-b")
    assert [first["id"], second["id"]] == ranked[:2]
    assert first["round"] == second["round"] == selection.id


def test_after_training_the_round_ranks_by_uncertainty_within_clusters(server, served_cohort: Path):
    submit_ground_truth(server, served_cohort, ["case_0000", "case_0001", "case_0002"])
    assert httpx.post(f"{server.url}/train/slpt", json={}, timeout=60).status_code == 200

    def published():
        with studies_db(served_cohort) as session:
            return session.scalar(select(ModelVersion.id))

    version = wait_for(published, 400, "a published model version", server)

    def scored():
        with studies_db(served_cohort) as session:
            unlabeled = [i for i in load_embeddings(session, _key(session))[0] if i not in {"case_0000", "case_0001", "case_0002"}]
            scores = load_scores(session, "prompt_uncertainty", version)
            return scores if set(unlabeled) <= set(scores) else None

    scores = wait_for(scored, 400, f"scores of model {version}", server)

    def scoring_done():  # progress of background work, as an admin sees it
        jobs = httpx.get(f"{server.url}/scoring/", timeout=30).json()["jobs"]
        return [job for job in jobs if job["kind"] == "scoring" and job["state"] == "done"]

    (scoring_job,) = wait_for(scoring_done, 120, "the scoring job to finish", server)
    assert scoring_job["progress"] == 1.0 and scoring_job["detail"]["model_version"] == version
    jobs = httpx.get(f"{server.url}/scoring/", timeout=30).json()["jobs"]
    assert any(job["kind"] == "embedding" and job["state"] == "done" for job in jobs)

    def new_round():
        next_sample(server, "ann-c")  # requests refresh the round when the model version changed
        found = tesla_round(served_cohort)
        return found if found and found[0].model_version == version else None

    selection, ranked = wait_for(new_round, 300, "a TESLA round for the new model", server)
    assert selection.config["ranked_by"] == "prompt_uncertainty"
    with studies_db(served_cohort) as session:
        unlabeled = set(httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"])
        labeled = {"case_0000", "case_0001", "case_0002"}
        ids, embeddings = load_embeddings(session, _key(session), sorted(unlabeled - labeled))
    uncertainty = np.array([scores[i] for i in ids])
    tesla = TESLA(block_sizes=selection.config["block_sizes"])
    expected = [ids[i] for i in tesla.select(embeddings, ROUND_SIZE, uncertainty=uncertainty, seed=0)]
    assert ranked == expected
    assert [scores[i] for i in ranked] == sorted((scores[i] for i in ranked), reverse=True)

    with studies_db(served_cohort) as session:
        active = Counter(session.scalars(select(Assignment.image_id).where(Assignment.state == "active")))
    assert active and max(active.values()) == 1, "two annotators hold the same volume"


def _key(session) -> str:
    return session.scalar(select(Embedding.key).limit(1))
