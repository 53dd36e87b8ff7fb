"""``/admin``: running a labeling campaign over HTTP (the admin role only; every change is audited)."""

from fastapi import APIRouter

from app.api.routes.admin import accounts, export, jobs, leases, progress, quality, reading, rounds, volumes

router = APIRouter(prefix="/admin")
for module in (progress, quality, volumes, leases, rounds, jobs, export, accounts, reading):
    router.include_router(module.router)
