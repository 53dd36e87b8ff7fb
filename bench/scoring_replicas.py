"""``slpt bench scoring-replicas``: scoring throughput of one model version with 1 and with 2 replicas on one pool and
one PostgreSQL database (docs/design.md, "Work spread over replicas").

Each run starts ``n`` real ``slpt serve`` replicas (each limited to ``threads`` torch/OpenMP threads, standing for a
box with its own CPU or GPU) over the same studies folder and a fresh PostgreSQL database, waits until they have
embedded the pool, then publishes a model version the way training does (``ModelStore.publish``: the version file,
then its row) from this process, so no training process takes part. Every replica sees the version at its next poll
and joins the scoring batches. Throughput is the version's volumes over the span from the first batch's claim to
the last batch's end (the database's own timestamps); the wall time from publishing to the last batch (which adds
up to one poll interval) is reported too. Runs go 1, 2, 2, 1, … (``repeats`` pairs) so a machine that gets busier or
quieter during the run weighs on both counts alike; the ratio is that of the medians.

Stock MONAI Label has no counterpart: its scoring runs in one process of one server, and two stock servers on one
folder would each score the whole pool.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sqlalchemy import func, select

from bench import BenchError
from bench.harness import markdown_table, measure_environment, report_header
from bench.scale import postgres_database
from bench.serverproc import ServerProcess, free_port, running_server, slpt_serve_command

TARGET_RATIO = 1.8
POLL_S = 0.5
GATE = 0.1  # FPU gates of the published model (an untrained model's are 0: its K prompts would agree everywhere)


@dataclass
class Run:
    replicas: int
    volumes: int = 0
    span_s: float = 0.0  # first claim to last batch end
    wall_s: float = 0.0  # publish to last batch end, seen by this process
    batches_by_replica: list[int] = field(default_factory=list)
    embed_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.volumes / self.span_s if self.span_s > 0 else 0.0


def _conf(url: str, backbone: Path, spacing: float, roi: int, batch: int) -> dict[str, str]:
    return {"db": url, "backbone": str(backbone), "spacing": str(spacing), "coarse_spacing": str(2 * spacing),
            "roi_size": str(roi), "work_batch": str(batch), "work_poll_s": str(POLL_S), "quality_interval_s": "0"}


def write_backbone(folder: Path, seed: int) -> tuple[Path, object, object]:
    from models.backbone import BackboneConfig, build_backbone, save_backbone

    torch.manual_seed(seed)
    config = BackboneConfig()
    network = build_backbone(config)
    path = folder / "backbone.pt"
    save_backbone(network, config, path)
    return path, network, config


def publish_version(url: str, studies: Path, backbone_path: Path, backbone, config, spacing: float, roi: int) -> str:
    """A model version as training would publish it (random prompts, non-zero gates)."""
    from app.modelstore import ModelStore
    from db.engine import create_db_engine, session_factory
    from models.cascade import CascadeConfig
    from models.slpt import SLPTConfig, SLPTNet

    network = SLPTNet(backbone, SLPTConfig(roi_size=(roi,) * 3, cascade=CascadeConfig(
        spacing=(spacing,) * 3, coarse_spacing=(2 * spacing,) * 3)))
    with torch.no_grad():
        for fpu in network.fpus.values():
            fpu.gate.fill_(GATE)
    engine = create_db_engine(url)
    try:
        store = ModelStore(session_factory(engine), folder=studies / ".slpt" / "models", backbone_path=backbone_path)
        return store.publish(network.eval(), config, {"bench": "scoring-replicas"})
    finally:
        engine.dispose()


@contextlib.contextmanager
def replicas(n: int, studies: Path, conf: dict[str, str], threads: int, logs: Path) -> Iterator[list[ServerProcess]]:
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(n):
            port = free_port()
            servers.append(stack.enter_context(running_server(
                slpt_serve_command(studies, port, conf), log_path=logs / f"server-{port}.log", port=port, env=env)))
        yield servers


def _wait(condition, timeout: float, what: str, servers: list[ServerProcess]):
    deadline = time.monotonic() + timeout
    while (value := condition()) is None or value is False:
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}; last server log:\n{servers[-1].log()[-3000:]}")
        for server in servers:
            if server.process.poll() is not None:
                raise BenchError(f"a replica exited ({server.process.returncode}):\n{server.log()[-3000:]}")
        time.sleep(0.2)
    return value


def measure(n: int, studies: Path, volumes: int, pg_url: str, backbone_path: Path, backbone, config,
            spacing: float, roi: int, batch: int, threads: int, logs: Path) -> Run:
    from db.engine import create_db_engine, session_factory
    from db.schema import Score, WorkBatch

    run = Run(replicas=n)
    with postgres_database(pg_url) as url:
        engine = create_db_engine(url)
        sessions = session_factory(engine)

        def batches(kind: str) -> list[WorkBatch]:
            with sessions() as session:
                return list(session.scalars(select(WorkBatch).where(WorkBatch.kind == kind)))

        def complete(kind: str, target: str | None = None) -> bool:
            found = [b for b in batches(kind) if target is None or b.target == target]
            failed = [b for b in found if b.state == "failed" or b.failures]
            if failed:  # e.g. a geometry the backbone cannot take: say so instead of waiting
                raise BenchError(f"a {kind} batch failed on a replica: {failed[0].error}")
            return sum(b.size for b in found if b.state == "done") == volumes

        try:
            started = time.perf_counter()
            with replicas(n, studies, _conf(url, backbone_path, spacing, roi, batch), threads, logs) as servers:
                _wait(lambda: complete("embedding"), 3600, "the pool embedded", servers)
                run.embed_s = time.perf_counter() - started
                published = time.perf_counter()
                version = publish_version(url, studies, backbone_path, backbone, config, spacing, roi)
                _wait(lambda: complete("scoring", version), 3600, f"version {version} scored", servers)
                run.wall_s = time.perf_counter() - published
                done = [b for b in batches("scoring") if b.target == version]
                pids = {server.process.pid: index for index, server in enumerate(servers)}
                by_replica = Counter(pids.get(int(b.holder.split(":")[1]), -1) for b in done)
                run.batches_by_replica = [by_replica[index] for index in range(n)]
                if by_replica[-1] or any(b.claims != 1 for b in done):
                    raise BenchError(f"unexpected workers or re-claims in run with {n} replicas: {by_replica}")
                run.volumes = sum(b.size for b in done)
                run.span_s = (max(b.finished_at for b in done) - min(b.claimed_at for b in done)).total_seconds()
                with sessions() as session:
                    distinct = session.scalar(select(func.count(func.distinct(Score.image_id)))
                                              .where(Score.model_version == version))
                if distinct != volumes:
                    raise BenchError(f"{distinct} of {volumes} volumes scored with {n} replicas")
        finally:
            engine.dispose()
    return run


def run_benchmark(volumes: int, size: int, spacing: float, roi: int, batch: int, threads: int, repeats: int,
                  pg_url: str, command: str, seed: int = 0) -> str:
    from cohort.synth import generate_cohort

    if volumes < 2 * batch:
        raise BenchError(f"--volumes must be at least twice --batch ({2 * batch}), got {volumes}")
    if repeats < 1:
        raise BenchError(f"--repeats must be at least 1, got {repeats}")
    env = measure_environment()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="slpt-scoring-replicas-") as scratch:
        work = Path(scratch)
        studies = work / "studies"
        generate_cohort(studies, cases=volumes, seed=seed, size=size, progress=False)
        backbone_path, backbone, config = write_backbone(work, seed)
        order = [n for pair in range(repeats) for n in ((1, 2) if pair % 2 == 0 else (2, 1))]  # 1, 2, 2, 1, …
        for n in order:
            runs.append(measure(n, studies, volumes, pg_url, backbone_path, backbone, config, spacing, roi, batch,
                                threads, work / "logs"))
    return format_report(runs, volumes, size, spacing, roi, batch, threads, command, env)


def format_report(runs: list[Run], volumes: int, size: int, spacing: float, roi: int, batch: int, threads: int,
                  command: str, env) -> str:
    header = report_header("Scoring one model version with 1 and 2 replicas on one PostgreSQL database", command, env, [
        f"Pool: {volumes} synthetic volumes of {size}³ voxels (`cohort.synth`), scored at {spacing:g} mm (stage 1 at "
        f"{2 * spacing:g} mm), window {roi}³; the default backbone UNet with random weights, K = 3 prompts",
        f"Replicas: real `slpt serve` processes on one studies folder and one PostgreSQL database, {threads} torch "
        f"thread(s) each (one box's compute each); batches of {batch} volumes, polls every {POLL_S:g} s",
        "Throughput: the version's volumes over the span from its first batch's claim to its last batch's end "
        "(database timestamps); the version is published by this process after the replicas embedded the pool",
    ], load_note="the cores are shared with other work: compare the rows, which alternate, more than absolute figures")
    rows = [[str(r.replicas), str(r.volumes), f"{r.span_s:.1f}", f"{r.throughput:.2f}", f"{r.wall_s:.1f}",
             " / ".join(map(str, r.batches_by_replica))] for r in runs]
    table = markdown_table(["replicas", "volumes", "span (s)", "volumes/s", "publish to last batch (s)",
                            "batches per replica"], rows, "rrrrrl")
    one = statistics.median(r.throughput for r in runs if r.replicas == 1)
    two = statistics.median(r.throughput for r in runs if r.replicas == 2)
    ratio = two / one if one else float("nan")
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    lines = [
        "",
        f"- Throughput (median of runs): 1 replica {one:.2f} volumes/s, 2 replicas {two:.2f} volumes/s",
        f"- Speed-up with 2 replicas: {ratio:.2f}× (target ≥ {TARGET_RATIO}×: {verdict})",
        "- Every run: each volume scored once (one done batch per volume, no batch claimed twice)",
    ]
    return header + "\n" + table + "\n" + "\n".join(lines) + "\n"
