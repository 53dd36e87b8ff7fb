"""``slpt bench next-sample``: "Next Sample" under concurrent annotators, our server against stock MONAI Label.

Both servers serve their own copy of one generated cohort; they start together (startup is mostly imports) and are
loaded one after the other on the same machine, the other one idle, by the same client code: ``clients`` threads, each
one annotator (``client_id = "annotator-<n>"``) with its own keep-alive HTTP connection, sending ``requests``
sequential ``POST /activelearning/random``. Before the timed requests every client sends :data:`WARMUP_REQUESTS`
untimed ones (connections open, caches warm, and every timed request to our server is the steady-state kind: release
the previous volume, claim a new one); a barrier then starts the timed part together. The clients use the standard
library's ``http.client``: on 2 cores shared with the server, httpx cost ~4 ms of CPU per request against ~0.7 ms.

Stock is MONAI Label 0.8.5 as a user would set it up: ``LocalDatastore`` over ``imagesTr/`` and the ``Random`` strategy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from tqdm import tqdm

from bench import BenchError
from bench.harness import Environment, markdown_table, measure_environment, report_header
from bench.serverproc import distinct_ports, running_server, slpt_serve_command
from cohort.synth import generate_cohort

STRATEGY = "random"
WARMUP_REQUESTS = 2
COHORT_SEED = 0
TARGET_P99_MS = 50.0
TARGET_P99_RATIO = 20.0  # stock p99 / our p99
REQUEST_TIMEOUT_S = 300.0  # stock answers one request at a time: under load a request waits for all the others

STOCK_APP_MAIN = '''\
"""Stock MONAI Label app for the next-sample benchmark: LocalDatastore over imagesTr/ and the Random strategy."""

from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.random import Random


class StockApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="stock", description="stock MONAI Label")

    def init_datastore(self):
        return LocalDatastore(
            self.studies, images_dir="imagesTr", labels_dir="labels", extensions=("*.nii.gz",), auto_reload=False
        )

    def init_strategies(self):
        return {"random": Random()}
'''


@dataclass(frozen=True)
class Response:
    """One answered next-sample request. Times are ``time.perf_counter()`` seconds of the load's process."""

    client: int
    index: int  # request number of this client, warm-up requests included
    image_id: str | None  # None: the server had nothing to offer
    sent: float
    received: float
    warmup: bool
    upload_ms: float | None = None  # --cycle: the label upload that followed (not part of the next-sample latency)

    @property
    def latency_ms(self) -> float:
        return (self.received - self.sent) * 1000.0


@dataclass(frozen=True)
class LoadResult:
    """Every response of one load (warm-up included), in the order they were received, and the timed part's length."""

    responses: tuple[Response, ...]
    wall_s: float

    @property
    def timed(self) -> list[Response]:
        return [r for r in self.responses if not r.warmup]

    @property
    def latencies_ms(self) -> list[float]:
        """Latency of each timed request, in the order they were received."""
        return [r.latency_ms for r in self.timed]

    @property
    def upload_latencies_ms(self) -> list[float]:
        return [r.upload_ms for r in self.timed if r.upload_ms is not None]

    @property
    def ids_per_client(self) -> dict[int, list[str | None]]:
        """The volume ids each client received in its timed requests, in request order."""
        ids: dict[int, list[str | None]] = defaultdict(list)
        for response in sorted(self.timed, key=lambda r: (r.client, r.index)):
            ids[response.client].append(response.image_id)
        return dict(ids)


@dataclass(frozen=True)
class ServerStats:
    name: str
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    duplicates: int
    requests: int
    upload_p50_ms: float | None = None
    upload_p99_ms: float | None = None


def client_id(client: int) -> str:
    return f"annotator-{client}"


def run_load(
    urls: Sequence[str],
    clients: int,
    requests: int,
    *,
    warmup: int = WARMUP_REQUESTS,
    strategy: str = STRATEGY,
    progress: Callable[[], None] | None = None,
    labels: dict[str, bytes] | None = None,
) -> LoadResult:
    """Load the server at ``urls`` (one per replica; client n talks to ``urls[n % len(urls)]``) with ``clients``
    concurrent annotators, each sending ``warmup`` untimed then ``requests`` timed sequential next-sample requests;
    ``progress`` is called after each timed response.

    With ``labels`` (image id -> NIfTI bytes) every next sample is followed by ``PUT /datastore/label`` of that
    volume's label (tag ``final``) before the client asks again: the annotators' full cycle."""
    if clients < 1 or requests < 1 or warmup < 0:
        raise BenchError(f"need clients >= 1, requests >= 1, warmup >= 0; got {clients}, {requests}, {warmup}")
    addresses = [urlsplit(url) for url in urls]
    start_together = threading.Barrier(clients)

    def annotator(client: int) -> list[Response]:
        answered = []
        address = addresses[client % len(addresses)]
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=REQUEST_TIMEOUT_S)
        try:
            for index in range(warmup + requests):
                if index == warmup:
                    start_together.wait()
                response = _next_sample(connection, strategy, client, index, warmup=index < warmup)
                if labels is not None and response.image_id is not None:
                    upload_ms = _upload_label(connection, response.image_id, labels[response.image_id], client)
                    response = dataclasses.replace(response, upload_ms=upload_ms)
                answered.append(response)
                if index >= warmup and progress is not None:
                    progress()
        except BaseException:
            start_together.abort()  # the other clients must not wait for this one forever
            raise
        finally:
            connection.close()
        return answered

    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="annotator") as pool:
        futures = [pool.submit(annotator, n) for n in range(clients)]
        responses = [r for future in futures for r in _result(future)]
    timed = [r for r in responses if not r.warmup]
    wall_s = max(r.received for r in timed) - min(r.sent for r in timed)
    return LoadResult(responses=tuple(sorted(responses, key=lambda r: r.received)), wall_s=wall_s)


def _result(future) -> list[Response]:
    try:
        return future.result()
    except threading.BrokenBarrierError:
        return []  # another client failed; its own exception is raised from its future


def _next_sample(
    connection: http.client.HTTPConnection, strategy: str, client: int, index: int, warmup: bool
) -> Response:
    path = f"/activelearning/{strategy}"
    where = f"POST http://{connection.host}:{connection.port}{path} for {client_id(client)}"
    sent = time.perf_counter()
    try:
        status, body = _post_json(connection, path, {"client_id": client_id(client)})
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{where} failed: {exc!r}") from exc
    received = time.perf_counter()
    if status != 200:
        raise BenchError(f"{where} answered {status}: {body[:300].decode(errors='replace')}")
    return Response(client, index, json.loads(body).get("id"), sent, received, warmup)


def _post_json(connection: http.client.HTTPConnection, path: str, payload: dict) -> tuple[int, bytes]:
    """POST ``payload`` over the keep-alive ``connection``; (status, body).

    uvicorn closes connections idle for 5 s (clients wait that long at the barrier behind a slow server): when the
    server turns out to have closed this one, reconnect once and send again.
    """
    def send() -> tuple[int, bytes]:
        connection.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()

    try:
        return send()
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        connection.close()  # the next request opens a new connection
        return send()


def _upload_label(connection: http.client.HTTPConnection, image_id: str, label: bytes, client: int) -> float:
    """``PUT /datastore/label?image=…&tag=final`` as a multipart form (the Slicer plugin's request); its ms."""
    boundary = f"slpt-bench-{client}-{image_id}"
    params = json.dumps({"client_id": client_id(client)})
    body = b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{params}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="label"; filename="{image_id}.nii.gz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        label, f"\r\n--{boundary}--\r\n".encode(),
    ])
    path = f"/datastore/label?image={image_id}&tag=final"
    sent = time.perf_counter()
    try:
        connection.request("PUT", path, body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        answer = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"PUT {path} for {client_id(client)} failed: {exc!r}") from exc
    if response.status != 200:
        raise BenchError(f"PUT {path} for {client_id(client)} answered {response.status}: {answer[:300].decode(errors='replace')}")
    return (time.perf_counter() - sent) * 1000.0


def duplicates(responses: Sequence[Response]) -> int:
    """How many responses handed out a volume that another client was holding when the response arrived.

    A client holds the volume of a response from receiving it until it *sends* its next request (asking for the next
    volume gives the current one up, as our server's skip does), or to the end of the load. Counted this way a server
    that really leases each volume to one client at a time always scores 0: at the moment the duplicate arrived, both
    clients provably held the volume. Ending the hold when the next *response* arrives instead would count our server's
    legitimate reuse of a volume that its holder has just skipped.
    """
    by_client: dict[int, list[Response]] = defaultdict(list)
    for response in responses:
        by_client[response.client].append(response)
    holds: dict[str, list[tuple[int, float, float]]] = defaultdict(list)  # image id -> (client, from, until)
    for client, own in by_client.items():
        own.sort(key=lambda r: r.sent)
        for response, following in zip(own, [*own[1:], None]):
            if response.image_id is not None:
                until = following.sent if following is not None else float("inf")
                holds[response.image_id].append((client, response.received, until))
    return sum(
        any(
            holder != response.client and start <= response.received < until
            for holder, start, until in holds[response.image_id]
        )
        for response in responses
        if response.image_id is not None
    )


def summarize(name: str, result: LoadResult) -> ServerStats:
    latencies, uploads = np.asarray(result.latencies_ms), result.upload_latencies_ms
    return ServerStats(
        name=name,
        p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)),
        requests_per_s=len(latencies) / result.wall_s,
        duplicates=duplicates(result.responses),
        requests=len(result.responses),
        upload_p50_ms=float(np.percentile(uploads, 50)) if uploads else None,
        upload_p99_ms=float(np.percentile(uploads, 99)) if uploads else None,
    )


def format_table(ours: ServerStats, stock: ServerStats) -> str:
    """The two servers' figures as a markdown table, then the ratios ours vs stock and the targets."""
    cycle = ours.upload_p99_ms is not None
    columns = ["server", "p50 (ms)", "p99 (ms)", "requests/s", "duplicate assignments",
               *(["upload p50 / p99 (ms)"] if cycle else [])]
    rows = [
        [stats.name, f"{stats.p50_ms:.1f}", f"{stats.p99_ms:.1f}", f"{stats.requests_per_s:.1f}",
         f"{stats.duplicates} of {stats.requests}",
         *([f"{stats.upload_p50_ms:.1f} / {stats.upload_p99_ms:.1f}"] if cycle else [])]
        for stats in (ours, stock)
    ]
    p99_ratio = stock.p99_ms / ours.p99_ms
    throughput_ratio = ours.requests_per_s / stock.requests_per_s
    verdict = _verdicts(ours, p99_ratio)
    return "\n".join(
        [
            markdown_table(columns, rows, "lrrrr" + ("r" if cycle else "")),
            "",
            f"Ours vs stock: p99 latency {_times(p99_ratio, 'lower', 'higher')}, "
            f"throughput {_times(throughput_ratio, 'higher', 'lower')}.",
            "",
            f"Targets: {verdict}.",
        ]
    )


def _times(ratio: float, better: str, worse: str) -> str:
    """``ratio`` (> 1: ours better) in words that stay true either way: "**3.0× lower**" or "**2.0× higher**"."""
    return f"**{ratio:.1f}× {better}**" if ratio >= 1 else f"**{1 / ratio:.1f}× {worse}**"


def _verdicts(ours: ServerStats, p99_ratio: float) -> str:
    def mark(met: bool) -> str:
        return "met" if met else "**missed**"

    return "; ".join(
        [
            f"our p99 ≤ {TARGET_P99_MS:.0f} ms — {mark(ours.p99_ms <= TARGET_P99_MS)} ({ours.p99_ms:.1f} ms)",
            f"p99 ≥ {TARGET_P99_RATIO:.0f}× better than stock — {mark(p99_ratio >= TARGET_P99_RATIO)} ({p99_ratio:.1f}×)",
            f"0 duplicate assignments — {mark(ours.duplicates == 0)} ({ours.duplicates})",
        ]
    )


# -- the whole benchmark -------------------------------------------------------------------------------------------------
def write_stock_app(folder: Path) -> Path:
    """A minimal stock MONAI Label app folder (``main.py`` only); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(STOCK_APP_MAIN)
    return folder


def stock_serve_command(app_dir: Path, studies: Path, port: int) -> list[str]:
    """``monailabel start_server`` for the stock app, run with this interpreter."""
    return [
        sys.executable, "-m", "monailabel.main", "start_server",
        "--app", str(app_dir), "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def run_benchmark(
    volumes: int, clients: int, requests: int, size: int = 8, command: str = "", cycle: bool = False,
    db: str | None = None, replicas: int = 1,
) -> str:
    """Generate a ``volumes``-case cohort of ``size``³ volumes, load our server then the stock one with the same
    clients, and return the markdown report (``command`` is quoted in it).

    ``cycle``: each next sample is followed by the volume's label upload (the annotators' full cycle). ``db``: our
    server's database URL (default SQLite in its studies folder); stock MONAI Label keeps its JSON file either way.
    ``replicas``: our server runs as that many processes over one studies folder and one PostgreSQL database
    (docs/design.md, "Faults, load and replicas"), the clients spread over them; stock runs as one.
    """
    _check_arguments(volumes, clients, requests, size, cycle, db, replicas)
    env = measure_environment()  # before the servers add their own load
    with tempfile.TemporaryDirectory(prefix="slpt-bench-") as scratch:
        work = Path(scratch)
        ours_studies, stock_studies = work / "ours" / "studies", work / "stock" / "studies"
        generate_cohort(ours_studies, cases=volumes, seed=COHORT_SEED, size=size, progress=True)
        labels = ({path.name.removesuffix(".nii.gz"): path.read_bytes() for path in (ours_studies / "labelsTr").iterdir()}
                  if cycle else None)
        # Each server writes into its studies folder (ours .slpt/, stock datastore_v2.json): one copy each.
        shutil.copytree(ours_studies, stock_studies)
        # Startup reads every volume's header (ours also hashes it): allow for large cohorts.
        startup_timeout = 180.0 + 0.05 * volumes

        stock_app = write_stock_app(work / "stock_app")
        *ours_ports, stock_port = distinct_ports(replicas + 1)
        database = "PostgreSQL" if db and db.startswith("postgresql") else "SQLite"
        ours_name = f"ours (`slpt serve`{f' × {replicas} replicas' if replicas > 1 else ''}, {database} claims)"
        servers = {
            **{f"{ours_name} #{n}": (slpt_serve_command(ours_studies, port, {"db": db} if db else None), port)
               for n, port in enumerate(ours_ports)},
            f"stock MONAI Label {env.versions['MONAI Label']} (LocalDatastore + Random)": (
                stock_serve_command(stock_app, stock_studies, stock_port),
                stock_port,
            ),
        }
        with contextlib.ExitStack() as running:
            urls = list(_start_together(running, servers, work, startup_timeout).values())
            ours = _measure(ours_name, urls[:replicas], clients, requests, labels)
            stock = _measure(list(servers)[-1], urls[replicas:], clients, requests, labels)
    return format_report(ours, stock, volumes, clients, requests, size, command, env, cycle, replicas)



def _check_arguments(
    volumes: int, clients: int, requests: int, size: int, cycle: bool = False, db: str | None = None, replicas: int = 1
) -> None:
    if clients < 1 or requests < 1:
        raise BenchError(f"clients and requests must be >= 1, got {clients} and {requests}")
    if replicas < 1 or replicas > clients:
        raise BenchError(f"replicas must be between 1 and the number of clients ({clients}), got {replicas}")
    if replicas > 1 and not (db or "").startswith("postgresql"):
        raise BenchError("--replicas above 1 needs --db postgresql+psycopg://…: replicas share one PostgreSQL database")
    if cycle and volumes < clients * (WARMUP_REQUESTS + requests):
        needed = clients * (WARMUP_REQUESTS + requests)
        raise BenchError(f"--cycle labels one volume per request: volumes must be at least clients × (requests + "
                         f"{WARMUP_REQUESTS} warm-up) = {needed}, got {volumes}")
    if volumes < 2 * clients:
        # Every client holds one volume and skips it on its next request: leave room for that.
        raise BenchError(f"volumes must be at least 2 × clients = {2 * clients}, got {volumes}")
    if size < 8:
        raise BenchError(f"size must be >= 8, got {size}")


def _start_together(
    running: contextlib.ExitStack, servers: dict[str, tuple[list[str], int]], logs: Path, startup_timeout: float
) -> dict[str, str]:
    """Start every server at once (startup is mostly imports and ingestion, so this halves the wait); they stop when
    ``running`` closes. Returns each server's URL by name, in the order given."""
    tqdm.write(f"starting {len(servers)} servers: {', '.join(servers)} …")

    def start(name: str, command: list[str], port: int) -> str:
        log = logs / f"server-{port}.log"
        try:
            return running.enter_context(running_server(command, log_path=log, port=port, startup_timeout=startup_timeout)).url
        except RuntimeError as exc:  # raised by running_server: the server died or never answered
            raise BenchError(f"{name}: {exc}") from exc

    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        futures = {name: pool.submit(start, name, command, port) for name, (command, port) in servers.items()}
    return {name: future.result() for name, future in futures.items()}


def _measure(
    name: str, urls: Sequence[str], clients: int, requests: int, labels: dict[str, bytes] | None
) -> ServerStats:
    """Load one server (at each of its replicas' ``urls``; the other server sits idle) and summarise it."""
    with tqdm(total=clients * requests, desc=f"load {name.split(' (')[0]}", unit="req") as bar:
        result = run_load(urls, clients, requests, progress=lambda: bar.update(1), labels=labels)
    return summarize(name, result)


def format_report(
    ours: ServerStats,
    stock: ServerStats,
    volumes: int,
    clients: int,
    requests: int,
    size: int,
    command: str,
    env: Environment,
    cycle: bool = False,
    replicas: int = 1,
) -> str:
    cycle_note = (", each followed by `PUT /datastore/label` of that volume's label (tag `final`, multipart, as "
                  "the Slicer plugin sends it): the full annotator cycle; latencies are next-sample only"
                  if cycle else "")
    header = report_header("Next Sample under concurrent annotators: ours vs stock MONAI Label", command, env, [
        f"Load: {volumes} volumes of {size}³ voxels; {clients} concurrent clients × {requests} sequential "
        f"`POST /activelearning/{STRATEGY}` each (`{{\"client_id\": \"annotator-<n>\"}}`), after {WARMUP_REQUESTS} "
        f"untimed warm-up requests per client{cycle_note}; both servers were started together, each over its own "
        "copy of the cohort, and loaded one after the other (the other one idle)"
        + (f"; ours ran as {replicas} replicas over one studies folder and one PostgreSQL database, client n talking "
           f"to replica n mod {replicas}, duplicates counted across all of them" if replicas > 1 else ""),
    ], load_note="cores shared with other work", date_note=" (start)")
    footnote = (
        "A duplicate assignment is a response (warm-up included) whose volume another client held when it arrived; "
        "a client holds its latest volume from receiving it until it sends its next request."
    )
    return f"{header}\n{format_table(ours, stock)}\n\n{footnote}\n"
