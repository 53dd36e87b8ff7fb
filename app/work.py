"""One worker's loop over leased work batches (``db.work``): claim a batch, compute its volumes, store the results
and mark it done in one transaction; repeat until no batch is free. Every replica (and a training process) runs it
for the same target at once, so N workers share the work (docs/design.md, "Work spread over replicas").

A worker renews its lease while it computes (every quarter of the lease), so only a dead or stalled worker's batch
expires and is taken again; one that lost its lease stores nothing. An error gives the batch back for another try,
up to ``max_failures``; then it is ``failed`` and the worker's job ends failed, naming it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from app.jobs import JobReporter, process_alive, tracked_job
from db.engine import write_session
from db.schema import utcnow
from db.work import Lease, claim_batch, fail_batch, finish_batch, lease_holders, release_batches, renew_lease, work_totals

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class WorkSettings:
    """How work is cut and leased: ``batch`` volumes per batch, a new model version's ``candidates`` (drawn in
    ``strata`` TESLA clusters; 0 = none) scored before the rest of the pool (docs/design.md, "Candidate subsets"),
    leases of ``lease_s`` seconds, ``max_failures`` tries of a batch, time from ``clock`` (the app's leases' clock:
    tests move it by hand)."""

    batch: int = 32
    candidates: int = 2000
    strata: int = 32
    lease_s: float = 300.0
    max_failures: int = 3
    clock: Callable[[], datetime] = utcnow

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_s)


@dataclass
class WorkDone:
    """What one worker did for one target."""

    volumes: int = 0
    batches: int = 0
    lost: int = 0  # batches given up because another worker took them (this one stalled past the lease)
    failed: list[str] = field(default_factory=list)  # errors of batches that reached max_failures


class WorkFailed(RuntimeError):
    """A batch failed ``max_failures`` times (e.g. an unreadable volume); the next planning tries its volumes again."""


class LeaseLost(RuntimeError):
    """The worker no longer holds its batch: another worker took it after the lease expired."""


def holder_id() -> str:
    """``host:pid:token``: which worker holds a lease, and whether its process still lives (same host)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def release_interrupted_batches(sessions: sessionmaker[Session]) -> int:
    """Give back, at once, the batches leased by workers of this host whose process is gone (a killed server or
    training), instead of waiting for their leases to expire; returns how many. Other hosts' leases expire."""
    host = socket.gethostname()
    with write_session(sessions) as session:
        dead = []
        for holder in lease_holders(session):
            name, _, rest = holder.partition(":")
            pid = rest.partition(":")[0]
            if name == host and pid.isdigit() and not process_alive(int(pid)):
                dead.append(holder)
        return release_batches(session, dead)


def work_through(
    sessions: sessionmaker[Session],
    kind: str,
    target: str,
    compute: Callable[[str], T],
    store: Callable[[Session, Mapping[str, T]], None],
    settings: WorkSettings,
    *,
    noun: str,
    detail: dict[str, Any],
    min_priority: int | None = None,
) -> WorkDone:
    """Claim and compute ``target``'s free batches until none is left; ``compute(image_id)`` one volume,
    ``store(session, {image_id: result})`` a batch's results inside the transaction that marks it done.

    The first claimed batch opens a ``kind`` job (with ``detail``) whose progress is the whole target's, every
    worker's batches counted; a worker that finds no free batch opens none. Raises :class:`WorkFailed` after the
    loop when a batch reached ``max_failures`` (the job then ends failed). With ``min_priority``, only batches of at
    least that priority are claimed (e.g. a round's candidates, before the rest of the pool)."""
    holder = holder_id()
    done = WorkDone()
    with ExitStack() as stack:
        job: JobReporter | None = None
        while (lease := claim_batch(sessions, kind, target, holder, settings.lease, settings.clock(),
                                          min_priority)) is not None:
            if job is None:
                job = stack.enter_context(tracked_job(sessions, kind, **detail, worker=holder))
            try:
                results = _compute(sessions, lease, compute, settings)
                with write_session(sessions) as session:
                    if not finish_batch(session, lease, settings.clock()):
                        raise LeaseLost(f"batch {lease.batch_id} was taken by another worker")
                    store(session, results)
            except LeaseLost as lost:
                logger.warning(f"{kind} of {target}: {lost}; its results are left to that worker")
                done.lost += 1
                continue
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                state = fail_batch(sessions, lease, error, settings.clock(), settings.max_failures)
                logger.exception(f"{kind} batch {lease.batch_id} of {target} failed ({state})")
                if state == "failed":
                    done.failed.append(f"batch {lease.batch_id}: {error}")
                continue
            done.volumes += len(lease.image_ids)
            done.batches += 1
            _report(sessions, job, kind, target, noun, done)
        if job is not None:
            job.result = {"target": target, "volumes": done.volumes, "batches": done.batches, "lost": done.lost,
                          "failed": done.failed}
            if done.failed:
                raise WorkFailed(f"{len(done.failed)} {kind} batch(es) of {target} failed: {done.failed[:3]}")
    return done


def _compute(sessions: sessionmaker[Session], lease: Lease, compute: Callable[[str], T],
             settings: WorkSettings) -> dict[str, T]:
    results: dict[str, T] = {}
    renewed_at = settings.clock()
    for image_id in lease.image_ids:
        results[image_id] = compute(image_id)
        now = settings.clock()
        if now - renewed_at >= settings.lease / 4:
            if renew_lease(sessions, lease, settings.lease, now) is None:
                raise LeaseLost(f"batch {lease.batch_id}'s lease expired and another worker took it")
            renewed_at = now
    return results


def _report(sessions: sessionmaker[Session], job: JobReporter, kind: str, target: str, noun: str,
            done: WorkDone) -> None:
    with sessions() as session:
        totals = work_totals(session, kind, target)
    job(totals.done_volumes, totals.total_volumes,
        f"{totals.done_volumes}/{totals.total_volumes} volumes {noun} ({done.volumes} by this worker)")
