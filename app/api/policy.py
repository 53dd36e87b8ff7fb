"""Which stock MONAI Label routes need more than their own role check.

Stock routes that delete or overwrite data (images, labels, their info, model files) let an annotator do so, or are
admin-only only by their summary; with auth on they need the admin role here. The dependency runs on every stock
route (added where the stock routers are mounted) and looks the matched route up in :data:`ADMIN_ONLY`.
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from monailabel.endpoints.user.auth import User

from app.api.security import auth_on, current_user
from app.security import role_of

ADMIN_ONLY = {
    ("PUT", "/datastore/"),
    ("DELETE", "/datastore/"),
    ("DELETE", "/datastore/image"),
    ("PUT", "/datastore/image/info"),
    ("DELETE", "/datastore/label"),
    ("PUT", "/datastore/label/info"),
    ("PUT", "/model/{model}"),
    ("DELETE", "/model/{model}"),
    ("POST", "/train/"),
    ("DELETE", "/train/"),
    ("POST", "/scoring/"),
    ("POST", "/scoring/{method}"),
    ("DELETE", "/scoring/"),
    ("POST", "/batch/infer/{model}"),
    ("DELETE", "/batch/infer"),
}


def stock_route_policy(request: Request, user: User = Depends(current_user)) -> None:
    route = request.scope.get("route")
    path = getattr(route, "path", "")
    if auth_on() and (request.method, path) in ADMIN_ONLY and role_of(user) != "admin":
        raise HTTPException(403, f"{request.method} {path} needs the admin role")
