"""``slpt bench …``: the benchmarks' commands, each measuring ours and the baseline in one run.

Every command builds its report through :func:`run_bench`, which turns a :class:`bench.BenchError` into a clear exit
and prints the report (and writes it with ``--out``; docs/results/ keeps the measured ones).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli import command_line, fail
from bench import BenchError

bench_cli = typer.Typer(
    help="Benchmarks: our server against stock MONAI Label, measured side by side in one run.", no_args_is_help=True
)

OutOption = Annotated[Optional[Path], typer.Option(help="Also write the report (markdown) to this file")]
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda")]


def run_bench(make_report: Callable[[], str], out: Path | None) -> None:
    """Run one benchmark; print its report and, with ``out``, write it there."""
    try:
        report = make_report()
    except BenchError as exc:
        raise fail(str(exc))
    typer.echo(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)


@bench_cli.command("next-sample")
def bench_next_sample(
    volumes: Annotated[int, typer.Option(help="Volumes in the generated cohort")] = 10000,
    clients: Annotated[int, typer.Option(help="Concurrent annotators (one client id each)")] = 16,
    requests: Annotated[int, typer.Option(help="Sequential timed next-sample requests per annotator")] = 20,
    size: Annotated[int, typer.Option(help="Edge length of the cubic volumes in voxels")] = 8,
    cycle: Annotated[bool, typer.Option(help="Follow each next sample with its label upload (the full annotator cycle)")] = False,
    db: Annotated[Optional[str], typer.Option(help="Our server's SQLAlchemy URL (default: SQLite in its studies folder)")] = None,
    replicas: Annotated[int, typer.Option(help="Our server as this many replicas over one PostgreSQL --db")] = 1,
    out: OutOption = None,
) -> None:
    """Next Sample latency, throughput and duplicate assignments under concurrent annotators: ours vs stock."""
    from bench.next_sample import run_benchmark

    run_bench(lambda: run_benchmark(volumes, clients, requests, size, command=command_line(), cycle=cycle, db=db,
                                    replicas=replicas), out)


@bench_cli.command("soak")
def bench_soak(
    minutes: Annotated[float, typer.Option(help="How long the annotators keep cycling")] = 5.0,
    clients: Annotated[int, typer.Option(help="Concurrent annotators")] = 16,
    volumes: Annotated[int, typer.Option(help="Volumes in the generated cohort (8³ each)")] = 2000,
    db: Annotated[Optional[str], typer.Option(help="SQLAlchemy URL (default: SQLite in the studies folder)")] = None,
    tag: Annotated[str, typer.Option(help="Label tag: final (each cycle labels a volume) or a draft tag (cycles on)")] = "final",
    out: OutOption = None,
) -> None:
    """The full annotator cycle (next sample, label upload) on one loopback server: errors, latency, memory growth."""
    from bench.soak import run_soak

    run_bench(lambda: run_soak(minutes, clients, volumes, db, command=command_line(), tag=tag), out)


@bench_cli.command("train")
def bench_train(
    size: Annotated[int, typer.Option(help="Edge length of the cubic training patches (a multiple of 8)")] = 48,
    batch: Annotated[int, typer.Option(help="Patches per prompt; every variant trains on prompts × batch patches")] = 2,
    prompts: Annotated[int, typer.Option(help="K, prompt sets of the prompt-tuning variants")] = 3,
    steps: Annotated[int, typer.Option(help="Timed optimisation steps per variant")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up steps per variant")] = 2,
    backbone: Annotated[Optional[Path], typer.Option(help="Backbone to train on: our checkpoint, a MONAI bundle folder or an nnU-Net v2 result folder (default: the default UNet, random weights)")] = None,
    device: DeviceOption = "auto",
    out: OutOption = None,
) -> None:
    """One training step of prompt tuning vs full fine-tuning: time, trainable parameters, memory, version size."""
    from bench.train import BenchConfig, format_report, run_benchmark

    cfg = BenchConfig(size=size, batch_per_prompt=batch, num_prompts=prompts, steps=steps, warmup=warmup,
                      device=device, backbone=backbone)
    run_bench(lambda: format_report(run_benchmark(cfg), command=command_line()), out)


@bench_cli.command("scoring")
def bench_scoring(
    volumes: Annotated[int, typer.Option(help="Timed volumes, each scored by every method")] = 50,
    size: Annotated[int, typer.Option(help="Edge length of the generated cubic volumes in voxels")] = 64,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up volumes scored first")] = 2,
    roi: Annotated[Optional[int], typer.Option(help="Edge of the sliding window (default: the model's roi_size)")] = None,
    spacing: Annotated[float, typer.Option(help="Working spacing in mm of every method")] = 2.5,
    device: DeviceOption = "auto",
    out: OutOption = None,
) -> None:
    """Seconds per volume: TESLA scoring (K prompts batched) vs K prompts one by one vs stock epistemic (MC dropout)."""
    from bench.scoring import ScoringBenchConfig, format_report, run_benchmark

    cfg = ScoringBenchConfig(volumes=volumes, size=size, warmup=warmup, roi=roi, spacing=spacing, device=device)
    run_bench(lambda: format_report(run_benchmark(cfg), command=command_line()), out)


@bench_cli.command("scoring-replicas")
def bench_scoring_replicas(
    volumes: Annotated[int, typer.Option(help="Volumes in the generated pool (every one is scored)")] = 120,
    size: Annotated[int, typer.Option(help="Edge length of the generated cubic volumes in voxels")] = 32,
    spacing: Annotated[float, typer.Option(help="Working spacing in mm of the replicas (stage 1 at twice that)")] = 12.0,
    roi: Annotated[int, typer.Option(help="Edge of the sliding window (roi_size, a multiple of 16)")] = 32,
    batch: Annotated[int, typer.Option(help="Volumes per leased batch (work_batch)")] = 4,
    threads: Annotated[int, typer.Option(help="torch/OpenMP threads per replica (one box's compute)")] = 1,
    repeats: Annotated[int, typer.Option(help="Pairs of runs (1 and 2 replicas), alternating 1, 2, 2, 1, …")] = 2,
    pg_url: Annotated[str, typer.Option(help="PostgreSQL server for the throw-away databases")] = "postgresql://postgres@127.0.0.1:5432/postgres",
    out: OutOption = None,
) -> None:
    """Scoring throughput of one model version with 1 and with 2 replicas on one pool and one PostgreSQL database."""
    from bench.scoring_replicas import run_benchmark

    run_bench(lambda: run_benchmark(volumes, size, spacing, roi, batch, threads, repeats, pg_url,
                                    command=command_line()), out)


@bench_cli.command("infer")
def bench_infer(
    shape: Annotated[str, typer.Option(help="Voxels X,Y,Z of the generated CT")] = "512,512,200",
    spacing: Annotated[str, typer.Option(help="Voxel spacing dx,dy,dz in mm of the generated CT (dx = dy)")] = "0.8,0.8,2.5",
    backbone: Annotated[Optional[Path], typer.Option(help="Pre-trained backbone: our checkpoint, a MONAI bundle folder or an nnU-Net v2 result folder (default: random weights, so stage 1 finds no real liver)")] = None,
    repeats: Annotated[int, typer.Option(help="Timed requests per row, after one untimed warm-up request")] = 3,
    working_spacing: Annotated[float, typer.Option(help="Working spacing in mm of stage 2 and of the whole-volume row; stage 1 at twice that")] = 2.5,
    roi: Annotated[int, typer.Option(help="Edge of the cubic sliding window (the model's roi_size)")] = 48,
    threads: Annotated[int, typer.Option(help="torch threads of the measuring processes (0: torch's default)")] = 0,
    device: DeviceOption = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the generated case and of random weights")] = 0,
    roi_from_label: Annotated[bool, typer.Option("--roi-from-label", help="For a backbone with random weights: stage 1 runs as it is, but stage 2 segments the ROI of the generated case's own liver label (its box plus the cascade's margin), the ROI a stage 1 that finds this liver gives; the report says so")] = False,
    whole_volume: Annotated[bool, typer.Option(help="Also measure the whole-volume sliding window (the baseline row; slow on a CPU)")] = True,
    out: OutOption = None,
) -> None:
    """Time and peak memory from an image file to a label on its grid: liver-ROI cascade vs whole-volume window."""
    from bench.infer import InferBenchConfig, format_report, parse_triple, run_benchmark

    def measure() -> str:
        cfg = InferBenchConfig(
            shape=parse_triple(shape, "--shape", int), spacing=parse_triple(spacing, "--spacing", float),
            backbone=backbone, repeats=repeats, working_spacing=working_spacing, roi=roi, device=device,
            threads=threads, seed=seed, roi_from_label=roi_from_label, whole_volume=whole_volume,
        )
        result = run_benchmark(cfg, progress=lambda message: typer.echo(message, err=True))
        return format_report(result, command=command_line())

    run_bench(measure, out)


@bench_cli.command("scale")
def bench_scale(
    volumes: Annotated[int, typer.Option(help="Volumes in the generated plain studies folder")] = 100000,
    size: Annotated[int, typer.Option(help="Edge length of the cubic volumes in voxels")] = 8,
    requests: Annotated[int, typer.Option(help="Timed sequential requests per admin route")] = 200,
    flood: Annotated[int, typer.Option(help="Failed logins sent from one address (0: none)")] = 10000,
    backend: Annotated[list[str], typer.Option(help="sqlite and/or postgresql (repeat the option)")] = ["sqlite", "postgresql"],
    pg_url: Annotated[str, typer.Option(help="PostgreSQL server for a throw-away database")] = "postgresql://postgres@127.0.0.1:5432/postgres",
    stock: Annotated[bool, typer.Option(help="Also start stock MONAI Label over the same folder")] = True,
    out: OutOption = None,
) -> None:
    """A hospital-archive pool: registration time and memory, admin views, login flood; ours vs stock MONAI Label."""
    from bench.scale import run_benchmark

    unknown = set(backend) - {"sqlite", "postgresql"}
    if unknown:
        raise fail(f"unknown backend(s) {sorted(unknown)}: use sqlite and/or postgresql")
    run_bench(lambda: run_benchmark(volumes, size, requests, flood, list(dict.fromkeys(backend)), pg_url, stock,
                                    command=command_line()), out)
