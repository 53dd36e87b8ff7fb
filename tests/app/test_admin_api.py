"""The admin REST API (``/admin``) through the real server with auth on: progress, volumes, leases, rounds, jobs,
export, users and tokens, and that only admins may use it.

One server for the module (SQLite in the studies folder). The tests share its state: every number they check is read
before and after the action it checks, and the final labels of the module are all saved through :class:`FinalLabels`
(so the export knows exactly which volumes must be in it). ``test_training_refuses_without_final_labels`` must run
before any label is saved: it comes first among the tests that touch labels (pytest runs a file in order).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select

from cohort.msd import load_msd
from db.schema import JOB_KINDS, AuditEvent
from tests.app.conftest import start_server, studies_db, wait_for

SECRET = "test-secret-key-0123456789abcdef"
ADMIN_PASSWORD = "adminpass1"
PASSWORD = "password123"
CASES = 24  # the tiny cohort
#: A request the schema accepts but that makes no sense (a round larger than the pool, min above max): 400 or 422.
BAD = (400, 422)


@pytest.fixture(scope="module")
def studies(tiny_cohort: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("admin") / "studies"
    shutil.copytree(tiny_cohort, root)
    return root


@pytest.fixture(scope="module")
def server(studies: Path, backbone_file: Path, tmp_path_factory):
    # A backbone: selection rounds need every unlabeled volume's embedding, which the server computes at start-up.
    with start_server(studies, tmp_path_factory.mktemp("logs"), auth="true", admin_password=ADMIN_PASSWORD,
                      secret_key=SECRET, backbone=str(backbone_file)) as proc:
        yield proc


def login(server, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{server.url}/auth/token", timeout=60,
                      data={"username": username, "password": password, "grant_type": "password"})


def bearer(server, username: str, password: str = PASSWORD) -> dict[str, str]:
    answer = login(server, username, password)
    assert answer.status_code == 200, answer.text
    token = answer.json()
    assert token["access_token"] and token["token_type"].lower() == "bearer"
    return {"Authorization": f"Bearer {token['access_token']}"}


class Api:
    """Calls to one server as one user."""

    def __init__(self, server, headers: dict[str, str]):
        self.server, self.headers = server, headers

    def __call__(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}{path}", headers={**self.headers, **(headers or {})},
                             timeout=60, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self("GET", path, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs):
        answer = self(method, path, **kwargs)
        assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text[:500]}"
        return answer.json()

    def refused(self, method: str, path: str, status: int | tuple[int, ...], **kwargs) -> str:
        """Call, check the status is ``status`` (or one of them) and that the answer explains why; return that
        explanation as text (a validation error's list of problems, or our message)."""
        answer = self(method, path, **kwargs)
        allowed = status if isinstance(status, tuple) else (status,)
        assert answer.status_code in allowed, f"{method} {path}: {answer.status_code} {answer.text[:500]}"
        detail = answer.json().get("detail")
        assert detail, f"{method} {path}: no detail in {answer.text[:500]}"
        return detail if isinstance(detail, str) else json.dumps(detail)

    def next_sample(self, body: dict | None = None, strategy: str = "random") -> dict:
        return self.ok("POST", f"/activelearning/{strategy}", json=body if body is not None else {})


@pytest.fixture(scope="module")
def admin(server) -> Api:
    return Api(server, bearer(server, "admin", ADMIN_PASSWORD))


def new_user(server, admin: Api, username: str, role: str = "annotator") -> Api:
    created = admin.ok("POST", "/admin/users", 201, json={"username": username, "role": role, "password": PASSWORD})
    assert (created["username"], created["role"], created["disabled"]) == (username, role, False)
    return Api(server, bearer(server, username))


@pytest.fixture(scope="module")
def pat(server, admin) -> Api:
    """The annotator who saves every final label of this module."""
    return new_user(server, admin, "pat")


def random_label(studies: Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A valid label map of a volume (its grid; values 0-2), unlike its ground truth: (voxels, affine)."""
    image = nib.load(studies / "imagesTr" / f"{image_id}.nii.gz")
    rng = np.random.default_rng(sum(map(ord, image_id)))
    draw = rng.random(image.shape[:3])
    voxels = np.where(draw < 0.15, 2, np.where(draw < 0.4, 1, 0)).astype(np.uint8)
    return voxels, image.affine


class FinalLabels:
    """The final labels this module saved (image id -> voxels), all by ``pat``."""

    def __init__(self, studies: Path, tmp: Path):
        self.studies, self.tmp = studies, tmp
        self.saved: dict[str, np.ndarray] = {}

    def save(self, annotator: Api, image_id: str) -> None:
        voxels, affine = random_label(self.studies, image_id)
        truth = np.asarray(nib.load(self.studies / "labelsTr" / f"{image_id}.nii.gz").dataobj)
        assert not np.array_equal(voxels, truth)  # the export must give back this label, not the cohort's
        path = self.tmp / f"{image_id}-label.nii.gz"
        nib.save(nib.Nifti1Image(voxels, affine), path)
        annotator.ok("PUT", "/datastore/label", params={"image": image_id},
                     data={"params": json.dumps({"client_id": "someone-else"})},
                     files={"label": ("label.nii.gz", path.read_bytes())})
        self.saved[image_id] = voxels

    def ensure(self, annotator: Api, count: int) -> None:
        """Claim and label volumes until ``count`` are labeled."""
        while len(self.saved) < count:
            claimed = annotator.next_sample()["id"]
            assert claimed not in self.saved, "a labeled volume was offered again"
            self.save(annotator, claimed)


@pytest.fixture(scope="module")
def labels(studies, tmp_path_factory) -> FinalLabels:
    return FinalLabels(studies, tmp_path_factory.mktemp("labels"))


def utc_today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


# --- roles -----------------------------------------------------------------------------------------------------

ADMIN_READS = ["/admin/progress", "/admin/volumes", "/admin/volumes/case_0000", "/admin/leases", "/admin/rounds",
               "/admin/jobs", "/admin/users", "/admin/users/admin", "/admin/users/admin/tokens"]


def test_an_annotator_gets_403_on_every_admin_route_and_an_admin_200(server, admin):
    annotator = new_user(server, admin, "rita")
    writes = [
        ("POST", "/admin/users", {"username": "sneaky", "role": "admin", "password": PASSWORD}),
        ("PATCH", "/admin/users/admin", {"disabled": True}),
        ("POST", "/admin/users/rita/tokens", {"name": "mine"}),
        ("DELETE", "/admin/tokens/1", None),
        ("POST", "/admin/leases", {"image_id": "case_0000", "annotator": "rita"}),
        ("DELETE", "/admin/leases/case_0000", None),
        ("POST", "/admin/rounds", {"strategy": "random", "budget": 1}),
        ("DELETE", "/admin/rounds/1", None),
        ("POST", "/admin/jobs", {"kind": "train"}),
    ]
    for method, path, body in [("GET", p, None) for p in ADMIN_READS + ["/admin/export"]] + writes:
        detail = annotator.refused(method, path, 403, **({"json": body} if body is not None else {}))
        assert "rita" in detail or "role" in detail.lower() or "permission" in detail.lower(), (method, path, detail)
    for path in ADMIN_READS:
        admin.ok("GET", path)
    # Nothing the annotator tried happened.
    assert "sneaky" not in {u["username"] for u in admin.ok("GET", "/admin/users")}
    assert not admin.ok("GET", "/admin/users/admin")["disabled"]
    assert admin.ok("GET", "/admin/users/rita/tokens") == []
    assert "rita" not in {lease["annotator"] for lease in admin.ok("GET", "/admin/leases")}


def test_a_role_change_applies_to_the_users_existing_access_token_at_once(server, admin):
    ada = new_user(server, admin, "ada", "admin")
    ada.ok("GET", "/admin/progress")
    assert admin.ok("PATCH", "/admin/users/ada", json={"role": "annotator"})["role"] == "annotator"
    ada.refused("GET", "/admin/progress", 403)  # the same token: its role claim is no longer what counts
    ada.refused("POST", "/admin/users", 403, json={"username": "ada-friend", "role": "admin", "password": PASSWORD})
    assert ada.next_sample()["id"]  # still an annotator
    assert admin.ok("PATCH", "/admin/users/ada", json={"role": "admin"})["role"] == "admin"
    ada.ok("GET", "/admin/progress")
    assert admin.ok("PATCH", "/admin/users/ada", json={"role": "annotator"})["role"] == "annotator"
    ada.refused("GET", "/admin/users", 403)


# --- users and tokens ------------------------------------------------------------------------------------------

def test_users_are_created_once_with_a_valid_role_and_password(server, admin):
    created = admin.ok("POST", "/admin/users", 201, json={"username": "uma", "role": "annotator", "password": PASSWORD})
    assert created["username"] == "uma" and created["role"] == "annotator"
    before = admin.ok("GET", "/admin/users")
    assert "uma" in {u["username"] for u in before}
    assert admin.ok("GET", "/admin/users/uma")["role"] == "annotator"

    detail = admin.refused("POST", "/admin/users", 409, json={"username": "uma", "role": "admin", "password": PASSWORD})
    assert "uma" in detail
    assert admin.ok("GET", "/admin/users") == before  # the duplicate changed nothing (uma is still an annotator)
    admin.refused("POST", "/admin/users", 422, json={"username": "vera", "role": "superuser", "password": PASSWORD})
    admin.refused("POST", "/admin/users", 422, json={"username": "vera", "role": "annotator", "password": "short7!"})
    assert admin.ok("GET", "/admin/users") == before
    assert login(server, "uma", PASSWORD).status_code == 200
    admin.refused("GET", "/admin/users/nobody-here", 404)


def test_disabling_a_user_stops_their_token_at_once_and_enabling_restores_it(server, admin):
    dora = new_user(server, admin, "dora")
    valid = dora.ok("GET", "/auth/token/valid")
    assert valid["username"] == "dora"

    changed = admin.ok("PATCH", "/admin/users/dora", json={"disabled": True})
    assert changed["disabled"] is True
    dora.refused("GET", "/auth/token/valid", 401)
    dora.refused("POST", "/activelearning/random", 401, json={})
    assert login(server, "dora", PASSWORD).status_code == 401
    assert admin.ok("GET", "/admin/users/dora")["disabled"] is True

    issued = admin.ok("POST", "/admin/users/dora/tokens", 201, json={"name": "while-disabled"})
    api = Api(server, {"Authorization": f"Bearer {issued['token']}"})
    api.refused("GET", "/auth/token/valid", 401)  # an API token of a disabled user is refused too

    assert admin.ok("PATCH", "/admin/users/dora", json={"disabled": False})["disabled"] is False
    assert dora.ok("GET", "/auth/token/valid")["username"] == "dora"  # the same token as before
    assert api.ok("GET", "/auth/token/valid")["username"] == "dora"
    assert login(server, "dora", PASSWORD).status_code == 200


def test_an_admin_cannot_disable_themself(admin):
    detail = admin.refused("PATCH", "/admin/users/admin", 409, json={"disabled": True})
    assert "own" in detail
    assert admin.ok("GET", "/admin/users/admin")["disabled"] is False
    assert admin.ok("GET", "/auth/token/valid")["username"] == "admin"


def test_an_api_token_is_shown_once_authenticates_and_is_revoked_at_once(server, admin):
    new_user(server, admin, "tina")
    issued = admin.ok("POST", "/admin/users/tina/tokens", 201, json={"name": "ci"})
    token = issued["token"]
    assert token.startswith("slpt_") and len(token) > 30
    assert issued["name"] == "ci" and issued["revoked_at"] is None
    tina = Api(server, {"Authorization": f"Bearer {token}"})
    assert tina.ok("GET", "/auth/token/valid")["username"] == "tina"
    assert tina.next_sample()["id"]  # it works beyond the validity check

    listing = admin.get("/admin/users/tina/tokens")
    assert listing.status_code == 200
    assert [(t["id"], t["name"]) for t in listing.json()] == [(issued["id"], "ci")]
    assert "token" not in listing.json()[0] and token not in listing.text
    assert listing.json()[0]["last_used_at"] is not None

    revoked = admin.ok("DELETE", f"/admin/tokens/{issued['id']}")
    assert revoked["id"] == issued["id"] and revoked["revoked_at"] is not None
    tina.refused("GET", "/auth/token/valid", 401)
    assert admin.ok("GET", "/admin/users/tina/tokens")[0]["revoked_at"] is not None
    admin.refused("DELETE", "/admin/tokens/999999", 404)
    assert "ghost" in admin.refused("POST", "/admin/users/ghost/tokens", 404, json={"name": "x"})
    admin.refused("GET", "/admin/users/ghost/tokens", 404)


# --- jobs ------------------------------------------------------------------------------------------------------

def embedding_job(admin: Api) -> dict | None:
    done = [j for j in admin.ok("GET", "/admin/jobs", params={"kind": "embedding"}) if j["state"] == "done"]
    return done[0] if done else None


def test_jobs_are_listed_and_looked_up_and_bad_queries_are_refused(server, admin):
    job = wait_for(lambda: embedding_job(admin), 300, "the start-up embedding job", server)
    every = admin.ok("GET", "/admin/jobs")
    assert job["id"] in {j["id"] for j in every}
    assert all(j["kind"] in JOB_KINDS for j in every)
    assert job["progress"] == pytest.approx(1.0)
    one = admin.ok("GET", f"/admin/jobs/{job['id']}")
    assert (one["id"], one["kind"], one["state"]) == (job["id"], "embedding", "done")
    assert admin.ok("GET", "/admin/jobs", params={"kind": "train"}) == []
    assert job["id"] in {j["id"] for j in admin.ok("GET", "/admin/jobs", params={"state": "done"})}

    assert "nope" in admin.refused("GET", "/admin/jobs/nope", 404)
    assert "bogus" in admin.refused("GET", "/admin/jobs", 422, params={"kind": "bogus"})
    assert "bogus" in admin.refused("GET", "/admin/jobs", 422, params={"state": "bogus"})
    admin.refused("POST", "/admin/jobs", 422, json={"kind": "bogus"})


def test_training_refuses_without_final_labels(admin):
    assert admin.ok("GET", "/admin/progress")["totals"]["labeled"] == 0, "this test must run before any label is saved"
    detail = admin.refused("POST", "/admin/jobs", 409, json={"kind": "train"})
    assert "label" in detail
    assert admin.ok("GET", "/admin/jobs", params={"kind": "train"}) == []


# --- rounds ----------------------------------------------------------------------------------------------------

def test_a_round_is_built_listed_and_cancelled_once(server, admin):
    # ``random`` ranks without any score, so it works before a model exists; the round still needs every unlabeled
    # volume's embedding (the pool it permutes), which the start-up embedding job computes.
    wait_for(lambda: embedding_job(admin), 300, "the start-up embedding job", server)
    unlabeled_before = {v["id"] for v in admin.ok("GET", "/admin/volumes", params={"limit": 500})["items"]
                        if v["status"] != "labeled"}
    built = admin.ok("POST", "/admin/rounds", 201, json={"strategy": "random", "budget": 3, "seed": 5})
    assert (built["strategy"], built["budget"], built["state"]) == ("random", 3, "ready")
    assert [i["rank"] for i in built["items"]] == sorted(i["rank"] for i in built["items"])
    ranked = [i["image_id"] for i in built["items"]]
    assert len(ranked) == len(set(ranked)) == 3
    assert set(ranked) <= unlabeled_before

    assert built["id"] in {r["id"] for r in admin.ok("GET", "/admin/rounds")}
    assert admin.ok("GET", "/admin/rounds", params={"limit": 1})[0]["id"] == built["id"]  # newest first
    assert admin.ok("GET", f"/admin/rounds/{built['id']}") == built
    in_round = admin.ok("GET", "/admin/volumes", params={"round_id": built["id"]})
    assert {v["id"] for v in in_round["items"]} == set(ranked) and in_round["total"] == 3
    assert {v["status"] for v in in_round["items"]} <= {"queued", "leased"}

    cancelled = admin.ok("DELETE", f"/admin/rounds/{built['id']}")
    assert cancelled["id"] == built["id"] and cancelled["state"] == "cancelled"
    assert admin.ok("GET", f"/admin/rounds/{built['id']}")["state"] == "cancelled"
    assert "cancelled" in admin.refused("DELETE", f"/admin/rounds/{built['id']}", 409)
    admin.refused("GET", "/admin/rounds/999999", 404)
    admin.refused("DELETE", "/admin/rounds/999999", 404)


def test_a_tesla_round_says_which_cluster_each_volume_stands_for(server, admin):
    wait_for(lambda: embedding_job(admin), 300, "the start-up embedding job", server)
    pool = sum(v["status"] not in ("labeled", "archived")
               for v in admin.ok("GET", "/admin/volumes", params={"limit": 500})["items"])
    built = admin.ok("POST", "/admin/rounds", 201, json={"strategy": "tesla", "budget": 3, "seed": 1})
    reasons = [item["reason"] for item in built["items"]]
    # No model yet: TESLA partitions the whole unlabeled pool into 3 clusters and takes one volume from each.
    assert sorted(r["cluster"] for r in reasons) == [0, 1, 2]
    assert sum(r["cluster_size"] for r in reasons) == pool
    assert all("score" not in r for r in reasons)
    assert admin.ok("GET", f"/admin/rounds/{built['id']}")["items"] == built["items"]
    admin.ok("DELETE", f"/admin/rounds/{built['id']}")


def test_bad_rounds_are_refused(admin):
    before = admin.ok("GET", "/admin/rounds")
    admin.refused("POST", "/admin/rounds", 422, json={"strategy": "random", "budget": 0})
    assert "pool" in admin.refused("POST", "/admin/rounds", BAD, json={"strategy": "random", "budget": 1000})
    assert "nonsense" in admin.refused("POST", "/admin/rounds", 404, json={"strategy": "nonsense", "budget": 1})
    admin.refused("POST", "/admin/rounds", 422, content=b'{"strategy": "random", "budget":',
                  headers={"Content-Type": "application/json"})
    assert admin.ok("GET", "/admin/rounds") == before


# --- progress --------------------------------------------------------------------------------------------------

def test_progress_follows_a_claim_and_a_final_label(admin, pat, labels):
    before = admin.ok("GET", "/admin/progress")
    totals = before["totals"]
    assert totals["total"] == CASES == sum(v for k, v in totals.items() if k != "total")
    assert "pat" not in before["by_annotator"]

    claimed = pat.next_sample({"client_id": "someone-else"})["id"]
    during = admin.ok("GET", "/admin/progress")
    assert during["totals"]["leased"] == totals["leased"] + 1
    assert during["totals"]["total"] == sum(v for k, v in during["totals"].items() if k != "total")
    assert during["by_annotator"]["pat"] == {"labeled": 0, "leased": 1, "skipped": 0}
    assert not any(name.startswith("someone-else") for name in during["by_annotator"])

    labels.save(pat, claimed)
    after = admin.ok("GET", "/admin/progress")
    assert after["totals"]["labeled"] == totals["labeled"] + 1
    assert after["totals"]["leased"] == totals["leased"]
    assert after["totals"]["total"] == CASES == sum(v for k, v in after["totals"].items() if k != "total")
    assert after["by_annotator"]["pat"] == {"labeled": 1, "leased": 0, "skipped": 0}
    assert after["labels_per_day"].get(utc_today(), 0) == before["labels_per_day"].get(utc_today(), 0) + 1
    assert sum(after["labels_per_day"].values()) == after["totals"]["labeled"]
    assert after["model"] is None


# --- volumes ---------------------------------------------------------------------------------------------------

def test_volume_pages_filters_and_sorts(server, admin, pat, labels):
    labels.ensure(pat, 1)
    vic = new_user(server, admin, "vic")
    held = vic.next_sample()["id"]

    everything = admin.ok("GET", "/admin/volumes", params={"limit": 500})
    assert everything["total"] == CASES == len(everything["items"])
    ids = [v["id"] for v in everything["items"]]
    assert ids == sorted(ids)  # sort=id by default
    pages = [admin.ok("GET", "/admin/volumes", params={"offset": o, "limit": 5}) for o in range(0, CASES, 5)]
    assert [v["id"] for page in pages for v in page["items"]] == ids
    assert all(p["total"] == CASES and p["limit"] == 5 for p in pages)
    assert [p["offset"] for p in pages] == list(range(0, CASES, 5))
    assert [v["id"] for v in admin.ok("GET", "/admin/volumes", params={"offset": CASES - 1})["items"]] == ids[-1:]

    leased = admin.ok("GET", "/admin/volumes", params={"status": "leased", "limit": 500})
    assert held in {v["id"] for v in leased["items"]}
    assert all(v["status"] == "leased" and v["lease_holder"] for v in leased["items"])
    assert leased["total"] == admin.ok("GET", "/admin/progress")["totals"]["leased"]
    mine = admin.ok("GET", "/admin/volumes", params={"annotator": "vic"})
    assert [(v["id"], v["status"], v["lease_holder"]) for v in mine["items"]] == [(held, "leased", "vic")]
    by_pat = admin.ok("GET", "/admin/volumes", params={"annotator": "pat", "limit": 500})
    assert {v["id"] for v in by_pat["items"]} == set(labels.saved)
    assert {v["status"] for v in by_pat["items"]} == {"labeled"}
    labeled = admin.ok("GET", "/admin/volumes", params={"status": "labeled", "limit": 500})
    assert {v["id"] for v in labeled["items"]} == set(labels.saved)
    assert admin.ok("GET", "/admin/volumes", params={"annotator": "nobody"})["total"] == 0

    newest = admin.ok("GET", "/admin/volumes", params={"sort": "-ingested", "limit": 500})["items"]
    oldest = admin.ok("GET", "/admin/volumes", params={"sort": "ingested", "limit": 500})["items"]
    stamp = {v["id"]: datetime.fromisoformat(v["ingested_at"]).timestamp() for v in everything["items"]}
    assert [v["id"] for v in newest] == sorted(ids, key=lambda i: (-stamp[i], i))
    assert [v["id"] for v in oldest] == sorted(ids, key=lambda i: (stamp[i], i))


@pytest.mark.parametrize("query, status", [
    ({"limit": 0}, 422), ({"limit": 100000}, 422), ({"offset": -1}, 422), ({"offset": CASES}, 404),
    ({"offset": 1000}, 404), ({"status": "bogus"}, 422), ({"sort": "bogus"}, 422),
    ({"min_score": 0.9, "max_score": 0.1}, BAD), ({"annotator": "x" * 300}, 422),
])
def test_bad_volume_queries_are_refused_with_a_message(admin, query, status):
    admin.refused("GET", "/admin/volumes", status, params=query)


def test_a_volumes_history_shows_its_lease_and_label_with_who(admin, pat, labels):
    labels.ensure(pat, 1)
    image_id = next(iter(labels.saved))
    history = admin.ok("GET", f"/admin/volumes/{image_id}")
    assert history["volume"]["id"] == image_id and history["volume"]["status"] == "labeled"
    assert [a["annotator"] for a in history["assignments"]] == ["pat"]
    assert history["assignments"][0]["image_id"] == image_id
    finals = [label for label in history["labels"] if label["tag"] == "final"]
    assert [(label["annotator"], label["version"]) for label in finals] == [("pat", 1)]
    assert "case_9999" in admin.refused("GET", "/admin/volumes/case_9999", 404)


# --- leases ----------------------------------------------------------------------------------------------------

def test_leases_are_listed_assigned_and_released(server, admin, pat, labels):
    labels.ensure(pat, 1)
    otto, lena = new_user(server, admin, "otto"), new_user(server, admin, "lena")
    taken = otto.next_sample()["id"]
    leases = {lease["image_id"]: lease for lease in admin.ok("GET", "/admin/leases")}
    assert leases[taken]["annotator"] == "otto" and leases[taken]["strategy"] == "random"

    free = [v["id"] for v in admin.ok("GET", "/admin/volumes", params={"status": "unlabeled", "limit": 500})["items"]]
    target = free[-1]  # not what a "first" claim would give
    assigned = admin.ok("POST", "/admin/leases", 201, json={"image_id": target, "annotator": "lena"})
    assert (assigned["image_id"], assigned["annotator"], assigned["strategy"]) == (target, "lena", "assigned")
    # The assignment is lena's work until it is labeled or released: Next Sample offers it, again and again.
    assert lena.next_sample()["id"] == target
    assert lena.next_sample()["id"] == target
    leases = {lease["image_id"]: lease["annotator"] for lease in admin.ok("GET", "/admin/leases")}
    assert leases[target] == "lena" and leases[taken] == "otto"
    assert admin.ok("GET", f"/admin/volumes/{target}")["volume"]["lease_holder"] == "lena"

    assert "otto" in admin.refused("POST", "/admin/leases", 409, json={"image_id": taken, "annotator": "lena"})
    labeled = next(iter(labels.saved))
    assert "labeled" in admin.refused("POST", "/admin/leases", 409, json={"image_id": labeled, "annotator": "lena"})
    admin.refused("POST", "/admin/leases", 404, json={"image_id": "case_9999", "annotator": "lena"})
    # With auth on the holder is a user name: a typo must not block a volume for a whole lease.
    assert "ghost" in admin.refused("POST", "/admin/leases", 404, json={"image_id": free[0], "annotator": "ghost"})
    new_user(server, admin, "gone")
    admin.ok("PATCH", "/admin/users/gone", json={"disabled": True})
    assert "disabled" in admin.refused("POST", "/admin/leases", 409, json={"image_id": free[0], "annotator": "gone"})
    leases = {lease["image_id"]: lease["annotator"] for lease in admin.ok("GET", "/admin/leases")}
    assert leases[target] == "lena" and leases[taken] == "otto" and labeled not in leases

    released = admin.ok("DELETE", f"/admin/leases/{target}")
    assert (released["image_id"], released["annotator"]) == (target, "lena")
    assert target not in {lease["image_id"] for lease in admin.ok("GET", "/admin/leases")}
    volume = admin.ok("GET", f"/admin/volumes/{target}")["volume"]
    assert volume["status"] != "leased" and volume["lease_holder"] is None
    assert "not leased" in admin.refused("DELETE", f"/admin/leases/{target}", 409)
    admin.refused("DELETE", "/admin/leases/case_9999", 404)
    assert "case_9999" not in {lease["image_id"] for lease in admin.ok("GET", "/admin/leases")}
    # Free again: anyone may now be given it.
    assert admin.ok("POST", "/admin/leases", 201, json={"image_id": target, "annotator": "otto"})["annotator"] == "otto"
    assert otto.next_sample()["id"] == target
    admin.ok("DELETE", f"/admin/leases/{target}")

    actions = [e["action"] for e in admin.ok("GET", f"/admin/volumes/{target}")["audit"]]
    assert actions.count("lease_assigned") == 2 and actions.count("lease_released") == 2
    assert [e["actor"] for e in admin.ok("GET", f"/admin/volumes/{target}")["audit"]
            if e["action"].startswith("lease_")] == ["admin"] * 4


def test_an_assigned_volume_is_offered_until_it_is_labeled(admin, pat, labels):
    labels.ensure(pat, 1)
    free = [v["id"] for v in admin.ok("GET", "/admin/volumes", params={"status": "unlabeled", "limit": 500})["items"]]
    target = free[len(free) // 2]
    admin.ok("POST", "/admin/leases", 201, json={"image_id": target, "annotator": "pat"})
    assert pat.next_sample()["id"] == target
    labels.save(pat, target)
    assert target not in {lease["image_id"] for lease in admin.ok("GET", "/admin/leases")}
    following = pat.next_sample()["id"]
    assert following != target and following not in labels.saved
    admin.ok("DELETE", f"/admin/leases/{following}")  # pat holds nothing now (the export test claims anew)


# --- export ----------------------------------------------------------------------------------------------------

def export_events(studies: Path) -> list[AuditEvent]:
    with studies_db(studies) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "export")))


def test_export_streams_the_final_labels_as_an_msd_archive(server, admin, pat, labels, studies, tmp_path):
    labels.ensure(pat, 2)  # in file order: exactly 2, the last one saved by the test above
    assert len(labels.saved) >= 2
    before = len(export_events(studies))

    archive = tmp_path / "export.tar.gz"
    with httpx.stream("GET", f"{server.url}/admin/export", headers=admin.headers, timeout=120) as answer:
        assert answer.status_code == 200, answer.read()[:500]
        assert answer.headers["content-type"].startswith("application/gzip")
        assert answer.headers["content-disposition"].endswith('.tar.gz"')
        with archive.open("wb") as out:
            for chunk in answer.iter_bytes():
                out.write(chunk)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(unpacked, filter="data")

    dataset, source = load_msd(unpacked), load_msd(studies)
    assert sorted(c.name for c in dataset.cases) == sorted(labels.saved)
    assert dataset.labels == source.labels
    groups = {c.name: c.group for c in source.cases}
    for case in dataset.cases:
        assert case.group == groups[case.name]
        exported = np.asarray(nib.load(case.label).dataobj)
        assert np.array_equal(exported, labels.saved[case.name]), case.name
        original = nib.load(studies / "imagesTr" / f"{case.name}.nii.gz")
        assert np.array_equal(np.asarray(nib.load(case.image).dataobj), np.asarray(original.dataobj))

    manifest = {entry["image_id"]: entry for entry in json.loads((unpacked / "manifest.json").read_text())}
    assert set(manifest) == set(labels.saved)
    for image_id, entry in manifest.items():
        versions = [label["version"] for label in admin.ok("GET", f"/admin/volumes/{image_id}")["labels"]
                    if label["tag"] == "final"]
        assert entry["annotator"] == "pat"
        assert entry["label_version"] == max(versions)

    events = export_events(studies)
    assert len(events) == before + 1
    assert (events[-1].actor, events[-1].detail.get("volumes")) == ("admin", len(labels.saved))


def test_server_log_tail_is_admin_only_and_bounded(server, admin: Api):
    tail = admin("GET", "/logs/", params={"lines": 5, "text": "true"})
    assert tail.status_code == 200 and 0 < len(tail.text.splitlines()) <= 5
    assert "lines" in admin.refused("GET", "/logs/", 422, params={"lines": str(10**30)})
    assert "refresh" in admin.refused("GET", "/logs/", 422, params={"refresh": -1})
    annotator = new_user(server, admin, "log-reader")
    assert annotator("GET", "/logs/").status_code == 403
