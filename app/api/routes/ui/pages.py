"""The dashboard's pages: login, logout, the campaign (admins) or one's own work (everyone else), job progress."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from app.api.deps import AppDep, SessionDep, UiAdmin, UiFormUser, UiSessionUser
from app.api.security import caller_address
from app.api.ui import UI_ROOT, login_page, render
from app.login_guard import LoginFailed, LoginRefused
from app.quality import quality_report
from app.selection import round_size
from app.stopping import saturating
from app.ui.charts import bar_chart, curve_chart
from app.ui.session import LOGIN_COOKIE, SESSION_COOKIE, SessionError, csrf_matches, open_session, read_session
from db.jobs import list_jobs
from db.overview import (
    active_assignments, labels_of_annotator, labels_per_day, list_rounds, round_items, status_totals,
    totals_by_annotator, totals_by_group,
)
from db.reviews import review_totals
from db.schema import Image
from db.scores import load_scores
from db.users import list_users
from strategies import STRATEGIES

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, app: AppDep) -> HTMLResponse:
    try:
        read_session(app.authenticator, request.cookies.get(SESSION_COOKIE))
        return RedirectResponse(f"{UI_ROOT}/", status_code=303)
    except SessionError:
        return login_page()


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, app: AppDep, username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
          csrf: Annotated[str, Form()] = "") -> HTMLResponse:
    if not csrf_matches(request.cookies.get(LOGIN_COOKIE), csrf):
        return login_page(403, "the login form's CSRF token is missing or wrong: try again")
    try:
        role = app.login_guard.attempt(username, password, caller_address(request), via="ui")
    except LoginRefused as refusal:
        return login_page(429, str(refusal), username=username)
    except LoginFailed:
        return login_page(401, "wrong user name or password", username=username)
    page = RedirectResponse(f"{UI_ROOT}/", status_code=303)
    page.set_cookie(SESSION_COOKIE, open_session(app.authenticator, username, role, app.settings.ui_session_minutes),
                    httponly=True, samesite="strict", secure=request.url.scheme == "https", path=UI_ROOT,
                    max_age=int(app.settings.ui_session_minutes * 60))
    page.delete_cookie(LOGIN_COOKIE, path=UI_ROOT)
    return page


@router.post("/logout")
def logout(user: UiFormUser) -> RedirectResponse:
    page = RedirectResponse(f"{UI_ROOT}/login", status_code=303)
    page.delete_cookie(SESSION_COOKIE, path=UI_ROOT)
    return page


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: UiSessionUser, app: AppDep, session: SessionDep) -> HTMLResponse:
    notice, problem = request.query_params.get("notice"), request.query_params.get("problem")
    next_labels = round_size(app.datastore(), app.settings.round_size)
    if not user.is_admin:
        mine = totals_by_annotator(session, app.datastore().clock()).get(
            user.username, {"labeled": 0, "leased": 0, "skipped": 0})
        return render("annotator.html", user=user, mine=mine, labels=labels_of_annotator(session, user.username, 20),
                      quality=quality_report(session, next_labels, app.settings.stop_gain, annotator=user.username),
                      notice=notice, problem=problem)
    return render("dashboard.html", user=user, notice=notice, problem=problem,
                  **campaign(app, session, next_labels))


def campaign(app, session, next_labels: int) -> dict[str, Any]:
    """What the admin's page shows."""
    now = app.datastore().clock()
    totals = status_totals(session, now)
    quality = quality_report(session, next_labels, app.settings.stop_gain)
    rounds = list_rounds(session, limit=1)
    current = rounds[0] if rounds else None
    return {
        "totals": totals, "by_annotator": totals_by_annotator(session, now), "by_group": totals_by_group(session, now),
        "quality": quality, "charts": charts(totals, labels_per_day(session), quality),
        "current_round": current, "items": ranked_items(session, current, now) if current else [],
        "strategies": list(STRATEGIES), "default_budget": next_labels,
        "jobs": list_jobs(session, limit=10), "leases": active_assignments(session, now=now),
        "users": list_users(session), "review": review_totals(session),
    }


def ranked_items(session, selection, now) -> list[dict[str, Any]]:
    """A round's volumes in rank order with the score that ranked them (none for a round ranked by diversity) and
    why each was picked (TESLA's cluster and its size), as the round stored it."""
    ranked_by = selection.config.get("ranked_by")
    scores = load_scores(session, ranked_by, selection.model_version) if selection.model_version and ranked_by else {}
    items = round_items(session, selection.id)
    images = {i.id: i for i in session.query(Image).filter(Image.id.in_([item.image_id for item in items]))}
    return [{"rank": item.rank, "image_id": item.image_id, "score": scores.get(item.image_id),
             "group": images[item.image_id].grp, "status": images[item.image_id].label_status,
             "reason": item.reason or {}} for item in items]


def charts(totals: dict[str, int], per_day: dict[str, int], quality: dict[str, Any]) -> dict[str, Any]:
    points = [(p["labels"], p["tumour_dice"], quality["versions"][p["model_version"]]["tumour_dice"]["low"],
               quality["versions"][p["model_version"]]["tumour_dice"]["high"]) for p in quality["learning_curve"]]
    advice = quality["advice"]
    curve = []
    if advice.get("plateau") is not None and points:  # the fitted curve, on to the next round's labels
        end = max(p[0] for p in points) + advice["next_labels"]
        xs = np.linspace(min(p[0] for p in points), end, 40)
        curve = list(zip(xs.tolist(), saturating(xs, advice["plateau"], advice["scale"], advice["rate"]).tolist()))
    per_version = quality["versions"]
    return {
        "status": bar_chart({k: v for k, v in totals.items() if k != "total"}, "Volumes by status"),
        "per_day": bar_chart(per_day, "Final labels per day"),
        "learning_curve": curve_chart(points, curve, "Tumour Dice of the pre-segmentation against final labels",
                                      "final labels the model was trained on", "tumour Dice"),
        "minutes": bar_chart({v: r["minutes"]["mean"] for v, r in per_version.items()},
                             "Minutes per volume, by model version shown", " min", 1),
        "edits": bar_chart({v: r["edit_fraction"]["mean"] for v, r in per_version.items()},
                           "Share of foreground voxels edited, by model version", "", 2),
    }


@router.get("/jobs.json")
def jobs_json(user: UiAdmin, session: SessionDep) -> JSONResponse:
    """What the job table's polling script redraws."""
    return JSONResponse([{"id": j.id, "kind": j.kind, "state": j.state, "progress": j.progress, "message": j.message}
                         for j in list_jobs(session, limit=10)], headers={"Cache-Control": "no-store"})
