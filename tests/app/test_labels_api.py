"""Label submission, leases and restarts through the real server (SQLite in the studies folder)."""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from tests.app.conftest import start_server
from tests.app.fake_clock import FakeClock


@pytest.fixture(scope="module")
def studies(served_cohort: Path) -> Path:
    return served_cohort


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def server(studies: Path, logs: Path):
    with start_server(studies, logs) as proc:
        yield proc


def claim(server, client: str, strategy: str = "first") -> str | None:
    answer = httpx.post(f"{server.url}/activelearning/{strategy}", json={"client_id": client}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json().get("id")


def put_label(server, image_id: str, payload: bytes, name: str = "label.nii.gz", client: str = "ann") -> httpx.Response:
    return httpx.put(
        f"{server.url}/datastore/label",
        params={"image": image_id},
        data={"params": f'{{"client_id": "{client}"}}'},
        files={"label": (name, payload)},
        timeout=60,
    )


def nifti_bytes(data: np.ndarray, affine: np.ndarray, tmp: Path) -> bytes:
    path = tmp / "label.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path.read_bytes()


def snapshot(studies: Path, server) -> tuple[dict[str, str], dict]:
    """Every file under labels/ with its digest, and the datastore's full JSON."""
    files = {
        str(p.relative_to(studies)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((studies / "labels").rglob("*"))
        if p.is_file()
    }
    return files, httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()


def ground_truth(studies: Path, image_id: str) -> nib.Nifti1Image:
    return nib.load(studies / "labelsTr" / f"{image_id}.nii.gz")


def bad_labels(studies: Path, tmp: Path) -> dict[str, tuple[str, bytes, int, str]]:
    """name -> (image id, file bytes, expected status, words the message must contain)."""
    truth = ground_truth(studies, "case_0003")
    data, affine = np.asarray(truth.dataobj), truth.affine
    shifted = affine.copy()
    shifted[:3, 3] += 25.0
    out_of_range = data.copy()
    out_of_range[0, 0, 0] = 7
    return {
        "wrong shape": ("case_0003", nifti_bytes(data[:-2], affine, tmp), 422, "shape"),
        "wrong affine": ("case_0003", nifti_bytes(data, shifted, tmp), 422, "origin"),
        "float values": ("case_0003", nifti_bytes(data.astype(np.float32) + 0.5, affine, tmp), 422, "integers"),
        "out-of-range values": ("case_0003", nifti_bytes(out_of_range, affine, tmp), 422, "outside the label map"),
        "garbage bytes": ("case_0003", b"\x00garbage" * 100, 422, "not a readable"),
        "unknown image": ("case_9999", (studies / "labelsTr" / "case_0003.nii.gz").read_bytes(), 404, "unknown image"),
        "path in id": ("../case_0003", (studies / "labelsTr" / "case_0003.nii.gz").read_bytes(), 400, "invalid image id"),
    }


@pytest.mark.parametrize(
    "case",
    ["wrong shape", "wrong affine", "float values", "out-of-range values", "garbage bytes", "unknown image", "path in id"],
)
def test_bad_label_is_refused_and_changes_nothing(server, studies: Path, tmp_path: Path, case: str):
    image_id, payload, status, words = bad_labels(studies, tmp_path)[case]
    before = snapshot(studies, server)
    answer = put_label(server, image_id, payload)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert snapshot(studies, server) == before


def test_valid_label_marks_the_volume_labeled_for_everyone(server, studies: Path):
    held = claim(server, "alice", "first")
    payload = (studies / "labelsTr" / f"{held}.nii.gz").read_bytes()
    answer = put_label(server, held, payload, client="alice")
    assert answer.status_code == 200, answer.text
    stats = httpx.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=30).json()
    assert stats["completed"] == 1
    listing = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()
    assert listing["objects"][held]["labels"]["final"]["info"]["annotator"] == "alice@127.0.0.1"
    stored = httpx.get(f"{server.url}/datastore/label", params={"label": held, "tag": "final"}, timeout=30)
    assert stored.status_code == 200 and stored.content == payload
    # Nobody, including alice, is offered it again.
    assert held not in {claim(server, name, "first") for name in ("alice", "bob", "carol")}


def test_skip_releases_the_previous_volume(server):
    first = claim(server, "dave")
    second = claim(server, "dave")  # dave skips `first`
    assert second != first
    assert claim(server, "erin") == first  # free again, and first in order


def lease_views(server, annotator: str) -> dict:
    """What the server says of live leases: Next Sample's stats, the admin's lease list and progress totals, and
    ``annotator``'s own current lease (auth is off: every caller may read the admin routes)."""
    def get(path: str, **params):
        return httpx.get(f"{server.url}{path}", params=params, timeout=30).json()

    return {
        "stats": get("/datastore/", output="stats")["leased"],
        "admin leases": sorted((lease["image_id"], lease["annotator"]) for lease in get("/admin/leases")),
        "progress": get("/admin/progress")["totals"]["leased"],
        "leased volumes": get("/admin/volumes", status="leased")["total"],
        "own lease": get("/users/me", client_id=annotator)["current_lease"],
    }


def test_expired_lease_returns_the_volume(tiny_cohort: Path, tmp_path: Path):
    # A real server on its default 2 h lease, whose clock the test moves (tests.app.fake_clock) instead of waiting.
    studies = tmp_path / "studies"
    shutil.copytree(tiny_cohort, studies)
    clock = FakeClock(tmp_path / "clock-offset")
    with start_server(studies, tmp_path, env=clock.env, lease_hours="2", **clock.conf) as server:
        held = claim(server, "frank")
        other = claim(server, "grace")
        assert other != held
        leased = {"stats": 2, "admin leases": sorted([(held, "frank@127.0.0.1"), (other, "grace@127.0.0.1")]),
                  "progress": 2, "leased volumes": 2, "own lease": held}
        assert lease_views(server, "frank") == leased

        clock.advance(timedelta(hours=2) - timedelta(minutes=1))  # a minute before the leases end: still held
        assert lease_views(server, "frank") == leased

        clock.advance(timedelta(minutes=2))  # a minute after
        assert lease_views(server, "frank") == {
            "stats": 0, "admin leases": [], "progress": 0, "leased volumes": 0, "own lease": None,
        }
        released = httpx.delete(f"{server.url}/admin/leases/{held}", timeout=30)
        assert released.status_code == 409, released.text  # nothing left to release
        assert claim(server, "heidi") == held  # back in the pool, and first in order
        history = httpx.get(f"{server.url}/admin/volumes/{held}", timeout=30).json()["assignments"]
        assert [(a["annotator"], a["state"]) for a in history] == [("frank@127.0.0.1", "expired"),
                                                                  ("heidi@127.0.0.1", "active")]


def test_restart_keeps_every_status_and_lease(server, studies: Path, logs: Path):
    # Runs last in this module: it stops the module's server.
    held = claim(server, "ivan")
    listing_before = snapshot(studies, server)
    server.process.terminate()
    server.process.wait(timeout=30)
    with start_server(studies, logs, lease_hours="2") as again:
        assert snapshot(studies, again) == listing_before
        stats = httpx.get(f"{again.url}/datastore/", params={"output": "stats"}, timeout=30).json()
        assert stats["completed"] == 1 and stats["leased"] >= 1
        assert claim(again, "judy") != held  # ivan's lease survived the restart
