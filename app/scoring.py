"""Per-volume numbers that selection needs, computed in the background and stored in the database.

- Embeddings (docs/design.md, "Embeddings"): once per volume, by the frozen backbone; keyed by the backbone's weights fingerprint.
- Uncertainty scores: recomputed for every unlabeled volume whenever a new model version is published, stored with
  that version. One batched pass of the K prompts per volume, inside the liver ROI that stage 1 of the cascade finds
  on the working grid (docs/design.md, "Geometry and the liver-ROI cascade"), gives every score of ``strategies.uncertainty.volume_scores``:
  ``prompt_uncertainty`` (TESLA: mean pairwise JS divergence + entropy of the mean, over any prompt's foreground),
  ``entropy`` (entropy of the mean prediction over the same voxels), ``epistemic`` (BALD with the K prompts as
  the ensemble: entropy of the mean minus mean entropy) and ``foreground`` (fg_random: the fraction of voxels the
  mean prediction calls tumour).

Both are cut into batches that every replica leases through the database (``db.work``, ``app.work``; docs/design.md,
"Work spread over replicas"): planning puts the volumes without a result into batches once per target (embedding key
or model version), and each replica's :class:`BackgroundWork` thread, the training process that published a version
and any explicit request claim batches until none is free.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monailabel.interfaces.tasks.scoring import ScoringMethod

from app.modelstore import ModelStore, NoModelError
from app.work import WorkSettings, work_through
from db.datastore import SQLDatastore
from db.engine import write_session
from db.images import image_ids
from db.schema import Image
from db.scores import embedded_image_ids, load_embeddings, scored_image_ids, store_embeddings, store_scores
from db.work import (
    Plan, has_free_batch, lock_target, plan_batches, priority_image_ids, target_planned, work_totals,
)
from models.checkpoint import backbone_fingerprint
from models.cascade import CascadeConfig
from models.embedding import EMBEDDING_VERSION, embedding_blocks, volume_embedding
from models.inference import roi_prompt_probabilities
from strategies.candidates import stratified_subset
from strategies.uncertainty import SCORE_METHODS, volume_scores

logger = logging.getLogger(__name__)


def embedding_key(store: ModelStore) -> str:
    """Embeddings are keyed by backbone weights and embedding definition: a change of either recomputes them."""
    backbone, _ = store.backbone()
    return f"backbone-{backbone_fingerprint(backbone)[:16]}-e{EMBEDDING_VERSION}"


def plan_embeddings(datastore: SQLDatastore, key: str, settings: WorkSettings) -> Plan:
    """Batches of the campaign's volumes (archived ones left out) that have no embedding under ``key`` yet."""
    with write_session(datastore.sessions) as session:
        return plan_batches(session, "embedding", key, image_ids, lambda s: embedded_image_ids(s, key),
                            settings.batch, settings.clock())


def compute_missing_embeddings(
    datastore: SQLDatastore, store: ModelStore, cascade: CascadeConfig, settings: WorkSettings = WorkSettings(),
    plan: bool = True,
) -> int:
    """Plan (unless ``plan`` is False) and take part in embedding every volume that has no embedding from this
    backbone yet, until no batch is free; returns how many volumes this call embedded (other workers may embed
    the rest)."""
    key = embedding_key(store)
    if plan:
        plan_embeddings(datastore, key, settings)
    backbone, _ = store.backbone()
    done = work_through(
        datastore.sessions, "embedding", key,
        compute=lambda image_id: volume_embedding(backbone, datastore.get_image_uri(image_id), cascade),
        store=lambda session, vectors: store_embeddings(session, key, vectors),
        settings=settings, noun="embedded", detail={"key": key},
    )
    return done.volumes


class SLPTScoring(ScoringMethod):
    """Scores every unlabeled volume with the newest model version (skips work already stored for that version)."""

    def __init__(self, store: ModelStore, settings: WorkSettings = WorkSettings()):
        super().__init__("Prompt-based uncertainty (K prompts, one batched pass) of every unlabeled volume")
        self.store = store
        self.settings = settings

    def __call__(self, request: dict[str, Any], datastore: SQLDatastore) -> dict[str, Any]:
        return catch_up_scoring(datastore, self.store, self.settings)


def catch_up_scoring(datastore: SQLDatastore, store: ModelStore, settings: WorkSettings = WorkSettings()) -> dict[str, Any]:
    """Score what the newest version has not scored yet (a scoring that was killed, or failed, before it ended):
    rounds need complete scores of the current version. Does nothing when they are complete."""
    try:
        loaded = store.latest()
    except NoModelError as exc:
        return {"skipped": str(exc)}
    return score_unlabeled(datastore, loaded.network, loaded.version, settings, store=store)


def fully_scored(session: Session, version: str) -> set[str]:
    """Volumes with every score of ``version``: one added since (e.g. ``foreground``) makes old versions' volumes
    missing again, so they are scored again."""
    return set.intersection(*(scored_image_ids(session, method, version) for method in SCORE_METHODS))


#: Priority of a version's candidate batches (docs/design.md, "Candidate subsets"); the rest of the pool is planned at 0.
CANDIDATE_PRIORITY = 1


def candidate_seed(version: str) -> int:
    """Each version draws its own subset (a fresh random subset per round), the same one on every replica."""
    return zlib.crc32(version.encode())


def draw_candidates(datastore: SQLDatastore, store: ModelStore, version: str, settings: WorkSettings) -> list[str]:
    """``settings.candidates`` unlabeled volumes drawn stratified by TESLA's clusters over their embeddings
    (:func:`strategies.candidates.stratified_subset`), in pool order; empty when the setting is 0 or the embedded
    pool is not larger than it (then the whole pool is one tier). Volumes without an embedding are never candidates."""
    if settings.candidates <= 0:
        return []
    with datastore.sessions() as session:
        ids, embeddings = load_embeddings(session, embedding_key(store), image_ids(session, status="unlabeled"))
    if len(ids) <= settings.candidates:
        return []
    chosen = stratified_subset(embeddings.reshape(len(ids), -1), settings.candidates,
                               block_sizes=embedding_blocks(store.backbone()[0]), strata=settings.strata,
                               seed=candidate_seed(version))
    return [ids[i] for i in chosen]


def version_candidates(session: Session, version: str) -> set[str]:
    """The volumes ``version`` scores first (its candidate batches, in any state); empty when it has no subset."""
    return priority_image_ids(session, "scoring", version, CANDIDATE_PRIORITY)


def candidates_pending(session: Session, version: str) -> int:
    """Candidate volumes of ``version`` still in a pending or leased batch."""
    return len(priority_image_ids(session, "scoring", version, CANDIDATE_PRIORITY, states=("pending", "leased")))


def plan_scoring(datastore: SQLDatastore, version: str, settings: WorkSettings, store: ModelStore | None = None) -> Plan:
    """Batches of the unlabeled volumes that lack a score of ``version``. At the version's first planning, with a
    ``store`` (for the embeddings) and ``settings.candidates`` > 0, a candidate subset is planned first at
    :data:`CANDIDATE_PRIORITY`, the rest at 0, so every worker scores the candidates before the rest."""
    with datastore.sessions() as session:
        first = not target_planned(session, "scoring", version)
    # drawn outside the write transaction (k-means on the pool): SQLite's write lock is not held meanwhile
    chosen = draw_candidates(datastore, store, version, settings) if first and store is not None else []
    with write_session(datastore.sessions) as session:
        lock_target(session, "scoring", version)
        tiers = Plan(0, 0)
        if chosen and not target_planned(session, "scoring", version):  # another planner may have been first
            tiers = plan_batches(session, "scoring", version, lambda s: chosen, lambda s: fully_scored(s, version),
                                 settings.batch, settings.clock(), priority=CANDIDATE_PRIORITY)
        rest = plan_batches(session, "scoring", version, lambda s: image_ids(s, status="unlabeled"),
                            lambda s: fully_scored(s, version), settings.batch, settings.clock())
    return Plan(tiers.batches + rest.batches, tiers.volumes + rest.volumes)


def score_unlabeled(
    datastore: SQLDatastore, network, version: str, settings: WorkSettings = WorkSettings(), plan: bool = True,
    store: ModelStore | None = None, on_candidates: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Plan (unless ``plan`` is False; with ``store``, a new version's candidates first, see :func:`plan_scoring`)
    and take part in scoring the unlabeled volumes with ``network`` (the model ``version``), until no batch is free:
    the candidate batches first, then (``on_candidates`` called when the candidates are all scored) the rest.
    Returns how many volumes this call scored, and the version's totals."""
    if plan:
        plan_scoring(datastore, version, settings, store)

    def score(image_id: str) -> dict[str, float]:
        return volume_scores(roi_prompt_probabilities(network, datastore.get_image_uri(image_id)))

    def store_all(session: Session, per_volume) -> None:
        for method in SCORE_METHODS:
            store_scores(session, method, version, {i: s[method] for i, s in per_volume.items()})

    first = work_through(datastore.sessions, "scoring", version, compute=score, store=store_all, settings=settings,
                         noun="scored", detail={"model_version": version}, min_priority=CANDIDATE_PRIORITY)
    if on_candidates is not None:
        with datastore.sessions() as session:
            ready = bool(version_candidates(session, version)) and not candidates_pending(session, version)
        if ready:
            on_candidates()
    done = work_through(datastore.sessions, "scoring", version, compute=score, store=store_all, settings=settings,
                        noun="scored", detail={"model_version": version})
    done.volumes += first.volumes
    done.batches += first.batches
    with datastore.sessions() as session:
        totals = work_totals(session, "scoring", version)
    if done.volumes:
        logger.info(f"scored {done.volumes} volumes with model {version} "
                    f"({totals.done_volumes}/{totals.total_volumes} of the version's batches done)")
    return {"model_version": version, "scored": done.volumes, "batches": done.batches,
            "version_done": totals.done_volumes, "version_total": totals.total_volumes}


class BackgroundWork:
    """This replica's share of the embedding and scoring batches, in a background thread.

    Every ``poll_s`` seconds (and at once at start) it plans what is new — the current embedding key's batches, and
    the newest model version's — then claims batches until none is free. It plans again only when the key, the newest
    version or the newest registered volume changed since it last planned (planning is idempotent, so replicas that
    plan the same target at once add nothing twice). When it finds the current targets complete (embeddings, and the
    newest version's scores when a model exists) for the first time, it calls ``on_complete`` (a round build)."""

    def __init__(
        self, datastore: SQLDatastore, store: ModelStore, cascade: CascadeConfig, settings: WorkSettings,
        poll_s: float, on_complete: Callable[[], None],
    ):
        self.datastore = datastore
        self.store = store
        self.cascade = cascade
        self.settings = settings
        self.poll_s = poll_s
        self.on_complete = on_complete
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key: str | None = None
        self._planned: dict[str, tuple[str, int | None]] = {}
        self._completed: tuple[str, str | None] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="background-work", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                logger.exception("background embedding/scoring work failed; trying again at the next poll")
            self._stop.wait(self.poll_s)

    def step(self) -> None:
        """One poll: plan what is new, work through the free batches, report completion."""
        sessions = self.datastore.sessions
        with sessions() as session:
            newest_volume = session.scalar(select(func.max(Image.seq)))
        if self._key is None:
            try:
                self._key = embedding_key(self.store)  # the backbone's weights do not change while the server runs
            except NoModelError as exc:
                if not self._planned:  # said once, not at every poll
                    logger.info(f"no embedding or scoring work without a backbone: {exc}")
                    self._planned["none"] = ("", None)
                return
        key = self._key
        if self._planned.get("embedding") != (key, newest_volume):
            plan_embeddings(self.datastore, key, self.settings)
            self._planned["embedding"] = (key, newest_volume)
        compute_missing_embeddings(self.datastore, self.store, self.cascade, self.settings, plan=False)
        version = self.store.latest_version()
        if version is not None:
            if self._planned.get("scoring") != (version, newest_volume):
                plan_scoring(self.datastore, version, self.settings, self.store)
                self._planned["scoring"] = (version, newest_volume)
            with sessions() as session:
                free = has_free_batch(session, "scoring", version, self.settings.clock())
            if free:
                loaded = self.store.latest()  # a newer version published meanwhile is planned at the next poll
                score_unlabeled(self.datastore, loaded.network, loaded.version, self.settings, plan=False,
                                on_candidates=self.on_complete)
        with sessions() as session:
            complete = work_totals(session, "embedding", key).complete and (
                version is None or work_totals(session, "scoring", version).complete)
        if complete and self._completed != (key, version):
            self._completed = (key, version)
            self.on_complete()
