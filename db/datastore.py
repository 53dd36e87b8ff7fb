"""The SQL-backed MONAI Label datastore: volumes and label files stay on disk, every status lives in the database.

Unlike MONAI Label's ``LocalDatastore`` (one JSON file rewritten on every change, state in memory) this datastore
keeps nothing only in memory, so the server, its training and scoring subprocesses and the CLI all see the same
state. ``json()`` keeps LocalDatastore's shape, which 3D Slicer reads.

Labels are written crash-safely: the uploaded file is checked, copied to a new versioned file
(``labels/<tag>/<image>.v<N><ext>``, temp file + rename), and only then is the database row committed. A crash in
between leaves at worst an orphan file that no row points at; the row and the file it names always agree.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from sqlalchemy import Row, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from db import archive, claims, images, ingestion, labels, reviews
from db.audit import audit
from db.engine import write_session
from db.errors import UnknownImageError
from db.schema import Image, Label, utcnow
from db.volumes import (
    check_image_id,
    file_checksum,
    image_id_of,
    validate_label_file,
    volume_facts,
    volume_suffix,
)
from storage.atomic import atomic_copy, staged_copy

logger = logging.getLogger(__name__)

#: Claims in a row that may find an unreadable, not yet read volume before Next Sample gives up (answers nothing).
CLAIM_UNREAD_ATTEMPTS = 5
#: What trains: every volume's newest final label, or only a newest final label a reviewer approved.
TRAIN_ON = ("final", "approved")
#: MONAILabelReviewer's status words (its SegStatus) for our review states; "" is its "not reviewed yet".
REVIEWER_STATUS = {reviews.SUBMITTED: "", reviews.APPROVED: "approved", reviews.CHANGES_REQUESTED: "flagged"}


class SQLDatastore(Datastore):
    """MONAI Label datastore over a studies folder and a SQL database.

    ``images_dir``: the volumes served (e.g. an MSD dataset's ``imagesTr/``); ``labels_dir``: where annotators' labels
    are written (one sub-folder per tag); ``label_values``: the integer values a label may hold besides 0;
    ``clock``: what tells the time of leases (claims and the count of live ones), the system clock by default.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        images_dir: Path,
        labels_dir: Path,
        label_values: set[int],
        *,
        name: str = "slpt-label",
        description: str = "SQL-backed studies",
        lease: timedelta = claims.DEFAULT_LEASE,
        groups: dict[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        train_on: str = "final",
    ):
        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
        self.sessions = sessions
        self.train_on = train_on
        self.clock = clock
        self.images_dir = Path(images_dir)
        self.labels_dir = Path(labels_dir)
        self.label_values = set(label_values)
        self.lease = lease
        self._groups = groups or {}
        self._name = name
        self._description = description

    # -- identity ---------------------------------------------------------------------------------------------------
    def name(self) -> str:
        return self._name

    def set_name(self, name: str):
        self._name = name

    def description(self) -> str:
        return self._description

    def set_description(self, description: str):
        self._description = description

    # -- ingestion --------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Register volumes that appeared under the images folder since the last scan and read their header facts
        (small folders and tests; the app registers at start-up and reads facts in the background)."""
        self.register_new()
        ingestion.fill_facts(self.sessions)

    def register_new(self, progress: ingestion.ProgressFn | None = None) -> ingestion.RegisterResult:
        """Register the volume files under the images folder not registered yet, opening none of them
        (:func:`db.ingestion.register_folder`); :class:`~db.ingestion.DuplicateImageError` names two files with one id."""
        if not self.images_dir.is_dir():
            return ingestion.RegisterResult()
        result = ingestion.register_folder(self.sessions, self.images_dir, exclude=self._excluded_folders(),
                                           groups=self._groups, progress=progress)
        if result.registered or result.skipped_count:
            logger.info(f"registered {result.registered} new volumes ({result.known} known, {result.skipped_count} "
                        "skipped)")
        return result

    def _excluded_folders(self) -> tuple[Path, ...]:
        """Folders under the images folder that hold no served volume: the labels (a plain studies folder keeps them
        in ``labels/`` beside its volumes)."""
        images = self.images_dir.resolve()
        labels = self.labels_dir.resolve()
        return tuple(p for p in (labels, labels.parent) if p != images and p.is_relative_to(images))

    def ingest(self, paths: list[Path], meta: dict[str, Any] | None = None) -> list[str]:
        """Record volumes (header facts and checksum read now) in the database; returns their ids."""
        records = []
        for path in paths:
            facts = volume_facts(path)
            image_id = check_image_id(image_id_of(path))
            records.append(
                images.ImageRecord(
                    id=image_id,
                    path=str(path.resolve()),
                    name=path.name,
                    shape=facts.shape,
                    spacing=facts.spacing,
                    checksum=facts.checksum,
                    grp=self._groups.get(image_id),
                    meta=dict(meta or {}),
                )
            )
        with write_session(self.sessions) as session:
            images.upsert_images(session, records)
        if records:
            logger.info(f"ingested {len(records)} volumes")
        return [r.id for r in records]

    # -- images -----------------------------------------------------------------------------------------------------
    def list_images(self) -> list[str]:
        with self.sessions() as session:
            return images.image_ids(session)

    def _image(self, session: Session, image_id: str) -> Image | None:
        try:
            check_image_id(image_id)
        except ValueError:
            return None
        return images.get_image(session, image_id)

    def get_image_uri(self, image_id: str) -> str:
        with self.sessions() as session:
            image = self._image(session, image_id)
            return image.path if image else ""

    def get_image(self, image_id: str, params=None) -> Any:
        uri = self.get_image_uri(image_id)
        return io.BytesIO(Path(uri).read_bytes()) if uri else None

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            image = self._image(session, image_id)
            return self._image_info(image) if image else {}

    @staticmethod
    def _image_info(image: Image | Row) -> dict[str, Any]:
        return {
            **(image.meta or {}),
            "name": image.name,
            "checksum": image.checksum,  # "SHA256:<hex>": Slicer verifies downloads with it
            "shape": image.shape,
            "spacing": image.spacing,
            "group": image.grp,
            "label_status": image.label_status,
        }

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        with write_session(self.sessions) as session:
            image = images.require_image(session, check_image_id(image_id))
            image.meta = {**(image.meta or {}), **info}

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Copy an uploaded volume into the images folder and ingest it."""
        check_image_id(image_id)
        volume_facts(Path(image_filename))  # unreadable uploads are refused before anything is written
        suffix = volume_suffix(Path(image_filename).name) or ".nii.gz"
        target = self.images_dir / f"{image_id}{suffix}"
        atomic_copy(Path(image_filename), target)
        self.ingest([target], meta=image_info)
        return image_id

    def remove_image(self, image_id: str, actor: str = "admin") -> None:
        """Archive the volume (``db.archive.archive_image``): nothing is deleted, the user's file least of all."""
        with write_session(self.sessions) as session:
            archive.archive_image(session, check_image_id(image_id))
            audit(session, actor, "image_archived", image_id)

    def restore_image(self, image_id: str, actor: str = "admin") -> None:
        with write_session(self.sessions) as session:
            archive.restore_image(session, check_image_id(image_id))
            audit(session, actor, "image_restored", image_id)

    # -- labels -----------------------------------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Validate and store a label file as the next version of (image, tag); return the label id (= image id).

        ``label_info["annotator"]`` is recorded as the label's author (the REST layer sets it). Raises
        ``InvalidIdError``/``UnknownImageError``/``InvalidLabelError`` (nothing written) for bad input.
        """
        check_image_id(image_id)
        tag = label_tag or DefaultLabelTag.FINAL.value
        check_image_id(tag)
        source = Path(label_filename)
        with self.sessions() as session:
            image = images.get_image(session, image_id)
            if image is None:
                raise UnknownImageError(f"unknown image id {image_id!r}")
            if image.label_status == "archived":
                raise UnknownImageError(f"image {image_id!r} is archived: an admin can restore it")
            image_path = Path(image.path)
        # Validation reads the whole file: done before the write transaction, which would block every claim meanwhile.
        validate_label_file(source, image_path, self.label_values)
        suffix = volume_suffix(source.name) or ".nii.gz"
        checksum = file_checksum(source)

        folder = self.labels_dir / tag
        # Copied and fsynced before the write transaction: inside it, where every claim waits on SQLite, only a rename.
        with staged_copy(source, folder) as place:

            def write_version(version: int) -> str:
                target = folder / f"{image_id}.v{version}{suffix}"
                place(target)
                return str(target)

            with write_session(self.sessions) as session:
                annotator = label_info.get("annotator")
                labels.record_label(session, image_id, tag, write_version, annotator, checksum, meta=dict(label_info))
        return image_id

    def _latest_label(self, session: Session, label_id: str, tag: str) -> Label | None:
        try:
            check_image_id(label_id)
        except ValueError:
            return None
        return labels.latest_label(session, label_id, tag)

    def get_label_uri(self, label_id: str, label_tag: str, viewer: str | None = None) -> str:
        """The newest label file with the tag; ``viewer``: an annotator, who on a double-read volume still in reading
        gets their own final label only (:func:`db.reviews.visible_final_label`)."""
        with self.sessions() as session:
            label = self._visible_label(session, label_id, label_tag, viewer)
            return label.path if label else ""

    def _visible_label(self, session: Session, label_id: str, tag: str, viewer: str | None) -> Label | None:
        label = self._latest_label(session, label_id, tag)
        if label is None or viewer is None or label.annotator == viewer:
            return label
        image = images.get_image(session, label_id)
        if image is None or image.readers <= 1:
            return label
        if tag == DefaultLabelTag.FINAL.value:
            return reviews.visible_final_label(session, label_id, viewer)
        return None  # another reader's draft of a double-read volume

    def get_label(self, label_id: str, label_tag: str, params=None) -> Any:
        uri = self.get_label_uri(label_id, label_tag)
        return io.BytesIO(Path(uri).read_bytes()) if uri else None

    def get_labels_by_image_id(self, image_id: str) -> dict[str, str]:
        with self.sessions() as session:
            tags = session.scalars(select(Label.tag).where(Label.image_id == image_id).distinct())
            return {tag: image_id for tag in tags}

    def get_label_by_image_id(self, image_id: str, tag: str) -> str:
        return self.get_labels_by_image_id(image_id).get(tag, "")

    def get_label_info(self, label_id: str, label_tag: str, viewer: str | None = None) -> dict[str, Any]:
        with self.sessions() as session:
            label = self._visible_label(session, label_id, label_tag, viewer)
            return {} if label is None else {**self._label_info(label), "checksum": label.checksum}

    @staticmethod
    def _label_info(label: Label) -> dict[str, Any]:
        """A label's info as listed: its stored info, who made it, when, and for a final label its review state (also
        in MONAILabelReviewer's ``segmentationMeta`` keys, which that module reads and writes back)."""
        info = {
            **(label.meta or {}),
            "version": label.version,
            "annotator": label.annotator,
            "client_id": label.annotator,
            "name": Path(label.path).name,
            "ts": int(label.created_at.timestamp()),
        }
        if label.review_status is not None:
            stored = info.get("segmentationMeta") if isinstance(info.get("segmentationMeta"), dict) else {}
            review = info.get("review") or {}
            info["review_status"] = label.review_status
            info["segmentationMeta"] = {
                "status": REVIEWER_STATUS[label.review_status],
                "level": stored.get("level", ""),
                "approvedBy": review.get("by", ""),
                "comment": review.get("comment") or "",
                "editTime": review.get("at", ""),
            }
        return info

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        with write_session(self.sessions) as session:
            self.merge_label_info(session, label_id, label_tag, info)

    def merge_label_info(self, session: Session, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        """Merge keys into the info of the newest label with the tag, in the caller's transaction."""
        label = self._latest_label(session, label_id, label_tag)
        if label is None:
            raise UnknownImageError(f"image {label_id!r} has no label tagged {label_tag!r}")
        label.meta = {**(label.meta or {}), **info}

    def review_status(self, session: Session, label_id: str) -> str | None:
        label = self._latest_label(session, label_id, DefaultLabelTag.FINAL.value)
        return label.review_status if label else None

    def remove_label(self, label_id: str, label_tag: str, actor: str = "admin") -> None:
        """Archive every version of the label (``db.labels.archive_label``): rows kept aside, files kept."""
        with write_session(self.sessions) as session:
            labels.archive_label(session, check_image_id(label_id), label_tag, actor=actor)

    def restore_label(self, label_id: str, label_tag: str, actor: str = "admin") -> None:
        with write_session(self.sessions) as session:
            labels.restore_label(session, check_image_id(label_id), label_tag, actor=actor)

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        tag = label_tag or DefaultLabelTag.FINAL.value
        with self.sessions() as session:
            if tag == DefaultLabelTag.FINAL.value:
                return images.image_ids(session, status="labeled")
            return sorted(session.scalars(select(Label.image_id).where(Label.tag == tag).distinct()))

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        tag = label_tag or DefaultLabelTag.FINAL.value
        with self.sessions() as session:
            if tag == DefaultLabelTag.FINAL.value:
                return images.image_ids(session, status="unlabeled")
        labeled = set(self.get_labeled_images(tag))
        return [i for i in self.list_images() if i not in labeled]

    def datalist(self, full_path=True) -> list[dict[str, Any]]:
        """Image/label pairs of the final labels (newest version), for training: with ``train_on="approved"`` only those
        a reviewer approved; a double-read volume only once adjudicated (its adjudication is approved)."""
        tag = DefaultLabelTag.FINAL.value
        newest = (
            select(Label.image_id, func.max(Label.version).label("version"))
            .where(Label.tag == tag)
            .group_by(Label.image_id)
            .subquery()
        )
        query = (
            select(Image.path, Label.path, Image.id)
            .join(Label, Label.image_id == Image.id)
            .join(newest, (newest.c.image_id == Label.image_id) & (newest.c.version == Label.version))
            .where(Label.tag == tag, Image.label_status == "labeled")
            .order_by(Image.id)
        )
        approved = Label.review_status == reviews.APPROVED
        query = query.where(approved if self.train_on == "approved" else or_(Image.readers <= 1, approved))
        with self.sessions() as session:
            return [{"image": image, "label": label, "id": image_id} for image, label, image_id in session.execute(query)]

    # -- claims (next sample) ---------------------------------------------------------------------------------------
    def claim_next(
        self, annotator: str, strategy: str, *, order: str = "first", round_id: int | None = None
    ) -> dict[str, Any] | None:
        """Lease the next volume to ``annotator`` (see :func:`db.claims.claim_next_sample`); return what Next Sample
        answers (the volume's info, ``id`` and ``path``), or None when nothing is left."""
        for _ in range(CLAIM_UNREAD_ATTEMPTS):
            claimed = claims.claim_next_sample(
                self.sessions, annotator, strategy, order=order, round_id=round_id, lease=self.lease, clock=self.clock
            )
            if claimed is None:
                return None
            info = {**self._image_info(claimed), "id": claimed.id, "path": claimed.path}
            if claimed.checksum is not None:
                return info
            # Registered but not read yet (the background ingestion job has not reached it): read it now, after the
            # claim's transaction. An unreadable file is archived and the next volume claimed instead.
            facts = ingestion.facts_of(self.sessions, claimed.id)
            if facts is not None:
                return {**info, **facts}
        return None

    def next_to_review(self, reviewer: str) -> dict[str, Any] | None:
        """What the ``review`` strategy answers: the volume's info, ``id``, ``path`` and the label to review
        (``label_version``, ``label_annotator``), or None when no label waits for review. The label is held for the
        reviewer for a while (:func:`db.reviews.next_to_review`), so another reviewer is offered the next one."""
        with write_session(self.sessions) as session:
            label = reviews.next_to_review(session, reviewer, now=self.clock())
            if label is None:
                return None
            image = images.get_image(session, label.image_id)
            return {**self._image_info(image), "id": image.id, "path": image.path, "label_version": label.version,
                    "label_annotator": label.annotator, "review_status": label.review_status}

    # -- summaries --------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Cheap progress summary (two aggregate queries)."""
        with self.sessions() as session:
            counts = images.counts(session, now=self.clock())
            tags = dict(session.execute(select(Label.tag, func.count(func.distinct(Label.image_id))).group_by(Label.tag)).all())
        return {
            "total": counts["total"],
            "completed": counts["labeled"],
            "label_tags": tags,
            "leased": counts["leased"],
        }

    def json(self, viewer: str | None = None, *, offset: int | None = None, limit: int | None = None,
             max_listed: int = 1000) -> dict[str, Any]:
        """Images and their labels in LocalDatastore's shape (what Slicer and MONAILabelReviewer read).

        ``viewer``: an annotator, who sees on a double-read volume still in reading only their own labels. Bounded
        so that a pool of 100,000 volumes is never listed whole per request (the Slicer plugin asks for this listing
        on every Next Sample, to find the claimed volume's ``original`` label): a campaign of up to ``max_listed``
        volumes is listed whole (stock behaviour); a larger one lists the volumes someone holds a lease on, then the
        labeled ones, up to ``max_listed``; ``offset``/``limit`` page through every volume in id order instead. The
        answer's ``listing`` says which (stock clients ignore the key)."""
        with self.sessions() as session:
            live = Image.label_status != "archived"
            total = int(session.scalar(select(func.count()).select_from(Image).where(live)) or 0)
            if offset is not None or limit is not None:
                page = select(Image.id).where(live).order_by(Image.id).offset(offset or 0).limit(limit or max_listed)
                ids, mode = list(session.scalars(page)), "page"
            elif total <= max_listed:
                ids, mode = None, "all"
            else:
                ids, mode = self._working_set(session, max_listed), "working set"
            blinded = reviews.blinded_images(session) if viewer is not None else set()
            objects = self._objects(session, ids, viewer, blinded)
        listing = {"mode": mode, "total": total, "listed": len(objects)}
        if mode == "page":
            listing.update(offset=offset or 0, limit=limit or max_listed)
        return {
            "name": self._name,
            "description": self._description,
            "images_dir": str(self.images_dir),
            "labels_dir": str(self.labels_dir),
            "objects": objects,
            "listing": listing,
        }

    def _working_set(self, session: Session, max_listed: int) -> list[str]:
        """The volumes held by a live lease (the one Slicer just claimed among them), then those with a label, newest
        label first, ``max_listed`` at most; read from the lease and label indexes, not from every image."""
        now = self.clock()
        leased = list(session.scalars(
            select(Image.id).where(images.live_lease(now), Image.label_status != "archived").limit(max_listed)))
        labeled = session.execute(
            select(Label.image_id, func.max(Label.id).label("newest")).join(Image, Image.id == Label.image_id)
            .where(Image.label_status != "archived").group_by(Label.image_id).order_by(func.max(Label.id).desc())
            .limit(max_listed)
        ).all()
        return list(dict.fromkeys([*leased, *(row.image_id for row in labeled)]))[:max_listed]

    def _objects(self, session: Session, ids: list[str] | None, viewer: str | None, blinded: set[str]) -> dict[str, Any]:
        """``objects`` of the listing: every live volume (``ids`` None) or those ids, in id order."""
        objects: dict[str, Any] = {}
        chunks = [None] if ids is None else [sorted(ids)[i : i + images.IN_BATCH] for i in range(0, len(ids), images.IN_BATCH)]
        for chunk in chunks:
            query = select(Image).where(Image.label_status != "archived").order_by(Image.id)
            labels_query = select(Label).order_by(Label.image_id, Label.tag, Label.version)
            if chunk is not None:
                query = query.where(Image.id.in_(chunk))
                labels_query = labels_query.where(Label.image_id.in_(chunk))
            for image in session.scalars(query):
                objects[image.id] = {
                    "image": {"ext": volume_suffix(image.name) or "", "info": self._image_info(image)},
                    "labels": {},
                }
            for label in session.scalars(labels_query):  # later versions overwrite earlier ones
                if label.image_id not in objects or (label.image_id in blinded and label.annotator != viewer):
                    continue
                objects[label.image_id]["labels"][label.tag] = {
                    "ext": volume_suffix(label.path) or "",
                    "info": self._label_info(label),
                }
        return objects if ids is None else dict(sorted(objects.items()))

    def get_dataset_archive(self, limit_cases: int | None) -> str:
        """A zip of the labeled dataset (images + newest final labels) in MSD-like layout."""
        pairs = self.datalist()[: limit_cases or None]
        handle, archive = tempfile.mkstemp(suffix=".zip")
        os.close(handle)
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
            for pair in pairs:
                zf.write(pair["image"], f"imagesTr/{Path(pair['image']).name}")
                suffix = volume_suffix(pair["label"]) or ".nii.gz"
                zf.write(pair["label"], f"labelsTr/{pair['id']}{suffix}")
        return archive

