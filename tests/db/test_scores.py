"""Embeddings and scores: float32 round trip, upserts, order, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from db import DBError, UnknownImageError, load_embeddings, load_scores, store_embeddings, store_scores
from db import write_session


def test_embeddings_round_trip_as_float32_matrix_and_upsert(sessions, ingest) -> None:
    ids = ingest(5)
    rng = np.random.default_rng(0)
    vectors = {image_id: rng.normal(size=12) for image_id in ids}
    with write_session(sessions) as session:
        store_embeddings(session, "unet-v1", vectors)
        store_embeddings(session, "other", {ids[0]: np.ones(3)})
    replaced = np.full(12, 7.0)
    with write_session(sessions) as session:
        store_embeddings(session, "unet-v1", {ids[2]: replaced})
    with sessions() as session:
        got_ids, matrix = load_embeddings(session, "unet-v1")
        assert got_ids == ids and matrix.shape == (5, 12) and matrix.dtype == np.float32
        expected = np.stack([replaced if i == ids[2] else vectors[i] for i in ids]).astype(np.float32)
        np.testing.assert_array_equal(matrix, expected)
        matrix[0, 0] = 1.0  # the result is writable
        subset_ids, subset = load_embeddings(session, "unet-v1", [ids[4], "case_9999", ids[1]])
        assert subset_ids == [ids[4], ids[1]]
        np.testing.assert_array_equal(subset, expected[[4, 1]])
        empty_ids, empty = load_embeddings(session, "missing")
        assert empty_ids == [] and empty.shape == (0, 0)


def test_bad_embeddings_are_refused(sessions, ingest) -> None:
    a, b = ingest(2)
    bad_calls = [
        ({a: np.ones(3), b: np.ones(4)}, "share a dimension"),
        ({a: np.ones((2, 2))}, "1-D"),
        ({a: np.array([1.0, np.nan])}, "NaN"),
    ]
    for vectors, message in bad_calls:
        with pytest.raises(DBError, match=message), write_session(sessions) as session:
            store_embeddings(session, "k", vectors)
    with pytest.raises(UnknownImageError, match="case_9999"), write_session(sessions) as session:
        store_embeddings(session, "k", {"case_9999": np.ones(3)})
    with sessions() as session:
        assert load_embeddings(session, "k")[0] == []


def test_scores_are_kept_per_method_and_model_version(sessions, ingest) -> None:
    a, b, c = ingest(3)
    with write_session(sessions) as session:
        store_scores(session, "prompt_uncertainty", "v0001", {a: 0.5, b: 0.25})
        store_scores(session, "prompt_uncertainty", "v0002", {a: 0.9})
        store_scores(session, "entropy", "v0001", {c: 1.5})
    with write_session(sessions) as session:
        store_scores(session, "prompt_uncertainty", "v0001", {b: 0.75, c: np.float32(0.125)})
    with sessions() as session:
        assert load_scores(session, "prompt_uncertainty", "v0001") == {a: 0.5, b: 0.75, c: 0.125}
        assert load_scores(session, "prompt_uncertainty", "v0002") == {a: 0.9}
        assert load_scores(session, "prompt_uncertainty", "v0001", [b]) == {b: 0.75}
    with pytest.raises(DBError, match="non-finite"), write_session(sessions) as session:
        store_scores(session, "entropy", "v0001", {a: float("inf")})
    with pytest.raises(UnknownImageError), write_session(sessions) as session:
        store_scores(session, "entropy", "v0001", {"case_9999": 1.0})
