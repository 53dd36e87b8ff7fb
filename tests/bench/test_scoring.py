"""`slpt bench scoring`: the whole benchmark run as a user runs it (tiny), and its refusal of bad arguments."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import BenchError
from bench.scoring import (
    ONE_BY_ONE,
    STOCK_EPISTEMIC,
    TARGET_RATIO,
    TESLA_BATCHED,
    ScoringBenchConfig,
    run_benchmark,
)


def slpt(*args: str) -> subprocess.CompletedProcess:
    # One torch thread: the test machine's cores are shared.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "slpt", *args], capture_output=True, text=True, timeout=300, env=env)


def table_rows(report: str) -> dict[str, dict[str, str]]:
    """The markdown table as {method: {column header: cell}}."""
    lines = [line for line in report.splitlines() if line.startswith("|")]
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(headers, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return {row["method"]: row for row in rows}


def test_bench_scoring_end_to_end(tmp_path: Path):
    out = tmp_path / "results" / "s.md"
    # 16³ volumes of ~25 mm voxels at a 24 mm working spacing and a 16³ window keep the run short.
    run = slpt("bench", "scoring", "--volumes", "2", "--size", "16", "--roi", "16", "--spacing", "24", "--warmup", "1",
               "--device", "cpu", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    report = out.read_text()
    assert report.strip() in run.stdout  # printed and written alike
    assert "slpt bench scoring --volumes 2" in report
    assert "1 torch threads" in report

    rows = table_rows(report)
    assert list(rows) == [TESLA_BATCHED, ONE_BY_ONE, STOCK_EPISTEMIC]
    for row in rows.values():
        median, mean = float(row["s/volume median"]), float(row["s/volume mean"])
        low, high = (float(x) for x in row["range (s)"].split("–"))
        assert 0 < low <= median <= high and low <= mean <= high
        # Ratios are to the stock row, recomputed here from the printed seconds (rounding allowed).
        stock = rows[STOCK_EPISTEMIC]
        assert abs(float(row["median ÷ stock"]) - median / float(stock["s/volume median"])) < 0.02
        assert abs(float(row["mean ÷ stock"]) - mean / float(stock["s/volume mean"])) < 0.02
    assert float(rows[STOCK_EPISTEMIC]["median ÷ stock"]) == 1.0
    # 1 warm-up + 2 timed volumes, all scored over a real foreground; batched and one-by-one scores agree.
    assert "3 of 3 volumes had a non-empty foreground" in report
    # The verdict is the table's own ratio, and one batched pass costs less than the stock MC-dropout passes.
    ratio = float(rows[TESLA_BATCHED]["median ÷ stock"])
    verdict = re.search(r"- Target: TESLA ≤ ([\d.]+)× the stock epistemic cost — (met|MISSED): median ([\d.]+)×", report)
    assert verdict, report
    assert float(verdict[1]) == TARGET_RATIO
    assert abs(float(verdict[3]) - ratio) <= 0.01
    assert verdict[2] == ("met" if float(verdict[3]) <= TARGET_RATIO else "MISSED")
    assert ratio < 1.0, report


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ScoringBenchConfig(volumes=0), "--volumes must be at least 1"),
        (ScoringBenchConfig(device="tpu"), "--device must be one of auto, cpu, cuda"),
        (ScoringBenchConfig(roi=12, device="cpu"), "--roi 12: roi_size (12, 12, 12) must be multiples of 8"),
    ],
)
def test_bench_scoring_refuses_bad_arguments(config: ScoringBenchConfig, message: str):
    torch.set_num_threads(1)
    with pytest.raises(BenchError) as caught:
        run_benchmark(config)
    assert message in str(caught.value)
