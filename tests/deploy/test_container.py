"""The image, built for real and run for real: host networking, the test PostgreSQL on 127.0.0.1, auth on.

One container for the module (the image build is the slow part: minutes cold, seconds while requirements.lock
is unchanged). It serves a copy of the tiny cohort, bind-mounted the way docker-compose.yml mounts studies.
"""

from __future__ import annotations

import gzip
import json
import secrets
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import psycopg
import pytest
from sqlalchemy.engine import make_url

from bench.serverproc import free_port
from db.migrate import head_revision
from tests.app.conftest import TINY_GEOMETRY
from tests.deploy.docker import TEST_IMAGE, build_test_image, docker, docker_unavailable_reason, require
from tests.pg import postgres_unavailable_reason, temporary_database

pytestmark = pytest.mark.timeout(1800)

CONTAINER_UID = 10001  # the Dockerfile's `slpt` user


@dataclass
class Running:
    container: str
    url: str
    db_url: str
    admin_password: str
    secret_key: str
    studies: Path


@pytest.fixture(scope="module")
def image() -> str:
    require(docker_unavailable_reason())
    return build_test_image()


@pytest.fixture(scope="module")
def running(image: str, tiny_cohort: Path, backbone_file: Path, tmp_path_factory) -> Iterator[Running]:
    if reason := postgres_unavailable_reason():
        pytest.fail(reason)
    root = tmp_path_factory.mktemp("container")
    studies, models = root / "studies", root / "models"
    shutil.copytree(tiny_cohort, studies)
    models.mkdir()
    for source in (backbone_file, backbone_file.with_suffix(".json")):
        shutil.copy(source, models / source.name)
    for path in (root, *root.rglob("*")):
        shutil.chown(path, CONTAINER_UID, CONTAINER_UID)  # as the operator does for a bind mount (docs/deploy.md)
    port = free_port()
    admin_password, secret_key = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    with temporary_database() as db_url:
        env = {
            "SLPT_DB": db_url, "SLPT_HOST": "127.0.0.1", "SLPT_PORT": str(port), "SLPT_AUTH": "1",
            "SLPT_ADMIN_PASSWORD": admin_password, "SLPT_SECRET_KEY": secret_key,
            "SLPT_BACKBONE": "/data/models/backbone.pt", "SLPT_PRETRAIN_IF_MISSING": "1",
            **{f"SLPT_{key.upper()}": value for key, value in TINY_GEOMETRY.items()},
        }
        container = docker(
            "run", "--detach", "--network", "host", "--name", f"slpt-test-{uuid.uuid4().hex[:10]}",
            *[arg for key, value in env.items() for arg in ("--env", f"{key}={value}")],
            "--volume", f"{studies}:/data/studies", "--volume", f"{models}:/data/models", image,
        ).stdout.strip()
        try:
            running = Running(container, f"http://127.0.0.1:{port}", db_url, admin_password, secret_key, studies)
            wait_healthy(running)
            yield running
        finally:
            docker("rm", "--force", container, check=False)


def wait_healthy(running: Running, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", running.container).stdout)
        if not state["Running"]:
            raise AssertionError(f"container exited {state['ExitCode']}:\n{logs(running)}")
        try:
            if httpx.get(f"{running.url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"no /health within {seconds} s:\n{logs(running)}")


def logs(running: Running) -> str:
    done = docker("logs", "--tail", "60", running.container, check=False)
    return (done.stdout + done.stderr)[-4000:]


def admin_headers(running: Running) -> dict[str, str]:
    answer = httpx.post(f"{running.url}/auth/token", timeout=30,
                        data={"username": "admin", "password": running.admin_password, "grant_type": "password"})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_runs_as_the_non_root_user(running: Running):
    assert docker("image", "inspect", "--format", "{{.Config.User}}", TEST_IMAGE).stdout.strip() == "slpt"
    assert docker("exec", running.container, "id", "-u").stdout.strip() == str(CONTAINER_UID)
    # The server process itself (PID 1 runs `slpt serve` directly, no root wrapper).
    status = docker("exec", running.container, "cat", "/proc/1/status").stdout
    assert f"Uid:\t{CONTAINER_UID}\t" in status


def test_nothing_secret_in_the_image(running: Running):
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", TEST_IMAGE).stdout
    config = docker("image", "inspect", "--format", "{{json .Config}}", TEST_IMAGE).stdout
    for text in (history, config):
        assert running.admin_password not in text and running.secret_key not in text
    env_names = {item.split("=", 1)[0] for item in json.loads(config)["Env"]}
    assert not {name for name in env_names if any(w in name for w in ("PASSWORD", "SECRET", "TOKEN"))}
    assert "HEALTHCHECK" in history or json.loads(config).get("Healthcheck")


def test_migrations_ran_at_start(running: Running):
    url = make_url(running.db_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == head_revision()


def test_health_and_info_answer(running: Running):
    health = httpx.get(f"{running.url}/health", timeout=30)
    assert health.status_code == 200 and health.json()["database"] is True and health.json()["auth"] is True, health.text
    info = httpx.get(f"{running.url}/info/", timeout=30)
    assert info.status_code == 200 and info.json()["name"] == "slpt-label"


def test_docker_healthcheck_reports_healthy(running: Running):
    deadline = time.monotonic() + 120
    while (status := docker("inspect", "--format", "{{.State.Health.Status}}", running.container).stdout.strip()) \
            == "starting" and time.monotonic() < deadline:
        time.sleep(2)
    assert status == "healthy", logs(running)


def test_next_sample_and_label_survive_docker_restart(running: Running):
    headers = admin_headers(running)
    claimed = httpx.post(f"{running.url}/activelearning/random", json={}, headers=headers, timeout=60)
    assert claimed.status_code == 200, claimed.text
    image_id = claimed.json()["id"]
    ground_truth = (running.studies / "labelsTr" / f"{image_id}.nii.gz").read_bytes()
    saved = httpx.put(f"{running.url}/datastore/label", params={"image": image_id, "tag": "final"}, headers=headers,
                      files={"label": (f"{image_id}.nii.gz", ground_truth)}, timeout=60)
    assert saved.status_code == 200, saved.text

    docker("restart", running.container, timeout=180)
    wait_healthy(running)

    headers = admin_headers(running)
    stored = httpx.get(f"{running.url}/datastore/label", params={"label": image_id, "tag": "final"}, headers=headers,
                       timeout=60)
    assert stored.status_code == 200, stored.text
    assert np.array_equal(voxels(stored.content), voxels(ground_truth))
    listing = httpx.get(f"{running.url}/datastore/", params={"output": "all"}, headers=headers, timeout=60).json()
    assert "final" in listing["objects"][image_id]["labels"]
    # The next claim moves on: the labeled volume is not offered again.
    again = httpx.post(f"{running.url}/activelearning/random", json={}, headers=headers, timeout=60)
    assert again.status_code == 200 and again.json()["id"] != image_id


def voxels(nifti_gz: bytes) -> np.ndarray:
    data = gzip.decompress(nifti_gz) if nifti_gz[:2] == b"\x1f\x8b" else nifti_gz
    return np.asarray(nib.Nifti1Image.from_bytes(data).dataobj)
