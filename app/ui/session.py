"""The dashboard's login: a signed session token in an HttpOnly, SameSite=Strict cookie, and CSRF tokens derived from
it (docs/design.md, "The dashboard").

The session token is an access token of :class:`app.security.Authenticator` issued for the audience ``ui``: signed
with the server's key (a changed byte fails the signature), expiring, refused for a user disabled since, and never
accepted as a bearer token (nor a bearer token as a session). A form's CSRF token is an HMAC of the session token, so
a page of another site, which cannot read the cookie, cannot forge it; before login a random value in a cookie of
its own is repeated in the login form (double submit).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.security import Authenticator, InvalidToken, role_of

SESSION_COOKIE = "slpt_session"
LOGIN_COOKIE = "slpt_login"  # the login form's double-submit CSRF value
AUDIENCE = "ui"


class SessionError(Exception):
    """No valid session: missing, tampered with, expired, or its user disabled."""


@dataclass(frozen=True)
class UiUser:
    username: str
    role: str
    token: str  # the session token itself: the CSRF tokens of its forms derive from it

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def open_session(authenticator: Authenticator, username: str, role: str, minutes: float,
                 now: datetime | None = None) -> str:
    return authenticator.issue(username, role, now=now, lifetime=timedelta(minutes=minutes), audience=AUDIENCE).access_token


def read_session(authenticator: Authenticator, token: str | None) -> UiUser:
    if not token:
        raise SessionError("please log in")
    try:
        user = authenticator.user(token, audience=AUDIENCE)
    except InvalidToken as error:
        message = "your session has expired" if "expired" in str(error) else "your session is not valid"
        raise SessionError(f"{message}: please log in again") from None
    return UiUser(user.username, role_of(user), token)


def csrf_token(authenticator: Authenticator, session_token: str) -> str:
    return authenticator.sign(f"csrf:{session_token}")


def csrf_matches(expected: str | None, submitted: str | None) -> bool:
    return bool(expected) and bool(submitted) and hmac.compare_digest(expected, submitted)


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)
