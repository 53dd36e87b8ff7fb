"""MONAI Label's Slicer module MONAILabelReviewer against the real server (auth off, as the module sends no
credentials): its own REST client lists the datastore, downloads image and label, approves and flags with a comment;
the review shows in the listing it reads back, in the review history and in /admin/progress. Also: what trains with
``train_on`` at its default (every final label)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from db.labels import latest_label
from tests.app.conftest import start_server, studies_db, submit_ground_truth
from tests.app.reviewer_module.MonaiServerREST import MonaiServerREST


@pytest.fixture(scope="module")
def server(served_cohort: Path, tmp_path_factory):
    with start_server(served_cohort, tmp_path_factory.mktemp("logs")) as proc:
        yield proc


def segmentation_meta(status: str, level: str = "", comment: str = "", approved_by: str = "dr_review") -> dict:
    """What the module's SegmentationMeta.getMeta() builds."""
    return {"segmentationMeta": {"status": status, "approvedBy": approved_by, "level": level, "comment": comment,
                                 "editTime": 1765000000}}


def test_the_reviewer_module_lists_fetches_approves_and_flags(server, served_cohort: Path) -> None:
    ids = sorted(httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"])[:3]
    submit_ground_truth(server, served_cohort, ids)
    rest = MonaiServerREST(server.url)
    assert rest.checkServerConnection()

    listing = rest.requestDataStoreInfo()
    final = listing["objects"][ids[0]]["labels"]["final"]["info"]
    # The keys its JsonParser reads: segmentation file name, annotator id, and a complete segmentationMeta.
    assert final["name"].endswith(".nii.gz") and final["client_id"].startswith("user-xyz@")
    assert final["segmentationMeta"] == {"status": "", "approvedBy": "", "level": "", "comment": "", "editTime": ""}
    assert listing["objects"][ids[0]]["image"]["info"]["name"].startswith(ids[0])

    image = httpx.get(rest.getDicomDownloadUri(ids[0]), timeout=30)
    assert image.status_code == 200 and image.content == (served_cohort / "imagesTr" / f"{ids[0]}.nii.gz").read_bytes()
    label = rest.requestSegmentation(ids[0], "final")
    with studies_db(served_cohort) as session:
        stored = Path(latest_label(session, ids[0], "final").path)
    assert label is not None and label.content == stored.read_bytes()

    assert rest.updateLabelInfo(ids[0], "final", segmentation_meta("approved", level="easy")) == 200
    assert rest.updateLabelInfo(ids[1], "final", segmentation_meta("flagged", level="hard",
                                                                   comment="the lesion at the dome is missed")) == 200
    # A level change re-sends the status the module shows: accepted, no second transition.
    assert rest.updateLabelInfo(ids[0], "final", segmentation_meta("approved", level="medium")) == 200

    after = rest.requestDataStoreInfo()["objects"]
    approved = after[ids[0]]["labels"]["final"]["info"]
    assert approved["review_status"] == "approved"
    assert approved["segmentationMeta"]["status"] == "approved"
    assert approved["segmentationMeta"]["level"] == "medium"
    assert approved["segmentationMeta"]["approvedBy"].startswith("dr_review@")
    flagged = after[ids[1]]["labels"]["final"]["info"]
    assert (flagged["review_status"], flagged["segmentationMeta"]["status"]) == ("changes_requested", "flagged")
    assert flagged["segmentationMeta"]["comment"] == "the lesion at the dome is missed"
    assert after[ids[1]]["image"]["info"]["label_status"] == "unlabeled"  # back to its annotator

    history = httpx.get(f"{server.url}/review/{ids[1]}", timeout=30).json()["history"]
    assert [(h["from_status"], h["to_status"], h["comment"]) for h in history] == [
        (None, "submitted", None), ("submitted", "changes_requested", "the lesion at the dome is missed")]
    assert httpx.get(f"{server.url}/review/{ids[0]}", timeout=30).json()["review_status"] == "approved"

    review = httpx.get(f"{server.url}/admin/progress", timeout=30).json()["review"]
    assert (review["approved"], review["submitted"]) == (1, 1)  # the flagged one is unlabeled again

    # What trains by default: every labeled volume's newest final label, reviewed or not.
    train = httpx.get(f"{server.url}/datastore/", params={"output": "train"}, timeout=30).json()
    assert sorted(pair["id"] for pair in train) == sorted([ids[0], ids[2]])


def test_bad_review_input_gets_a_clear_4xx_and_changes_nothing(server) -> None:
    listing = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    labeled = sorted(i for i, o in listing.items() if o["image"]["info"]["label_status"] == "labeled")
    target = next(i for i in labeled if listing[i]["labels"]["final"]["info"]["review_status"] == "submitted")
    url = f"{server.url}/datastore/updatelabelinfo"

    def put(label: str, params: dict | str) -> httpx.Response:
        body = params if isinstance(params, str) else json.dumps(params)
        return httpx.put(url, params={"label": label, "tag": "final"}, data={"params": body}, timeout=30)

    assert put(target, segmentation_meta("rejected")).status_code == 400
    assert "unknown review status" in put(target, segmentation_meta("rejected")).json()["detail"]
    assert put(target, segmentation_meta("flagged", level="extreme")).status_code == 400
    too_long = put(target, segmentation_meta("flagged", comment="x" * 5000))
    assert too_long.status_code == 400 and "at most" in too_long.json()["detail"]
    assert put(target, "{not json").status_code == 400
    assert put("no_such_case", segmentation_meta("approved")).status_code == 404
    stale = httpx.post(f"{server.url}/review/{target}/approve", json={"version": 7}, timeout=30)
    assert stale.status_code == 409 and stale.json()["newest_version"] == 1
    assert httpx.post(f"{server.url}/review/{target}/send-back", json={"version": 1}, timeout=30).status_code == 400
    assert httpx.post(f"{server.url}/review/no_such_case/approve", json={}, timeout=30).status_code == 404
    after = httpx.get(f"{server.url}/review/{target}", timeout=30).json()
    assert after["review_status"] == "submitted" and len(after["history"]) == 1


def test_the_review_strategy_is_served_and_gives_the_oldest_submitted_label(server) -> None:
    info = httpx.get(f"{server.url}/info/", timeout=30).json()
    assert "review" in info["strategies"]
    answer = httpx.post(f"{server.url}/activelearning/review", json={"client_id": "someone_else"}, timeout=30)
    assert answer.status_code == 200, answer.text
    listing = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    waiting = sorted((o["labels"]["final"]["info"]["ts"], i) for i, o in listing.items()
                     if o["labels"].get("final", {}).get("info", {}).get("review_status") == "submitted"
                     and o["image"]["info"]["label_status"] == "labeled")
    assert answer.json()["id"] == waiting[0][1]
    assert answer.json()["label_version"] == 1
