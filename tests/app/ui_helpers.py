"""Logging in to the dashboard over plain HTTP, for the tests of its refusals."""

from __future__ import annotations

import re

import httpx

ADMIN, ADMIN_PASSWORD = "admin", "admin-password-1"
HIDDEN_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = HIDDEN_CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def logged_in(base_url: str, username: str = ADMIN, password: str = ADMIN_PASSWORD) -> tuple[httpx.Client, str]:
    """A client holding a dashboard session, and the CSRF token of its forms."""
    client = httpx.Client(base_url=base_url, timeout=120)
    form = client.get("/ui/login")
    answer = client.post("/ui/login", data={"username": username, "password": password, "csrf": csrf_of(form.text)})
    assert answer.status_code == 303, answer.text
    home = client.get("/ui/")
    assert home.status_code == 200, home.text
    return client, csrf_of(home.text)
