"""Background work recorded in the ``jobs`` table, so its progress survives the process that does it
(MONAI Label runs training and scoring in subprocesses and keeps their status only in memory)."""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import write_session
from db.jobs import finish_job, list_jobs, start_job, update_job


#: Messages a job keeps in its ``detail["log_tail"]`` (what the admin API shows as the job's log).
LOG_TAIL = 50


class JobReporter:
    """Progress of one job; writes at most every ``interval`` seconds. ``result`` is merged into the job's detail
    when it finishes. Each written message also goes to the job's log tail."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, interval: float = 1.0):
        self.sessions = sessions
        self.job_id = job_id
        self.interval = interval
        self.result: dict[str, Any] = {}
        self.log_tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._last = 0.0

    def __call__(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last < self.interval and done < total:
            return
        self._last = now
        if message:
            self.log_tail.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")
        with write_session(self.sessions) as session:
            update_job(session, self.job_id, progress=min(1.0, done / max(total, 1)), message=message,
                       detail={"log_tail": list(self.log_tail)})


class TrainingBusy(RuntimeError):
    """Another training job is queued or running (on any server of the database)."""


def reserve_training(sessions: sessionmaker[Session], **detail: Any) -> str:
    """Queue the one training job the database allows (``uq_jobs_one_training``); return its id for the training
    process to take over (:func:`tracked_job` with ``job_id``). :class:`TrainingBusy` if one is unfinished."""
    fail_interrupted_jobs(sessions)  # a training whose process died must not block the next one
    try:
        with write_session(sessions) as session:
            return start_job(session, "train", queued=True, detail={**detail, **_where()}).id
    except IntegrityError:
        with sessions() as session:
            busy = [j.id for state in ("queued", "running") for j in list_jobs(session, kind="train", state=state)]
        raise TrainingBusy(f"a training job is already queued or running ({', '.join(busy) or 'just started'})") from None


def _where() -> dict[str, Any]:
    # Where a job runs: a restart can tell a job whose process died from one still running elsewhere.
    return {"host": socket.gethostname(), "pid": os.getpid()}


@contextmanager
def tracked_job(
    sessions: sessionmaker[Session], kind: str, job_id: str | None = None, **detail: Any
) -> Iterator[JobReporter]:
    """A running job row for the duration of the block: ``done`` on success, ``failed`` (with the error) otherwise.
    ``job_id``: take over that queued job (a reserved training) instead of starting a new one."""
    with write_session(sessions) as session:
        if job_id is None:
            job_id = start_job(session, kind, detail={**detail, **_where()}).id
        else:
            update_job(session, job_id, progress=0.0, message="started", detail={**detail, **_where()})
    reporter = JobReporter(sessions, job_id)
    try:
        yield reporter
    except BaseException as exc:
        with write_session(sessions) as session:
            finish_job(session, job_id, "failed", message=f"{type(exc).__name__}: {exc}")
        raise
    with write_session(sessions) as session:
        finish_job(session, job_id, "done", detail=reporter.result | {"log_tail": list(reporter.log_tail)})


def fail_interrupted_jobs(sessions: sessionmaker[Session]) -> list[str]:
    """Mark as failed the unfinished jobs of this host whose process is gone (killed, or the machine restarted);
    return their ids. Jobs of other hosts are left to those hosts (replicas on several machines)."""
    host = socket.gethostname()
    interrupted = []
    with write_session(sessions) as session:
        for state in ("running", "queued"):
            for job in list_jobs(session, state=state, limit=10_000):
                pid = job.detail.get("pid")
                if job.detail.get("host") == host and isinstance(pid, int) and not process_alive(pid):
                    finish_job(session, job.id, "failed", message=f"interrupted: process {pid} ended before the job did")
                    interrupted.append(job.id)
    return interrupted


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True
