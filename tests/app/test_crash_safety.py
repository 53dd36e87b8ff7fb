"""``kill -9`` of the server at random moments while labels are submitted: every acknowledged label survives whole."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx
import nibabel as nib
from sqlalchemy import select

from db.schema import Label
from storage.atomic import PARTIAL_PREFIX
from tests.app.conftest import start_server, studies_db

KILLS = 12  # each kill costs a server start (~10 s); 12 random moments cover the write path


def test_every_acknowledged_label_survives_kill_9_and_no_row_points_to_a_partial_file(served_cohort: Path, tmp_path):
    rng = random.Random(0)
    images = sorted(p.name.removesuffix(".nii.gz") for p in (served_cohort / "imagesTr").iterdir())
    payloads = {i: (served_cohort / "labelsTr" / f"{i}.nii.gz").read_bytes() for i in images}
    acknowledged: list[tuple[str, int]] = []  # (image, version) of every label that got a 2xx
    for kill in range(KILLS):
        with start_server(served_cohort, tmp_path) as server:
            stop = threading.Event()

            def submit() -> None:
                while not stop.is_set():
                    image = rng.choice(images)
                    try:
                        answer = httpx.put(f"{server.url}/datastore/label", params={"image": image}, timeout=30,
                                           data={"params": '{"client_id": "crash"}'},
                                           files={"label": ("l.nii.gz", payloads[image])})
                    except httpx.HTTPError:
                        return  # the server died under us: this one was never acknowledged
                    if answer.status_code == 200:
                        acknowledged.append((image, _newest_version(served_cohort, image)))

            worker = threading.Thread(target=submit)
            worker.start()
            time.sleep(rng.uniform(0.2, 1.5))
            os.killpg(server.process.pid, signal.SIGKILL)
            stop.set()
            worker.join(60)
            server.process.wait(30)
    assert len(acknowledged) > KILLS  # the loop really saved labels between kills

    with start_server(served_cohort, tmp_path):  # a clean restart after the last kill
        with studies_db(served_cohort) as session:
            rows = {(r.image_id, r.version): r for r in session.scalars(select(Label).where(Label.tag == "final"))}
    for image, version in acknowledged:
        row = rows[(image, version)]
        path = Path(row.path)
        assert path.is_file(), f"{image} v{version}: file {path} is missing"
        assert "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest() == row.checksum
        assert nib.load(path).shape == nib.load(served_cohort / "labelsTr" / f"{image}.nii.gz").shape
    for row in rows.values():  # not just the acknowledged ones: no row may point to a missing or partial file
        assert Path(row.path).is_file() and not Path(row.path).name.startswith(PARTIAL_PREFIX)
    assert not list((served_cohort / "labels").rglob(f"{PARTIAL_PREFIX}*"))


def _newest_version(studies: Path, image: str) -> int:
    with studies_db(studies) as session:
        return max(session.scalars(select(Label.version).where(Label.image_id == image, Label.tag == "final")))
