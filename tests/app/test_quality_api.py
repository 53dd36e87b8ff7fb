"""Prospective quality end to end: labels submitted through the real server against a trained model are measured in
the background, stored once, and ``GET /admin/quality`` reports what a direct computation gives."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import func, select

from app.modelstore import ModelStore
from app.predictions import PredictionCache
from app.quality import measure_pending, read_label
from db.engine import create_db_engine, default_db_url, session_factory
from db.schema import Label, ModelVersion, QualityRecord
from models.backbone import load_backbone
from models.checkpoint import load_slpt
from models.inference import segment_volume
from models.quality import label_agreement
from tests.app.conftest import start_server, studies_db, submit_ground_truth, wait_for, wait_for_model_version

TRAINING_LABELS = ["case_0000", "case_0001", "case_0002"]


def quality(server) -> dict:
    answer = httpx.get(f"{server.url}/admin/quality", timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def edited(label: np.ndarray) -> np.ndarray:
    """An annotator's correction: a slab of the label cleared, so the figures are not all 1."""
    changed = label.copy()
    changed[: label.shape[0] // 3] = 0
    return changed


@pytest.fixture(scope="module")
def measured(served_cohort: Path, backbone_file: Path, tmp_path_factory):
    conf = {"backbone": str(backbone_file), "train_steps": "2", "roi_size": "16", "quality_interval_s": "1",
            "round_size": "4"}
    logs = tmp_path_factory.mktemp("logs")
    with start_server(served_cohort, logs, **conf) as server:
        # Before any model: the labels are recorded as "no model served", and no version appears.
        submit_ground_truth(server, served_cohort, TRAINING_LABELS)
        assert httpx.post(f"{server.url}/train/slpt", json={}, timeout=60).status_code == 200
        version = wait_for_model_version(server, served_cohort)

        submitted = {}
        for annotator in ("alice", "bob"):
            claim = httpx.post(f"{server.url}/activelearning/random", json={"client_id": annotator}, timeout=60).json()
            truth = nib.load(served_cohort / "labelsTr" / f"{claim['id']}.nii.gz")
            label = edited(np.asarray(truth.dataobj).astype(np.uint8))
            path = logs / f"{claim['id']}.nii.gz"
            nib.save(nib.Nifti1Image(label, truth.affine), path)
            saved = httpx.put(f"{server.url}/datastore/label", params={"image": claim["id"]},
                              data={"params": json.dumps({"client_id": annotator})}, files={"label": ("l.nii.gz", path.read_bytes())}, timeout=60)
            assert saved.status_code == 200, saved.text
            submitted[claim["id"]] = label

        report = wait_for(lambda: (r := quality(server))["versions"].get(version, {}).get("labels") == 2 and r,
                          300, "both labels measured", server)
        yield server, version, submitted, report


def test_labels_are_measured_against_the_version_that_served_the_claim(measured, served_cohort: Path, backbone_file: Path):
    server, version, submitted, report = measured
    with studies_db(served_cohort) as session:
        path = session.get(ModelVersion, version).path
        records = {r.image_id: r for r in session.scalars(select(QualityRecord))}
    # The three training labels had no model serving at their claim: recorded, compared with nothing.
    assert {records[i].model_version for i in TRAINING_LABELS} == {None}
    assert set(report["versions"]) == {version}

    network = load_slpt(path, load_backbone(backbone_file)[0]).eval()
    for image_id, label in submitted.items():
        prediction = segment_volume(network, str(served_cohort / "imagesTr" / f"{image_id}.nii.gz")).label_on_original()
        expected = label_agreement(prediction, label)
        record = records[image_id]
        assert record.model_version == version
        assert record.liver_dice == pytest.approx(expected.liver_dice, abs=1e-6)
        assert record.edit_fraction == pytest.approx(expected.edit_fraction, abs=1e-6)
        assert (record.tumour_dice is None) == (expected.tumour_dice is None)
        if expected.tumour_dice is not None:
            assert record.tumour_dice == pytest.approx(expected.tumour_dice, abs=1e-6)
        assert record.minutes is not None and 0 <= record.minutes < 30

    row = report["versions"][version]
    liver = [records[i].liver_dice for i in submitted]
    assert row["liver_dice"]["mean"] == pytest.approx(np.mean(liver))
    assert row["liver_dice"]["low"] <= row["liver_dice"]["mean"] <= row["liver_dice"]["high"]
    assert row["trained_on"] == len(TRAINING_LABELS)
    assert set(report["annotators"]) >= {"alice@127.0.0.1", "bob@127.0.0.1"}
    assert report["advice"]["advice"] == "too few points" and report["pending"] == 0


def test_a_label_is_never_measured_twice_and_the_inference_is_kept(measured, served_cohort: Path, backbone_file: Path):
    server, version, submitted, _ = measured
    engine = create_db_engine(default_db_url(served_cohort))
    try:
        sessions = session_factory(engine)
        store = ModelStore(sessions, folder=served_cohort / ".slpt" / "models", backbone_path=backbone_file)
        cache = PredictionCache(store, served_cohort / ".slpt" / "predictions")
        for image_id in submitted:  # the quality job's inference is on disk, for the dashboard and any re-reading
            assert cache.cached(version, image_id) is not None
        assert measure_pending(sessions, cache) == 0
        with sessions() as session:
            finals = session.scalar(select(func.count()).where(Label.tag == "final"))
            assert session.scalar(select(func.count()).select_from(QualityRecord)) == finals
    finally:
        engine.dispose()


def test_a_label_file_is_read_in_the_order_the_prediction_uses(tmp_path: Path):
    data = np.zeros((4, 5, 6), dtype=np.uint8)
    data[1, 2, 3] = 2
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "l.nii.gz")
    assert np.array_equal(read_label(str(tmp_path / "l.nii.gz")), data)


def test_an_inference_made_for_slicer_is_kept_for_the_quality_job(measured, served_cohort: Path):
    server, version, submitted, _ = measured
    # a volume nobody labelled (the random claims above may have drawn any), so the quality job never predicted it
    image_id = next(path.name.split(".")[0] for path in sorted((served_cohort / "imagesTr").glob("*.nii.gz"))
                    if path.name.split(".")[0] not in {*submitted, *TRAINING_LABELS})
    kept = served_cohort / ".slpt" / "predictions" / version / f"{image_id}.npz"
    assert not kept.exists()
    answer = httpx.post(f"{server.url}/infer/slpt", params={"image": image_id, "output": "image"}, timeout=120)
    assert answer.status_code == 200, answer.text
    with np.load(kept) as stored:
        shown = nib.Nifti1Image.from_bytes(gzip.decompress(answer.content))
        assert np.array_equal(stored["label"], np.asarray(shown.dataobj))
