"""``slpt bench soak``: its two bars (no errors, memory growth within 10 %) judged on servers that keep them and on
servers that break them on purpose, and met by our real server in a short run.

The stand-in server (tests/bench/leaky_server.py, its own process) answers the soak's requests; one keeps memory at
every request, one fails every fifth upload. The same measurement (:func:`bench.soak.soak`) and judgement
(:func:`bench.soak.verdicts`) that the report prints must pass the steady one and fail the other two.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.serverproc import ServerProcess, free_port, running_server
from bench.soak import MAX_GROWTH, SoakLog, memory_growth, run_soak, soak, verdicts

LABELS = {f"case_{i:04d}": b"label" * 200 for i in range(6)}
SECONDS = 3.0
SAMPLE_EVERY_S = 0.1
LEAK_KIB = 64


@contextmanager
def stand_in(logs: Path, leak_kib: int = 0, fail_every: int = 0) -> Iterator[ServerProcess]:
    port = free_port()
    script = Path(__file__).with_name("leaky_server.py")
    command = [sys.executable, str(script), str(port), ",".join(LABELS), str(leak_kib), str(fail_every)]
    with running_server(command, log_path=logs / f"stand-in-{port}.log", port=port, startup_timeout=30) as server:
        yield server


def soak_on(server: ServerProcess) -> SoakLog:
    # Draft labels: the stand-in never runs out, so the run lasts SECONDS.
    return soak(server.url, server.process.pid, 2, LABELS, SECONDS, tag="draft", sample_every_s=SAMPLE_EVERY_S)


def test_a_steady_server_meets_both_bars(tmp_path: Path):
    with stand_in(tmp_path) as server:
        log = soak_on(server)
    assert len(log.upload_ms) >= 20 and len(log.rss_mib) >= 10  # it did run, and memory was watched throughout
    assert verdicts(log) == {"errors": True, "memory": True}, (log.errors[:3], memory_growth(log))


def test_a_server_that_keeps_memory_at_every_request_misses_the_memory_bar(tmp_path: Path):
    with stand_in(tmp_path, leak_kib=LEAK_KIB) as server:
        log = soak_on(server)
    requests = len(log.next_sample_ms) + len(log.upload_ms)
    assert requests * LEAK_KIB / 1024 > 10  # the leak was big enough to see (more than 10 MiB)
    assert verdicts(log) == {"errors": True, "memory": False}, memory_growth(log)
    assert memory_growth(log)[1] > MAX_GROWTH


def test_a_server_that_fails_some_uploads_misses_the_errors_bar(tmp_path: Path):
    with stand_in(tmp_path, fail_every=5) as server:
        log = soak_on(server)
    assert verdicts(log) == {"errors": False, "memory": True}, memory_growth(log)
    uploads = len(log.upload_ms) + len(log.errors)  # every upload answered: timed if it succeeded, counted if not
    assert len(log.errors) == uploads // 5 > 0
    assert all(e.startswith("RuntimeError: label upload 500: ") and "fails on purpose" in e for e in log.errors)


def test_a_short_soak_of_our_server_meets_both_bars():
    # Draft labels, so the annotators cycle for the whole run instead of labeling the 40 volumes in a second.
    report = run_soak(minutes=0.1, clients=2, volumes=40, db=None, command="slpt bench soak --minutes 0.1 --tag draft",
                      tag="draft", sample_every_s=0.25)
    cycles = int(re.search(r"\| label upload \| (\d+) \|", report).group(1))
    ran_s = int(re.search(r", ran (\d+) s", report).group(1))
    assert cycles > 20 and ran_s >= 5, report
    growth = float(re.search(r"growth ([+-][\d.]+) %\.", report).group(1))
    assert "- errors = 0: met (0)" in report, report
    assert f"- memory growth within 10%: met ({growth:+.1f} %)" in report, report
