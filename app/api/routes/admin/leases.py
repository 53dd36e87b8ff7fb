"""``/admin/leases``: who holds which volume; release one; assign a volume to a named annotator."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request

from app.api.deps import AdminUser, AppDep, SessionDep, audit_action
from app.api.schemas import AssignRequest, LeaseOut
from db.claims import assign_volume, release_volume
from db.engine import write_session
from db.overview import active_assignment_of, active_assignments
from db.users import require_user

router = APIRouter(prefix="/leases", tags=["Admin: leases"])


def lease_out(a) -> LeaseOut:
    return LeaseOut(image_id=a.image_id, annotator=a.annotator, strategy=a.strategy, claimed_at=a.claimed_at,
                    lease_expires_at=a.lease_expires_at)


@router.get("", response_model=list[LeaseOut], summary="Leases in force, oldest first")
def leases(user: AdminUser, app: AppDep, session: SessionDep) -> list[LeaseOut]:
    return [lease_out(a) for a in active_assignments(session, now=app.datastore().clock())]


@router.delete("/{image_id}", response_model=LeaseOut, summary="Release the lease on one volume")
def release(image_id: str, user: AdminUser, app: AppDep, request: Request) -> LeaseOut:
    now = app.datastore().clock()
    with write_session(app.datastore().sessions) as session:
        held = active_assignment_of(session, image_id, now=now)
        holder = release_volume(session, image_id, now=now)  # not leased: 409
        audit_action(session, user, request, "lease_released", image_id, holder=holder)
        return lease_out(held)


@router.post("", response_model=LeaseOut, status_code=201, summary="Assign a volume to a named annotator")
def assign(body: AssignRequest, user: AdminUser, app: AppDep, request: Request) -> LeaseOut:
    hours = body.lease_hours or app.settings.lease_hours
    now = app.datastore().clock()
    with write_session(app.datastore().sessions) as session:
        if app.settings.auth:  # the claim holder is a user name: a typo would block the volume for the whole lease
            if require_user(session, body.annotator).disabled:
                raise HTTPException(409, f"user {body.annotator!r} is disabled")
        assign_volume(session, body.image_id, body.annotator, timedelta(hours=hours), now=now)
        audit_action(session, user, request, "lease_assigned", body.image_id, annotator=body.annotator, hours=hours)
        return lease_out(active_assignment_of(session, body.image_id, now=now))
