"""The dashboard in a real browser (Debian's Chromium driven by Playwright): log in, read progress, train and watch
the job finish through the page's own polling, start a round, open a volume; and the refusals a person meets."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx

import pytest

from tests.app.conftest import start_server, submit_ground_truth
from tests.app.ui_helpers import ADMIN, ADMIN_PASSWORD

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TRAINING_LABELS = ["case_0000", "case_0001", "case_0002"]
#: Set to a folder (docs/ui) to keep a screenshot of each page there.
SCREENSHOTS = os.environ.get("SLPT_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def server(served_cohort: Path, backbone_file: Path, tmp_path_factory):
    conf = {"backbone": str(backbone_file), "admin_password": ADMIN_PASSWORD, "train_steps": "2", "roi_size": "16",
            "round_size": "4", "quality_interval_s": "1"}
    with start_server(served_cohort, tmp_path_factory.mktemp("logs"), **conf) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def shoot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/ui/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form.login button[type=submit]")


def test_an_admin_runs_the_campaign_in_the_browser(server, browser, served_cohort: Path):
    base = server.url
    submit_ground_truth(server, served_cohort, TRAINING_LABELS)
    page = browser.new_page(viewport={"width": 1200, "height": 900})

    # A wrong password is refused on the page; the right one opens the campaign.
    log_in(page, base, ADMIN, "wrong-password")
    assert "wrong user name or password" in page.inner_text("p.problem")
    shoot(page, "login")
    log_in(page, base, ADMIN, ADMIN_PASSWORD)
    page.wait_for_selector("h1:text('Campaign')")
    assert page.inner_text("td[data-status=total]") == "24"
    assert page.inner_text("td[data-status=labeled]") == str(len(TRAINING_LABELS))

    # Train, and watch the job finish through the page's own polling (no reload).
    polls = []
    page.on("request", lambda request: polls.append(request.url) if request.url.endswith("/ui/jobs.json") else None)
    page.click("#jobs button[value=train]")
    assert "training started" in page.inner_text("p.notice")
    page.wait_for_selector("#job-table tr[data-job] >> text=train")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#job-table tr[data-job]')].some("
        "r => r.children[1].textContent === 'train' && r.querySelector('.state').textContent === 'done')",
        timeout=400_000,
    )
    assert polls, "the job table was not refreshed by its script"

    # An annotator labels a volume the new model pre-segmented: the quality job measures it, the page shows it.
    claimed = httpx.post(f"{base}/activelearning/random", json={"client_id": "carol"}, timeout=60).json()
    submit_ground_truth(server, served_cohort, [claimed["id"]])
    deadline = time.monotonic() + 300
    while True:  # the measurement is background work: reload until the page shows it
        page.goto(f"{base}/ui/")
        if page.locator("table.quality td", has_text="v0001").count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(2000)
    assert page.inner_text("table.quality tr:nth-child(2) td:nth-child(2)") == "1"
    assert "too few points" in page.inner_text("#advice")

    # Start a round and read its ranked volumes.
    page.goto(f"{base}/ui/")
    page.select_option("#round select[name=strategy]", "random")
    page.fill("#round input[name=budget]", "3")
    page.click("#round button[type=submit]")
    assert "started (random, 3 volumes)" in page.inner_text("p.notice")
    assert page.locator("table.round tr").count() == 1 + 3
    shoot(page, "dashboard")

    # Open a volume from the round: its picture of slices is rendered by the server.
    page.click("table.round tr:nth-child(2) a")
    page.wait_for_selector("h1:text('Volume')")
    page.wait_for_function("() => document.getElementById('slices').complete && "
                           "document.getElementById('slices').naturalWidth > 0", timeout=120_000)
    shoot(page, "volume")

    # A form whose CSRF token was removed is refused, and says why.
    page.goto(f"{base}/ui/")
    page.evaluate("() => document.querySelector('#round input[name=csrf]').remove()")
    page.fill("#round input[name=budget]", "1")
    page.click("#round button[type=submit]")
    assert "CSRF" in page.inner_text("p.problem")

    # An annotator made on the page sees their own page and is refused the admin's.
    page.goto(f"{base}/ui/")
    page.fill("#create-user input[name=username]", "annie")
    page.fill("#create-user input[name=password]", "annie-password-1")
    page.click("#create-user button[type=submit]")
    assert "user annie created" in page.inner_text("p.notice")
    page.click("header button[type=submit]")  # log out
    page.wait_for_selector("form.login")
    log_in(page, base, "annie", "annie-password-1")
    page.wait_for_selector("h1:text('My work')")
    shoot(page, "annotator")
    answer = page.goto(f"{base}/ui/volumes/case_0001")
    assert answer.status == 403 and "not an admin" in page.inner_text("p.problem")
    assert page.goto(f"{base}/ui/no-such-page").status == 404

