"""``/ui``: the dashboard, server-rendered (docs/design.md, "The dashboard"). Pages log in with the database users;
admins see the campaign, everyone else their own work."""

from fastapi import APIRouter

from app.api.routes.ui import actions, pages, volumes

router = APIRouter(prefix="/ui", include_in_schema=False)
for module in (pages, actions, volumes):
    router.include_router(module.router)
