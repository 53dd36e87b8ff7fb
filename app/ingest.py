"""Bringing a studies folder's volumes into the campaign: registration, then their headers read in the background.

At start-up the app registers the folder (no file opened: seconds for 100,000 volumes) and then reads each new
volume's header and checksum in an ``ingestion`` job, while Next Sample already answers (docs/design.md,
"Ingestion"). ``POST /admin/volumes/scan`` registers files added since; a few new files are read in the request, more
in the background job, whose progress ``/scoring/`` and ``/admin/progress`` show.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from app.jobs import tracked_job
from db.datastore import SQLDatastore
from db.ingestion import FactsResult, RegisterResult, fill_facts, missing_facts

logger = logging.getLogger(__name__)

#: New volumes a scan reads within the request; more are read by a background job.
SCAN_INLINE = 200


@dataclass
class ScanOutcome:
    registered: RegisterResult
    facts: FactsResult | None = None  # read within the request
    job: str | None = None  # the background job reading the rest
    pending: int = 0  # volumes whose header is still to be read
    extra: dict[str, Any] = field(default_factory=dict)


class Ingestion:
    """Reads registered volumes' headers and checksums, one background job at a time per process."""

    def __init__(self, datastore: SQLDatastore):
        self.datastore = datastore
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._job_id: str | None = None

    def scan(self) -> ScanOutcome:
        """Register new files; read them now when they are few, else in the background job."""
        registered = self.datastore.register_new()
        with self.datastore.sessions() as session:
            pending = missing_facts(session)
        if pending == 0:
            return ScanOutcome(registered)
        if pending <= SCAN_INLINE and not self.running():
            facts = fill_facts(self.datastore.sessions)
            return ScanOutcome(registered, facts=facts)
        return ScanOutcome(registered, job=self.start(), pending=pending)

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str | None:
        """Start the background job (or return the running one's id); None when nothing waits to be read."""
        with self._lock:
            if self.running():
                return self._job_id
            with self.datastore.sessions() as session:
                if missing_facts(session) == 0:
                    return None
            started = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(started,), name="ingestion", daemon=True)
            self._thread.start()
            started.wait(timeout=30)
            return self._job_id

    def _run(self, started: threading.Event) -> None:
        try:
            with tracked_job(self.datastore.sessions, "ingestion") as job:
                self._job_id = job.job_id
                started.set()
                result = fill_facts(self.datastore.sessions, progress=job)
                job.result = {"read": result.read, "unreadable_count": result.unreadable_count,
                              "unreadable": result.unreadable}
            if result.unreadable_count:
                logger.warning(f"{result.unreadable_count} unreadable volume(s) archived, e.g. {result.unreadable[:3]}")
        except Exception:
            logger.exception("reading the new volumes' headers failed")
        finally:
            started.set()
