"""``/admin/double-reading`` and ``/admin/agreement``: which volumes k annotators read, and how much they agree
(docs/design.md, "Review, double reading and agreement")."""

from __future__ import annotations

import random
from typing import Any

from fastapi import APIRouter, HTTPException

from app.agreement import agreement_report
from app.api.deps import AdminUser, AppDep
from app.api.schemas import DoubleReadingIn, DoubleReadingOut
from db.engine import write_session
from db.images import image_ids
from db.reviews import annotator_count, set_readers
from db.rounds import round_image_ids
from db.schema import SelectionRound

router = APIRouter(tags=["Admin: review"])


@router.post("/double-reading", response_model=DoubleReadingOut,
             summary="Mark volumes (given ones, a share of the pool, or a round's) for k different readers")
def double_reading(body: DoubleReadingIn, user: AdminUser, app: AppDep) -> DoubleReadingOut:
    chosen = [body.images is not None, body.fraction is not None, body.round_id is not None]
    if sum(chosen) != 1:
        raise HTTPException(400, "name the volumes one way: 'images', 'fraction' or 'round_id'")
    with write_session(app.datastore().sessions) as session:
        if body.readers > 1 and body.readers > (people := annotator_count(session)):
            raise HTTPException(400, f"{body.readers} readers per volume, but only {people} annotator(s) can read")
        if body.images is not None:
            ids = body.images
        elif body.round_id is not None:
            if session.get(SelectionRound, body.round_id) is None:
                raise HTTPException(404, f"unknown selection round {body.round_id}")
            unlabeled = set(image_ids(session, status="unlabeled"))
            ids = [i for i in round_image_ids(session, body.round_id) if i in unlabeled]
        else:
            pool = image_ids(session, status="unlabeled")
            ids = sorted(random.Random(body.seed).sample(pool, round(len(pool) * body.fraction)))
        marked = set_readers(session, ids, body.readers, user.username)  # audited
    return DoubleReadingOut(readers=body.readers, images=marked)


@router.get("/agreement", summary="Agreement between readers: per volume, per annotator pair, per annotator")
def agreement(user: AdminUser, app: AppDep) -> dict[str, Any]:
    report = agreement_report(app.datastore())
    if report["pending"]:
        app.agreement.request()  # figures still due (a restart, a failed file): computed in the background
    return report
