"""``GET /admin/quality``: prospective quality per model version and per annotator, and when to stop
(docs/design.md, "Prospective quality")."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminUser, AppDep, SessionDep
from app.api.schemas import QualityReport
from app.quality import quality_report
from app.selection import round_size

router = APIRouter(tags=["Admin: quality"])


@router.get("/quality", response_model=QualityReport,
            summary="How close each model version's pre-segmentations came to the final labels; stopping advice")
def quality(user: AdminUser, app: AppDep, session: SessionDep) -> QualityReport:
    next_labels = round_size(app.datastore(), app.settings.round_size)
    return QualityReport.model_validate(quality_report(session, next_labels, app.settings.stop_gain))
