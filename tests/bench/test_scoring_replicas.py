"""`slpt bench scoring-replicas`: the whole benchmark run as a user runs it (tiny, real replicas on a real PostgreSQL
database), and its refusal of bad arguments."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import SERVER_URL, postgres_unavailable_reason


def slpt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "slpt", *args], capture_output=True, text=True, timeout=600, env=env)


def test_bench_scoring_replicas_end_to_end(tmp_path: Path):
    if reason := postgres_unavailable_reason():
        pytest.fail(reason)
    out = tmp_path / "r.md"
    run = slpt("bench", "scoring-replicas", "--volumes", "8", "--size", "32", "--batch", "2", "--repeats", "1",
               "--pg-url", SERVER_URL, "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    report = out.read_text()
    assert report.strip() in run.stdout  # printed and written alike
    assert "- Command: `slpt bench scoring-replicas --volumes 8" in report
    rows = [line for line in report.splitlines() if re.match(r"^\| [12] \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == "8" and float(cells[3]) > 0  # every volume scored, a throughput measured
        assert sum(int(n) for n in cells[5].split(" / ")) == 4  # 8 volumes in batches of 2, each done once
    assert re.search(r"Speed-up with 2 replicas: \d+\.\d\d× \(target ≥ 1\.8×: (met|MISSED)\)", report)


def test_bench_scoring_replicas_stops_with_the_replicas_error_when_a_batch_fails(tmp_path: Path):
    if reason := postgres_unavailable_reason():
        pytest.fail(reason)
    # 16³ volumes of ~25 mm voxels at 24 mm: for some of them (seed 0) the default backbone's deepest level is one
    # voxel, which it cannot embed.
    run = slpt("bench", "scoring-replicas", "--volumes", "8", "--size", "16", "--spacing", "24", "--roi", "16",
               "--batch", "2", "--repeats", "1", "--pg-url", SERVER_URL)
    assert run.returncode != 0 and "embedding batch failed on a replica" in run.stderr, run.stderr[-2000:]


def test_bench_scoring_replicas_refuses_bad_arguments():
    run = slpt("bench", "scoring-replicas", "--volumes", "3", "--batch", "2")
    assert run.returncode != 0 and "at least twice --batch" in run.stderr
    run = slpt("bench", "scoring-replicas", "--repeats", "0")
    assert run.returncode != 0 and "--repeats must be at least 1" in run.stderr
