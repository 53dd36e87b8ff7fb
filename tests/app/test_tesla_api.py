"""TESLA and fg_random end to end on a real server: embeddings -> cold-start rounds (diversity; backbone-predicted liver)
-> labels -> training -> re-scoring with the new version -> rounds ranked by prompt uncertainty within clusters and by
predicted tumour. Two annotators never get the same volume.

Each phase is a module fixture (the cold start, then training): a test asks for the phase it checks, so any one test,
or any order of them, runs on the state it expects.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from db.rounds import current_round, round_image_ids
from db.schema import Assignment, Embedding
from db.scores import load_embeddings, load_scores
from strategies import TESLA, select_round
from tests.app.conftest import start_server, studies_db, submit_ground_truth, wait_for, wait_for_model_version

ROUND_SIZE = 4


@pytest.fixture(scope="module")
def server(served_cohort: Path, backbone_file: Path, tmp_path_factory):
    conf = {
        "backbone": str(backbone_file),
        "train_steps": "4",
        "roi_size": "16",
        "round_size": str(ROUND_SIZE),
    }
    with start_server(served_cohort, tmp_path_factory.mktemp("logs"), **conf) as proc:
        yield proc


def next_sample(server, client: str, strategy: str = "tesla") -> dict:
    answer = httpx.post(f"{server.url}/activelearning/{strategy}", json={"client_id": client}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def stored_round(studies: Path, strategy: str):
    with studies_db(studies) as session:
        selection = current_round(session, strategy)
        return (selection, round_image_ids(session, selection.id)) if selection else None


@dataclass
class ColdStart:
    """What the server did before any model existed."""

    ids: list[str]  # every volume, in stored-embedding order
    embeddings: np.ndarray
    tesla: tuple  # (round, ranked ids)
    tesla_answers: list[dict]  # ann-a's and ann-b's Next Sample
    fg_random: tuple
    fg_random_first: dict  # the request that found no fg_random round yet
    fg_random_answer: dict


@pytest.fixture(scope="module")
def cold_start(server, served_cohort: Path) -> ColdStart:
    def embedded():
        with studies_db(served_cohort) as session:  # a new session per poll: one would keep its first snapshot
            return session.scalar(select(Embedding).limit(1)) is not None

    wait_for(embedded, 300, "embeddings", server)
    tesla = wait_for(lambda: stored_round(served_cohort, "tesla"), 300, "a first TESLA round", server)
    with studies_db(served_cohort) as session:
        ids, embeddings = load_embeddings(session, _key(session))
    answers = [next_sample(server, "ann-a"), next_sample(server, "ann-b")]
    fg_first = next_sample(server, "ann-fg", "fg_random")  # no fg_random round yet: served at once, round started
    fg_round = wait_for(lambda: stored_round(served_cohort, "fg_random"), 300, "a first fg_random round", server)
    return ColdStart(ids, embeddings, tesla, answers, fg_round, fg_first, next_sample(server, "ann-fg2", "fg_random"))


@dataclass
class Trained:
    """What the server did once labels were submitted and a model was trained and had scored the pool."""

    version: str
    unlabeled: list[str]
    scores: dict[str, dict[str, float]]  # {method: {image id: score}} of the new version
    tesla: tuple
    fg_random: tuple
    clasp: tuple


LABELED = ["case_0000", "case_0001", "case_0002"]


@pytest.fixture(scope="module")
def trained(server, served_cohort: Path, cold_start: ColdStart) -> Trained:
    submit_ground_truth(server, served_cohort, LABELED)
    assert httpx.post(f"{server.url}/train/slpt", json={}, timeout=60).status_code == 200

    version = wait_for_model_version(server, served_cohort)
    unlabeled = [i for i in cold_start.ids if i not in LABELED]

    def scored():
        with studies_db(served_cohort) as session:
            scores = {m: load_scores(session, m, version) for m in ("prompt_uncertainty", "foreground")}
            return scores if all(set(unlabeled) <= set(s) for s in scores.values()) else None

    scores = wait_for(scored, 400, f"scores of model {version}", server)

    def new_round(strategy: str):
        def found():
            next_sample(server, f"ann-{strategy}-after", strategy)  # requests refresh a round made for an older model
            stored = stored_round(served_cohort, strategy)
            return stored if stored and stored[0].model_version == version else None

        return wait_for(found, 300, f"a {strategy} round for the new model", server)

    return Trained(version, unlabeled, scores, new_round("tesla"), new_round("fg_random"), new_round("clasp_pe"))


def test_tesla_is_the_default_strategy_with_options(server):
    strategies = httpx.get(f"{server.url}/info/", timeout=30).json()["strategies"]
    assert list(strategies)[0] == "tesla"
    assert {"tesla", "random", "first", "entropy", "epistemic", "coreset", "fg_random"} <= set(strategies)
    assert strategies["tesla"]["config"] and strategies["tesla"]["description"]
    assert "tumour" in strategies["fg_random"]["description"]


def test_cold_start_round_is_diverse_and_served_in_rank_order(cold_start: ColdStart, served_cohort: Path):
    volumes = len(list((served_cohort / "imagesTr").glob("*.nii.gz")))
    selection, ranked = cold_start.tesla
    assert len(cold_start.ids) == volumes, "every volume is embedded once, at ingestion"
    assert selection.model_version is None and selection.config["ranked_by"] == "diversity"
    # The stored round is exactly the cold-start TESLA choice over the stored embeddings, with the embedding's
    # block layout (encoder, organ, body, noise) that the round records.
    blocks = selection.config["block_sizes"]
    assert len(blocks) == 4 and sum(blocks) == cold_start.embeddings.shape[1]
    expected = [cold_start.ids[i] for i in TESLA(block_sizes=blocks).select(cold_start.embeddings, ROUND_SIZE, seed=0)]
    assert ranked == expected

    first, second = cold_start.tesla_answers
    assert [first["id"], second["id"]] == ranked[:2]
    assert first["round"] == second["round"] == selection.id


def test_fg_random_cold_start_round_draws_where_the_backbone_finds_liver(cold_start: ColdStart):
    selection, ranked = cold_start.fg_random
    assert cold_start.fg_random_first["round"] is None and cold_start.fg_random_first["id"]
    assert selection.model_version is None and selection.config["ranked_by"] == "organ_fraction"
    # The pool of the round: every volume (none labeled yet; leased volumes stay in the pool).
    blocks = cold_start.tesla[0].config["block_sizes"]
    expected = select_round("fg_random", cold_start.embeddings, ROUND_SIZE, block_sizes=blocks)
    assert ranked == [cold_start.ids[i] for i in expected.picks]
    answer = cold_start.fg_random_answer
    assert answer["round"] == selection.id
    assert answer["id"] == next(i for i in ranked if i != cold_start.fg_random_first["id"])


def test_after_training_the_round_ranks_by_uncertainty_within_clusters(
    server, served_cohort: Path, trained: Trained
):
    def scoring_done():  # progress of background work, as an admin sees it
        jobs = httpx.get(f"{server.url}/scoring/", timeout=30).json()["jobs"]
        return [job for job in jobs if job["kind"] == "scoring" and job["state"] == "done"]

    (scoring_job,) = wait_for(scoring_done, 120, "the scoring job to finish", server)
    assert scoring_job["progress"] == 1.0 and scoring_job["detail"]["model_version"] == trained.version
    jobs = httpx.get(f"{server.url}/scoring/", timeout=30).json()["jobs"]
    assert any(job["kind"] == "embedding" and job["state"] == "done" for job in jobs)

    selection, ranked = trained.tesla
    assert selection.config["ranked_by"] == "prompt_uncertainty"
    scores = trained.scores["prompt_uncertainty"]
    with studies_db(served_cohort) as session:
        ids, embeddings = load_embeddings(session, _key(session), sorted(trained.unlabeled))
    uncertainty = np.array([scores[i] for i in ids])
    tesla = TESLA(block_sizes=selection.config["block_sizes"])
    expected = [ids[i] for i in tesla.select(embeddings, ROUND_SIZE, uncertainty=uncertainty, seed=0)]
    assert ranked == expected
    assert [scores[i] for i in ranked] == sorted((scores[i] for i in ranked), reverse=True)

    with studies_db(served_cohort) as session:
        active = Counter(session.scalars(select(Assignment.image_id).where(Assignment.state == "active")))
    assert active and max(active.values()) == 1, "two annotators hold the same volume"


def test_after_training_fg_random_draws_where_the_model_predicts_tumour(served_cohort: Path, trained: Trained):
    selection, ranked = trained.fg_random
    assert selection.config["ranked_by"] == "foreground"
    foreground = trained.scores["foreground"]
    assert all(0.0 <= foreground[i] <= 1.0 for i in trained.unlabeled)
    with studies_db(served_cohort) as session:
        ids, embeddings = load_embeddings(session, _key(session), sorted(trained.unlabeled))
    expected = select_round(
        "fg_random", embeddings, ROUND_SIZE, block_sizes=trained.tesla[0].config["block_sizes"],
        scores=np.array([foreground[i] for i in ids]),
    )
    assert ranked == [ids[i] for i in expected.picks]
    assert not set(ranked) & set(LABELED)


def test_after_training_clasp_pe_ranks_by_both_class_entropies(served_cohort: Path, trained: Trained):
    selection, ranked = trained.clasp
    assert selection.config["ranked_by"] == "class_entropy_2+class_entropy_1"
    with studies_db(served_cohort) as session:
        ids, embeddings = load_embeddings(session, _key(session), sorted(trained.unlabeled))
        _, labeled = load_embeddings(session, _key(session), LABELED)
        scores = np.column_stack([
            [load_scores(session, method, trained.version)[i] for i in ids]
            for method in ("class_entropy_2", "class_entropy_1")
        ])
    assert (scores >= 0).all() and scores.any()
    expected = select_round(
        "clasp_pe", embeddings, ROUND_SIZE, block_sizes=trained.tesla[0].config["block_sizes"], scores=scores,
        labeled_embeddings=labeled,
    )
    assert ranked == [ids[i] for i in expected.picks]


def _key(session) -> str:
    return session.scalar(select(Embedding.key).limit(1))
