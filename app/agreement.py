"""Agreement between readers of double-read volumes, computed from the stored label files in a background thread,
and adjudication: the label that trains, made from the readers' labels (docs/design.md, "Review, double reading and
agreement")."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from db import reviews
from db.agreements import agreements, comparisons_due, double_read_images, store_agreement
from db.datastore import SQLDatastore
from db.engine import write_session
from db.errors import DBError, NotFoundError
from db.reviews import ReviewConflictError
from db.schema import Agreement, Image
from models.agreement import agreement, majority

logger = logging.getLogger(__name__)

ADJUDICATION_METHODS = ("pick", "majority", "staple")
FIGURES = ("liver_dice", "tumour_dice", "liver_hd95", "tumour_hd95", "lesion_f1")


def read_label_map(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], sitk.Image]:
    """The label map as an array (z, y, x), its spacing in that order, and the image it came from."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing())), image


def compute_agreements(datastore: SQLDatastore, image_ids: list[str] | None = None) -> int:
    """Compute and store every comparison that is due (all double-read volumes, or ``image_ids``); return how many."""
    with datastore.sessions() as session:
        ids = image_ids if image_ids is not None else double_read_images(session)
        due = [c for image_id in ids for c in comparisons_due(session, image_id)]
    for comparison in due:
        first, spacing, _ = read_label_map(comparison.first.path)
        second, _, _ = read_label_map(comparison.second.path)
        metrics = agreement(first, second, spacing)
        with write_session(datastore.sessions) as session:
            store_agreement(session, comparison, metrics)
    return len(due)


class AgreementWorker:
    """Computes due agreements in one background thread; a request while it runs makes it run once more."""

    def __init__(self, datastore: SQLDatastore):
        self.datastore = datastore
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = False

    def request(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._again = True
                return
            self._thread = threading.Thread(target=self._run, name="agreement", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                compute_agreements(self.datastore)
            except Exception:
                logger.exception("computing agreement failed")
            with self._lock:
                if not self._again:
                    self._thread = None
                    return
                self._again = False


def agreement_report(datastore: SQLDatastore) -> dict[str, Any]:
    """The stored figures per volume, per annotator pair and per annotator (against the other readers and against the
    label that trains), and the double-read volumes whose comparisons are not all stored yet."""
    with datastore.sessions() as session:
        rows = agreements(session)
        pending = [image_id for image_id in double_read_images(session) if comparisons_due(session, image_id)]
    between = [row for row in rows if not row.reference]
    pairs: dict[str, list[Agreement]] = defaultdict(list)
    others: dict[str, list[Agreement]] = defaultdict(list)
    reference: dict[str, list[Agreement]] = defaultdict(list)
    for row in between:
        first, second = sorted((row.first_annotator, row.second_annotator))
        pairs[f"{first}|{second}"].append(row)
        others[row.first_annotator].append(row)
        others[row.second_annotator].append(row)
    for row in rows:
        if row.reference:
            reference[row.first_annotator].append(row)
    return {
        "volumes": [
            {"image": row.image_id, "first": row.first_annotator, "first_version": row.first_version,
             "second": row.second_annotator, "second_version": row.second_version, "reference": row.reference,
             **row.metrics}
            for row in rows
        ],
        "pairs": {pair: _summary(group) for pair, group in sorted(pairs.items())},
        "annotators": {
            name: {"vs_readers": _summary(others.get(name, [])), "vs_adjudicated": _summary(reference.get(name, []))}
            for name in sorted(set(others) | set(reference))
        },
        "pending": pending,
    }


def _summary(rows: list[Agreement]) -> dict[str, Any]:
    """Mean of each figure over the comparisons where it is defined, and how many comparisons there are."""
    summary: dict[str, Any] = {"comparisons": len(rows)}
    for figure in FIGURES:
        values = [row.metrics[figure] for row in rows if row.metrics.get(figure) is not None]
        summary[figure] = float(np.mean(values)) if values else None
    return summary


def adjudicate(datastore: SQLDatastore, image_id: str, method: str, actor: str, reader: str | None = None,
               comment: str | None = None) -> int:
    """Record the label that trains for a double-read volume whose readers have all read it: one reader's label
    (``pick``), the voxel-wise majority, or SimpleITK's multi-label STAPLE of all of them. It is a new final version by
    ``actor``, approved at once; return its version."""
    if method not in ADJUDICATION_METHODS:
        raise DBError(f"unknown adjudication method {method!r}: use one of {ADJUDICATION_METHODS}")
    reviews.check_comment(comment)
    with datastore.sessions() as session:
        image = session.get(Image, image_id)
        if image is None:
            raise NotFoundError(f"unknown image id {image_id!r}")
        labels = reviews.reader_labels(session, image_id)
        if image.readers <= 1:
            raise ReviewConflictError(f"image {image_id!r} is not double-read: review its label instead")
        if len(labels) < image.readers:
            raise ReviewConflictError(f"image {image_id!r} has {len(labels)} of its {image.readers} reads so far")
    if method == "pick" and reader not in labels:
        raise NotFoundError(f"{reader!r} has not read image {image_id!r}; its readers: {sorted(labels)}")
    sources = {name: labels[name].path for name in sorted(labels)}
    with tempfile.TemporaryDirectory() as folder:
        made = Path(folder) / f"{image_id}.nii.gz"
        if method == "pick":
            sitk.WriteImage(sitk.ReadImage(sources[reader]), str(made))
        else:
            images = [sitk.Cast(sitk.ReadImage(path), sitk.sitkUInt8) for path in sources.values()]
            if method == "majority":
                voted = sitk.GetImageFromArray(majority([sitk.GetArrayFromImage(i) for i in images]).astype(np.uint8))
                voted.CopyInformation(images[0])
            else:
                voted = sitk.MultiLabelSTAPLE(images, 0)
            sitk.WriteImage(voted, str(made))
        detail = {"method": method, "reader": reader, "versions": {n: labels[n].version for n in sorted(labels)}}
        datastore.save_label(image_id, str(made), reviews.FINAL_TAG,
                             {"annotator": actor, reviews.ADJUDICATION: detail})
    with write_session(datastore.sessions) as session:
        row = reviews.review_label(session, image_id, None, reviews.APPROVED, actor, comment=comment,
                                   may_review_own=True)
        return row.version

