"""Accounts' security below the web layer (as the FastAPI template's ``core/security.py``): signed access tokens, API
tokens, roles and the stock MONAI Label roles each of ours holds. :mod:`app.api.security` turns a request into a user
with these; the app builds one :class:`Authenticator` at start (docs/design.md, "Accounts, login and roles")."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt
from monailabel.config import settings as ml_settings
from monailabel.endpoints.user.auth import User
from sqlalchemy.orm import Session, sessionmaker

from db.engine import write_session
from db.users import (
    TOKEN_PREFIX, api_token_use_due, disabled_usernames, live_api_token, note_api_token_use, server_secret, user_roles,
)

ALGORITHM = "HS256"
ISSUER = "slpt-label"
DISABLED_REFRESH_S = 2.0

#: MONAI Label role names each of our roles holds (stock routes check these).
STOCK_ROLES = {
    "admin": [ml_settings.MONAI_LABEL_AUTH_ROLE_ADMIN, ml_settings.MONAI_LABEL_AUTH_ROLE_REVIEWER,
              ml_settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR, ml_settings.MONAI_LABEL_AUTH_ROLE_USER],
    "reviewer": [ml_settings.MONAI_LABEL_AUTH_ROLE_REVIEWER, ml_settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR,
                 ml_settings.MONAI_LABEL_AUTH_ROLE_USER],
    "annotator": [ml_settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR, ml_settings.MONAI_LABEL_AUTH_ROLE_USER],
}

class InvalidToken(Exception):
    """A token that is malformed, tampered with, expired, revoked or belongs to a disabled user."""


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    token_type: str
    expires_in: int


def stock_user(username: str, role: str) -> User:
    return User(username=username, name=username, roles=STOCK_ROLES[role])


def role_of(user: User) -> str:
    """Our role of a stock user (the highest its stock roles give)."""
    for role in ("admin", "reviewer", "annotator"):
        if STOCK_ROLES[role][0] in user.roles:
            return role
    return "annotator"


class Authenticator:
    """Issues and checks access tokens for one database; thread-safe."""

    def __init__(self, sessions: sessionmaker[Session], secret_key: str, token_minutes: float):
        self.sessions = sessions
        self.token_lifetime = timedelta(minutes=token_minutes)
        self._key = secret_key or self._shared_key()
        self._disabled: set[str] = set()
        self._roles: dict[str, str] = {}
        self._disabled_read_at = float("-inf")
        self._lock = threading.Lock()

    def _shared_key(self) -> str:
        with write_session(self.sessions) as session:
            return server_secret(session, "access_token_key")

    def issue(self, username: str, role: str, now: datetime | None = None, lifetime: timedelta | None = None,
              audience: str | None = None) -> AccessToken:
        """An access token; with ``audience`` a token only that audience accepts (the dashboard's session cookie is
        ``audience="ui"``: it is no bearer token, and no bearer token is a session)."""
        now = now or datetime.now(timezone.utc)
        lifetime = lifetime or self.token_lifetime
        claims = {"sub": username, "role": role, "iss": ISSUER, "iat": now, "exp": now + lifetime}
        if audience:
            claims["aud"] = audience
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return AccessToken(token, "Bearer", int(lifetime.total_seconds()))

    def sign(self, value: str) -> str:
        """An HMAC of ``value`` under the signing key (the dashboard's CSRF tokens)."""
        return hmac.new(self._key.encode(), value.encode(), hashlib.sha256).hexdigest()

    def user(self, token: str, audience: str | None = None) -> User:
        """The user a token stands for; :class:`InvalidToken` otherwise. ``audience``: accept only signed tokens
        issued for it."""
        if audience and (token.startswith(TOKEN_PREFIX) or token.count(".") != 2):
            raise InvalidToken("not a session token")
        if token.startswith(TOKEN_PREFIX) or token.count(".") != 2:  # not a JWT: an API token (ours, or an operator's)
            with self.sessions() as session:
                found = live_api_token(session, token)
                if found is None:
                    raise InvalidToken("unknown, revoked or expired API token, or a disabled user")
                user, row = found
                username, role, token_id, use_due = user.username, user.role, row.id, api_token_use_due(row)
            if use_due:  # a write at most once a minute per token, not one per request
                with write_session(self.sessions) as session:
                    note_api_token_use(session, token_id)
            return stock_user(username, role)
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], issuer=ISSUER, audience=audience,
                                options={"require": ["sub", "role", "exp"]})
        except jwt.InvalidTokenError as error:
            raise InvalidToken(f"invalid access token: {error}") from None
        if claims["role"] not in STOCK_ROLES:
            raise InvalidToken("invalid access token: unknown role")
        if self.is_disabled(claims["sub"]):
            raise InvalidToken(f"user {claims['sub']!r} is disabled")
        # The role the user has now (a user created since the last refresh: the role it was created with).
        return stock_user(claims["sub"], self.current_role(claims["sub"]) or claims["role"])

    def _refresh(self) -> None:
        """Re-read disabled names and roles if they are older than ``DISABLED_REFRESH_S`` (the lock is held)."""
        if time.monotonic() - self._disabled_read_at > DISABLED_REFRESH_S:
            with self.sessions() as session:
                self._disabled = disabled_usernames(session)
                self._roles = user_roles(session)
            self._disabled_read_at = time.monotonic()

    def is_disabled(self, username: str) -> bool:
        with self._lock:
            self._refresh()
            return username in self._disabled

    def current_role(self, username: str) -> str | None:
        with self._lock:
            self._refresh()
            return self._roles.get(username)

    def note_disabled(self, username: str, disabled: bool) -> None:
        """This process changed a user: apply it now rather than at the next refresh."""
        with self._lock:
            (self._disabled.add if disabled else self._disabled.discard)(username)

    def note_role(self, username: str, role: str) -> None:
        """This process changed a user's role: apply it now rather than at the next refresh."""
        with self._lock:
            self._roles[username] = role
