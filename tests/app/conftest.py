from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sqlalchemy.orm import Session

from app.settings import AppSettings
from bench.serverproc import ServerProcess, free_port, running_server, slpt_serve_command
from db.engine import create_db_engine, default_db_url, session_factory
from models.cascade import CascadeConfig
from tests.pg import postgres_unavailable_reason, temporary_database


@pytest.fixture(scope="module")
def served_cohort(tiny_cohort: Path, tmp_path_factory) -> Path:
    """A private copy of the tiny cohort that one module's server may write into."""
    studies = tmp_path_factory.mktemp("served") / "studies"
    shutil.copytree(tiny_cohort, studies)
    return studies


#: The tiny cohort's volumes are 16³ voxels of about 25 mm: its working grid is about its own grid, so the
#: cascade's geometry runs for real at a size the tests can afford.
TINY_GEOMETRY = {"spacing": "24", "coarse_spacing": "48", "roi_margin_mm": "24"}


def tiny_cascade() -> CascadeConfig:
    return AppSettings.from_conf(TINY_GEOMETRY).cascade()


@contextmanager
def start_server(studies: Path, logs: Path, env: dict[str, str] | None = None, flags: tuple[str, ...] = (),
                 **conf: str) -> Iterator[ServerProcess]:
    """Our MONAI Label server, started for real (`slpt serve`) on a free loopback port, at the tiny geometry;
    ``env``: variables added to its environment; ``flags``: options of `slpt serve` (e.g. ``--no-model``)."""
    port = free_port()
    conf = {**TINY_GEOMETRY, **conf}
    command = slpt_serve_command(studies, port, conf) + list(flags)
    with running_server(command, log_path=logs / f"server-{port}.log", port=port, env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def server(served_cohort: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    with start_server(served_cohort, tmp_path_factory.mktemp("logs")) as proc:
        yield proc


@contextmanager
def database_url(backend: str, folder: Path) -> Iterator[str]:
    """A fresh database: a SQLite file in ``folder``, or a uniquely named PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'slpt.db'}"
        return
    if reason := postgres_unavailable_reason():
        pytest.fail(reason)  # .ci/run starts PostgreSQL: a missing server is a failure, not a skip
    with temporary_database() as url:
        yield url


@contextmanager
def studies_db(studies: Path) -> Iterator[Session]:
    """A session on the server's default SQLite database, to check what the server stored."""
    engine = create_db_engine(default_db_url(studies))
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def wait_for(condition, timeout: float, what: str, server: ServerProcess | None = None):
    """Poll ``condition()`` until it returns something truthy; fail with the server's log tail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            log = server.log()[-3000:] if server else ""
            pytest.fail(f"timed out waiting for {what}\n{log}")
        time.sleep(1)


def submit_ground_truth(server: ServerProcess, studies: Path, image_ids: list[str]) -> None:
    """Submit the cohort's ground-truth labels (labelsTr/) as final labels, as an annotator would."""
    import httpx

    for image_id in image_ids:
        payload = (studies / "labelsTr" / f"{image_id}.nii.gz").read_bytes()
        saved = httpx.put(
            f"{server.url}/datastore/label", params={"image": image_id}, files={"label": ("l.nii.gz", payload)}, timeout=60
        )
        assert saved.status_code == 200, saved.text


def wait_for_model_version(server: ServerProcess, studies: Path, timeout: float = 400) -> str:
    """The id of the first published model version, once training has written it."""
    from db.schema import ModelVersion
    from sqlalchemy import select

    def published():
        with studies_db(studies) as session:
            return session.scalar(select(ModelVersion.id))

    return wait_for(published, timeout, "a published model version", server)


def run_a_campaign(server: ServerProcess, studies: Path) -> dict:
    """What a backbone must carry through the real server: embeddings, a TESLA Next Sample, training on three ground
    truth labels, and a pre-segmentation of ``case_0005`` on the image's own grid. -> the published version's payload
    (:func:`models.checkpoint.read_slpt_payload`), for the caller's backbone-specific checks."""
    import gzip

    import httpx
    import nibabel as nib
    import numpy as np
    from sqlalchemy import select

    from db.schema import Embedding, ModelVersion
    from models.checkpoint import read_slpt_payload

    def embedded():
        with studies_db(studies) as session:
            return session.scalar(select(Embedding).limit(1)) is not None

    wait_for(embedded, 300, "embeddings from the backbone", server)
    picked = httpx.post(f"{server.url}/activelearning/tesla", json={"client_id": "ann-a"}, timeout=60)
    assert picked.status_code == 200 and picked.json()["id"], picked.text

    submit_ground_truth(server, studies, ["case_0000", "case_0001", "case_0002"])
    assert httpx.post(f"{server.url}/train/slpt", json={}, timeout=60).status_code == 200
    wait_for_model_version(server, studies)
    with studies_db(studies) as session:
        version = session.scalars(select(ModelVersion)).one()

    image = nib.load(studies / "imagesTr" / "case_0005.nii.gz")
    answer = httpx.post(f"{server.url}/infer/slpt", params={"image": "case_0005", "output": "image"}, timeout=120)
    assert answer.status_code == 200, answer.text
    data = gzip.decompress(answer.content) if answer.content[:2] == b"\x1f\x8b" else answer.content
    label = nib.Nifti1Image.from_bytes(data)
    assert label.shape == image.shape and np.allclose(label.affine, image.affine)
    return read_slpt_payload(version.path)
