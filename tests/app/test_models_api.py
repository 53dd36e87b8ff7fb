"""Training and inference through the real server: 409 before a model exists, then train -> publish -> infer."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select

from db.schema import Job, ModelVersion
from tests.app.conftest import start_server, studies_db, submit_ground_truth, wait_for


@pytest.fixture(scope="module")
def server(served_cohort: Path, backbone_file: Path, tmp_path_factory):
    # No waiting room: concurrent segmentations beyond the one running are refused (the queue test below).
    conf = {"backbone": str(backbone_file), "train_steps": "4", "roi_size": "16", "infer_workers": "1", "infer_queue": "0"}
    with start_server(served_cohort, tmp_path_factory.mktemp("logs"), **conf) as proc:
        yield proc


def model_versions(studies: Path) -> list[ModelVersion]:
    with studies_db(studies) as session:
        return list(session.scalars(select(ModelVersion)))


def test_infer_before_any_model_is_409(server):
    answer = httpx.post(f"{server.url}/infer/slpt", params={"image": "case_0001"}, timeout=60)
    assert answer.status_code == 409
    assert "trained" in answer.json()["detail"]


def test_train_without_final_labels_is_409(server):
    answer = httpx.post(f"{server.url}/train/slpt", json={}, timeout=60)
    assert answer.status_code == 409
    assert "final label" in answer.json()["detail"]


def test_unknown_model_is_404_with_the_list(server):
    answer = httpx.post(f"{server.url}/infer/nope", params={"image": "case_0001"}, timeout=60)
    assert answer.status_code == 404
    assert "slpt" in answer.json()["detail"]


def test_train_publishes_a_version_then_infer_uses_it(server, served_cohort: Path):
    submit_ground_truth(server, served_cohort, ["case_0000", "case_0001", "case_0002"])

    started = httpx.post(f"{server.url}/train/slpt", json={}, timeout=60)
    assert started.status_code == 200, started.text
    wait_for(lambda: model_versions(served_cohort), 400, "a published model version", server)
    (version,) = model_versions(served_cohort)
    assert version.id == "v0001" and version.kind == "prompt"
    assert Path(version.path).is_file()
    assert version.metrics["labels"] == 3
    assert version.metrics["tunable_fraction"] < 0.5

    with studies_db(served_cohort) as session:
        jobs = list(session.scalars(select(Job).where(Job.kind == "train")))
    assert [job.state for job in jobs] == ["done"] and jobs[0].progress == 1.0

    image = nib.load(served_cohort / "imagesTr" / "case_0005.nii.gz")
    answer = httpx.post(f"{server.url}/infer/slpt", params={"image": "case_0005", "output": "image"}, timeout=120)
    assert answer.status_code == 200, answer.text
    label = nib.Nifti1Image.from_bytes(_gunzip(answer.content))
    assert label.shape == image.shape
    assert np.allclose(label.affine, image.affine)
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= {0, 1, 2}

    summary = httpx.post(f"{server.url}/infer/slpt", params={"image": "case_0005", "output": "json"}, timeout=120).json()
    assert summary["model_version"] == "v0001"

    answer = httpx.post(
        f"{server.url}/infer/slpt_uncertainty", params={"image": "case_0005", "output": "image"}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    disagreement = np.asarray(nib.Nifti1Image.from_bytes(_gunzip(answer.content)).dataobj)
    assert disagreement.shape == image.shape
    assert disagreement.min() >= 0 and disagreement.max() <= np.log(2) + 1e-5


def test_segmentations_past_the_queue_are_refused_with_retry_after(server, served_cohort: Path):
    from concurrent.futures import ThreadPoolExecutor

    wait_for(lambda: model_versions(served_cohort), 400, "a published model version", server)

    def segment(image_id: str) -> httpx.Response:
        return httpx.post(f"{server.url}/infer/slpt", params={"image": image_id, "output": "json"}, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(segment, [f"case_{i:04d}" for i in range(4, 12)]))
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 503}, statuses
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["Retry-After"] == "5" and "busy" in busy.json()["detail"]
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["inference_queue"] == {"running": 0, "waiting": 0, "capacity": 1}


def test_a_slow_segmentation_does_not_hold_up_info_or_next_sample(server, served_cohort: Path, tmp_path: Path):
    import threading

    wait_for(lambda: model_versions(served_cohort), 400, "a published model version", server)
    # A 256³ CT at 1 mm: reading, resampling and writing its label back on its own grid take seconds.
    grid = (np.indices((256, 256, 256), dtype=np.int16).sum(axis=0) % 400 - 200).astype(np.int16)
    big = tmp_path / "big_ct.nii.gz"
    nib.save(nib.Nifti1Image(grid, np.eye(4)), big)
    uploaded = httpx.put(f"{server.url}/datastore/image", params={"image": "big_ct"}, timeout=300,
                         files={"file": ("big_ct.nii.gz", big.read_bytes())})
    assert uploaded.status_code == 200, uploaded.text

    finished: dict[str, float] = {}

    def segment() -> None:
        answer = httpx.post(f"{server.url}/infer/slpt", params={"image": "big_ct", "output": "image"}, timeout=300)
        assert answer.status_code == 200, answer.text
        finished["infer"] = time.perf_counter()

    started = time.perf_counter()
    worker = threading.Thread(target=segment)
    worker.start()
    time.sleep(0.5)  # the segmentation is under way
    assert httpx.get(f"{server.url}/info/", timeout=60).status_code == 200
    finished["info"] = time.perf_counter()
    claimed = httpx.post(f"{server.url}/activelearning/random", json={"client_id": "other"}, timeout=60)
    assert claimed.status_code == 200 and claimed.json()["id"]
    finished["next_sample"] = time.perf_counter()
    worker.join(300)
    assert finished["infer"] - started > 2.0  # it really was slow, or the test shows nothing
    assert finished["info"] < finished["infer"] and finished["next_sample"] < finished["infer"]


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
