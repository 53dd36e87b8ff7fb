"""A large pool through the real server: registration without opening files, headers read in the background, new
files picked up by ``POST /admin/volumes/scan``, and the bounded datastore listing read by the stock Slicer client.
(Volume counts stay small here: the 100,000-volume figures are `slpt bench scale`'s.)"""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from sqlalchemy import func, select

from db.schema import Image
from tests.app.conftest import start_server, studies_db, wait_for

VOLUME = gzip.compress(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.diag([1.0, 1.0, 2.5, 1.0])).to_bytes())
VOLUMES = 30
LIST_MAX = 5


def write_volumes(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.nii.gz").write_bytes(VOLUME)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pool") / "studies"
    write_volumes(root, [f"vol_{i:04d}" for i in range(VOLUMES - 5)])
    write_volumes(root / "archive2024" / "ct", [f"old_{i:04d}" for i in range(5)])  # nested folders count too
    (root / "broken.nii.gz").write_bytes(b"this is no volume")
    return root


@pytest.fixture(scope="module")
def server(studies: Path, tmp_path_factory):
    with start_server(studies, tmp_path_factory.mktemp("logs"), flags=("--no-model",),
                      datastore_list_max=str(LIST_MAX)) as proc:
        yield proc


def test_next_sample_answers_a_volume_with_its_checksum_and_the_ingestion_job_shows_in_scoring(server, studies):
    answer = httpx.post(f"{server.url}/activelearning/random", json={"client_id": "early"}, timeout=30).json()
    assert answer["id"] != "broken"
    # Read in the background or, if the job had not reached it yet, at the claim: Slicer verifies with it.
    assert answer["checksum"].startswith("SHA256:") and answer["shape"] == [8, 8, 4]

    def ingestion_done():
        jobs = httpx.get(f"{server.url}/scoring/", timeout=30).json()["jobs"]
        return next((j for j in jobs if j["kind"] == "ingestion" and j["state"] == "done"), None)

    job = wait_for(ingestion_done, 60, "the ingestion job", server)
    assert job["detail"]["unreadable_count"] == 1 and job["detail"]["unreadable"][0]["id"] == "broken"
    with studies_db(studies) as session:
        assert session.scalar(select(func.count()).select_from(Image).where(Image.checksum.is_(None),
                                                                            Image.label_status != "archived")) == 0
        assert session.get(Image, "broken").label_status == "archived"
        assert session.get(Image, "old_0004") is not None
    totals = httpx.get(f"{server.url}/admin/progress", timeout=30).json()["totals"]
    assert totals["total"] == VOLUMES + 1 and totals["archived"] == 1


def test_a_scan_registers_new_files_lists_unreadable_ones_and_refuses_a_duplicate_id(server, studies):
    write_volumes(studies / "added", ["new_0000", "new_0001", "new_0002"])
    (studies / "added" / "truncated.nii.gz").write_bytes(VOLUME[: len(VOLUME) // 3])
    answer = httpx.post(f"{server.url}/admin/volumes/scan", timeout=60)
    assert answer.status_code == 200, answer.text
    scan = answer.json()
    assert (scan["registered"], scan["read"], scan["unreadable_count"], scan["job"]) == (4, 3, 1, None)
    assert scan["unreadable"][0]["id"] == "truncated" and scan["known"] == VOLUMES + 1
    assert httpx.post(f"{server.url}/admin/volumes/scan", timeout=60).json()["registered"] == 0

    write_volumes(studies / "other", ["new_0001", "fresh_0000"])  # new_0001 is taken by added/new_0001
    refused = httpx.post(f"{server.url}/admin/volumes/scan", timeout=60)
    assert refused.status_code == 409
    assert "new_0001" in refused.json()["detail"] and "added" in refused.json()["detail"] and "other" in refused.json()["detail"]
    with studies_db(studies) as session:
        assert session.get(Image, "fresh_0000") is None  # nothing of the refused scan was registered
    (studies / "other" / "new_0001.nii.gz").unlink()
    assert httpx.post(f"{server.url}/admin/volumes/scan", timeout=60).json()["registered"] == 1


def test_the_stock_client_finds_its_claimed_volume_in_a_bounded_listing(server):
    client = MONAILabelClient(server.url, client_id="slicer-annotator")
    sample = client.next_sample("random", {"client_id": "slicer-annotator"})
    listing = client.datastore()  # what the Slicer plugin asks for on every Next Sample
    assert sample["id"] in listing["objects"]  # the plugin looks up objects[id]["labels"]["original"] there
    assert len(listing["objects"]) <= LIST_MAX and listing["listing"]["mode"] == "working set"
    assert listing["listing"]["total"] > LIST_MAX
    info = listing["objects"][sample["id"]]["image"]["info"]
    assert info["checksum"].startswith("SHA256:") and listing["objects"][sample["id"]]["labels"] == {}

    seen: list[str] = []
    for offset in range(0, listing["listing"]["total"], LIST_MAX):
        page = httpx.get(f"{server.url}/datastore/", params={"output": "all", "offset": offset, "limit": LIST_MAX},
                         timeout=30).json()
        seen += list(page["objects"])
    assert len(seen) == len(set(seen)) == listing["listing"]["total"] and seen == sorted(seen)
    too_many = httpx.get(f"{server.url}/datastore/", params={"output": "all", "limit": LIST_MAX + 1}, timeout=30)
    assert too_many.status_code == 400 and "datastore_list_max" in too_many.json()["detail"]
