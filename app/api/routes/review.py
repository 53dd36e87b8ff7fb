"""``/review``: approve a final label, send it back with a comment, see its review history, adjudicate a double-read
volume (reviewers and admins; docs/design.md, "Review, double reading and agreement").

Who reviews is the logged-in user, or with auth off the ``client_id`` and address, as for Next Sample. Reviewing
one's own label is refused (403) unless one is an admin; a review of a version that is no longer the newest is stale
(409, with the newest version).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from monailabel.endpoints.user.auth import User

from app.agreement import adjudicate
from app.api.deps import AppDep, ReviewerUser, SessionDep, annotator_key, is_admin
from app.api.schemas import AdjudicationIn, ReviewIn, ReviewOut, ReviewState
from app.main import SLPTApp
from db.engine import write_session
from db.images import require_image
from db.reviews import APPROVED, CHANGES_REQUESTED, review_history, review_label
from db.labels import latest_label

router = APIRouter(prefix="/review", tags=["Review"])


@router.get("/{image}", response_model=ReviewState, summary="A volume's final label: review state and history")
def review_state(image: str, user: ReviewerUser, session: SessionDep) -> ReviewState:
    volume = require_image(session, image)  # unknown: 404
    label = latest_label(session, image, "final")
    return ReviewState(
        image=image, readers=volume.readers, version=label.version if label else None,
        annotator=label.annotator if label else None, review_status=label.review_status if label else None,
        history=[ReviewOut.model_validate(row) for row in review_history(session, image)],
    )


@router.post("/{image}/approve", response_model=ReviewOut, summary="Approve the newest final label (it may train)")
def approve(image: str, body: ReviewIn, request: Request, user: ReviewerUser, app: AppDep) -> ReviewOut:
    return _review(app, request, user, image, body, APPROVED)


@router.post("/{image}/send-back", response_model=ReviewOut,
             summary="Send the newest final label back to its annotator with a comment (changes requested)")
def send_back(image: str, body: ReviewIn, request: Request, user: ReviewerUser, app: AppDep) -> ReviewOut:
    if not (body.comment or "").strip():
        raise HTTPException(400, "say what to change: a comment is required to send a label back")
    return _review(app, request, user, image, body, CHANGES_REQUESTED)


@router.post("/{image}/adjudicate", response_model=ReviewOut,
             summary="Make the label that trains from a double-read volume's readers' labels (pick, majority, STAPLE)")
def adjudicate_volume(image: str, body: AdjudicationIn, request: Request, user: ReviewerUser, app: AppDep) -> ReviewOut:
    if body.method == "pick" and not body.reader:
        raise HTTPException(400, "method 'pick' needs the reader whose label to pick")
    actor = annotator_key(request, user, None)
    adjudicate(app.datastore(), image, body.method, actor, reader=body.reader, comment=body.comment)
    app.agreement.request()  # each reader against the adjudication
    with app.datastore().sessions() as session:
        return ReviewOut.model_validate(review_history(session, image)[-1])  # its approval


def _review(app: SLPTApp, request: Request, user: User, image: str, body: ReviewIn, to_status: str) -> ReviewOut:
    actor = annotator_key(request, user, body.client_id)
    datastore = app.datastore()
    with write_session(datastore.sessions) as session:
        row = review_label(session, image, body.version, to_status, actor, comment=body.comment,
                           may_review_own=is_admin(user), lease=datastore.lease, now=datastore.clock())
        return ReviewOut.model_validate(row)
