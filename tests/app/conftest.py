from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.serverproc import free_port, running_server, slpt_serve_command


@pytest.fixture(scope="module")
def served_cohort(tiny_cohort: Path, tmp_path_factory) -> Path:
    """A private copy of the tiny cohort that one module's server may write into."""
    studies = tmp_path_factory.mktemp("served") / "studies"
    shutil.copytree(tiny_cohort, studies)
    return studies


@pytest.fixture(scope="module")
def server(served_cohort: Path, tmp_path_factory):
    """Our MONAI Label server, started for real (`slpt serve`) on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with running_server(slpt_serve_command(served_cohort, port), log_path=log, port=port) as proc:
        yield proc
