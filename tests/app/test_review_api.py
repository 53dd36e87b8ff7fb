"""Review, double reading and agreement through the real server: auth on, PostgreSQL, review-only mode
(`slpt serve --no-model`, no backbone anywhere) and approved-only training.

The module runs one campaign in order: a double-read share of the pool is read by 16 annotators at once (each volume by
2 distinct, blinded readers, none twice), agreement is computed in the background and checked against a direct
computation on the stored files, reviewers approve, send back and adjudicate, and what trains is exactly the approved
labels."""

from __future__ import annotations

import random
import shutil
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage
from sqlalchemy import select

from db.engine import create_db_engine, session_factory
from db.schema import Image, Label
from tests.app.conftest import database_url, start_server, wait_for
from tests.app.test_auth_api import bearer, make_user

ADMIN_PASSWORD = "adminpass1"
ANNOTATORS = [f"reader{i:02d}" for i in range(16)]


@pytest.fixture(scope="module")
def studies(tiny_cohort: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("review") / "studies"
    shutil.copytree(tiny_cohort, root)
    return root


@pytest.fixture(scope="module")
def db_url(tmp_path_factory):
    with database_url("postgresql", tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def server(studies: Path, db_url: str, tmp_path_factory):
    with start_server(studies, tmp_path_factory.mktemp("logs"), flags=("--no-model",), db=db_url, auth="true",
                      admin_password=ADMIN_PASSWORD, secret_key="review-secret-0123456789abcdef-0123",
                      train_on="approved") as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server) -> dict[str, str]:
    return bearer(server, "admin", ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def db(db_url):
    engine = create_db_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def reader_label(studies: Path, image_id: str, reader: int, folder: Path) -> bytes:
    """The ground truth, changed a little per reader so readers disagree: one erodes the tumour, one grows the liver."""
    truth = nib.load(studies / "labelsTr" / f"{image_id}.nii.gz")
    data = np.asarray(truth.dataobj).astype(np.uint8)
    if reader % 3 == 1:
        tumour = ndimage.binary_erosion(data == 2)
        data[(data == 2) & ~tumour] = 1
    elif reader % 3 == 2:
        data[(data == 0) & ndimage.binary_dilation(data > 0)] = 1
    path = folder / f"{image_id}.{reader}.nii.gz"
    nib.save(nib.Nifti1Image(data, truth.affine), path)
    return path.read_bytes()


def put_label(server, headers, image_id: str, payload: bytes) -> httpx.Response:
    return httpx.put(f"{server.url}/datastore/label", params={"image": image_id}, headers=headers,
                     files={"label": ("label.nii.gz", payload)}, timeout=60)


def next_sample(server, headers, strategy: str = "random") -> httpx.Response:
    return httpx.post(f"{server.url}/activelearning/{strategy}", json={}, headers=headers, timeout=60)


def test_review_only_mode_starts_without_a_model_or_a_backbone(server, studies: Path) -> None:
    assert not (studies / ".slpt" / "backbone.pt").exists()
    info = httpx.get(f"{server.url}/info/", timeout=30).json()
    assert info["models"] == {} and info["trainers"] == {} and info["scoring"] == {}
    assert sorted(info["strategies"]) == ["first", "random", "review"]


def test_more_readers_than_annotators_is_refused(server, admin) -> None:
    answer = httpx.post(f"{server.url}/admin/double-reading", json={"readers": 2, "fraction": 0.5}, headers=admin,
                        timeout=30)
    assert answer.status_code == 400 and "only 1 annotator" in answer.json()["detail"]
    bad = [{"readers": 4, "fraction": 0.5}, {"readers": 2}, {"readers": 2, "fraction": 0.5, "images": ["x"]}]
    for body in bad:
        assert httpx.post(f"{server.url}/admin/double-reading", json=body, headers=admin, timeout=30).status_code in (
            400, 422)


@pytest.fixture(scope="module")
def readers(server, admin) -> dict[str, dict[str, str]]:
    return {name: make_user(server, admin, name, "annotator") for name in ANNOTATORS}


@pytest.fixture(scope="module")
def reviewer(server, admin) -> dict[str, str]:
    return make_user(server, admin, "rita", "reviewer")


@pytest.fixture(scope="module")
def double_read(server, admin, readers) -> list[str]:
    answer = httpx.post(f"{server.url}/admin/double-reading", json={"readers": 2, "fraction": 0.5, "seed": 3},
                        headers=admin, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["images"]


def test_sixteen_concurrent_annotators_read_each_double_read_volume_twice_by_distinct_readers(
    server, studies, readers, double_read, db, tmp_path
) -> None:
    assert len(double_read) == 12
    start = threading.Barrier(len(ANNOTATORS))

    def annotate(index: int, wait: bool = True) -> int:
        name, rng = ANNOTATORS[index], random.Random(index)
        if wait:
            start.wait()
        done = 0
        while (answer := next_sample(server, readers[name])).json():
            assert answer.status_code == 200, answer.text
            if rng.random() < 0.15:
                continue  # skipped: the next claim releases it
            image_id = answer.json()["id"]
            saved = put_label(server, readers[name], image_id, reader_label(studies, image_id, index, tmp_path))
            assert saved.status_code == 200, saved.text
            done += 1
        return done

    with ThreadPoolExecutor(len(ANNOTATORS)) as pool:
        list(pool.map(annotate, range(len(ANNOTATORS))))
    # An annotator stops at "nothing left" while a volume that still needs them may be leased to someone else.
    while sum(annotate(i, wait=False) for i in range(len(ANNOTATORS))):
        pass

    with db() as session:
        authors = defaultdict(list)
        for image_id, annotator in session.execute(select(Label.image_id, Label.annotator)).all():
            authors[image_id].append(annotator)
        status = dict(session.execute(select(Image.id, Image.label_status)).all())
    assert set(status.values()) == {"labeled"}
    for image_id in status:
        k = 2 if image_id in double_read else 1
        assert len(authors[image_id]) == k and len(set(authors[image_id])) == k, (image_id, authors[image_id])


def _authors(db, image_id: str) -> list[str]:
    with db() as session:
        return list(session.scalars(select(Label.annotator).where(Label.image_id == image_id).order_by(Label.version)))


def test_readers_are_blinded_in_the_api_and_the_listing(server, readers, reviewer, double_read, db) -> None:
    volume = double_read[0]
    first, second = _authors(db, volume)
    outsider = next(name for name in ANNOTATORS if name not in (first, second))
    label = f"{server.url}/datastore/label"
    own = httpx.get(label, params={"label": volume, "tag": "final"}, headers=readers[first], timeout=30)
    with db() as session:
        paths = dict(session.execute(select(Label.annotator, Label.path).where(Label.image_id == volume)).all())
    assert own.status_code == 200 and own.content == Path(paths[first]).read_bytes()  # theirs, not the newer one
    blinded = httpx.get(label, params={"label": volume, "tag": "final"}, headers=readers[outsider], timeout=30)
    assert blinded.status_code == 403 and "blinded" in blinded.json()["detail"]
    info = httpx.get(f"{label}/info", params={"label": volume, "tag": "final"}, headers=readers[outsider], timeout=30)
    assert info.json() == {}
    listing = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, headers=readers[first], timeout=30)
    assert listing.json()["objects"][volume]["labels"]["final"]["info"]["annotator"] == first
    listing = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, headers=readers[outsider], timeout=30)
    assert listing.json()["objects"][volume]["labels"] == {}
    seen = httpx.get(label, params={"label": volume, "tag": "final"}, headers=reviewer, timeout=30)
    assert seen.status_code == 200 and seen.content == Path(paths[second]).read_bytes()


def _direct(first: np.ndarray, second: np.ndarray, spacing) -> dict[str, float | None]:
    """Agreement computed here from the arrays, independently of models.agreement."""

    def dice(a, b):
        return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()) if a.sum() + b.sum() else 1.0

    def hd95(a, b):
        if not a.any() and not b.any():
            return 0.0
        if not a.any() or not b.any():
            return None
        one_hot = [torch.from_numpy(np.stack([~m, m])[None]) for m in (a, b)]
        return float(compute_hausdorff_distance(*one_hot, percentile=95, spacing=list(spacing)))

    def f1(a, b):
        la, na = ndimage.label(a, structure=np.ones((3, 3, 3)))
        lb, nb = ndimage.label(b, structure=np.ones((3, 3, 3)))
        if na == nb == 0:
            return 1.0
        found = sum(1 for i in range(1, na + 1) if (lb[la == i] > 0).any())
        true_b = sum(1 for j in range(1, nb + 1) if (la[lb == j] > 0).any())
        return 2 * found / (2 * found + (na - found) + (nb - true_b))

    liver, tumour = (first > 0, second > 0), (first == 2, second == 2)
    return {"liver_dice": dice(*liver), "tumour_dice": dice(*tumour), "liver_hd95": hd95(*liver),
            "tumour_hd95": hd95(*tumour), "lesion_f1": f1(*tumour)}


def _load(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    image = nib.load(path)
    return np.asarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms()[:3])


def test_agreement_equals_a_direct_computation_on_the_stored_files(server, admin, double_read, db) -> None:
    def complete():
        report = httpx.get(f"{server.url}/admin/agreement", headers=admin, timeout=30).json()
        return report if not report["pending"] and len(report["volumes"]) == len(double_read) else None

    report = wait_for(complete, 120, "agreement of every double-read volume", server)
    with db() as session:
        labels = {(row.image_id, row.version): row for row in session.scalars(select(Label))}
    per_pair = defaultdict(list)
    for row in report["volumes"]:
        first, second = labels[(row["image"], row["first_version"])], labels[(row["image"], row["second_version"])]
        assert (row["first"], row["second"], row["reference"]) == (first.annotator, second.annotator, False)
        a, spacing = _load(first.path)
        b, _ = _load(second.path)
        expected = _direct(a, b, spacing)
        for figure, value in expected.items():
            assert row[figure] == pytest.approx(value, abs=1e-6) if value is not None else row[figure] is None, figure
        per_pair["|".join(sorted((first.annotator, second.annotator)))].append(expected["tumour_dice"])
    assert any(row["tumour_dice"] < 1 for row in report["volumes"])  # readers did disagree
    for pair, values in per_pair.items():
        assert report["pairs"][pair]["tumour_dice"] == pytest.approx(np.mean(values))
        assert report["pairs"][pair]["comparisons"] == len(values)
    for name, summary in report["annotators"].items():
        own = [v for pair, values in per_pair.items() if name in pair.split("|") for v in values]
        assert summary["vs_readers"]["tumour_dice"] == pytest.approx(np.mean(own))


def test_review_through_the_api_with_its_refusals(server, admin, readers, reviewer, double_read, studies, db,
                                                  tmp_path) -> None:
    singles = sorted(set(_all_ids(db)) - set(double_read))
    target = singles[0]
    (author,) = _authors(db, target)
    approve = f"{server.url}/review/{target}/approve"
    assert httpx.post(approve, json={"version": 1}, headers=readers[author], timeout=30).status_code == 403  # role
    stale = httpx.post(approve, json={"version": 2}, headers=reviewer, timeout=30)
    assert stale.status_code == 409 and stale.json()["newest_version"] == 1
    assert httpx.post(f"{server.url}/review/nope/approve", json={}, headers=reviewer, timeout=30).status_code == 404
    long = httpx.post(approve, json={"version": 1, "comment": "x" * 5000}, headers=reviewer, timeout=30)
    assert long.status_code == 400
    # a double-read volume is adjudicated, not approved
    assert httpx.post(f"{server.url}/review/{double_read[0]}/approve", json={}, headers=reviewer,
                      timeout=30).status_code == 409
    done = httpx.post(approve, json={"version": 1, "comment": "good"}, headers=reviewer, timeout=30)
    assert done.status_code == 200 and done.json()["to_status"] == "approved" and done.json()["actor"] == "rita"
    assert httpx.post(approve, json={"version": 1}, headers=reviewer, timeout=30).status_code == 409  # already

    # A reviewer's own label: refused to them, allowed to an admin.
    own = singles[1]
    saved = put_label(server, reviewer, own, reader_label(studies, own, 0, tmp_path))
    assert saved.status_code == 200, saved.text
    refused = httpx.post(f"{server.url}/review/{own}/approve", json={"version": 2}, headers=reviewer, timeout=30)
    assert refused.status_code == 403 and "own label" in refused.json()["detail"]
    assert httpx.post(f"{server.url}/review/{own}/approve", json={"version": 2}, headers=admin,
                      timeout=30).status_code == 200

    # The review strategy: the oldest submitted label, never the reviewer's own; annotators may not use it.
    assert next_sample(server, readers[author], "review").status_code == 403
    queued = next_sample(server, reviewer, "review").json()
    with db() as session:
        newest = {}
        for row in session.scalars(select(Label).join(Image, Image.id == Label.image_id).where(Image.readers == 1)
                                   .order_by(Label.version)):
            newest[row.image_id] = row
    waiting = sorted((row.created_at, row.image_id, row.version) for row in newest.values()
                     if row.review_status == "submitted" and row.annotator != "rita")
    assert (queued["id"], queued["label_version"]) == waiting[0][1:]

    # Sent back: the volume goes to its annotator's next Next Sample first.
    back = singles[2]
    (back_author,) = _authors(db, back)
    assert httpx.post(f"{server.url}/review/{back}/send-back", json={"version": 1}, headers=reviewer,
                      timeout=30).status_code == 400  # no comment
    sent = httpx.post(f"{server.url}/review/{back}/send-back", json={"version": 1, "comment": "liver edge"},
                      headers=reviewer, timeout=30)
    assert sent.status_code == 200 and sent.json()["to_status"] == "changes_requested"
    assert next_sample(server, readers[back_author]).json()["id"] == back
    other = next(name for name in ANNOTATORS if name != back_author)
    assert next_sample(server, readers[other]).json() == {}
    fixed = put_label(server, readers[back_author], back, reader_label(studies, back, 0, tmp_path))
    assert fixed.status_code == 200
    state = httpx.get(f"{server.url}/review/{back}", headers=reviewer, timeout=30).json()
    assert (state["version"], state["review_status"]) == (2, "submitted")
    assert [h["to_status"] for h in state["history"]] == ["submitted", "changes_requested", "submitted"]


def _all_ids(db) -> list[str]:
    with db() as session:
        return list(session.scalars(select(Image.id).order_by(Image.id)))


def test_adjudication_makes_the_label_that_trains_and_only_approved_labels_train(
    server, admin, reviewer, readers, double_read, db
) -> None:
    adjudicate = f"{server.url}/review/{{}}/adjudicate"
    first, second = _authors(db, double_read[0])
    assert httpx.post(adjudicate.format(double_read[0]), json={"method": "pick", "reader": "nobody"},
                      headers=reviewer, timeout=30).status_code == 404
    assert httpx.post(adjudicate.format(double_read[0]), json={"method": "pick"}, headers=reviewer,
                      timeout=30).status_code == 400
    assert httpx.post(adjudicate.format(double_read[0]), json={"method": "vote"}, headers=reviewer,
                      timeout=30).status_code == 422
    assert httpx.post(adjudicate.format(double_read[0]), json={"method": "majority"}, headers=readers[first],
                      timeout=30).status_code == 403
    for volume, body in zip(double_read[:3], ({"method": "pick", "reader": second}, {"method": "majority"},
                                             {"method": "staple"})):
        answer = httpx.post(adjudicate.format(volume), json=body, headers=reviewer, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["to_status"] == "approved"
    with db() as session:
        rows = list(session.scalars(select(Label).order_by(Label.image_id, Label.version)))
    by_volume = defaultdict(list)
    for row in rows:
        by_volume[row.image_id].append(row)
    picked, voted = by_volume[double_read[0]][-1], by_volume[double_read[1]][-1]
    second_label = next(r for r in by_volume[double_read[0]] if r.annotator == second)
    assert np.array_equal(_load(picked.path)[0], _load(second_label.path)[0])
    readers_maps = [_load(r.path)[0] for r in by_volume[double_read[1]][:-1]]
    expected = np.where(readers_maps[0] == readers_maps[1], readers_maps[0], 0)  # majority of two: both agree
    assert np.array_equal(_load(voted.path)[0], expected)

    # What trains: exactly the newest final labels that are approved.
    approved = {image_id: versions[-1].path for image_id, versions in by_volume.items()
                if versions[-1].review_status == "approved"}
    train = httpx.get(f"{server.url}/datastore/", params={"output": "train"}, headers=admin, timeout=30).json()
    assert {pair["id"]: pair["label"] for pair in train} == approved
    assert len(approved) == 5  # 2 single-read approvals, 3 adjudications

    # Each reader against the adjudication, in the background.
    def against_adjudication():
        report = httpx.get(f"{server.url}/admin/agreement", headers=admin, timeout=30).json()
        return report if sum(row["reference"] for row in report["volumes"]) == 6 else None

    report = wait_for(against_adjudication, 120, "agreement against adjudications", server)
    assert report["annotators"][second]["vs_adjudicated"]["comparisons"] >= 1
    progress = httpx.get(f"{server.url}/admin/progress", headers=admin, timeout=30).json()["review"]
    assert (progress["double_read"], progress["double_read_complete"], progress["adjudicated"]) == (12, 12, 3)
