"""The dashboard's web layer below its routes: templates (Jinja2, autoescaped), page rendering with the session's
CSRF token, and refusals as HTML pages (docs/design.md, "The dashboard")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from monailabel.interfaces.utils.app import app_instance

from app.ui.session import LOGIN_COOKIE, UiUser, csrf_token, new_login_nonce

UI_ROOT = "/ui"
UI_FILES = Path(__file__).resolve().parents[1] / "ui"

templates = Environment(loader=FileSystemLoader(UI_FILES / "templates"), autoescape=select_autoescape(["html"]))


def _estimate(value: dict[str, Any] | None) -> str:
    if not value or value.get("mean") is None:
        return "–"
    if value.get("low") is None:
        return f"{value['mean']:.3f}"
    return f"{value['mean']:.3f} ({value['low']:.3f}–{value['high']:.3f})"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


templates.filters["estimate"] = _estimate
templates.filters["number"] = _number


class UiError(Exception):
    """A refusal shown as a page: ``status`` and a message for people."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class UiLoginRequired(UiError):
    def __init__(self, message: str):
        super().__init__(401, message)


HEADINGS = {400: "Not done", 401: "Please log in", 403: "Not allowed", 404: "Not found", 409: "Not now"}


def render(name: str, user: UiUser | None = None, status: int = 200, **context: Any) -> HTMLResponse:
    csrf = csrf_token(app_instance().authenticator, user.token) if user else ""
    html = templates.get_template(name).render(root=UI_ROOT, user=user, csrf=csrf, **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def login_page(status: int = 200, problem: str | None = None, username: str | None = None) -> HTMLResponse:
    """The login form, with a fresh double-submit CSRF value in its own cookie."""
    nonce = new_login_nonce()
    page = render("login.html", status=status, problem=problem, login_csrf=nonce, username=username)
    page.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path=UI_ROOT)
    return page


async def ui_error_handler(request: Request, error: UiError) -> HTMLResponse:
    if isinstance(error, UiLoginRequired):
        return login_page(401, error.message)
    user = getattr(request.state, "ui_user", None)
    return render("error.html", user=user, status=error.status, heading=HEADINGS.get(error.status, "Refused"),
                  message=error.message)
