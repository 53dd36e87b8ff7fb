"""Who is calling: database users with passwords and API tokens, signed short-lived access tokens, roles.

With ``auth`` on (``slpt serve --auth`` / ``SLPT_AUTH=1``) a request carries ``Authorization: Bearer <token>``: an
access token from ``POST /auth/token`` (a JWT signed with HS256: checking it needs no database query) or an API
token (``slpt_…``, looked up by its hash). Disabled users are refused at once, and an access token carries the role its
user has now, not the one it was issued with (a demoted admin loses admin rights at once): disabled names and roles are
kept in memory, updated when this process changes a user and re-read from the database every few seconds for the other
replicas. No key is fetched over HTTP inside a request (stock MONAI Label's Keycloak path does, and a server calling
itself can deadlock).

Stock MONAI Label's routes take their user from ``monailabel.endpoints.user.auth.get_current_user``; the ASGI app
overrides that dependency with :func:`current_user`, so every stock route's role check (``RBAC``) sees our users.
With ``auth`` off and Keycloak configured the stock path is used unchanged; with both off every caller is the stock
all-roles default user (the single-user demo on 127.0.0.1).
"""

from __future__ import annotations

import inspect
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt
from fastapi import Depends, HTTPException, Request, params, status
from fastapi.security import OAuth2PasswordBearer
from monailabel.config import settings as ml_settings
from monailabel.endpoints.user.auth import DEFAULT_USER, RBAC, User, from_token, get_current_user
from monailabel.interfaces.utils.app import app_instance
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

bearer = OAuth2PasswordBearer(tokenUrl="auth/token", auto_error=False)


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

    def issue(self, username: str, role: str, now: datetime | None = None) -> AccessToken:
        now = now or datetime.now(timezone.utc)
        claims = {"sub": username, "role": role, "iss": ISSUER, "iat": now, "exp": now + self.token_lifetime}
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return AccessToken(token, "Bearer", int(self.token_lifetime.total_seconds()))

    def user(self, token: str) -> User:
        """The user a token stands for; :class:`InvalidToken` otherwise."""
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
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], issuer=ISSUER,
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


def auth_on() -> bool:
    """Our database accounts are in force (``auth`` setting)."""
    return app_instance().settings.auth


def current_user(request: Request, token: str | None = Depends(bearer)) -> User:
    """The caller (replaces stock MONAI Label's ``get_current_user`` everywhere)."""
    if auth_on():
        if not token:
            raise _unauthorized("not authenticated: send 'Authorization: Bearer <token>' (POST /auth/token gives one)")
        try:
            user = app_instance().authenticator.user(token)
        except InvalidToken as error:
            raise _unauthorized(str(error)) from None
    elif ml_settings.MONAI_LABEL_AUTH_ENABLE:  # Keycloak, as stock MONAI Label does it
        if not token:
            raise _unauthorized("not authenticated")
        try:
            user = from_token(token)
        except jwt.InvalidTokenError as error:
            raise _unauthorized(f"invalid token: {error}") from None
    else:
        user = DEFAULT_USER
    request.state.user = user
    return user


def adopt_stock_routes() -> None:
    """Make stock MONAI Label's role checks (``RBAC``) take their user from :func:`current_user`.

    ``RBAC.__call__`` declares ``Security(get_current_user)``; its declaration is re-pointed here, once, before the
    first request builds the routes' dependency trees. (``app.dependency_overrides`` would do the same, but with any
    override registered FastAPI rebuilds every sub-dependency's tree on every request: ~8 % of the server's CPU
    under the annotator cycle.)
    """
    for parameter in inspect.signature(RBAC.__call__).parameters.values():
        declared = parameter.default
        if isinstance(declared, params.Depends) and declared.dependency is get_current_user:
            object.__setattr__(declared, "dependency", current_user)  # a frozen dataclass, changed in place


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def caller_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
