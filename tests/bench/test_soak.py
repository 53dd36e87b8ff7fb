"""``slpt bench soak`` for a few seconds: the report's figures come from a real run and its verdicts from them."""

from __future__ import annotations

import re

from bench.soak import run_soak


def test_a_short_soak_reports_cycles_no_errors_and_memory():
    report = run_soak(minutes=0.15, clients=2, volumes=40, db=None, command="slpt bench soak --minutes 0.15")
    cycles = int(re.search(r"\| label upload \| (\d+) \|", report).group(1))
    assert cycles > 0
    assert "Errors: 0" in report and "- errors = 0: met (0)" in report
    growth = float(re.search(r"growth ([+-][\d.]+) %\.", report).group(1))
    assert ("met" if growth <= 10 else "MISSED") in report.split("memory growth")[1]
