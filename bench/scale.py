"""``slpt bench scale``: a hospital-archive pool. Registering a plain studies folder of many small volumes (time to the
first answer, peak memory) on SQLite and PostgreSQL, the admin views at that size (``/admin/progress``, a filtered,
sorted ``/admin/volumes`` page, the Slicer plugin's ``/datastore/?output=all``), Next Sample while the headers are still
being read, and a flood of failed logins from one address, against stock MONAI Label on the same folder where stock
can do it (start-up, its datastore listing and Random Next Sample; stock has no admin API and no login limiter).

Every server is started alone over the same folder and loaded from this process with ``http.client`` (one keep-alive
connection, sequential requests: latencies, not throughput); the server's peak resident memory is its ``VmHWM``.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import BenchError
from bench.harness import human_bytes, markdown_table, measure_environment, report_header
from bench.serverproc import free_port, running_server, slpt_serve_command

TARGET_ADMIN_P99_MS = 200.0
PAGE_OFFSET = 100  # the timed volume page starts here (not the first page: the offset's rows are read too)
ADMIN_TOKEN = "slpt-bench-scale-admin-token-0123456789"
ANNOTATORS = 64
STOCK_STARTUP_S = 900.0
STOCK_APP_MAIN = '''\
"""Stock MONAI Label over a plain folder: LocalDatastore and the Random strategy."""

from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.random import Random


class StockApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="stock", description="stock MONAI Label")

    def init_datastore(self):
        return LocalDatastore(self.studies, extensions=("*.nii.gz",), auto_reload=False)

    def init_strategies(self):
        return {"random": Random()}
'''


@dataclass
class Run:
    name: str
    startup_s: float | None = None  # start to the first answer of GET /info/
    peak_rss: int | None = None
    latencies: dict[str, list[float]] = field(default_factory=dict)  # route -> ms
    notes: list[str] = field(default_factory=list)
    registration: tuple[float, int] | None = None  # registration alone: seconds, peak Python memory

    def p(self, route: str, q: float) -> float | None:
        values = self.latencies.get(route)
        return float(np.percentile(values, q)) if values else None


def write_pool(folder: Path, volumes: int, size: int) -> None:
    """``volumes`` small NIfTI volumes (one ``size``×``size``×``size`` int16 template, so writing is I/O only)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(nib.Nifti1Image(np.zeros((size,) * 3, np.int16), np.eye(4)).to_bytes())
    for i in range(volumes):
        (folder / f"case_{i:06d}.nii.gz").write_bytes(data)


def peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Client:
    def __init__(self, url: str, token: str | None = None, source: str | None = None):
        parts = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600,
                                                     source_address=(source, 0) if source else None)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, body: dict | None = None, form: dict | None = None) -> tuple[int, bytes, float]:
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload, headers["Content-Type"] = json.dumps(body), "application/json"
        if form is not None:
            payload, headers["Content-Type"] = urllib.parse.urlencode(form), "application/x-www-form-urlencoded"
        started = time.perf_counter()
        self.connection.request(method, path, body=payload, headers=headers)
        answer = self.connection.getresponse()
        data = answer.read()
        return answer.status, data, (time.perf_counter() - started) * 1000

    def timed(self, method: str, path: str, count: int, body: dict | None = None) -> list[float]:
        times = []
        for _ in range(count):
            status, data, ms = self.request(method, path, body)
            if status != 200:
                raise BenchError(f"{method} {path} answered {status}: {data[:300]!r}")
            times.append(ms)
        return times


@contextlib.contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"slpt_bench_scale_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as error:
        raise BenchError(f"PostgreSQL at {server_url} is not reachable: {error}") from None
    try:
        yield make_url(server_url).set(drivername="postgresql+psycopg", database=name).render_as_string(False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_registration(studies: Path, db: str) -> tuple[float, int]:
    """Registration alone, in this process, into an empty database: (seconds, peak Python memory it allocated)."""
    import tracemalloc

    from db.engine import create_db_engine, session_factory
    from db.ingestion import register_folder
    from db.migrate import upgrade

    upgrade(db)
    engine = create_db_engine(db)
    try:
        tracemalloc.start()
        started = time.perf_counter()
        result = register_folder(session_factory(engine), studies)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        engine.dispose()
    if result.registered == 0:
        raise BenchError(f"registration found no volume under {studies}")
    return seconds, peak


@contextlib.contextmanager
def postgres_database_like(url: str) -> Iterator[str]:
    """Another throw-away database on the server of ``url``."""
    from sqlalchemy.engine import make_url

    with postgres_database(make_url(url).set(drivername="postgresql", database="postgres").render_as_string(False)) as other:
        yield other


def measure_ours(name: str, studies: Path, db: str | None, requests: int, flood: int, logs: Path) -> Run:
    run = Run(name)
    with tempfile.TemporaryDirectory(prefix="slpt-scale-db-") as folder:
        if db is None:
            seconds, peak = measure_registration(studies, f"sqlite:///{folder}/registration.db")
        else:
            with postgres_database_like(db) as url:
                seconds, peak = measure_registration(studies, url)
    run.registration = (seconds, peak)
    port = free_port()
    conf = {"auth": "true", "admin_token": ADMIN_TOKEN, **({"db": db} if db else {})}
    command = slpt_serve_command(studies, port, conf) + ["--no-model"]
    started = time.perf_counter()
    with running_server(command, log_path=logs / f"ours-{port}.log", port=port, startup_timeout=1800) as server:
        run.startup_s = time.perf_counter() - started
        run.peak_rss = peak_rss(server.process.pid)
        admin = Client(server.url, ADMIN_TOKEN)
        # Next Sample while the background job still reads headers: 64 annotators take a volume each.
        run.latencies["next sample (64 annotators, headers still being read)"] = [
            admin.timed("POST", "/activelearning/random", 1, {"client_id": f"annotator-{n}"})[0] for n in range(ANNOTATORS)
        ]
        _, data, _ = admin.request("GET", "/scoring/")
        jobs = [j for j in json.loads(data)["jobs"] if j["kind"] == "ingestion"]
        if jobs:
            run.notes.append(f"ingestion job at the first Next Samples: {jobs[0]['state']}, "
                             f"{jobs[0]['progress'] * 100:.0f} % of the headers read")
        admin.timed("GET", "/admin/progress", 3)  # warm-up
        run.latencies["GET /admin/progress"] = admin.timed("GET", "/admin/progress", requests)
        page = f"/admin/volumes?status=unlabeled&sort=-ingested&offset={PAGE_OFFSET}&limit=50"
        admin.timed("GET", page, 3)
        run.latencies[f"GET /admin/volumes (unlabeled, newest first, offset {PAGE_OFFSET})"] = admin.timed("GET", page, requests)
        run.latencies["GET /datastore/?output=all (bounded)"] = admin.timed("GET", "/datastore/?output=all", requests)
        run.notes += login_flood(server.url, flood)
    return run


def login_flood(url: str, flood: int, workers: int = 8) -> list[str]:
    """``flood`` failed logins from 127.0.0.1 (``workers`` at once); meanwhile /health is timed, and another user logs
    in from 127.0.0.2. Returns the report's notes."""
    if flood <= 0:
        return []
    statuses: list[int] = []
    health: list[float] = []
    done = threading.Event()

    def guess(chunk: range) -> list[int]:
        client = Client(url)
        return [client.request("POST", "/auth/token", form={"username": f"guess-{n}", "password": "wrong",
                                                            "grant_type": "password"})[0] for n in chunk]

    def probe() -> None:
        client = Client(url)
        while not done.is_set():
            health.append(client.request("GET", "/health")[2])
            time.sleep(0.05)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for part in pool.map(guess, [range(w, flood, workers) for w in range(workers)]):
            statuses += part
    elapsed = time.perf_counter() - started
    other, _, other_ms = Client(url, source="127.0.0.2").request(
        "POST", "/auth/token", form={"username": "guess-0", "password": "wrong", "grant_type": "password"})
    done.set()
    prober.join()
    return [
        f"{flood:,} failed logins from one address in {elapsed:.1f} s: {statuses.count(401)} checked (401), "
        f"{statuses.count(429)} refused locked or throttled (429), {len(statuses) - statuses.count(401) - statuses.count(429)} other; "
        f"`GET /health` meanwhile p99 {np.percentile(health, 99):.1f} ms over {len(health)} probes; a login from another "
        f"address answered {other} (401 = its password was checked, not refused) in {other_ms:.0f} ms"
    ]


def measure_stock(studies: Path, requests: int, logs: Path) -> Run:
    run = Run("stock MONAI Label (LocalDatastore + Random)")
    app = logs / "stock_app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "main.py").write_text(STOCK_APP_MAIN)
    port = free_port()
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
               "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    try:
        with running_server(command, log_path=logs / f"stock-{port}.log", port=port,
                            startup_timeout=STOCK_STARTUP_S) as server:
            run.startup_s = time.perf_counter() - started
            run.peak_rss = peak_rss(server.process.pid)
            client = Client(server.url)
            run.latencies["next sample (64 annotators, headers still being read)"] = [
                client.timed("POST", "/activelearning/random", 1, {"client_id": f"annotator-{n}"})[0]
                for n in range(min(ANNOTATORS, requests))]
            run.latencies["GET /datastore/?output=all (bounded)"] = client.timed(
                "GET", "/datastore/?output=all", max(3, requests // 20))
    except RuntimeError as error:
        run.notes.append(f"did not start within {STOCK_STARTUP_S:.0f} s ({str(error)[:200]})")
    return run


def run_benchmark(volumes: int, size: int, requests: int, flood: int, backends: list[str], pg_url: str,
                  stock: bool, command: str) -> str:
    if volumes < 2 * ANNOTATORS:
        raise BenchError(f"volumes must be at least {2 * ANNOTATORS}, got {volumes}")
    env = measure_environment()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="slpt-scale-") as scratch:
        work = Path(scratch)
        pool = work / "studies"
        started = time.perf_counter()
        write_pool(pool, volumes, size)
        written_s = time.perf_counter() - started
        for backend in backends:
            if backend == "sqlite":
                runs.append(measure_ours("ours, SQLite", pool, None, requests, flood, work))
            else:
                with postgres_database(pg_url) as url:
                    runs.append(measure_ours("ours, PostgreSQL", pool, url, requests, flood, work))
        if stock:
            runs.append(measure_stock(pool, requests, work))
    return format_report(runs, volumes, size, requests, flood, written_s, command, env)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def format_report(runs: list[Run], volumes: int, size: int, requests: int, flood: int, written_s: float,
                  command: str, env) -> str:
    header = report_header("A hospital-archive pool: registration, admin views and login abuse at scale", command, env, [
        f"Pool: {volumes:,} volumes of {size}³ voxels in one plain studies folder (written in {written_s:.0f} s, "
        "before any server started); every server started alone over it; ours with `--no-model --conf auth true`",
        f"Latencies: {requests} sequential requests per route on one keep-alive connection after 3 warm-up requests; "
        f"Next Sample: {ANNOTATORS} annotators' first claims right after start-up",
    ], load_note="cores shared with other work")
    routes = list(dict.fromkeys(route for run in runs for route in run.latencies))
    rows = [["registration alone: time (s)", *[_ms(r.registration[0]) if r.registration else "–" for r in runs]],
            ["registration alone: peak Python memory", *[human_bytes(r.registration[1]) if r.registration else "–"
                                                         for r in runs]],
            ["start-up to first answer (s)", *[_ms(r.startup_s) for r in runs]],
            ["server peak memory", *[human_bytes(r.peak_rss) if r.peak_rss else "–" for r in runs]]]
    for route in routes:
        rows.append([f"{route} p50 / p99 (ms)", *[f"{_ms(r.p(route, 50))} / {_ms(r.p(route, 99))}" for r in runs]])
    table = markdown_table(["", *[r.name for r in runs]], rows, "l" + "r" * len(runs))
    verdicts = []
    stock = next((r for r in runs if r.name.startswith("stock")), None)
    for run in runs:
        if run is stock:
            continue
        for route in ("GET /admin/progress", f"GET /admin/volumes (unlabeled, newest first, offset {PAGE_OFFSET})"):
            p99 = run.p(route, 99)
            if p99 is not None:
                verdicts.append(f"{run.name}: `{route.split(' (')[0]}` p99 ≤ {TARGET_ADMIN_P99_MS:.0f} ms — "
                                f"{'met' if p99 <= TARGET_ADMIN_P99_MS else 'MISSED'} ({p99:.1f} ms)")
        if stock and stock.startup_s and run.startup_s:
            ratio = stock.startup_s / run.startup_s
            words = f"{ratio:.1f}× faster than" if ratio >= 1 else f"{1 / ratio:.1f}× slower than"
            verdicts.append(f"{run.name}: start-up (registration included) {words} stock "
                            f"({run.startup_s:.1f} s vs {stock.startup_s:.1f} s)")
        listing = "GET /datastore/?output=all (bounded)"
        if stock and stock.p(listing, 50) and run.p(listing, 50):
            verdicts.append(f"{run.name}: the datastore listing {stock.p(listing, 50) / run.p(listing, 50):.0f}× faster "
                            f"than stock's whole listing (p50)")
    notes = [f"- {run.name}: {note}" for run in runs for note in run.notes]
    return "\n".join([header, table, "", *[f"- {v}" for v in verdicts], *notes, ""])
