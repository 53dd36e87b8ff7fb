"""The dashboard's forms over plain HTTP: leases, users and the export do what they say; bad input is refused with a
page that says why and changes nothing (wrong passwords, tampered or expired sessions, missing CSRF tokens,
annotators on admin pages, unknown ids, rounds larger than the pool); what users typed is escaped."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.security import Authenticator
from app.ui.session import SESSION_COOKIE, open_session
from db.engine import create_db_engine, default_db_url, session_factory
from db.schema import Image, SelectionRound, User
from tests.app.conftest import start_server, studies_db, wait_for
from tests.app.ui_helpers import ADMIN, ADMIN_PASSWORD, csrf_of, logged_in

ANNOTATOR, ANNOTATOR_PASSWORD = "ann", "annotator-pass-1"


@pytest.fixture(scope="module")
def server(served_cohort: Path, backbone_file: Path, tmp_path_factory):
    conf = {"backbone": str(backbone_file), "admin_password": ADMIN_PASSWORD, "quality_interval_s": "0"}
    with start_server(served_cohort, tmp_path_factory.mktemp("logs"), **conf) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server):
    client, csrf = logged_in(server.url)
    made = client.post("/ui/users", data={"csrf": csrf, "username": ANNOTATOR, "role": "annotator",
                                          "password": ANNOTATOR_PASSWORD})
    assert made.status_code == 303, made.text
    yield client, csrf
    client.close()


def rounds_count(studies: Path) -> int:
    with studies_db(studies) as session:
        return session.scalar(select(func.count()).select_from(SelectionRound))


def test_no_session_gets_the_login_page(server):
    answer = httpx.get(f"{server.url}/ui/", timeout=60)
    assert answer.status_code == 401 and "please log in" in answer.text and 'type="password"' in answer.text


def test_a_wrong_password_is_refused_and_sets_no_session(server):
    client = httpx.Client(base_url=server.url, timeout=60)
    form = client.get("/ui/login")
    answer = client.post("/ui/login", data={"username": ADMIN, "password": "not-the-password", "csrf": csrf_of(form.text)})
    assert answer.status_code == 401 and "wrong user name or password" in answer.text
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/ui/").status_code == 401


def test_a_login_without_its_csrf_value_is_refused(server):
    answer = httpx.post(f"{server.url}/ui/login", data={"username": ADMIN, "password": ADMIN_PASSWORD}, timeout=60)
    assert answer.status_code == 403 and "CSRF" in answer.text and SESSION_COOKIE not in answer.cookies


def test_the_session_cookie_is_httponly_and_strict(server):
    client = httpx.Client(base_url=server.url, timeout=60)
    form = client.get("/ui/login")
    answer = client.post("/ui/login", data={"username": ADMIN, "password": ADMIN_PASSWORD, "csrf": csrf_of(form.text)})
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")


def test_a_tampered_cookie_is_refused(server, admin):
    client, _ = admin
    token = client.cookies[SESSION_COOKIE]
    header, claims, signature = token.split(".")
    forged = f"{header}.{claims[:-2]}{'A' if claims[-2] != 'A' else 'B'}{claims[-1]}.{signature}"
    for cookie in (forged, token[:-3] + "abc", "not-a-token"):
        answer = httpx.get(f"{server.url}/ui/", cookies={SESSION_COOKIE: cookie}, timeout=60)
        assert answer.status_code == 401 and "not valid" in answer.text


def test_an_expired_session_is_refused(server, served_cohort: Path):
    engine = create_db_engine(default_db_url(served_cohort))
    try:
        authenticator = Authenticator(session_factory(engine), "", 30)  # the server's key, kept in its database
        long_ago = datetime.now(timezone.utc) - timedelta(days=2)
        stale = open_session(authenticator, ADMIN, "admin", minutes=60, now=long_ago)
        fresh = open_session(authenticator, ADMIN, "admin", minutes=60)
    finally:
        engine.dispose()
    answer = httpx.get(f"{server.url}/ui/", cookies={SESSION_COOKIE: stale}, timeout=60)
    assert answer.status_code == 401 and "expired" in answer.text
    assert httpx.get(f"{server.url}/ui/", cookies={SESSION_COOKIE: fresh}, timeout=60).status_code == 200


def test_a_session_is_no_bearer_token(server, admin):
    client, _ = admin
    answer = httpx.get(f"{server.url}/ui/", headers={"Authorization": "Bearer " + client.cookies[SESSION_COOKIE]},
                       timeout=60)
    assert answer.status_code == 401


def test_a_form_without_its_csrf_token_changes_nothing(server, admin, served_cohort: Path):
    client, csrf = admin
    before = rounds_count(served_cohort)
    for token in (None, "0" * 64):
        data = {"strategy": "random", "budget": "2"} | ({"csrf": token} if token else {})
        answer = client.post("/ui/rounds", data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert rounds_count(served_cohort) == before
    with studies_db(served_cohort) as session:
        assert session.scalar(select(User).where(User.username == "mallory")) is None
    assert client.post("/ui/users", data={"username": "mallory", "role": "admin", "password": "x" * 10}).status_code == 403


def test_an_annotator_sees_their_own_page_and_is_refused_admin_pages(server, admin):
    client, _ = logged_in(server.url, ANNOTATOR, ANNOTATOR_PASSWORD)
    home = client.get("/ui/")
    assert home.status_code == 200 and "My work, ann" in home.text and "Start a round" not in home.text
    for path in ("/ui/jobs.json", "/ui/volumes/case_0001", "/ui/export"):
        answer = client.get(path)
        assert answer.status_code == 403 and "not an admin" in answer.text
    answer = client.post("/ui/rounds", data={"csrf": csrf_of(home.text), "strategy": "random", "budget": "1"})
    assert answer.status_code == 403


def test_a_round_larger_than_the_pool_starts_nothing(server, admin, served_cohort: Path):
    client, csrf = admin
    before = rounds_count(served_cohort)
    answer = client.post("/ui/rounds", data={"csrf": csrf, "strategy": "random", "budget": "1000"})
    assert answer.status_code == 400 and "larger than the unlabeled pool" in answer.text
    for budget in ("0", "two", "-3"):
        assert client.post("/ui/rounds", data={"csrf": csrf, "strategy": "random", "budget": budget}).status_code == 400
    assert client.post("/ui/rounds", data={"csrf": csrf, "strategy": "nope", "budget": "1"}).status_code == 404
    assert rounds_count(served_cohort) == before


def test_unknown_ids_get_a_404_page(server, admin):
    client, csrf = admin
    for path in ("/ui/volumes/no_such_volume", "/ui/volumes/no_such_volume/slices.png"):
        answer = client.get(path)
        assert answer.status_code == 404 and "unknown volume" in answer.text and "<html" in answer.text
    assert client.post("/ui/users/nobody/password", data={"csrf": csrf, "password": "long-enough-1"}).status_code == 404
    assert client.post("/ui/leases/release", data={"csrf": csrf, "image_id": "nope"}).status_code == 404


def test_what_users_typed_is_escaped(server, admin):
    client, csrf = admin
    script = "<script>alert(1)</script>"
    claimed = httpx.post(f"{server.url}/activelearning/random", json={"client_id": script}, timeout=60)
    assert claimed.status_code == 200, claimed.text
    page = client.get("/ui/").text
    assert script not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    refused = client.post("/ui/users", data={"csrf": csrf, "username": "<b>bold</b>", "role": "annotator",
                                             "password": "long-enough-1"})
    assert refused.status_code == 400 and "<b>bold</b>" not in refused.text and "&lt;b&gt;bold&lt;/b&gt;" in refused.text


def test_leases_are_assigned_and_released_from_the_page(server, admin, served_cohort: Path):
    client, csrf = admin
    with studies_db(served_cohort) as session:  # a free volume: earlier tests' random claims may hold any
        image_id = session.scalar(select(Image.id).where(Image.lease_holder.is_(None), Image.label_status == "unlabeled")
                                  .order_by(Image.id).limit(1))
    answer = client.post("/ui/leases/assign", data={"csrf": csrf, "image_id": image_id, "annotator": ANNOTATOR})
    assert answer.status_code == 303, answer.text
    with studies_db(served_cohort) as session:
        assert session.get(Image, image_id).lease_holder == ANNOTATOR
    assert image_id in client.get("/ui/").text
    again = client.post("/ui/leases/assign", data={"csrf": csrf, "image_id": image_id, "annotator": "someone"})
    assert again.status_code == 409 and "release it first" in again.text
    assert client.post("/ui/leases/release", data={"csrf": csrf, "image_id": image_id}).status_code == 303
    with studies_db(served_cohort) as session:
        assert session.get(Image, image_id).lease_holder is None


def test_users_are_disabled_enabled_and_given_new_passwords(server, admin):
    client, csrf = admin
    assert client.post(f"/ui/users/{ANNOTATOR}/disabled", data={"csrf": csrf, "disabled": "true"}).status_code == 303
    form = httpx.get(f"{server.url}/ui/login", timeout=60)
    refused = httpx.post(f"{server.url}/ui/login", cookies=form.cookies, timeout=60,
                         data={"username": ANNOTATOR, "password": ANNOTATOR_PASSWORD, "csrf": csrf_of(form.text)})
    assert refused.status_code == 401
    assert client.post(f"/ui/users/{ANNOTATOR}/disabled", data={"csrf": csrf, "disabled": "false"}).status_code == 303
    new_password = "a-new-password-2"
    assert client.post(f"/ui/users/{ANNOTATOR}/password", data={"csrf": csrf, "password": new_password}).status_code == 303
    short = client.post(f"/ui/users/{ANNOTATOR}/password", data={"csrf": csrf, "password": "short"})
    assert short.status_code == 400 and "at least 8" in short.text
    logged_in(server.url, ANNOTATOR, new_password)[0].close()
    own = client.post(f"/ui/users/{ADMIN}/disabled", data={"csrf": csrf, "disabled": "true"})
    assert own.status_code == 409


def test_the_export_downloads_the_final_labels(server, admin):
    client, _ = admin
    answer = client.get("/ui/export")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/gzip"
    assert answer.content[:2] == b"\x1f\x8b"


def test_the_campaign_page_shows_review_states(server, admin, served_cohort: Path):
    client, _csrf = admin
    before = client.get("/ui/")
    assert before.status_code == 200 and 'id="review"' in before.text
    submitted = int(before.text.split('data-review="submitted">')[1].split("<")[0])
    with studies_db(served_cohort) as session:  # a free volume: earlier tests' random claims may hold any
        image_id = session.scalar(select(Image.id).where(Image.lease_holder.is_(None), Image.label_status == "unlabeled")
                                  .order_by(Image.id.desc()).limit(1))
    payload = (served_cohort / "labelsTr" / f"{image_id}.nii.gz").read_bytes()
    saved = httpx.put(f"{server.url}/datastore/label", params={"image": image_id},
                      files={"label": ("l.nii.gz", payload)}, timeout=60)
    assert saved.status_code == 200, saved.text
    after = client.get("/ui/").text
    assert int(after.split('data-review="submitted">')[1].split("<")[0]) == submitted + 1
    assert 'data-review="double_read"' in after


def test_the_round_table_says_why_each_volume_was_picked(server, admin, served_cohort: Path):
    client, csrf = admin

    def started():  # refused (409) until the start-up embedding job has embedded the pool
        answer = client.post("/ui/rounds", data={"csrf": csrf, "strategy": "tesla", "budget": "2"},
                             follow_redirects=True)
        return answer if answer.status_code == 200 else None

    answer = wait_for(started, 300, "a TESLA round", server)
    # Before any model TESLA ranks by diversity: each row names the cluster it stands for and how many it stands for.
    assert answer.text.count("cluster 1: stands for") == 1 and answer.text.count("cluster 2: stands for") == 1
