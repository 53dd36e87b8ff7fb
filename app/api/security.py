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

import jwt
from fastapi import Depends, HTTPException, Request, params, status
from fastapi.security import OAuth2PasswordBearer
from monailabel.config import settings as ml_settings
from monailabel.endpoints.user.auth import DEFAULT_USER, RBAC, User, from_token, get_current_user
from monailabel.interfaces.utils.app import app_instance

from app.security import InvalidToken

bearer = OAuth2PasswordBearer(tokenUrl="auth/token", auto_error=False)


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
