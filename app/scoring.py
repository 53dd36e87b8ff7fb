"""Per-volume numbers that selection needs, computed in the background and stored in the database.

- Embeddings (docs/design.md, "Embeddings"): once per volume, by the frozen backbone; keyed by the backbone's weights fingerprint.
- Uncertainty scores: recomputed for every unlabeled volume whenever a new model version is published, stored with
  that version. One batched pass of the K prompts per volume, inside the liver ROI that stage 1 of the cascade finds
  on the working grid (docs/design.md, "Geometry and the liver-ROI cascade"), gives every score of ``strategies.uncertainty.volume_scores``:
  ``prompt_uncertainty`` (TESLA: mean pairwise JS divergence + entropy of the mean, over any prompt's foreground),
  ``entropy`` (entropy of the mean prediction over the same voxels), ``epistemic`` (BALD with the K prompts as
  the ensemble: entropy of the mean minus mean entropy) and ``foreground`` (fg_random: the fraction of voxels the
  mean prediction calls tumour).
"""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.tasks.scoring import ScoringMethod

from app.jobs import tracked_job
from app.modelstore import ModelStore, NoModelError
from db.datastore import SQLDatastore
from db.engine import write_session
from db.scores import embedded_image_ids, scored_image_ids, store_embeddings, store_scores
from models.checkpoint import backbone_fingerprint
from models.cascade import CascadeConfig
from models.embedding import EMBEDDING_VERSION, volume_embedding
from models.inference import roi_prompt_probabilities
from strategies.uncertainty import SCORE_METHODS, volume_scores

logger = logging.getLogger(__name__)

BATCH = 32  # volumes per database write (progress granularity too)


def embedding_key(store: ModelStore) -> str:
    """Embeddings are keyed by backbone weights and embedding definition: a change of either recomputes them."""
    backbone, _ = store.backbone()
    return f"backbone-{backbone_fingerprint(backbone)[:16]}-e{EMBEDDING_VERSION}"


def compute_missing_embeddings(datastore: SQLDatastore, store: ModelStore, cascade: CascadeConfig) -> int:
    """Embed every volume that has no embedding from this backbone yet; returns how many were computed."""
    key = embedding_key(store)
    with datastore.sessions() as session:
        done = embedded_image_ids(session, key)
    todo = [i for i in datastore.list_images() if i not in done]
    if not todo:
        return 0
    backbone, _ = store.backbone()
    with tracked_job(datastore.sessions, "embedding", volumes=len(todo), key=key) as job:
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            vectors = {i: volume_embedding(backbone, datastore.get_image_uri(i), cascade) for i in chunk}
            with write_session(datastore.sessions) as session:
                store_embeddings(session, key, vectors)
            job(start + len(chunk), len(todo), f"{start + len(chunk)}/{len(todo)} volumes embedded")
    return len(todo)


class SLPTScoring(ScoringMethod):
    """Scores every unlabeled volume with the newest model version (skips work already stored for that version)."""

    def __init__(self, store: ModelStore):
        super().__init__("Prompt-based uncertainty (K prompts, one batched pass) of every unlabeled volume")
        self.store = store

    def __call__(self, request: dict[str, Any], datastore: SQLDatastore) -> dict[str, Any]:
        return catch_up_scoring(datastore, self.store)


def catch_up_scoring(datastore: SQLDatastore, store: ModelStore) -> dict[str, Any]:
    """Score what the newest version has not scored yet (a scoring that was killed, or failed, before it ended):
    rounds need complete scores of the current version. Does nothing when they are complete."""
    try:
        loaded = store.latest()
    except NoModelError as exc:
        return {"skipped": str(exc)}
    return score_unlabeled(datastore, loaded.network, loaded.version)


def score_unlabeled(datastore: SQLDatastore, network, version: str) -> dict[str, Any]:
    with datastore.sessions() as session:
        # Done means every score is stored: a score added since (e.g. ``foreground``) gets computed for old versions too.
        done = set.intersection(*(scored_image_ids(session, method, version) for method in SCORE_METHODS))
    todo = [i for i in datastore.get_unlabeled_images() if i not in done]
    if not todo:
        return {"model_version": version, "scored": 0}
    with tracked_job(datastore.sessions, "scoring", model_version=version, volumes=len(todo)) as job:
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            per_volume = {i: volume_scores(roi_prompt_probabilities(network, datastore.get_image_uri(i))) for i in chunk}
            with write_session(datastore.sessions) as session:
                for method in SCORE_METHODS:
                    store_scores(session, method, version, {i: s[method] for i, s in per_volume.items()})
            job(start + len(chunk), len(todo), f"{start + len(chunk)}/{len(todo)} volumes scored")
        job.result = {"model_version": version, "scored": len(todo)}
    logger.info(f"scored {len(todo)} volumes with model {version}")
    return {"model_version": version, "scored": len(todo)}
