"""Request and response bodies of our REST API (``/auth``, ``/users``, ``/admin``, ``/health``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["admin", "reviewer", "annotator"]
VolumeStatus = Literal["unlabeled", "queued", "leased", "labeled", "skipped", "archived"]
#: Row ids are 32-bit on every backend: a larger number is refused as invalid, not sent to the database.
MAX_ROW_ID = 2**31 - 1
RowIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
RowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]
Offset = Annotated[int, Query(ge=0, le=MAX_ROW_ID)]
Score = Annotated[float | None, Query(allow_inf_nan=False)]
JobKind = Literal["train", "scoring", "embedding", "round"]
JobState = Literal["queued", "running", "done", "failed"]


class ORM(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Message(BaseModel):
    detail: str


class AuthInfo(BaseModel):
    enabled: bool
    client_id: str
    realm: str


class Token(BaseModel):
    access_token: str
    token_type: str
    expires_in: int | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    model_version: str | None
    running_jobs: int
    inference_queue: dict[str, int] = Field(description="Segmentations running and waiting, and the limit")
    auth: bool


class UserOut(ORM):
    username: str
    role: Role
    disabled: bool
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    role: Role
    password: str | None = Field(None, min_length=8, max_length=72)


class UserUpdate(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=72)


class TokenCreate(BaseModel):
    name: str = Field("api", min_length=1, max_length=255)
    expires_in_days: float | None = Field(None, gt=0, le=3650)


class ApiTokenOut(ORM):
    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewApiToken(ApiTokenOut):
    token: str = Field(description="The token itself: shown this once, stored only hashed")


class AssignmentOut(ORM):
    id: int
    image_id: str
    annotator: str
    strategy: str
    round_id: int | None
    claimed_at: datetime
    lease_expires_at: datetime
    closed_at: datetime | None
    state: str


class LabelOut(ORM):
    id: int
    image_id: str
    tag: str
    version: int
    annotator: str | None
    created_at: datetime


class ScoreOut(ORM):
    method: str
    model_version: str
    value: float
    created_at: datetime


class AuditOut(ORM):
    at: datetime
    actor: str
    action: str
    image_id: str | None
    source: str | None
    detail: dict[str, Any]


class MyHistory(BaseModel):
    username: str
    current_lease: str | None
    assignments: list[AssignmentOut]
    labels: list[LabelOut]


class ModelVersionOut(ORM):
    id: str
    kind: str
    created_at: datetime
    metrics: dict[str, Any]
    tunable_params: int | None


class JobOut(ORM):
    id: str
    kind: str
    state: str
    progress: float
    message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    log_tail: list[str] = []


class AnnotatorTotals(BaseModel):
    labeled: int
    leased: int
    skipped: int


class WorkProgress(BaseModel):
    """The newest embedding or scoring target's batches, leased by every replica (docs/design.md, "Work spread over
    replicas")."""

    kind: Literal["embedding", "scoring"]
    target: str = Field(description="The embedding key, or the model version being scored")
    batches: dict[str, int] = Field(description="Batches by state: pending, leased, done, failed")
    volumes: dict[str, int] = Field(description="Volumes in those batches, by the batch's state")
    done: int = Field(description="Volumes whose batch is done")
    total: int = Field(description="Volumes planned for the target")
    complete: bool = Field(description="No batch is pending or leased")

    @classmethod
    def of(cls, totals) -> "WorkProgress":
        return cls(kind=totals.kind, target=totals.target, batches=totals.batches, volumes=totals.volumes,
                   done=totals.done_volumes, total=totals.total_volumes, complete=totals.complete)


class Progress(BaseModel):
    totals: dict[str, int] = Field(description="Volumes by status, and 'total'")
    by_annotator: dict[str, AnnotatorTotals]
    by_group: dict[str, dict[str, int]]
    labels_per_day: dict[str, int]
    model: ModelVersionOut | None
    running_jobs: list[JobOut]
    review: dict[str, int] = Field(
        description="Volumes by the review state of their newest final label; double-read volumes, complete, adjudicated")
    work: list[WorkProgress] = Field(
        default_factory=list, description="Embedding and scoring batches of the newest targets, across every replica")


class VolumeOut(BaseModel):
    id: str
    name: str
    status: VolumeStatus
    group: str | None
    ingested_at: datetime
    lease_holder: str | None
    score: float | None


class VolumePage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[VolumeOut]


class ScanOut(BaseModel):
    found: int = Field(description="Volume files under the images folder")
    registered: int = Field(description="New volumes registered by this scan")
    known: int = Field(description="Volumes registered before")
    moved: int = Field(description="Registered volumes whose file moved (their path was updated)")
    skipped_count: int = Field(description="Files that cannot be served (e.g. a name that is no valid image id)")
    skipped: list[dict[str, str]] = Field(description="The first 100 skipped files: path and reason")
    read: int = Field(description="New volumes whose header and checksum were read within the request")
    unreadable_count: int = Field(description="New files that are no readable volume: archived, never served")
    unreadable: list[dict[str, str]] = Field(description="The first 100 unreadable files: id, path and reason")
    pending: int = Field(description="Volumes whose header the background job still has to read")
    job: str | None = Field(description="The background ingestion job reading them (GET /admin/jobs/{id})")


class VolumeHistory(BaseModel):
    volume: VolumeOut
    assignments: list[AssignmentOut]
    labels: list[LabelOut]
    scores: list[ScoreOut]
    audit: list[AuditOut]


class LeaseOut(BaseModel):
    image_id: str
    annotator: str
    strategy: str
    claimed_at: datetime
    lease_expires_at: datetime


class AssignRequest(BaseModel):
    image_id: str = Field(min_length=1, max_length=255)
    annotator: str = Field(min_length=1, max_length=255)
    lease_hours: float | None = Field(None, gt=0, le=24 * 365)


class RoundCreate(BaseModel):
    strategy: str = Field(min_length=1, max_length=64)
    budget: int = Field(gt=0, le=MAX_ROW_ID, description="Volumes the round ranks; at most the unlabeled pool")
    seed: int = Field(0, ge=0, le=MAX_ROW_ID)


class RoundOut(ORM):
    id: int
    strategy: str
    budget: int
    model_version: str | None
    created_at: datetime
    state: str


class RoundItemOut(ORM):
    image_id: str
    rank: int
    reason: dict[str, Any] | None = None


class RoundDetail(RoundOut):
    items: list[RoundItemOut]


class JobCreate(BaseModel):
    kind: Literal["train", "scoring"]
    model: str = "slpt"
    params: dict[str, Any] = {}


class JobStarted(BaseModel):
    kind: str
    started: bool
    detail: dict[str, Any]


class ReviewIn(BaseModel):
    version: int | None = Field(None, ge=1, description="The label version reviewed; a newer one makes the review stale "
                                "(409). Omitted: the newest")
    comment: str | None = Field(None, description="Why (required when sending a label back)")
    client_id: str | None = Field(None, max_length=255, description="Who reviews, with auth off")


class ReviewOut(ORM):
    image_id: str
    version: int
    from_status: str | None
    to_status: str
    actor: str
    at: datetime
    comment: str | None


class ReviewState(BaseModel):
    image: str
    readers: int
    version: int | None = Field(description="The newest final label version")
    annotator: str | None
    review_status: str | None
    history: list[ReviewOut]


class AdjudicationIn(BaseModel):
    method: Literal["pick", "majority", "staple"]
    reader: str | None = Field(None, max_length=255, description="Whose label to pick (method 'pick')")
    comment: str | None = None


class DoubleReadingIn(BaseModel):
    readers: int = Field(ge=1, le=3, description="Different annotators per volume (1 ends double reading)")
    images: list[str] | None = Field(None, max_length=10000, description="These volumes")
    fraction: float | None = Field(None, gt=0, le=1, description="This share of the unlabeled pool, at random")
    round_id: int | None = Field(None, ge=1, le=MAX_ROW_ID, description="The unlabeled volumes of this round")
    seed: int = 0


class DoubleReadingOut(BaseModel):
    readers: int
    images: list[str]
class Estimate(BaseModel):
    n: int = Field(description="Labels with this figure")
    mean: float | None
    low: float | None = Field(description="Bootstrap 95 % interval of the mean (None below two labels)")
    high: float | None


class QualityGroup(BaseModel):
    labels: int
    liver_dice: Estimate
    tumour_dice: Estimate
    lesion_f1: Estimate
    edit_fraction: Estimate = Field(description="Share of the foreground voxels whose class the annotator changed")
    minutes: Estimate = Field(description="Minutes from claim to submission")
    trained_on: int | None = Field(None, description="Final labels the model version was trained on")


class CurvePoint(BaseModel):
    labels: int
    tumour_dice: float
    model_version: str


class StoppingAdviceOut(BaseModel):
    points: int
    next_labels: int
    threshold: float
    gain: float | None
    low: float | None
    high: float | None
    plateau: float | None = Field(description="The fitted curve: plateau - scale * labels ** -rate")
    scale: float | None
    rate: float | None
    advice: str = Field(description="'keep labelling', 'stop', 'too few points' or 'no fit'")
    sentence: str


class QualityReport(BaseModel):
    versions: dict[str, QualityGroup] = Field(description="Per model version that served the claims")
    annotators: dict[str, QualityGroup]
    learning_curve: list[CurvePoint]
    advice: StoppingAdviceOut
    pending: int = Field(description="Final labels not measured yet")
