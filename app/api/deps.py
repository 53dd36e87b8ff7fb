"""FastAPI dependencies shared by our routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from app.main import SLPTApp

DEFAULT_ANNOTATOR = "user-xyz"  # what the Slicer plugin sends as client id unless the annotator changes it


def get_app() -> SLPTApp:
    return app_instance()


AppDep = Annotated[SLPTApp, Depends(get_app)]
AnnotatorUser = Annotated[User, Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))]
AnyUser = Annotated[User, Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))]


def annotator_key(request: Request, user: User, client_id: str | None) -> str:
    """Who holds a claim or saves a label: the one place an annotator is resolved (strategies and the datastore
    read the result from the request's ``annotator``).

    With auth on, the logged-in user. With auth off, the client id *and* the caller's address: the Slicer plugin
    sends ``client_id="user-xyz"`` unless changed, and two annotators who keep that default must not release each
    other's volumes.
    """
    if settings.MONAI_LABEL_AUTH_ENABLE:
        return user.username
    host = request.client.host if request.client else "unknown"
    return f"{client_id or DEFAULT_ANNOTATOR}@{host}"
