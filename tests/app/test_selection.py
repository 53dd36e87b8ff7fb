"""Selection rounds and the strategies served from them, called directly on a real SQLite file and real NIfTI volumes.

The served strategies are also exercised through a spawned server (test_tesla_api.py); here each branch of the round
logic is driven on purpose: the fallback while no round exists, a stale round serving while its successor waits for
the new model's scores, cold starts, and the round size.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from app.modelstore import ModelStore
from app.scoring import compute_missing_embeddings, embedding_key
from app.selection import (
    ClaimStrategy,
    RoundBuilder,
    RoundStrategy,
    SelectionUnavailable,
    build_round,
    round_size,
    served_strategies,
)
from db.datastore import SQLDatastore
from db.engine import create_db_engine, session_factory, write_session
from db.migrate import upgrade
from db.model_versions import record_model_version
from db.rounds import current_round, round_image_ids
from db.scores import load_embeddings, store_scores
from models.embedding import embedding_blocks
from tests.app.conftest import tiny_cascade
from strategies import STRATEGIES, Random, organ_fraction, select_round
from strategies.uncertainty import SCORE_METHODS

ROUND = 4


@dataclass
class Selection:
    datastore: SQLDatastore
    store: ModelStore
    builder: RoundBuilder

    def pool(self) -> tuple[list[str], np.ndarray]:
        """(ids, embeddings) of the unlabeled volumes, as build_round reads them."""
        with self.datastore.sessions() as session:
            return load_embeddings(session, embedding_key(self.store), self.datastore.get_unlabeled_images())

    def blocks(self) -> tuple[int, ...]:
        return embedding_blocks(self.store.backbone()[0])

    def round(self, strategy: str):
        with self.datastore.sessions() as session:
            selection = current_round(session, strategy)
            return selection, (round_image_ids(session, selection.id) if selection else [])

    def publish_version(self, version: str) -> None:
        """A new model version as the training task records it (the network file itself is not read here)."""
        with write_session(self.datastore.sessions) as session:
            record_model_version(session, version, path=f"/models/{version}.pt", kind="prompt")

    def store_scores(self, version: str, ids: list[str], seed: int = 0) -> dict[str, np.ndarray]:
        """Every score of ``version`` for ``ids``, as the scoring job stores them; returns them per method."""
        rng = np.random.default_rng(seed)
        values = {method: rng.uniform(0.1, 1.0, size=len(ids)) for method in SCORE_METHODS}
        with write_session(self.datastore.sessions) as session:
            for method, column in values.items():
                store_scores(session, method, version, dict(zip(ids, column.tolist())))
        return values


@pytest.fixture(scope="module")
def embedded_db(tiny_cohort: Path, backbone_file: Path, tmp_path_factory) -> Path:
    """A migrated SQLite file with the tiny cohort ingested and embedded once; each test works on a copy."""
    folder = tmp_path_factory.mktemp("selection-template")
    url = f"sqlite:///{folder / 'slpt.db'}"
    upgrade(url)
    engine = create_db_engine(url)
    try:
        datastore = _datastore(engine, tiny_cohort, folder)
        datastore.refresh()
        store = ModelStore(datastore.sessions, folder=folder / "models", backbone_path=backbone_file)
        assert compute_missing_embeddings(datastore, store, tiny_cascade()) == 24
    finally:
        engine.dispose()
    return folder / "slpt.db"


@pytest.fixture
def selection(embedded_db: Path, tiny_cohort: Path, backbone_file: Path, tmp_path: Path) -> Iterator[Selection]:
    shutil.copy(embedded_db, tmp_path / "slpt.db")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'slpt.db'}")
    datastore = _datastore(engine, tiny_cohort, tmp_path)
    store = ModelStore(datastore.sessions, folder=tmp_path / "models", backbone_path=backbone_file)
    builder = RoundBuilder(datastore, store, configured_size=ROUND, cascade=tiny_cascade())
    yield Selection(datastore, store, builder)
    for thread in list(builder._building.values()):
        thread.join(60)
    engine.dispose()


def _datastore(engine: Engine, studies: Path, folder: Path) -> SQLDatastore:
    return SQLDatastore(
        session_factory(engine),
        images_dir=studies / "imagesTr",
        labels_dir=folder / "labels",
        label_values={1, 2},
        lease=timedelta(hours=2),
    )


def test_without_a_round_the_first_request_is_served_at_once_and_the_round_is_built(selection: Selection):
    tesla = RoundStrategy("tesla", selection.builder)
    first = tesla({"annotator": "ann-a"}, selection.datastore)
    assert first["round"] is None and first["id"]  # the fallback: a random free volume, no waiting
    selection.builder.wait("tesla", 120)
    built, ranked = selection.round("tesla")
    assert built is not None and built.model_version is None
    assert built.config["ranked_by"] == "diversity" and built.config["budget"] == ROUND
    ids, embeddings = selection.pool()
    assert ranked == [ids[i] for i in select_round("tesla", embeddings, ROUND, block_sizes=selection.blocks()).picks]

    second = tesla({"annotator": "ann-b"}, selection.datastore)
    assert second["round"] == built.id
    assert second["id"] == next(i for i in ranked if i != first["id"])  # best-ranked volume nobody holds


def test_a_stale_round_keeps_serving_until_the_new_models_scores_cover_the_pool(selection: Selection):
    old_id = build_round(selection.datastore, selection.store, "tesla", ROUND)
    _, old_ranked = selection.round("tesla")
    selection.publish_version("v0001")
    ids, embeddings = selection.pool()
    selection.store_scores("v0001", ids[:-1])
    with pytest.raises(SelectionUnavailable, match=r"'prompt_uncertainty' scores of model v0001 cover 23 of 24"):
        build_round(selection.datastore, selection.store, "tesla", ROUND)

    tesla = RoundStrategy("tesla", selection.builder)
    answer = tesla({"annotator": "ann-a"}, selection.datastore)
    selection.builder.wait("tesla", 120)
    assert answer["round"] == old_id and answer["id"] == old_ranked[0]  # served from the stale round
    assert selection.round("tesla")[0].id == old_id  # its successor could not be built yet

    scores = selection.store_scores("v0001", ids, seed=1)
    answer = tesla({"annotator": "ann-b"}, selection.datastore)
    assert answer["round"] == old_id  # still the stale round; the request started the rebuild
    selection.builder.wait("tesla", 120)
    new, ranked = selection.round("tesla")
    assert new.id != old_id and new.model_version == "v0001" and new.config["ranked_by"] == "prompt_uncertainty"
    pool_ids, embeddings = selection.pool()  # the claimed volumes are leased, still unlabeled: the same pool
    assert pool_ids == ids
    expected = select_round(
        "tesla", embeddings, ROUND, block_sizes=selection.blocks(), scores=scores["prompt_uncertainty"]
    )
    assert ranked == [ids[i] for i in expected.picks]


def test_entropy_before_a_model_exists_is_a_round_of_random_picks(selection: Selection):
    build_round(selection.datastore, selection.store, "entropy", ROUND, seed=3)
    built, ranked = selection.round("entropy")
    assert built.model_version is None
    assert (built.config["ranked_by"], built.config["rule"]) == ("random", "random")
    ids, embeddings = selection.pool()
    assert ranked == [ids[i] for i in Random().select(embeddings, ROUND, seed=3)]

    selection.publish_version("v0001")
    scores = selection.store_scores("v0001", ids)
    build_round(selection.datastore, selection.store, "entropy", ROUND)
    built, ranked = selection.round("entropy")
    assert (built.model_version, built.config["ranked_by"]) == ("v0001", "entropy")
    assert ranked == [ids[i] for i in np.argsort(-scores["entropy"], kind="stable")[:ROUND]]


def test_fg_random_starts_where_the_backbone_finds_liver_then_follows_predicted_tumour(selection: Selection):
    ids, embeddings = selection.pool()
    liver = organ_fraction(embeddings, selection.blocks())
    build_round(selection.datastore, selection.store, "fg_random", ROUND)
    built, ranked = selection.round("fg_random")
    assert built.config["ranked_by"] == "organ_fraction"
    with_liver = {i for i, fraction in zip(ids, liver) if fraction > 0}
    assert with_liver, "the backbone finds liver somewhere (else the cold start is plain random)"
    # Volumes with liver first: all picks have liver, or every volume with liver is picked.
    assert set(ranked) <= with_liver or with_liver <= set(ranked)
    assert ranked == [ids[i] for i in select_round("fg_random", embeddings, ROUND, block_sizes=selection.blocks()).picks]

    selection.publish_version("v0001")
    foreground = {i: 0.0 for i in ids} | {ids[3]: 0.2, ids[7]: 0.05}  # the model sees tumour in two volumes
    with write_session(selection.datastore.sessions) as session:
        for method in SCORE_METHODS:
            store_scores(session, method, "v0001", foreground if method == "foreground" else dict.fromkeys(ids, 0.5))
    build_round(selection.datastore, selection.store, "fg_random", ROUND)
    built, ranked = selection.round("fg_random")
    assert (built.model_version, built.config["ranked_by"]) == ("v0001", "foreground")
    assert set(ranked[:2]) == {ids[3], ids[7]} and len(set(ranked)) == ROUND


def test_round_size_is_the_configured_one_or_twice_the_active_annotators(selection: Selection):
    assert round_size(selection.datastore, 5) == 5
    assert round_size(selection.datastore, 0) == 1  # nobody active yet
    first = ClaimStrategy("first")
    for annotator in ("ann-a", "ann-b", "ann-c"):
        first({"annotator": annotator}, selection.datastore)
    first({"annotator": "ann-a"}, selection.datastore)  # a skip: still one lease for ann-a
    assert round_size(selection.datastore, 0) == 6


def test_every_registered_rule_is_served_in_registry_order(selection: Selection):
    served = served_strategies(selection.builder)
    assert list(served) == [*STRATEGIES, "review"] and list(served)[0] == "tesla"  # then reviewers' Next Sample
    assert {name for name, s in served.items() if isinstance(s, ClaimStrategy)} == {"random", "first"}
    assert all(served[name].info() == STRATEGIES[name]().info() for name in STRATEGIES)  # what Slicer shows
    answer = served["first"]({"annotator": "ann-a"}, selection.datastore)
    assert answer["id"] == "case_0000"
