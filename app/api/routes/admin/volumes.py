"""``GET /admin/volumes``: the volume list (filters, sort, pages) and one volume's whole history."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from app.api.deps import AdminUser, AppDep, SessionDep, audit_action
from app.api.schemas import (
    AssignmentOut, AuditOut, LabelOut, Offset, RowIdQuery, ScanOut, Score, ScoreOut, VolumeHistory, VolumeOut, VolumePage,
    VolumeStatus,
)
from db.audit import audit_events
from db.engine import write_session
from db.ingestion import DuplicateImageError
from db.images import require_image
from db.labels import labels_for
from db.model_versions import latest_model_version
from db.overview import VolumeFilter, assignments_of_image, list_volumes, scores_of_image

router = APIRouter(prefix="/volumes", tags=["Admin: volumes"])
MAX_PAGE = 500


@router.get("", response_model=VolumePage, summary="Volumes, filtered and sorted, one page")
def volumes(
    user: AdminUser,
    app: AppDep,
    session: SessionDep,
    status: VolumeStatus | None = None,
    annotator: Annotated[str | None, Query(max_length=255)] = None,
    round_id: RowIdQuery = None,
    min_score: Score = None,
    max_score: Score = None,
    sort: Literal["id", "ingested", "-ingested", "score", "-score"] = "id",
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> VolumePage:
    filters = VolumeFilter(status, annotator, round_id, min_score, max_score)
    version = latest_model_version(session)
    total, rows = list_volumes(session, filters, model_version=version.id if version else None, sort=sort,
                               offset=offset, limit=limit, now=app.datastore().clock())
    if offset and offset >= total:
        raise HTTPException(404, f"offset {offset} is past the last of {total} matching volumes")
    return VolumePage(total=total, offset=offset, limit=limit, items=[VolumeOut(**vars(r)) for r in rows])


@router.post("/scan", response_model=ScanOut, summary="Register volume files added to the studies folder since the "
             "last scan; a few are read at once, more by a background job (202)",
             responses={202: {"model": ScanOut, "description": "A background job reads the new volumes"},
                        409: {"description": "Two files have the same image id (nothing registered)"}})
def scan(user: AdminUser, app: AppDep, request: Request, response: Response) -> ScanOut:
    try:
        outcome = app.ingestion.scan()
    except DuplicateImageError as error:
        raise HTTPException(409, str(error)) from None
    found, facts = outcome.registered, outcome.facts
    with write_session(app.datastore().sessions) as session:
        audit_action(session, user, request, "volumes_scanned", registered=found.registered, job=outcome.job)
    if outcome.job is not None:
        response.status_code = 202
    return ScanOut(
        found=found.found, registered=found.registered, known=found.known, moved=found.moved,
        skipped_count=found.skipped_count, skipped=found.skipped, read=facts.read if facts else 0,
        unreadable_count=facts.unreadable_count if facts else 0, unreadable=facts.unreadable if facts else [],
        pending=outcome.pending, job=outcome.job,
    )


@router.get("/{image_id}", response_model=VolumeHistory, summary="One volume: leases, labels, scores, audit trail")
def volume_history(image_id: str, user: AdminUser, app: AppDep, session: SessionDep) -> VolumeHistory:
    require_image(session, image_id)
    version = latest_model_version(session)
    _, rows = list_volumes(session, VolumeFilter(), model_version=version.id if version else None, limit=1,
                           only=image_id, now=app.datastore().clock())
    return VolumeHistory(
        volume=VolumeOut(**vars(rows[0])),
        assignments=[AssignmentOut.model_validate(a) for a in assignments_of_image(session, image_id)],
        labels=[LabelOut.model_validate(label) for label in labels_for(session, image_id)],
        scores=[ScoreOut.model_validate(s) for s in scores_of_image(session, image_id)],
        audit=[AuditOut.model_validate(e) for e in audit_events(session, image_id=image_id, limit=200)],
    )


@router.post("/{image_id}/restore", response_model=VolumeOut, summary="Bring an archived volume back into the campaign")
def restore(image_id: str, user: AdminUser, app: AppDep, request: Request) -> VolumeOut:
    app.datastore().restore_image(image_id, actor=user.username)  # unknown: 404; not archived: 400
    with app.datastore().sessions() as session:
        _, rows = list_volumes(session, VolumeFilter(), model_version=None, limit=1, only=image_id,
                               now=app.datastore().clock())
    return VolumeOut(**vars(rows[0]))


@router.post("/{image_id}/labels/{tag}/restore", response_model=list[LabelOut],
             summary="Bring back a volume's archived label versions with a tag")
def restore_label(image_id: str, tag: str, user: AdminUser, app: AppDep) -> list[LabelOut]:
    app.datastore().restore_label(image_id, tag, actor=user.username)  # nothing archived: 404
    with app.datastore().sessions() as session:
        return [LabelOut.model_validate(label) for label in labels_for(session, image_id) if label.tag == tag]
