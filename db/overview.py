"""The campaign seen from above: each volume's status, totals, per-annotator and per-day figures, filtered lists.

A volume's status is derived, never stored (so it cannot drift): ``labeled`` (a final label exists), ``leased`` (a
live lease), ``queued`` (in a ready selection round), ``skipped`` (an annotator passed on it before), else
``unlabeled``; an admin's archived volume is ``archived``. The first that applies wins, archived first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, select, union
from sqlalchemy.orm import Session

from db.errors import DBError
from db.images import free_of_lease, live_lease
from db.schema import Assignment, Image, Label, RoundItem, Score, SelectionRound, utcnow

VOLUME_STATUSES = ("unlabeled", "queued", "leased", "labeled", "skipped", "archived")
VOLUME_SORTS = ("ingested", "-ingested", "score", "-score", "id")
#: The score the volume list shows and filters on: the prompts' disagreement under the current model.
LIST_SCORE_METHOD = "prompt_uncertainty"


def volume_status(now: datetime) -> ColumnElement[str]:
    """SQL expression: the derived status of an ``images`` row at ``now``."""
    queued = exists().where(
        RoundItem.image_id == Image.id, RoundItem.round_id == SelectionRound.id, SelectionRound.state == "ready"
    )
    skipped = exists().where(Assignment.image_id == Image.id, Assignment.state == "skipped")
    return case(
        (Image.label_status == "archived", "archived"),
        (Image.label_status == "labeled", "labeled"),
        (live_lease(now), "leased"),
        (queued, "queued"),
        (skipped, "skipped"),
        else_="unlabeled",
    )


def _marked_ids(now: datetime) -> Select:
    """Ids of the volumes that may be ``leased``, ``queued`` or ``skipped``: found from the leases (index on
    ``lease_expires_at``), the ready rounds' items and the skipped assignments (index on ``state``), never by checking
    every volume. Their number grows with the work done, not with the pool."""
    return union(
        select(Image.id.label("id")).where(live_lease(now)),
        select(RoundItem.image_id).join(SelectionRound, SelectionRound.id == RoundItem.round_id)
        .where(SelectionRound.state == "ready"),
        select(Assignment.image_id).where(Assignment.state == "skipped"),
    ).subquery()


def _marked_totals(session: Session, now: datetime, by_group: bool) -> list[tuple]:
    """(group if ``by_group``, status, count) of the unlabeled volumes whose status is not plain ``unlabeled``."""
    marked = _marked_ids(now)
    status = volume_status(now).label("status")
    columns = (Image.grp, status) if by_group else (status,)
    query = select(*columns, func.count()).where(Image.id.in_(select(marked.c.id)), Image.label_status == "unlabeled")
    if by_group:
        query = query.where(Image.grp.is_not(None))
    return session.execute(query.group_by(*columns)).all()


def status_totals(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Volumes by derived status, and ``total``. Counted without reading every row: the stored ``label_status``
    counts come from its index; of the unlabeled ones only those with a lease, a round or a skip are looked at."""
    now = now or utcnow()
    stored = dict(session.execute(select(Image.label_status, func.count()).group_by(Image.label_status)).all())
    totals = dict.fromkeys(VOLUME_STATUSES, 0)
    totals.update({name: int(stored.get(name, 0)) for name in ("labeled", "archived", "unlabeled")})
    for name, n in _marked_totals(session, now, by_group=False):
        totals[name] += int(n)
        totals["unlabeled"] -= int(n)
    return totals | {"total": sum(totals.values())}


def totals_by_group(session: Session, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Status totals per acquisition group (volumes of unknown group are left out); counted as :func:`status_totals`
    does, from the (group, label status) index."""
    now = now or utcnow()
    groups: dict[str, dict[str, int]] = {}
    stored = session.execute(
        select(Image.grp, Image.label_status, func.count()).where(Image.grp.is_not(None))
        .group_by(Image.grp, Image.label_status)
    ).all()
    for group, name, n in stored:
        groups.setdefault(group, dict.fromkeys(VOLUME_STATUSES, 0))[name] = int(n)
    for group, name, n in _marked_totals(session, now, by_group=True):
        totals = groups.setdefault(group, dict.fromkeys(VOLUME_STATUSES, 0))
        totals[name] += int(n)
        totals["unlabeled"] -= int(n)
    return groups


def totals_by_annotator(session: Session, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Per annotator: final labels saved, live leases held, volumes skipped."""
    now = now or utcnow()
    people: dict[str, dict[str, int]] = {}

    def add(rows, key: str) -> None:
        for who, n in rows:
            people.setdefault(who, {"labeled": 0, "leased": 0, "skipped": 0})[key] = int(n)

    add(session.execute(
        select(Label.annotator, func.count(func.distinct(Label.image_id)))
        .where(Label.tag == "final", Label.annotator.is_not(None)).group_by(Label.annotator)
    ).all(), "labeled")
    add(session.execute(
        select(Image.lease_holder, func.count()).where(live_lease(now), Image.label_status == "unlabeled")
        .group_by(Image.lease_holder)
    ).all(), "leased")
    add(session.execute(
        select(Assignment.annotator, func.count()).where(Assignment.state == "skipped").group_by(Assignment.annotator)
    ).all(), "skipped")
    return dict(sorted(people.items()))


def labels_per_day(session: Session) -> dict[str, int]:
    """Final labels saved per UTC day (first versions only: a corrected label is not new work)."""
    days: dict[str, int] = {}
    rows = session.execute(select(Label.created_at).where(Label.tag == "final", Label.version == 1)).scalars()
    for created in rows:
        day = created.date().isoformat() if isinstance(created, datetime) else str(created)[:10]
        days[day] = days.get(day, 0) + 1
    return dict(sorted(days.items()))


@dataclass(frozen=True)
class VolumeFilter:
    """Filters of the volume list; None means "any"."""

    status: str | None = None
    annotator: str | None = None  # held a lease on it, or saved a label of it
    round_id: int | None = None
    min_score: float | None = None
    max_score: float | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in VOLUME_STATUSES:
            raise DBError(f"unknown status {self.status!r}: use one of {VOLUME_STATUSES}")
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise DBError(f"min_score {self.min_score} is above max_score {self.max_score}")

    def only_status(self) -> bool:
        """No filter but (at most) the status: the total is one of the status totals."""
        return (self.annotator, self.round_id, self.min_score, self.max_score) == (None, None, None, None)


@dataclass(frozen=True)
class VolumeRow:
    id: str
    name: str
    status: str
    group: str | None
    ingested_at: datetime
    lease_holder: str | None
    score: float | None


def list_volumes(
    session: Session, filters: VolumeFilter, *, model_version: str | None, sort: str = "id", offset: int = 0,
    limit: int = 50, now: datetime | None = None, only: str | None = None,
) -> tuple[int, list[VolumeRow]]:
    """(how many volumes match, the page ``offset``..``offset+limit`` of them in ``sort`` order); ``only``: one id.

    Each filter is a condition an index answers (the status as in :func:`status_predicate`, the score by the
    ``(method, model_version, value)`` index joined in), so a page reads about ``offset + limit`` rows; the total of a
    status alone is counted as :func:`status_totals` counts."""
    if sort not in VOLUME_SORTS:
        raise DBError(f"unknown sort {sort!r}: use one of {VOLUME_SORTS}")
    now = now or utcnow()
    status = volume_status(now).label("status")
    scores = (
        select(Score.image_id, Score.value)
        .where(Score.method == LIST_SCORE_METHOD, Score.model_version == model_version)
        .subquery()
    )
    score = scores.c.value
    query: Select = select(
        Image.id, Image.name, status, Image.grp, Image.ingested_at, Image.lease_holder, score.label("score"),
        live_lease(now).label("live"),
    ).outerjoin(scores, scores.c.image_id == Image.id)
    query = _filtered(query, filters, now, score)
    if only is not None:
        query = query.where(Image.id == only)
    if only is None and filters.only_status():
        total = status_totals(session, now)[filters.status] if filters.status else status_totals(session, now)["total"]
    else:
        total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    if sort in ("score", "-score") and only is None:
        rows = _page_by_score(session, query, score, sort == "-score", offset, limit)
    else:
        order = {"id": [Image.id], "ingested": [Image.ingested_at, Image.id],
                 "-ingested": [Image.ingested_at.desc(), Image.id]}[sort]
        rows = session.execute(query.order_by(*order).offset(offset).limit(limit)).all()
    return total, [
        VolumeRow(r.id, r.name, r.status, r.grp, r.ingested_at, r.lease_holder if r.live else None, r.score)
        for r in rows
    ]


def _page_by_score(session: Session, query: Select, score: ColumnElement, descending: bool, offset: int,
                   limit: int) -> list:
    """A page in score order, unscored volumes last (by id): the scored ones walk the score index in order (an inner
    join the planner can drive from it), the unscored ones are only read when the page reaches past the scored ones."""
    scored = query.where(score.is_not(None))
    order = [score.desc() if descending else score.asc(), Image.id]
    rows = list(session.execute(scored.order_by(*order).offset(offset).limit(limit)).all())
    if len(rows) == limit:
        return rows
    before = int(session.scalar(select(func.count()).select_from(scored.subquery())) or 0) if offset else len(rows)
    rest = query.where(score.is_(None)).order_by(Image.id).offset(max(0, offset - before)).limit(limit - len(rows))
    return rows + list(session.execute(rest).all())


def status_predicate(status: str, now: datetime) -> ColumnElement[bool]:
    """SQL condition equivalent to ``volume_status(now) == status`` that indexes can answer: the stored label status,
    the lease's expiry, and membership in the (small) sets of queued and skipped volumes."""
    if status in ("labeled", "archived"):
        return Image.label_status == status
    unlabeled = Image.label_status == "unlabeled"
    if status == "leased":
        return and_(unlabeled, live_lease(now))
    queued = Image.id.in_(
        select(RoundItem.image_id).join(SelectionRound, SelectionRound.id == RoundItem.round_id)
        .where(SelectionRound.state == "ready")
    )
    skipped = Image.id.in_(select(Assignment.image_id).where(Assignment.state == "skipped"))
    free = and_(unlabeled, free_of_lease(now))
    if status == "queued":
        return and_(free, queued)
    if status == "skipped":
        return and_(free, ~queued, skipped)
    return and_(free, ~queued, ~skipped)  # unlabeled


def _filtered(query: Select, filters: VolumeFilter, now: datetime, score: ColumnElement) -> Select:
    if filters.status is not None:
        query = query.where(status_predicate(filters.status, now))
    if filters.annotator is not None:
        query = query.where(
            Image.id.in_(select(Assignment.image_id).where(Assignment.annotator == filters.annotator))
            | Image.id.in_(select(Label.image_id).where(Label.annotator == filters.annotator))
        )
    if filters.round_id is not None:
        query = query.where(Image.id.in_(select(RoundItem.image_id).where(RoundItem.round_id == filters.round_id)))
    if filters.min_score is not None:
        query = query.where(and_(score.is_not(None), score >= filters.min_score))
    if filters.max_score is not None:
        query = query.where(and_(score.is_not(None), score <= filters.max_score))
    return query


def assignments_of_image(session: Session, image_id: str) -> list[Assignment]:
    return list(session.scalars(select(Assignment).where(Assignment.image_id == image_id).order_by(Assignment.id)))


def scores_of_image(session: Session, image_id: str) -> list[Score]:
    query = select(Score).where(Score.image_id == image_id).order_by(Score.model_version, Score.method)
    return list(session.scalars(query))


def active_assignments(session: Session, now: datetime | None = None) -> list[Assignment]:
    """Leases in force at ``now``, oldest first."""
    query = (
        select(Assignment)
        .where(Assignment.state == "active", Assignment.lease_expires_at >= (now or utcnow()))
        .order_by(Assignment.claimed_at, Assignment.id)
    )
    return list(session.scalars(query))


def active_assignment_of(session: Session, image_id: str, now: datetime | None = None) -> Assignment | None:
    """The lease in force on one volume at ``now``, if any."""
    query = select(Assignment).where(
        Assignment.image_id == image_id, Assignment.state == "active", Assignment.lease_expires_at >= (now or utcnow())
    )
    return session.scalar(query)


def assignments_of_annotator(session: Session, annotator: str, limit: int = 100) -> list[Assignment]:
    query = select(Assignment).where(Assignment.annotator == annotator).order_by(Assignment.id.desc()).limit(limit)
    return list(session.scalars(query))


def labels_of_annotator(session: Session, annotator: str, limit: int = 100) -> list[Label]:
    query = select(Label).where(Label.annotator == annotator).order_by(Label.id.desc()).limit(limit)
    return list(session.scalars(query))


def list_rounds(session: Session, limit: int = 50, offset: int = 0) -> list[SelectionRound]:
    query = select(SelectionRound).order_by(SelectionRound.id.desc()).offset(offset).limit(limit)
    return list(session.scalars(query))


def round_items(session: Session, round_id: int) -> list[RoundItem]:
    return list(session.scalars(select(RoundItem).where(RoundItem.round_id == round_id).order_by(RoundItem.rank)))
