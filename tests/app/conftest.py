from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.serverproc import ServerProcess, free_port, running_server, slpt_serve_command
from tests.pg import postgres_unavailable_reason, temporary_database


@pytest.fixture(scope="module")
def served_cohort(tiny_cohort: Path, tmp_path_factory) -> Path:
    """A private copy of the tiny cohort that one module's server may write into."""
    studies = tmp_path_factory.mktemp("served") / "studies"
    shutil.copytree(tiny_cohort, studies)
    return studies


@contextmanager
def start_server(studies: Path, logs: Path, **conf: str) -> Iterator[ServerProcess]:
    """Our MONAI Label server, started for real (`slpt serve`) on a free loopback port."""
    port = free_port()
    with running_server(slpt_serve_command(studies, port, conf), log_path=logs / f"server-{port}.log", port=port) as proc:
        yield proc


@pytest.fixture(scope="module")
def server(served_cohort: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    with start_server(served_cohort, tmp_path_factory.mktemp("logs")) as proc:
        yield proc


@contextmanager
def database_url(backend: str, folder: Path) -> Iterator[str]:
    """A fresh database: a SQLite file in ``folder``, or a uniquely named PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'slpt.db'}"
        return
    if reason := postgres_unavailable_reason():
        pytest.fail(reason)  # .ci/run starts PostgreSQL: a missing server is a failure, not a skip
    with temporary_database() as url:
        yield url
