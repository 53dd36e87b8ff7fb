"""A clock the tests move by hand, for a real server started with ``--conf clock tests.app.fake_clock.now``.

The server's leases then read the system time plus an offset that the test writes to a file (named by the server's
``FAKE_CLOCK_OFFSET_FILE`` variable), so a lease expires when the test says, without anyone waiting for it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

OFFSET_FILE_VARIABLE = "FAKE_CLOCK_OFFSET_FILE"
IMPORT_PATH = "tests.app.fake_clock.now"
REPO_ROOT = Path(__file__).resolve().parents[2]


def now() -> datetime:
    """The server's clock: the system time plus the offset (seconds) in the file the environment names."""
    offset = float(Path(os.environ[OFFSET_FILE_VARIABLE]).read_text())
    return datetime.now(timezone.utc) + timedelta(seconds=offset)


class FakeClock:
    """The test's side: :meth:`advance` moves the server's time forward; ``conf`` and ``env`` start a server on it."""

    def __init__(self, offset_file: Path):
        self.offset_file = offset_file
        self.offset = timedelta(0)
        self._write()

    @property
    def conf(self) -> dict[str, str]:
        return {"clock": IMPORT_PATH}

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {OFFSET_FILE_VARIABLE: str(self.offset_file), "PYTHONPATH": path}

    def advance(self, by: timedelta) -> None:
        self.offset += by
        self._write()

    def _write(self) -> None:
        # Whole or not at all: the server may read it at any moment.
        partial = self.offset_file.with_suffix(".partial")
        partial.write_text(repr(self.offset.total_seconds()))
        os.replace(partial, self.offset_file)
