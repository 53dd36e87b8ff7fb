"""``slpt bench soak``: the full annotator cycle (next sample, then a final label upload) for minutes on one server.

``clients`` threads, each one annotator with its own keep-alive connection, loop: ``POST /activelearning/random``,
then ``PUT /datastore/label`` with the volume's ground-truth label, until ``minutes`` are over or no volume is left.
With ``tag="final"`` every cycle labels a volume for good, so the pool bounds the run; another tag (a draft) leaves
the volumes unlabeled, and the annotators cycle through them for as long as asked (label versions pile up).
The server runs on loopback (``slpt serve``, SQLite in the studies folder or ``--db URL``). The report gives the errors
(any answer but 2xx, or a failed connection: must be 0), latency percentiles of both requests, and the server's
resident memory over the run: growth from the first sample after the warm-up to the last must stay within 10 %.
:func:`soak` drives any server given its URL and process id (tests point it at servers that leak or fail on purpose);
:func:`verdicts` are the two pass/fail judgements the report prints.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from bench import BenchError
from bench.harness import machine_facts
from bench.serverproc import free_port, running_server, slpt_serve_command
from cohort.synth import generate_cohort

MAX_GROWTH = 0.10
WARMUP_FRACTION = 0.1
SAMPLE_EVERY_S = 2.0


@dataclass
class SoakLog:
    next_sample_ms: list[float] = field(default_factory=list)
    upload_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    exhausted_at_s: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def run_soak(minutes: float, clients: int, volumes: int, db: str | None, command: str = "", tag: str = "final",
             sample_every_s: float = SAMPLE_EVERY_S) -> str:
    if minutes <= 0 or clients < 1 or volumes < 2 * clients:
        raise BenchError("need minutes > 0, clients >= 1 and volumes >= 2 x clients")
    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="slpt-soak-") as scratch:
        studies = Path(scratch) / "studies"
        generate_cohort(studies, cases=volumes, seed=0, size=8, progress=True)
        labels = {p.name.removesuffix(".nii.gz"): p.read_bytes() for p in (studies / "labelsTr").iterdir()}
        port = free_port()
        conf = {"db": db} if db else {}
        serve = slpt_serve_command(studies, port, conf)
        with running_server(serve, log_path=Path(scratch) / "server.log", port=port,
                            startup_timeout=180 + 0.05 * volumes) as server:
            log = soak(server.url, server.process.pid, clients, labels, minutes * 60, tag, sample_every_s)
    return _report(log, minutes, clients, volumes, db, command, facts, tag)


def soak(url: str, pid: int, clients: int, labels: dict[str, bytes], seconds: float, tag: str = "final",
         sample_every_s: float = SAMPLE_EVERY_S) -> SoakLog:
    """``clients`` annotators cycle on the server at ``url`` for ``seconds`` (or until it has nothing left); the
    resident memory of process ``pid`` is sampled every ``sample_every_s``. ``labels``: the upload for each image id."""
    log = SoakLog()
    start = time.monotonic()
    deadline = start + seconds
    done = threading.Event()

    def annotator(n: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < deadline and not done.is_set():
                try:
                    began = time.perf_counter()
                    answer = client.post("/activelearning/random", json={"client_id": f"soak-{n}"})
                    claimed = time.perf_counter()
                    if answer.status_code != 200:
                        raise RuntimeError(f"next sample {answer.status_code}: {answer.text[:200]}")
                    image = answer.json().get("id")
                    if image is None:
                        with log.lock:
                            log.exhausted_at_s = log.exhausted_at_s or time.monotonic() - start
                        done.set()
                        return
                    saved = client.put("/datastore/label", params={"image": image, "tag": tag},
                                       data={"params": f'{{"client_id": "soak-{n}"}}'},
                                       files={"label": ("label.nii.gz", labels[image])})
                    uploaded = time.perf_counter()
                    if saved.status_code != 200:
                        raise RuntimeError(f"label upload {saved.status_code}: {saved.text[:200]}")
                    with log.lock:
                        log.next_sample_ms.append((claimed - began) * 1000)
                        log.upload_ms.append((uploaded - claimed) * 1000)
                except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                    with log.lock:
                        log.errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=annotator, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    with tqdm(total=int(seconds), desc="soak", unit="s") as bar:
        while any(t.is_alive() for t in threads):
            now = time.monotonic() - start
            log.rss_mib.append((now, resident_mib(pid)))
            bar.n = min(int(now), int(seconds))
            bar.set_postfix(cycles=len(log.upload_ms), errors=len(log.errors))
            time.sleep(sample_every_s)
    log.rss_mib.append((time.monotonic() - start, resident_mib(pid)))
    return log


def _percentiles(values: list[float]) -> str:
    if not values:
        return "n/a | n/a | n/a"
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return f"{p50:.1f} | {p95:.1f} | {p99:.1f}"


def memory_growth(log: SoakLog) -> tuple[float, float]:
    """(RSS in MiB at the first sample after the warm-up, its relative growth from there to the last sample)."""
    ran_s = log.rss_mib[-1][0]
    after_warmup = [mib for at, mib in log.rss_mib if at >= WARMUP_FRACTION * ran_s] or [log.rss_mib[-1][1]]
    return after_warmup[0], (log.rss_mib[-1][1] - after_warmup[0]) / after_warmup[0]


def verdicts(log: SoakLog) -> dict[str, bool]:
    """Whether the run met each bar: no errors, and memory growth within :data:`MAX_GROWTH`."""
    return {"errors": not log.errors, "memory": memory_growth(log)[1] <= MAX_GROWTH}


def _report(log: SoakLog, minutes: float, clients: int, volumes: int, db: str | None, command: str,
            facts: dict[str, str], tag: str) -> str:
    ran_s = log.rss_mib[-1][0]
    warm_mib, growth = memory_growth(log)
    met = {bar: "met" if ok else "MISSED" for bar, ok in verdicts(log).items()}
    backend = "PostgreSQL" if db and db.startswith("postgresql") else "SQLite"
    lines = [
        "# Soak: the full annotator cycle (next sample, then a label upload)", "",
        f"Command: `{command}`", "",
        f"Machine: {', '.join(f'{k} {v}' for k, v in facts.items())}", "",
        f"{clients} annotators on {volumes} volumes (8³), labels tagged `{tag}`, {backend}, planned {minutes:g} min, "
        f"ran {ran_s:.0f} s"
        + (f" (every volume labeled after {log.exhausted_at_s:.0f} s)" if log.exhausted_at_s else "") + ".", "",
        "| request | count | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|",
        f"| next sample | {len(log.next_sample_ms)} | {_percentiles(log.next_sample_ms)} |",
        f"| label upload | {len(log.upload_ms)} | {_percentiles(log.upload_ms)} |", "",
        f"Errors: {len(log.errors)}" + (f" (first: {log.errors[0]})" if log.errors else ""), "",
        f"Server memory (RSS): {warm_mib:.0f} MiB after the warm-up, {log.rss_mib[-1][1]:.0f} MiB at the end, "
        f"peak {max(m for _, m in log.rss_mib):.0f} MiB: growth {growth * 100:+.1f} %.", "",
        "## Verdicts", "",
        f"- errors = 0: {met['errors']} ({len(log.errors)})",
        f"- memory growth within {MAX_GROWTH:.0%}: {met['memory']} ({growth * 100:+.1f} %)",
    ]
    return "\n".join(lines) + "\n"
