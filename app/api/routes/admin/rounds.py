"""``/admin/rounds``: start a selection round (strategy, budget), list rounds with their ranked items, cancel one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from app.api.deps import AdminUser, AppDep, SessionDep, audit_action
from app.api.schemas import Offset, RowIdPath, RoundCreate, RoundDetail, RoundItemOut, RoundOut
from app.modelstore import NoModelError
from app.selection import SelectionUnavailable, build_round
from db.engine import write_session
from db.overview import list_rounds, round_items
from db.rounds import set_round_state
from db.schema import SelectionRound
from strategies import STRATEGIES

router = APIRouter(prefix="/rounds", tags=["Admin: rounds"])
CANCELLABLE = ("building", "ready")


def round_detail(session, selection: SelectionRound) -> RoundDetail:
    items = [RoundItemOut.model_validate(i) for i in round_items(session, selection.id)]
    return RoundDetail(**RoundOut.model_validate(selection).model_dump(), items=items)


@router.get("", response_model=list[RoundOut], summary="Selection rounds, newest first")
def rounds(
    user: AdminUser, session: SessionDep, offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RoundOut]:
    return [RoundOut.model_validate(r) for r in list_rounds(session, limit=limit, offset=offset)]


@router.get("/{round_id}", response_model=RoundDetail, summary="One round and its ranked volumes")
def round_of(round_id: RowIdPath, user: AdminUser, session: SessionDep) -> RoundDetail:
    selection = session.get(SelectionRound, round_id)
    if selection is None:
        raise HTTPException(404, f"unknown selection round {round_id}")
    return round_detail(session, selection)


@router.post("", response_model=RoundDetail, status_code=201, summary="Build a round now (it becomes the strategy's current one)")
def start_round(body: RoundCreate, user: AdminUser, app: AppDep, request: Request) -> RoundDetail:
    if body.strategy not in STRATEGIES:
        raise HTTPException(404, f"unknown strategy {body.strategy!r}; available: {sorted(STRATEGIES)}")
    pool = len(app.datastore().get_unlabeled_images())
    if body.budget > pool:
        raise HTTPException(400, f"budget {body.budget} is larger than the unlabeled pool ({pool} volumes)")
    try:
        round_id = build_round(app.datastore(), app.model_store, body.strategy, body.budget, seed=body.seed)
    except (SelectionUnavailable, NoModelError) as error:
        raise HTTPException(409, f"no round can be built yet: {error}") from None
    with write_session(app.datastore().sessions) as session:
        audit_action(session, user, request, "round_started", round_id=round_id, strategy=body.strategy,
                     budget=body.budget)
        return round_detail(session, session.get(SelectionRound, round_id))


@router.delete("/{round_id}", response_model=RoundOut, summary="Cancel a round: Next Sample stops offering its volumes")
def cancel_round(round_id: RowIdPath, user: AdminUser, app: AppDep, request: Request) -> RoundOut:
    with write_session(app.datastore().sessions) as session:
        selection = session.get(SelectionRound, round_id)
        if selection is None:
            raise HTTPException(404, f"unknown selection round {round_id}")
        if selection.state not in CANCELLABLE:
            raise HTTPException(409, f"round {round_id} is {selection.state}: only a {' or '.join(CANCELLABLE)} round can be cancelled")
        set_round_state(session, round_id, "cancelled")
        audit_action(session, user, request, "round_cancelled", round_id=round_id)
        return RoundOut.model_validate(selection)
