"""Geometry through the real server: an NRRD label submitted, trained on and inferred after (NRRD once passed
validation and then broke training), and an oblique, LPS-stored, thick-slice NIfTI image segmented back onto its
own grid."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy import select

from db.schema import Label, ModelVersion
from tests.app.conftest import start_server, studies_db, wait_for

NRRD_IMAGES = ["case_0000", "case_0001"]
OBLIQUE = "case_oblique"


def oblique_affine(affine: np.ndarray) -> np.ndarray:
    """The generator's LPS-stored ``affine`` (first two axes R->L, A->P) turned 25° about a tilted axis, with slices
    1.6 times as thick."""
    axis = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(25.0)
    turn = np.eye(4)
    turn[:3, :3] = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return turn @ affine @ np.diag([1.0, 1.0, 1.6, 1.0])


@pytest.fixture(scope="module")
def studies(served_cohort: Path) -> Path:
    """The served cohort plus an oblique / LPS / thick-slice copy of one of its images, added before the start."""
    source = nib.load(served_cohort / "imagesTr" / "case_0005.nii.gz")
    affine = oblique_affine(source.affine)
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj, dtype=np.float32), affine),
             served_cohort / "imagesTr" / f"{OBLIQUE}.nii.gz")
    return served_cohort


@pytest.fixture(scope="module")
def server(studies: Path, backbone_file: Path, tmp_path_factory):
    conf = {"backbone": str(backbone_file), "train_steps": "4", "roi_size": "16"}
    with start_server(studies, tmp_path_factory.mktemp("logs"), **conf) as proc:
        yield proc


def nrrd_label(studies: Path, image_id: str, out: Path) -> bytes:
    """The cohort's ground-truth label of ``image_id`` as an NRRD file written by SimpleITK (as 3D Slicer sends)."""
    path = out / f"{image_id}.seg.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(studies / "labelsTr" / f"{image_id}.nii.gz")), str(path))
    assert path.read_bytes()[:4] == b"NRRD"
    return path.read_bytes()


def model_versions(studies: Path) -> list[ModelVersion]:
    with studies_db(studies) as session:
        return list(session.scalars(select(ModelVersion)))


def infer(server, image_id: str) -> nib.Nifti1Image:
    answer = httpx.post(f"{server.url}/infer/slpt", params={"image": image_id, "output": "image"}, timeout=120)
    assert answer.status_code == 200, answer.text
    data = gzip.decompress(answer.content) if answer.content[:2] == b"\x1f\x8b" else answer.content
    return nib.Nifti1Image.from_bytes(data)


def test_nrrd_labels_submit_train_and_infer(server, studies: Path, tmp_path: Path):
    for image_id in NRRD_IMAGES:
        saved = httpx.put(
            f"{server.url}/datastore/label", params={"image": image_id},
            files={"label": (f"{image_id}.seg.nrrd", nrrd_label(studies, image_id, tmp_path))}, timeout=60,
        )
        assert saved.status_code == 200, saved.text
    with studies_db(studies) as session:
        paths = list(session.scalars(select(Label.path)))
    assert len(paths) == len(NRRD_IMAGES) and all(p.endswith(".nrrd") for p in paths), paths

    started = httpx.post(f"{server.url}/train/slpt", json={}, timeout=60)
    assert started.status_code == 200, started.text
    wait_for(lambda: model_versions(studies), 400, "a model trained on the NRRD labels", server)
    (version,) = model_versions(studies)
    assert version.metrics["labels"] == len(NRRD_IMAGES) and version.metrics["steps"] == 4

    image = nib.load(studies / "imagesTr" / "case_0003.nii.gz")
    label = infer(server, "case_0003")
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= {0, 1, 2}


def test_oblique_lps_thick_slice_image_comes_back_on_its_own_grid(server, studies: Path):
    wait_for(lambda: model_versions(studies), 400, "a published model (trained by the NRRD test)", server)
    image = nib.load(studies / "imagesTr" / f"{OBLIQUE}.nii.gz")
    assert not np.allclose(image.affine[:3, :3], np.diag(np.diag(image.affine[:3, :3])))  # really oblique
    assert image.affine[0, 0] < 0 and image.affine[1, 1] < 0  # stored LPS-like

    label = infer(server, OBLIQUE)
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= {0, 1, 2}

    summary = httpx.post(f"{server.url}/infer/slpt", params={"image": OBLIQUE, "output": "json"}, timeout=120)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert "liver_found" in body and "roi" in body

    answer = httpx.post(f"{server.url}/infer/slpt_uncertainty", params={"image": OBLIQUE, "output": "image"}, timeout=120)
    assert answer.status_code == 200, answer.text
    disagreement = nib.Nifti1Image.from_bytes(gzip.decompress(answer.content) if answer.content[:2] == b"\x1f\x8b"
                                              else answer.content)
    assert disagreement.shape == image.shape
    np.testing.assert_allclose(disagreement.affine, image.affine, atol=1e-4)
