"""``/auth``: what the 3D Slicer MONAI Label plugin calls to log in, answered from our users table.

The plugin calls ``GET /auth/`` (is auth on?), posts ``/auth/token`` as a form (``username``, ``password``,
``grant_type=password``), sends ``Authorization: <token_type> <access_token>`` and checks ``GET /auth/token/valid``
before requests, logging in again with the stored password when that fails. With auth off and Keycloak configured,
stock MONAI Label's Keycloak login answers instead.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordRequestForm
from monailabel.config import settings as ml_settings
import requests
from monailabel.endpoints.user.auth import token_uri

from app.api.deps import AppDep, CurrentUser
from app.api.schemas import AuthInfo, Token
from app.api.security import caller_address
from app.login_guard import LoginFailed, LoginRefused

router = APIRouter(prefix="/auth", tags=["Auth"])


@router.get("/", response_model=AuthInfo, summary="Is authentication on?")
def auth_enabled(app: AppDep) -> AuthInfo:
    return AuthInfo(
        enabled=app.settings.auth or ml_settings.MONAI_LABEL_AUTH_ENABLE,
        client_id=ml_settings.MONAI_LABEL_AUTH_CLIENT_ID,
        realm=ml_settings.MONAI_LABEL_AUTH_REALM_URI,
    )


@router.post("/token", response_model=Token, summary="Log in: user name and password for an access token",
             responses={401: {"description": "Wrong user name or password"},
                        429: {"description": "Too many attempts, or the user name or address is locked (Retry-After)"}})
def access_token(
    app: AppDep, request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Any:
    if not app.settings.auth:
        if ml_settings.MONAI_LABEL_AUTH_ENABLE:
            return requests.post(  # Keycloak's password grant, as stock MONAI Label does it
                url=token_uri(), timeout=30,
                data={"client_id": ml_settings.MONAI_LABEL_AUTH_CLIENT_ID, "username": form.username,
                      "password": form.password, "grant_type": "password"},
            ).json()
        raise HTTPException(400, "authentication is off on this server: no login is needed")
    try:
        role = app.login_guard.attempt(form.username, form.password, caller_address(request))
    except LoginRefused as refusal:  # locked or too fast: refused before any password is checked
        raise HTTPException(429, str(refusal), headers={"Retry-After": str(refusal.retry_after)}) from None
    except LoginFailed as failure:
        raise HTTPException(401, str(failure), headers={"WWW-Authenticate": "Bearer"}) from None
    token = app.authenticator.issue(form.username, role)
    return Token(access_token=token.access_token, token_type=token.token_type, expires_in=token.expires_in)


@router.get("/token/valid", summary="Is this token valid? (the caller, if so)")
def valid_token(user: CurrentUser) -> dict[str, Any]:
    return user.model_dump()
