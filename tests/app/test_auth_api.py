"""Accounts and login through the real server with auth on: the 3D Slicer login sequence, tokens, roles, audit."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import jwt
import pytest
from monailabel.client import MONAILabelClient
from sqlalchemy import select

from db.engine import create_db_engine, default_db_url, session_factory
from db.schema import AuditEvent
from tests.app.conftest import start_server

SECRET = "test-secret-key-0123456789abcdef-auth"
ADMIN_PASSWORD = "adminpass1"
BOOTSTRAP_TOKEN = "bootstrap-token-for-the-first-admin-0123"
#: Routes a caller without a token may use.
OPEN = {("GET", "/info/"), ("GET", "/health"), ("GET", "/auth/"), ("POST", "/auth/token")}


@pytest.fixture(scope="module")
def studies(tiny_cohort: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("auth") / "studies"
    shutil.copytree(tiny_cohort, root)
    return root


@pytest.fixture(scope="module")
def server(studies: Path, tmp_path_factory):
    with start_server(studies, tmp_path_factory.mktemp("logs"), auth="true", admin_password=ADMIN_PASSWORD,
                      admin_token=BOOTSTRAP_TOKEN, secret_key=SECRET) as proc:
        yield proc


def login(server, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{server.url}/auth/token", timeout=30,
                      data={"username": username, "password": password, "grant_type": "password"})


def bearer(server, username: str, password: str) -> dict[str, str]:
    answer = login(server, username, password)
    assert answer.status_code == 200, answer.text
    token = answer.json()
    return {"Authorization": f"{token['token_type']} {token['access_token']}"}


@pytest.fixture(scope="module")
def admin(server) -> dict[str, str]:
    return bearer(server, "admin", ADMIN_PASSWORD)


def make_user(server, admin, username: str, role: str, password: str = "password123") -> dict[str, str]:
    answer = httpx.post(f"{server.url}/admin/users", headers=admin, timeout=30,
                        json={"username": username, "role": role, "password": password})
    assert answer.status_code == 201, answer.text
    return bearer(server, username, password)


@pytest.fixture(scope="module")
def annotator(server, admin) -> dict[str, str]:
    return make_user(server, admin, "anna", "annotator")


def unlabeled_volume_ids(server, admin) -> list[str]:
    """Volumes with no label yet, newest first (earlier tests' random Next Samples label some)."""
    free = httpx.get(f"{server.url}/admin/volumes", params={"status": "unlabeled", "sort": "-ingested"},
                     headers=admin, timeout=30).json()["items"]
    return [v["id"] for v in free]


def audit_rows(studies: Path, action: str) -> list[AuditEvent]:
    engine = create_db_engine(default_db_url(studies))
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
    finally:
        engine.dispose()


def test_the_stock_slicer_client_logs_in_with_a_database_user_and_works(server, admin):
    make_user(server, admin, "slicer-user", "annotator", "slicerpass1")
    client = MONAILabelClient(server.url, client_id="user-xyz")
    assert client.auth_enabled()
    assert not client.auth_valid_token()  # no token yet: the plugin then logs in
    client.update_auth(client.auth_token("slicer-user", "slicerpass1"))
    assert client.auth_valid_token()
    assert "slpt" in client.info()["models"]
    sample = client.next_sample("random", {})
    assert sample["id"]
    # The claim holder is the logged-in user, not the client-chosen id.
    # (the stock client keeps each request's content headers in its header dict: send only its Authorization)
    auth = {"Authorization": client._headers["Authorization"]}
    mine = httpx.get(f"{server.url}/users/me", headers=auth, timeout=30).json()
    assert mine["username"] == "slicer-user"
    assert mine["current_lease"] == sample["id"]


def test_without_a_token_every_route_but_the_open_ones_answers_401(server):
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    checked = 0
    for path, operations in schema["paths"].items():
        concrete = path.replace("{", "").replace("}", "")  # any value will do for a path parameter
        for method in operations:
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE") and (method.upper(), path) not in OPEN:
                answer = httpx.request(method.upper(), f"{server.url}{concrete}", timeout=30)
                assert answer.status_code == 401, f"{method.upper()} {path}: {answer.status_code} {answer.text[:200]}"
                checked += 1
    assert checked > 40
    for method, path in OPEN - {("POST", "/auth/token")}:
        assert httpx.request(method, f"{server.url}{path}", timeout=30).status_code == 200, path


def test_an_annotator_is_refused_admin_and_stock_destructive_routes_that_an_admin_may_use(server, admin, annotator):
    for method, path in [("GET", "/admin/progress"), ("GET", "/admin/users"), ("GET", "/admin/volumes"),
                         ("DELETE", "/datastore/image?id=case_0000"), ("DELETE", "/datastore/label?id=case_0000&tag=final"),
                         ("PUT", "/datastore/image/info?image=case_0000"), ("DELETE", "/model/slpt"),
                         ("POST", "/train/slpt")]:
        answer = httpx.request(method, f"{server.url}{path}", headers=annotator, timeout=30, json={})
        assert answer.status_code == 403, f"{method} {path}: {answer.status_code} {answer.text[:200]}"
        assert answer.json()["detail"]
    assert httpx.get(f"{server.url}/admin/progress", headers=admin, timeout=30).status_code == 200
    # The annotator keeps what annotators do: next sample and their own history.
    assert httpx.post(f"{server.url}/activelearning/random", headers=annotator, json={}, timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/users/me", headers=annotator, timeout=30).json()["username"] == "anna"


def test_wrong_passwords_and_unknown_users_get_401_and_are_audited(server, studies):
    before = len(audit_rows(studies, "login_failed"))
    for username, password in [("admin", "wrong-password"), ("nobody", "whatever123"), ("admin", "x" * 100)]:
        answer = login(server, username, password)
        assert answer.status_code == 401
        assert "wrong user name or password" in answer.json()["detail"]
    failures = audit_rows(studies, "login_failed")
    assert len(failures) == before + 3
    assert {e.actor for e in failures[-3:]} == {"admin", "nobody"}
    assert all(e.source == "127.0.0.1" for e in failures)


def test_a_successful_login_is_audited_with_who_and_from_where(server, studies):
    before = len(audit_rows(studies, "login"))
    bearer(server, "admin", ADMIN_PASSWORD)
    logins = audit_rows(studies, "login")
    assert len(logins) == before + 1
    assert (logins[-1].actor, logins[-1].source) == ("admin", "127.0.0.1")


def signed(claims: dict, key: str = SECRET) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="HS256")}


@pytest.mark.parametrize("case", ["expired", "tampered", "other key", "no role", "garbage", "revoked api token"])
def test_bad_tokens_get_401_with_a_message(server, admin, case):
    now = datetime.now(timezone.utc)
    good = {"sub": "admin", "role": "admin", "iss": "slpt-label", "iat": now, "exp": now + timedelta(minutes=5)}
    if case == "expired":
        headers = signed(good | {"exp": now - timedelta(seconds=1)})
    elif case == "tampered":
        token = admin["Authorization"].split()[1]
        head, body, signature = token.split(".")
        headers = {"Authorization": f"Bearer {head}.{body}x.{signature}"}
    elif case == "other key":
        headers = signed(good, key="another-key-entirely-0123456789-abcdef")
    elif case == "no role":
        headers = signed({k: v for k, v in good.items() if k != "role"})
    elif case == "garbage":
        headers = {"Authorization": "Bearer not-a-token"}
    else:
        issued = httpx.post(f"{server.url}/admin/users/admin/tokens", headers=admin, json={"name": "t"}, timeout=30)
        token = issued.json()
        assert httpx.get(f"{server.url}/auth/token/valid", timeout=30,
                         headers={"Authorization": f"Bearer {token['token']}"}).status_code == 200
        assert httpx.delete(f"{server.url}/admin/tokens/{token['id']}", headers=admin, timeout=30).status_code == 200
        headers = {"Authorization": f"Bearer {token['token']}"}
    answer = httpx.get(f"{server.url}/auth/token/valid", headers=headers, timeout=30)
    assert answer.status_code == 401
    assert answer.json()["detail"]
    assert signed(good)  # the well-formed token works, so each case fails for its own reason
    assert httpx.get(f"{server.url}/auth/token/valid", headers=signed(good), timeout=30).status_code == 200


def test_a_disabled_users_access_token_stops_working_at_once(server, admin):
    headers = make_user(server, admin, "leaver", "annotator")
    assert httpx.get(f"{server.url}/auth/token/valid", headers=headers, timeout=30).status_code == 200
    changed = httpx.patch(f"{server.url}/admin/users/leaver", headers=admin, json={"disabled": True}, timeout=30)
    assert changed.status_code == 200 and changed.json()["disabled"]
    assert httpx.get(f"{server.url}/auth/token/valid", headers=headers, timeout=30).status_code == 401
    assert login(server, "leaver", "password123").status_code == 401


def test_labels_are_saved_under_the_logged_in_users_name(server, admin, studies, tmp_path):
    headers = make_user(server, admin, "labeller", "annotator")
    claimed = httpx.post(f"{server.url}/activelearning/random", headers=headers, timeout=30,
                         json={"client_id": "pretending-to-be-someone-else"}).json()["id"]
    label = (studies / "labelsTr" / f"{claimed}.nii.gz").read_bytes()
    saved = httpx.put(f"{server.url}/datastore/label", params={"image": claimed}, headers=headers, timeout=60,
                      data={"params": '{"client_id": "pretending-to-be-someone-else"}'},
                      files={"label": ("label.nii.gz", label)})
    assert saved.status_code == 200, saved.text
    history = httpx.get(f"{server.url}/admin/volumes/{claimed}", headers=admin, timeout=30).json()
    assert [label["annotator"] for label in history["labels"]] == ["labeller"]
    assert {a["annotator"] for a in history["assignments"]} == {"labeller"}


def test_the_first_admin_is_bootstrapped_with_a_password_and_a_token_stored_hashed(server, studies):
    answer = httpx.get(f"{server.url}/admin/users/admin/tokens", timeout=30,
                       headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"})
    assert answer.status_code == 200
    assert [t["name"] for t in answer.json()][:1] == ["bootstrap"]
    assert BOOTSTRAP_TOKEN not in (studies / ".slpt" / "slpt.db").read_bytes().decode("latin-1")


def test_unknown_ids_and_methods_on_stock_routes_answer_404_and_change_nothing(server, admin, studies):
    before = sorted(p.name for p in (studies / "imagesTr").iterdir())
    for method, path in [("DELETE", "/datastore/?id=nope"), ("DELETE", "/datastore/label?id=nope&tag=final"),
                         ("POST", "/scoring/nope"), ("PUT", "/model/nope"), ("DELETE", "/datastore/image?id=nope")]:
        answer = httpx.request(method, f"{server.url}{path}", headers=admin, timeout=30)
        assert answer.status_code == 404, f"{method} {path}: {answer.status_code} {answer.text[:200]}"
        assert "nope" in answer.json()["detail"]
    info = httpx.put(f"{server.url}/datastore/image/info", params={"image": "case_0001"}, headers=admin,
                     data={"info": "[1, 2]"}, timeout=30)
    assert info.status_code == 400 and "JSON object" in info.json()["detail"]
    assert sorted(p.name for p in (studies / "imagesTr").iterdir()) == before


def test_deleting_an_image_archives_it_keeps_every_file_and_can_be_undone(server, admin, studies):
    # A volume nobody has labelled yet; the next test takes the last one of that list.
    image_id = unlabeled_volume_ids(server, admin)[0]
    original = studies / "imagesTr" / f"{image_id}.nii.gz"
    content = original.read_bytes()
    total = httpx.get(f"{server.url}/admin/progress", headers=admin, timeout=30).json()["totals"]["total"]
    assert httpx.post(f"{server.url}/admin/leases", headers=admin, timeout=30,
                      json={"image_id": image_id, "annotator": "anna"}).status_code == 201

    for path in ("/datastore/image", "/datastore/"):
        answer = httpx.delete(f"{server.url}{path}", params={"id": image_id}, headers=admin, timeout=30)
        if path == "/datastore/":  # archived already by the first call
            assert answer.status_code == 400 and "archived already" in answer.json()["detail"]
        else:
            assert answer.status_code == 200, answer.text
    assert original.read_bytes() == content  # the user's file is untouched
    history = httpx.get(f"{server.url}/admin/volumes/{image_id}", headers=admin, timeout=30).json()
    assert history["volume"]["status"] == "archived" and history["volume"]["lease_holder"] is None
    assert [a["state"] for a in history["assignments"]] == ["released"]
    assert image_id not in httpx.get(f"{server.url}/datastore/", params={"output": "all"}, headers=admin,
                                     timeout=30).json()["objects"]
    assert httpx.get(f"{server.url}/admin/progress", headers=admin, timeout=30).json()["totals"]["archived"] == 1
    label = (studies / "labelsTr" / f"{image_id}.nii.gz").read_bytes()
    refused = httpx.put(f"{server.url}/datastore/label", params={"image": image_id}, headers=admin, timeout=60,
                        files={"label": ("label.nii.gz", label)})
    assert refused.status_code == 404 and "archived" in refused.json()["detail"]

    restored = httpx.post(f"{server.url}/admin/volumes/{image_id}/restore", headers=admin, timeout=30)
    assert restored.status_code == 200 and restored.json()["status"] != "archived"
    assert httpx.get(f"{server.url}/admin/progress", headers=admin, timeout=30).json()["totals"]["total"] == total
    actions = [e["action"] for e in httpx.get(f"{server.url}/admin/volumes/{image_id}", headers=admin,
                                              timeout=30).json()["audit"]]
    assert {"image_archived", "image_restored", "lease_assigned"} <= set(actions)
    again = httpx.post(f"{server.url}/admin/volumes/{image_id}/restore", headers=admin, timeout=30)
    assert again.status_code == 400 and "not archived" in again.json()["detail"]


def test_deleting_a_label_archives_it_keeps_its_file_and_can_be_undone(server, admin, studies):
    # Not a fixed id: an earlier test's random Next Sample may have labelled any volume.
    image_id = unlabeled_volume_ids(server, admin)[-1]
    payload = (studies / "labelsTr" / f"{image_id}.nii.gz").read_bytes()
    saved = httpx.put(f"{server.url}/datastore/label", params={"image": image_id}, headers=admin, timeout=60,
                      files={"label": ("label.nii.gz", payload)})
    assert saved.status_code == 200, saved.text
    (label,) = httpx.get(f"{server.url}/admin/volumes/{image_id}", headers=admin, timeout=30).json()["labels"]
    files = sorted((studies / "labels").rglob(f"{image_id}.v*"))
    assert len(files) == 1

    answer = httpx.delete(f"{server.url}/datastore/label", params={"id": image_id, "tag": "final"}, headers=admin,
                          timeout=30)
    assert answer.status_code == 200, answer.text
    history = httpx.get(f"{server.url}/admin/volumes/{image_id}", headers=admin, timeout=30).json()
    assert history["labels"] == [] and history["volume"]["status"] != "labeled"
    assert files[0].read_bytes() == payload  # the file stays
    again = httpx.delete(f"{server.url}/datastore/label", params={"id": image_id, "tag": "final"}, headers=admin,
                         timeout=30)
    assert again.status_code == 404

    restored = httpx.post(f"{server.url}/admin/volumes/{image_id}/labels/final/restore", headers=admin, timeout=30)
    assert restored.status_code == 200, restored.text
    assert [(x["version"], x["annotator"]) for x in restored.json()] == [(label["version"], label["annotator"])]
    history = httpx.get(f"{server.url}/admin/volumes/{image_id}", headers=admin, timeout=30).json()
    assert history["volume"]["status"] == "labeled"
    assert {"label_archived", "label_restored"} <= {e["action"] for e in history["audit"]}
