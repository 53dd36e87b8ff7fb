"""Prospective quality (docs/design.md, "Prospective quality"): every final label is a fresh test case for the model
version that served when its volume was claimed. A background thread measures labels that have no record yet, off
the claim and upload paths; ``quality_report`` summarises the records with bootstrap intervals and the stopping
advice."""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.modelstore import NoModelError
from app.predictions import PredictionCache
from app.stopping import stopping_advice
from db.engine import write_session
from db.model_versions import list_model_versions
from db.quality import QUALITY_FIGURES, claim_of_label, quality_records, record_quality, serving_version_at, unmeasured_count, unmeasured_final_labels
from db.schema import Image, Label, QualityRecord
from models.quality import label_agreement

logger = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 2000


def read_label(path: str) -> np.ndarray:
    """A label file as a class map in nibabel's axis order (the order ``label_on_original`` uses)."""
    if path.endswith((".nii", ".nii.gz")):
        return np.asarray(nib.load(path).dataobj).astype(np.uint8)
    return sitk.GetArrayFromImage(sitk.ReadImage(path)).transpose(2, 1, 0).astype(np.uint8)


def measure_label(sessions: sessionmaker[Session], predictions: PredictionCache, label: Label) -> dict[str, Any]:
    """The figures of one final label and the version they compare against (None: no model served its claim)."""
    with sessions() as session:
        claim = claim_of_label(session, label)
        served_at = claim.claimed_at if claim else label.created_at
        version = serving_version_at(session, served_at)
        image_path = session.get(Image, label.image_id).path
    figures: dict[str, float | None] = {}
    if claim is not None:
        figures["minutes"] = (label.created_at - claim.claimed_at).total_seconds() / 60.0
    if version is None:
        return {"model_version": None, "figures": figures}
    prediction = predictions.get(version.id, label.image_id, image_path)
    figures.update(label_agreement(prediction.label, read_label(label.path)).as_dict())
    return {"model_version": version.id, "figures": figures}


def measure_pending(sessions: sessionmaker[Session], predictions: PredictionCache, batch: int = 50,
                    failed: set[int] | None = None, now: Callable | None = None) -> int:
    """Measure final labels without a record (up to ``batch``); return how many were recorded. The records are
    written in one transaction: on SQLite every write queues with the claims for the one write lock. A label that
    fails (its file unreadable, say) is logged and left for the next pass, unless listed in ``failed``."""
    failed = failed if failed is not None else set()
    with sessions() as session:
        pending = [label for label in unmeasured_final_labels(session, limit=batch + len(failed)) if label.id not in failed]
        for label in pending:
            session.expunge(label)
    measured = []
    for label in pending[:batch]:
        try:
            measured.append((label, measure_label(sessions, predictions, label)))
        except (NoModelError, OSError, ValueError, RuntimeError):
            logger.exception(f"prospective quality of label {label.id} ({label.image_id}) failed")
            failed.add(label.id)
    if not measured:
        return 0
    try:
        _record(sessions, measured, now)
        return len(measured)
    except IntegrityError:  # another replica measured some of them first: write the others one by one
        return sum(_record_one(sessions, label, figures, now) for label, figures in measured)


def _record(sessions: sessionmaker[Session], measured: list, now: Callable | None) -> None:
    with write_session(sessions) as session:
        for label, result in measured:
            record_quality(session, label, result["model_version"], result["figures"], now=now() if now else None)


def _record_one(sessions: sessionmaker[Session], label: Label, result: dict, now: Callable | None) -> int:
    try:
        _record(sessions, [(label, result)], now)
        return 1
    except IntegrityError:
        return 0  # measured already: never twice


class QualityWorker:
    """The background thread: wakes every ``interval_s`` (or when :meth:`wake` is called) and measures what is
    pending. It lowers its own scheduling priority, so on a busy server a claim's thread runs first."""

    def __init__(self, sessions: sessionmaker[Session], predictions: PredictionCache, interval_s: float):
        self.sessions = sessions
        self.predictions = predictions
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failed: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="prospective-quality", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # Linux: a thread's own niceness
        except (AttributeError, OSError):
            pass
        while not self._stop.is_set():
            try:
                while measure_pending(self.sessions, self.predictions, failed=self._failed):
                    if self._stop.is_set():
                        return
            except Exception:
                logger.exception("the prospective quality pass failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()


def bootstrap_mean(values: Iterable[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Mean and percentile-bootstrap 95 % interval; no interval from fewer than two values."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(data) == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    if len(data) == 1:
        return {"n": 1, "mean": float(data[0]), "low": None, "high": None}
    means = np.random.default_rng(seed).choice(data, size=(resamples, len(data)), replace=True).mean(axis=1)
    return {"n": int(len(data)), "mean": float(data.mean()), "low": float(np.percentile(means, 2.5)),
            "high": float(np.percentile(means, 97.5))}


def summarise(records: list[QualityRecord], key: Callable[[QualityRecord], str]) -> dict[str, dict[str, Any]]:
    """Per group (``key``): the number of labels and each figure's mean with its interval."""
    groups: dict[str, list[QualityRecord]] = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    return {
        name: {"labels": len(rows), **{figure: bootstrap_mean(getattr(r, figure) for r in rows) for figure in QUALITY_FIGURES}}
        for name, rows in sorted(groups.items())
    }


def quality_report(session: Session, next_labels: int, threshold: float, annotator: str | None = None) -> dict[str, Any]:
    """What ``GET /admin/quality`` and the dashboard show: per model version (with the number of labels it was
    trained on), per annotator, the learning curve's points and the stopping advice."""
    records = quality_records(session, annotator=annotator)
    per_version = summarise(records, key=lambda r: r.model_version)
    trained_on = {v.id: v.metrics.get("labels") for v in list_model_versions(session)}
    for version, row in per_version.items():
        row["trained_on"] = trained_on.get(version)
    curve = sorted(
        (row["trained_on"], row["tumour_dice"]["mean"], version) for version, row in per_version.items()
        if isinstance(row["trained_on"], (int, float)) and row["tumour_dice"]["mean"] is not None
    )
    advice = stopping_advice([c[0] for c in curve], [c[1] for c in curve], next_labels=next_labels, threshold=threshold)
    return {
        "versions": per_version,
        "annotators": summarise(records, key=lambda r: r.annotator or "unknown"),
        "learning_curve": [{"labels": n, "tumour_dice": q, "model_version": v} for n, q, v in curve],
        "advice": advice.as_dict(),
        "pending": unmeasured_count(session),
    }


def predictions_folder(work_dir: Path) -> Path:
    return work_dir / "predictions"
