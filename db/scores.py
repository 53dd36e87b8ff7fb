"""Per-volume numbers the selection strategies consume: embeddings (one per backbone) and scores
(one per method and model version). Both are upserts, so recomputing simply overwrites."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.engine import upsert_rows
from db.images import require_known
from db.errors import DBError
from db.schema import Embedding, Score, utcnow


def store_embeddings(session: Session, key: str, vectors: Mapping[str, np.ndarray]) -> None:
    """Store (or replace) embeddings made by backbone ``key``: ``{image_id: vector of shape (D,)}``.

    Vectors are stored as float32; all vectors of one call must share D.
    """
    if not key:
        raise DBError("embedding key must be a non-empty string")
    dims = {image_id: np.asarray(vector).shape for image_id, vector in vectors.items()}
    bad = {image_id: shape for image_id, shape in dims.items() if len(shape) != 1 or shape[0] == 0}
    if bad:
        raise DBError(f"embeddings must be non-empty 1-D vectors; got shapes {dict(list(bad.items())[:5])}")
    if len({shape[0] for shape in dims.values()}) > 1:
        raise DBError(f"embeddings of one call must share a dimension, got {sorted({s[0] for s in dims.values()})}")
    now = utcnow()
    rows = []
    for image_id, vector in vectors.items():
        values = np.ascontiguousarray(vector, dtype=np.float32)
        if not np.isfinite(values).all():
            raise DBError(f"embedding of image {image_id!r} contains NaN or infinity")
        rows.append(
            {"image_id": image_id, "key": key, "vector": values.tobytes(), "dim": values.size, "created_at": now}
        )
    require_known(session, list(vectors))
    upsert_rows(session, Embedding.__table__, rows, ["image_id", "key"], ["vector", "dim", "created_at"])


def load_embeddings(
    session: Session, key: str, image_ids: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Embeddings of backbone ``key``: ``(ids, matrix)`` with matrix of shape (N, D) float32.

    Rows follow ``image_ids`` (volumes without an embedding are left out) or, without it, sorted id order.
    An empty result is ``([], array of shape (0, 0))``.
    """
    query = select(Embedding.image_id, Embedding.vector, Embedding.dim).where(Embedding.key == key)
    if image_ids is not None:
        query = query.where(Embedding.image_id.in_(image_ids))
    rows = {image_id: (vector, dim) for image_id, vector, dim in session.execute(query)}
    ids = [i for i in image_ids if i in rows] if image_ids is not None else sorted(rows)
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32)
    dims = {rows[i][1] for i in ids}
    if len(dims) > 1:
        raise DBError(f"embeddings with key {key!r} have mixed dimensions {sorted(dims)}: recompute them")
    matrix = np.frombuffer(b"".join(rows[i][0] for i in ids), dtype=np.float32).reshape(len(ids), dims.pop())
    return ids, matrix.copy()  # frombuffer is read-only


def embedded_image_ids(session: Session, key: str) -> set[str]:
    """Ids of the images that have an embedding made by backbone ``key``."""
    return set(session.scalars(select(Embedding.image_id).where(Embedding.key == key)))


def store_scores(session: Session, method: str, model_version: str, values: Mapping[str, float]) -> None:
    """Store (or replace) ``{image_id: score}`` computed by ``method`` under ``model_version``."""
    if not method or not model_version:
        raise DBError("score method and model version must be non-empty strings")
    non_finite = [image_id for image_id, value in values.items() if not math.isfinite(float(value))]
    if non_finite:
        raise DBError(f"non-finite {method!r} scores for images {non_finite[:10]}")
    now = utcnow()
    rows = [
        {"image_id": i, "method": method, "model_version": model_version, "value": float(v), "created_at": now}
        for i, v in values.items()
    ]
    require_known(session, list(values))
    upsert_rows(session, Score.__table__, rows, ["image_id", "method", "model_version"], ["value", "created_at"])


def load_scores(
    session: Session, method: str, model_version: str, image_ids: list[str] | None = None
) -> dict[str, float]:
    """``{image_id: score}`` of ``method`` under ``model_version`` (optionally only for ``image_ids``)."""
    query = select(Score.image_id, Score.value).where(Score.method == method, Score.model_version == model_version)
    if image_ids is not None:
        query = query.where(Score.image_id.in_(image_ids))
    return {image_id: value for image_id, value in session.execute(query)}


def scored_image_ids(session: Session, method: str, model_version: str) -> set[str]:
    """Ids of the images that have a ``method`` score under ``model_version``."""
    query = select(Score.image_id).where(Score.method == method, Score.model_version == model_version)
    return set(session.scalars(query))
