"""``slpt bench next-sample``: the duplicate counter on constructed load histories, and the benchmark end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.next_sample import (
    TARGET_P99_MS,
    TARGET_P99_RATIO,
    WARMUP_REQUESTS,
    LoadResult,
    Response,
    ServerStats,
    duplicates,
    format_table,
    summarize,
)


def answered(client: int, index: int, image_id: str | None, sent: float, received: float) -> Response:
    return Response(client=client, index=index, image_id=image_id, sent=sent, received=received, warmup=False)


def test_a_volume_handed_out_while_another_client_holds_it_is_a_duplicate():
    history = [
        answered(0, 0, "x", sent=0.0, received=1.0),  # client 0 holds x until it asks again at 5.0
        answered(1, 0, "x", sent=2.0, received=3.0),  # handed out at 3.0: a duplicate
        answered(0, 1, "y", sent=5.0, received=6.0),
        answered(1, 1, "z", sent=5.5, received=7.0),
    ]
    assert duplicates(history) == 1


def test_a_volume_skipped_by_its_holder_may_go_to_another_client():
    # Client 0 asked for its next volume at 2.0, which gives x up: client 1 may get x at 3.5, even though client 0's
    # own answer only arrives at 4.0.
    history = [
        answered(0, 0, "x", sent=0.0, received=1.0),
        answered(0, 1, "y", sent=2.0, received=4.0),
        answered(1, 0, "x", sent=2.5, received=3.5),
    ]
    assert duplicates(history) == 0


def test_the_last_volume_of_each_client_stays_held_to_the_end():
    history = [
        answered(0, 0, "x", sent=0.0, received=1.0),
        answered(1, 0, "y", sent=0.0, received=1.5),
        answered(1, 1, "x", sent=9.0, received=10.0),  # client 0 never asked again: it still holds x
    ]
    assert duplicates(history) == 1


def test_a_client_getting_its_own_volume_again_or_nothing_is_no_duplicate():
    history = [
        answered(0, 0, "x", sent=0.0, received=1.0),
        answered(0, 1, "x", sent=2.0, received=3.0),  # its own skipped volume, offered back
        answered(1, 0, None, sent=0.0, received=1.0),  # nothing left to offer
        answered(1, 1, None, sent=2.0, received=3.0),
    ]
    assert duplicates(history) == 0


def test_a_server_that_hands_everyone_the_same_volume_scores_every_later_answer():
    # Stock "First": three clients, each answered "x" once, one after the other, none asking again.
    history = [answered(client, 0, "x", sent=0.0, received=1.0 + client) for client in range(3)]
    assert duplicates(history) == 2
    assert duplicates(list(reversed(history))) == 2  # the order of the list does not matter, the times do


def test_load_figures_leave_the_warm_up_out():
    responses = (
        Response(client=0, index=0, image_id="w", sent=0.0, received=5.0, warmup=True),  # slow warm-up: not timed
        answered(1, 1, "b", sent=10.0, received=10.010),
        answered(0, 1, "a", sent=10.0, received=10.020),
        answered(0, 2, "c", sent=10.020, received=10.050),
    )
    result = LoadResult(responses=responses, wall_s=0.05)
    assert result.latencies_ms == pytest.approx([10.0, 20.0, 30.0])
    assert result.ids_per_client == {0: ["a", "c"], 1: ["b"]}
    stats = summarize("ours", result)
    assert stats.p50_ms == pytest.approx(20.0)
    assert 29.0 < stats.p99_ms <= 30.0
    assert stats.requests_per_s == pytest.approx(3 / 0.05)
    assert stats.requests == 4


def test_bench_next_sample_measures_both_servers_end_to_end(tmp_path: Path):
    out = tmp_path / "r.md"
    result = subprocess.run(
        [sys.executable, "-m", "slpt", "bench", "next-sample"]
        + ["--volumes", "40", "--clients", "4", "--requests", "5", "--size", "8", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert report in result.stdout  # printed as well as written
    assert "--volumes 40 --clients 4 --requests 5" in report
    rows = {}
    for line in report.splitlines():
        if match := re.fullmatch(r"\| (ours|stock)[^|]* \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) of (\d+) \|", line):
            server, p50, p99, rate, dupes, answers = match.groups()
            rows[server] = (float(p50), float(p99), float(rate), int(dupes), int(answers))
    assert set(rows) == {"ours", "stock"}, report
    for p50, p99, rate, _, answers in rows.values():
        assert 0 < p50 <= p99
        assert rate > 0
        assert answers == 4 * (5 + WARMUP_REQUESTS)  # timed and warm-up answers of every client
    assert rows["ours"][3] == 0  # our leases never hand a held volume to a second annotator
    # The comparison and the verdicts are the table's own numbers, whichever server was faster on this run.
    p99_ratio = rows["stock"][1] / rows["ours"][1]
    assert comparison(report) == pytest.approx(
        (p99_ratio, rows["ours"][2] / rows["stock"][2]), rel=0.06, abs=0.06
    ), report
    verdicts = report.split("Targets: ")[1]
    assert ("met" if rows["ours"][1] <= TARGET_P99_MS else "**missed**") in verdicts.split(";")[0]
    assert ("met" if p99_ratio >= TARGET_P99_RATIO else "**missed**") in verdicts.split(";")[1]
    assert "0 duplicate assignments — met (0)" in verdicts


def comparison(report: str) -> tuple[float, float]:
    """(stock p99 / our p99, our throughput / stock's) as the report's sentence states them."""
    match = re.search(r"p99 latency \*\*([\d.]+)× (lower|higher)\*\*, throughput \*\*([\d.]+)× (higher|lower)\*\*", report)
    assert match, report
    p99, p99_word, rate, rate_word = match.groups()
    return (float(p99) if p99_word == "lower" else 1 / float(p99), float(rate) if rate_word == "higher" else 1 / float(rate))


def test_the_comparison_says_slower_when_ours_is_slower():
    ours = ServerStats("ours", p50_ms=10.0, p99_ms=40.0, requests_per_s=50.0, duplicates=0, requests=100)
    stock = ServerStats("stock", p50_ms=5.0, p99_ms=20.0, requests_per_s=100.0, duplicates=3, requests=100)
    table = format_table(ours, stock)
    assert "p99 latency **2.0× higher**, throughput **2.0× lower**" in table
    assert "p99 ≥ 20× better than stock — **missed** (0.5×)" in table
    assert comparison(table) == (0.5, 0.5)
    faster = format_table(stock, ours)
    assert "p99 latency **2.0× lower**, throughput **2.0× higher**" in faster


def test_bench_next_sample_refuses_too_few_volumes():
    result = subprocess.run(
        [sys.executable, "-m", "slpt", "bench", "next-sample", "--volumes", "3", "--clients", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "volumes must be at least" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_next_sample_cycle_uploads_every_label_on_postgresql(tmp_path: Path):
    """--cycle --db: each next sample is followed by its label upload, against our server on PostgreSQL."""
    from sqlalchemy import create_engine, func, select

    from db.schema import Label
    from tests.pg import postgres_unavailable_reason, temporary_database

    if reason := postgres_unavailable_reason():
        pytest.fail(reason)
    with temporary_database() as url:
        result = subprocess.run(
            [sys.executable, "-m", "slpt", "bench", "next-sample", "--volumes", "30", "--clients", "3",
             "--requests", "4", "--cycle", "--db", url],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        engine = create_engine(url)
        with engine.connect() as connection:
            labeled = connection.execute(select(func.count()).select_from(Label).where(Label.tag == "final")).scalar()
        engine.dispose()
    report = result.stdout
    assert "PostgreSQL claims" in report and "full annotator cycle" in report
    assert labeled == 3 * (4 + WARMUP_REQUESTS)  # every answered next sample was labeled, on our server's database
    row = next(line for line in report.splitlines() if line.startswith("| ours"))
    upload_p50, upload_p99 = (float(x) for x in re.search(r"\| ([\d.]+) / ([\d.]+) \|$", row).groups())
    assert 0 < upload_p50 <= upload_p99


def test_bench_next_sample_cycle_needs_a_volume_per_request():
    result = subprocess.run(
        [sys.executable, "-m", "slpt", "bench", "next-sample", "--volumes", "20", "--clients", "4", "--requests", "5",
         "--cycle"], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "--cycle labels one volume per request" in result.stderr


def test_bench_next_sample_spreads_the_annotators_over_replicas_of_one_postgresql(tmp_path: Path):
    """--replicas 2: two `slpt serve` processes over one studies folder and one database, the clients spread over
    them; every answered next sample is labelled once, and no volume goes to two annotators at once."""
    from sqlalchemy import create_engine, func, select

    from db.schema import Label
    from tests.pg import postgres_unavailable_reason, temporary_database

    if reason := postgres_unavailable_reason():
        pytest.fail(reason)
    with temporary_database() as url:
        result = subprocess.run(
            [sys.executable, "-m", "slpt", "bench", "next-sample", "--volumes", "40", "--clients", "4",
             "--requests", "3", "--cycle", "--db", url, "--replicas", "2"],
            capture_output=True, text=True, timeout=400,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        engine = create_engine(url)
        with engine.connect() as connection:
            finals = connection.execute(select(Label.image_id).where(Label.tag == "final")).scalars().all()
        engine.dispose()
    report = result.stdout
    assert "× 2 replicas, PostgreSQL claims" in report and "client n talking to replica n mod 2" in report
    assert len(finals) == len(set(finals)) == 4 * (3 + WARMUP_REQUESTS)  # each volume labelled once, all of them
    row = next(line for line in report.splitlines() if line.startswith("| ours"))
    assert "| 0 of " in row  # no duplicate assignment across the replicas


@pytest.mark.parametrize("extra, message", [
    (["--replicas", "2"], "--replicas above 1 needs --db postgresql"),
    (["--replicas", "9"], "replicas must be between 1 and the number of clients (4)"),
])
def test_bench_next_sample_refuses_replicas_it_cannot_run(extra: list[str], message: str):
    result = subprocess.run(
        [sys.executable, "-m", "slpt", "bench", "next-sample", "--volumes", "40", "--clients", "4", "--requests", "2",
         *extra], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
