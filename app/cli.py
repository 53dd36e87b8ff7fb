"""The ``slpt`` command line: cohort generation, serving, and (later) training, benchmarks and admin tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

DEMO_UPSTREAM_CASES = 24
DEMO_PRETRAIN_EPOCHS = 50  # 1,000 steps on the 24-case demo upstream cohort at 2.5 and 5 mm

cli = typer.Typer(help="slpt-label: SLPT prompt tuning + TESLA selective labeling on MONAI Label.", no_args_is_help=True)
bench = typer.Typer(help="Benchmarks: our server against stock MONAI Label, measured side by side in one run.", no_args_is_help=True)
cli.add_typer(bench, name="bench")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a clear error (no stack trace) and return the exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@cli.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder (must be empty or absent)")],
    cases: Annotated[int, typer.Option(help="Number of volumes")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files")] = 0,
    size: Annotated[int, typer.Option(help="Edge length of the cubic volumes in voxels (160: about 2.5 mm voxels)")] = 160,
    upstream: Annotated[bool, typer.Option(help="Make the organ-only pre-training cohort (no tumour class)")] = False,
) -> None:
    """Write a synthetic abdominal-CT cohort in MSD layout (imagesTr/, labelsTr/, dataset.json)."""
    from cohort.synth import CohortError, generate_cohort

    try:
        dataset_json = generate_cohort(out, cases=cases, seed=seed, size=size, upstream=upstream)
    except CohortError as exc:
        raise fail(str(exc))
    typer.echo(f"wrote {cases} cases: {dataset_json}")


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    studies: Annotated[Path, typer.Option(envvar="SLPT_STUDIES", help="Studies folder: volumes, or an MSD dataset (imagesTr/ is served)")],
    host: Annotated[str, typer.Option(envvar="SLPT_HOST", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SLPT_PORT", help="Port to listen on")] = 8000,
    db: Annotated[Optional[str], typer.Option(help="SQLAlchemy database URL (default: SQLite in the studies folder)")] = None,
    auth: Annotated[bool, typer.Option(help="Require a login (database users; also SLPT_AUTH=1)")] = False,
    insecure: Annotated[bool, typer.Option(envvar="SLPT_INSECURE", help="Allow auth off on a non-loopback address")] = False,
    pretrain_if_missing: Annotated[bool, typer.Option(
        envvar="SLPT_PRETRAIN_IF_MISSING",
        help="Pre-train the demo backbone first when the configured backbone file does not exist")] = False,
) -> None:
    """Start the MONAI Label server: a thin wrapper over `monailabel start_server`.

    Its other options pass through unchanged, e.g. `--conf KEY VALUE` (repeatable) for app options. The Docker
    image runs it with no arguments: every option then comes from its SLPT_* variable.
    """
    from app.server import start_server
    from app.settings import AppSettings
    from app.studies import StudiesError, resolve_studies

    try:
        layout = resolve_studies(studies)
    except StudiesError as exc:
        raise fail(str(exc))
    extra = list(ctx.args)
    settings = AppSettings.from_conf(_conf_pairs(extra))
    auth = auth or settings.auth
    if not auth and not insecure and not is_loopback(host):
        raise fail(f"refusing to serve {host} with auth off: pass --auth (and create users with `slpt admin "
                   "create-user`), or --insecure to serve it open anyway")
    backbone = settings.backbone_path(layout.root)
    if pretrain_if_missing and not backbone.is_file():
        make_demo_backbone(backbone, backbone.parent / "demo-upstream")
    conf = ([("db", db)] if db else []) + ([("auth", "true")] if auth else [])
    start_server(studies, host=host, port=port, conf=conf, extra_args=extra)


def _conf_pairs(args: list[str]) -> dict[str, str]:
    """The ``--conf KEY VALUE`` pairs among pass-through arguments."""
    return {args[i + 1]: args[i + 2] for i, arg in enumerate(args[:-2]) if arg == "--conf"}


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
def pretrain(
    data: Annotated[Path, typer.Option(help="Upstream MSD-layout cohort with organ labels (e.g. `slpt synth --upstream`)")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write (a JSON of its config and metrics is written beside it)")],
    epochs: Annotated[int, typer.Option(help="Passes over the cohort (one random patch per case each)")] = DEMO_PRETRAIN_EPOCHS,
) -> None:
    """Pre-train the backbone on an upstream cohort (the frozen network that prompts are tuned on)."""
    from models.errors import ModelError

    try:
        metrics = pretrain_with_progress(data, out, epochs)
    except ModelError as exc:
        raise fail(str(exc))
    typer.echo(json.dumps(metrics, indent=2))


@cli.command("model-info")
def model_info(
    backbone: Annotated[Optional[Path], typer.Option(help="Backbone checkpoint (default: the default architecture)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object")] = False,
    num_prompts: Annotated[int, typer.Option(help="K, prompt sets")] = 3,
) -> None:
    """Parameter counts of the SLPT model: total, tunable (prompts + FPUs + head), fraction."""
    from models.backbone import BackboneConfig, build_backbone, config_path, load_backbone
    from models.errors import ModelError
    from models.slpt import SLPTConfig, SLPTNet

    try:
        if backbone:
            # Weights without a config JSON beside them (e.g. a bare state dict) are checked against the default one.
            network = load_backbone(backbone, None if config_path(backbone).is_file() else BackboneConfig())[0]
        else:
            network = build_backbone(BackboneConfig())
    except ModelError as exc:
        raise fail(str(exc))
    counts = SLPTNet(network, SLPTConfig(num_prompts=num_prompts)).parameter_counts()
    if as_json:
        typer.echo(json.dumps(counts))
    else:
        for key, value in counts.items():
            typer.echo(f"{key:>18}: {value}")


@cli.command()
def demo(
    dir: Annotated[Path, typer.Option(help="Demo folder")] = Path("demo"),
    cases: Annotated[int, typer.Option(help="Volumes in the demo cohort")] = 60,
    size: Annotated[int, typer.Option(help="Edge length of the demo volumes (160: about 2.5 mm voxels, the working spacing)")] = 160,
) -> None:
    """Make what the demo needs if it is missing: a synthetic cohort and a pre-trained backbone.

    The backbone goes to the studies' default location (`<studies>/.slpt/backbone.pt`); existing files are kept.
    """
    from cohort.synth import generate_cohort

    studies, upstream = dir / "studies", dir / "upstream"
    if not (studies / "dataset.json").is_file():
        generate_cohort(studies, cases=cases, seed=0, size=size)
    backbone = studies / ".slpt" / "backbone.pt"
    if not backbone.is_file():
        make_demo_backbone(backbone, upstream, size)
    typer.echo(f"demo ready: studies {studies}, backbone {backbone}")


def make_demo_backbone(backbone: Path, upstream: Path, size: int = 160) -> None:
    """Pre-train the demo backbone into ``backbone`` on a synthetic upstream cohort made in ``upstream`` if missing."""
    from cohort.synth import generate_cohort

    if not (upstream / "dataset.json").is_file():
        generate_cohort(upstream, cases=DEMO_UPSTREAM_CASES, seed=1, size=size, upstream=True)
    typer.echo("pre-training the demo backbone (once; a few minutes on a CPU)")
    pretrain_with_progress(upstream, backbone, DEMO_PRETRAIN_EPOCHS)


def pretrain_with_progress(data: Path, out: Path, epochs: int) -> dict:
    from models.pretrain import pretrain_backbone
    from models.training import progress_bar

    with progress_bar("pre-training") as report:
        return pretrain_backbone(data, out, epochs=epochs, progress=report)


@bench.command("next-sample")
def bench_next_sample(
    volumes: Annotated[int, typer.Option(help="Volumes in the generated cohort")] = 10000,
    clients: Annotated[int, typer.Option(help="Concurrent annotators (one client id each)")] = 16,
    requests: Annotated[int, typer.Option(help="Sequential timed next-sample requests per annotator")] = 20,
    size: Annotated[int, typer.Option(help="Edge length of the cubic volumes in voxels")] = 8,
    cycle: Annotated[bool, typer.Option(help="Follow each next sample with its label upload (the full annotator cycle)")] = False,
    db: Annotated[Optional[str], typer.Option(help="Our server's SQLAlchemy URL (default: SQLite in its studies folder)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the report (markdown) to this file")] = None,
) -> None:
    """Next Sample latency, throughput and duplicate assignments under concurrent annotators: ours vs stock."""
    from bench import BenchError
    from bench.next_sample import run_benchmark

    try:
        report = run_benchmark(volumes, clients, requests, size, command=bench_command_line(), cycle=cycle, db=db)
    except BenchError as exc:
        raise fail(str(exc))
    emit_report(report, out)


@bench.command("soak")
def bench_soak(
    minutes: Annotated[float, typer.Option(help="How long the annotators keep cycling")] = 5.0,
    clients: Annotated[int, typer.Option(help="Concurrent annotators")] = 16,
    volumes: Annotated[int, typer.Option(help="Volumes in the generated cohort (8³ each)")] = 2000,
    db: Annotated[Optional[str], typer.Option(help="SQLAlchemy URL (default: SQLite in the studies folder)")] = None,
    tag: Annotated[str, typer.Option(help="Label tag: final (each cycle labels a volume) or a draft tag (cycles on)")] = "final",
    out: Annotated[Optional[Path], typer.Option(help="Also write the report (markdown) to this file")] = None,
) -> None:
    """The full annotator cycle (next sample, label upload) on one loopback server: errors, latency, memory growth."""
    from bench import BenchError
    from bench.soak import run_soak

    try:
        report = run_soak(minutes, clients, volumes, db, command=bench_command_line(), tag=tag)
    except BenchError as exc:
        raise fail(str(exc))
    emit_report(report, out)


@bench.command("train")
def bench_train(
    size: Annotated[int, typer.Option(help="Edge length of the cubic training patches (a multiple of 8)")] = 48,
    batch: Annotated[int, typer.Option(help="Patches per prompt; every variant trains on prompts × batch patches")] = 2,
    prompts: Annotated[int, typer.Option(help="K, prompt sets of the prompt-tuning variants")] = 3,
    steps: Annotated[int, typer.Option(help="Timed optimisation steps per variant")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up steps per variant")] = 2,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda")] = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Also write the report (markdown) to this file")] = None,
) -> None:
    """One training step of prompt tuning vs full fine-tuning: time, trainable parameters, memory, version size."""
    from bench import BenchError
    from bench.train import BenchConfig, format_report, run_benchmark

    cfg = BenchConfig(size=size, batch_per_prompt=batch, num_prompts=prompts, steps=steps, warmup=warmup, device=device)
    try:
        report = format_report(run_benchmark(cfg), command=bench_command_line())
    except BenchError as exc:
        raise fail(str(exc))
    emit_report(report, out)


@bench.command("scoring")
def bench_scoring(
    volumes: Annotated[int, typer.Option(help="Timed volumes, each scored by every method")] = 50,
    size: Annotated[int, typer.Option(help="Edge length of the generated cubic volumes in voxels")] = 64,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up volumes scored first")] = 2,
    roi: Annotated[Optional[int], typer.Option(help="Edge of the sliding window (default: the model's roi_size)")] = None,
    spacing: Annotated[float, typer.Option(help="Working spacing in mm of every method")] = 2.5,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda")] = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Also write the report (markdown) to this file")] = None,
) -> None:
    """Seconds per volume: TESLA scoring (K prompts batched) vs K prompts one by one vs stock epistemic (MC dropout)."""
    from bench import BenchError
    from bench.scoring import ScoringBenchConfig, format_report, run_benchmark

    cfg = ScoringBenchConfig(volumes=volumes, size=size, warmup=warmup, roi=roi, spacing=spacing, device=device)
    try:
        report = format_report(run_benchmark(cfg), command=bench_command_line())
    except BenchError as exc:
        raise fail(str(exc))
    emit_report(report, out)


@bench.command("infer")
def bench_infer(
    shape: Annotated[str, typer.Option(help="Voxels X,Y,Z of the generated CT")] = "512,512,200",
    spacing: Annotated[str, typer.Option(help="Voxel spacing dx,dy,dz in mm of the generated CT (dx = dy)")] = "0.8,0.8,2.5",
    backbone: Annotated[Optional[Path], typer.Option(help="Pre-trained backbone checkpoint (default: random weights, so stage 1 finds no real liver)")] = None,
    repeats: Annotated[int, typer.Option(help="Timed requests per row, after one untimed warm-up request")] = 3,
    working_spacing: Annotated[float, typer.Option(help="Working spacing in mm of stage 2 and of the whole-volume row; stage 1 at twice that")] = 2.5,
    roi: Annotated[int, typer.Option(help="Edge of the cubic sliding window (the model's roi_size)")] = 48,
    threads: Annotated[int, typer.Option(help="torch threads of the measuring processes (0: torch's default)")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the generated case and of random weights")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Also write the report (markdown) to this file")] = None,
) -> None:
    """Time and peak memory from an image file to a label on its grid: liver-ROI cascade vs whole-volume window."""
    from bench import BenchError
    from bench.infer import InferBenchConfig, format_report, parse_triple, run_benchmark

    try:
        cfg = InferBenchConfig(
            shape=parse_triple(shape, "--shape", int), spacing=parse_triple(spacing, "--spacing", float),
            backbone=backbone, repeats=repeats, working_spacing=working_spacing, roi=roi, device=device,
            threads=threads, seed=seed,
        )
        result = run_benchmark(cfg, progress=lambda message: typer.echo(message, err=True))
        report = format_report(result, command=bench_command_line())
    except BenchError as exc:
        raise fail(str(exc))
    emit_report(report, out)


@cli.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Run folder: the generated cohort and backbone, caches, and (without --records) the records and report")],
    data: Annotated[Optional[Path], typer.Option(help="Labeled MSD-layout folder (e.g. MSD Task03 Liver / LiTS); needs --backbone")] = None,
    synthetic: Annotated[bool, typer.Option(help="Generate the cohort (and, without --backbone, pre-train a backbone) in the run folder")] = False,
    strategies: Annotated[Optional[str], typer.Option(help="Comma-separated strategies, e.g. tesla,random,entropy,coreset,epistemic")] = None,
    budget: Annotated[Optional[float], typer.Option(help="Fraction of the pool labeled by the last round, in (0, 1)")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Selection rounds the budget is spread over")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Repeats (selection and training seed)")] = None,
    tuning: Annotated[Optional[str], typer.Option(help="prompt, finetune or prompt,finetune (both at the same labels)")] = None,
    profile: Annotated[str, typer.Option(help="quick, full, annealed, lean or smoke (sizes and fixed schedules: sim/profiles.py)")] = "quick",
    backbone: Annotated[Optional[Path], typer.Option(help="Frozen backbone checkpoint (its .json beside it)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel processes, one thread each (default: the profile's, at most the CPUs)")] = None,
    records: Annotated[Optional[Path], typer.Option(help="Folder of the measured rows, round state, report and run.json (default: --out); keep it in git to resume in another session")] = None,
    stop_after: Annotated[Optional[float], typer.Option(help="Start no new model after this many minutes from the command's start (the run resumes later)")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --synthetic: make the backbone even where the records say this CPU kind can add no row")] = False,
) -> None:
    """Label-efficiency study: strategies × seeds × rounds against full-data references (resumes an interrupted run)."""
    import os
    import time
    from dataclasses import replace

    from models.errors import ModelError
    from cohort.msd import CohortError, load_msd
    from sim.profiles import PROFILES
    from sim.report import write_report
    from sim.results import append_session, cpu_kind
    from sim.preflight import check_machine
    from sim.simulate import SimulationError, check_study, prepare_synthetic, run_simulation, study_of
    from strategies import SelectionError

    if (data is None) == (not synthetic):
        raise fail("give exactly one of --data DIR and --synthetic")
    if profile not in PROFILES:
        raise fail(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    if data is not None and not data.is_dir():
        raise fail(f"--data {data} is not a folder")
    if data is not None and backbone is None:
        raise fail("--data needs --backbone FILE (the frozen pre-trained backbone)")
    if backbone is not None and not backbone.is_file():
        raise fail(f"--backbone {backbone} does not exist")
    if stop_after is not None and stop_after < 0:
        raise fail(f"--stop-after is minutes from now and must be >= 0, got {stop_after:g}")

    def names(text: Optional[str], default: tuple[str, ...]) -> tuple[str, ...]:
        return default if text is None else tuple(s.strip() for s in text.split(",") if s.strip())

    study = study_of(chosen)
    if strategies is not None:  # the curve and the per-strategy arms belong to the profile's own strategy list
        study = replace(study, strategies=names(strategies, ()), curve_strategies=(), curve_budgets=(),
                        finetune_strategies=(), budget_round_only=(), early_rounds_on_curve_seeds=False)
    study = replace(
        study, budget=study.budget if budget is None else budget, rounds=study.rounds if rounds is None else rounds,
        seeds=study.seeds if seeds is None else seeds, tunings=names(tuning, study.tunings),
    )
    n_workers = workers or min(chosen.workers, os.cpu_count() or 1)
    started = time.time()
    try:
        check_study(study)
        # A backbone made here costs half an hour before the run learns which realization it is: stop first where
        # the records already show that no realization this CPU makes has anything left to run.
        if synthetic and backbone is None and not (out / "backbone.pt").is_file() and not force:
            plan = check_machine(records or out, cpu_kind())
            if not plan.can_add:
                typer.echo(plan.reason, err=True)
                raise typer.Exit(0)
        if synthetic:
            data, made_backbone = prepare_synthetic(out, chosen)
            backbone = backbone or made_backbone
        prepared = time.time()
        deadline = None if stop_after is None else started + 60 * stop_after
        outcome = run_simulation(
            load_msd(data), backbone, out, chosen, study, workers=n_workers, records=records, deadline=deadline
        )
        append_session(records or out, {
            "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)), "cpu": cpu_kind(),
            "backbone": outcome.backbone[:12], "prepare_min": round((prepared - started) / 60, 1),
            "run_min": round((time.time() - prepared) / 60, 1), "rows_before": outcome.done_before,
            "rows_after": outcome.done,
        })
        report = write_report(
            records or out, command=bench_command_line(), expected_runs=outcome.total
        ) if outcome.done else None
    except (SimulationError, CohortError, ModelError, SelectionError) as exc:
        raise fail(str(exc))
    typer.echo(f"results: {outcome.results} ({outcome.done} of {outcome.total} runs)\nreport: {report or '(no rows yet)'}")
    if outcome.elsewhere and not outcome.complete:  # once complete, those seeds are finished and read as they are
        by_backbone: dict[str, list[int]] = {}
        for seed, other in sorted(outcome.elsewhere.items()):
            by_backbone.setdefault(other, []).append(seed)
        for other, seeds_there in by_backbone.items():
            typer.echo(f"seeds {', '.join(map(str, seeds_there))} are recorded on backbone {other} (another realization "
                       "of the same recipe): a machine that re-makes it resumes those left unfinished", err=True)
    if not outcome.complete and stop_after is not None:
        typer.echo("stopped before the end (--stop-after): the same command resumes the study", err=True)


@cli.command("release-seed")
def release_seed(
    records: Annotated[Path, typer.Option(help="The study's records folder (what `slpt simulate --records` was given)")],
    seed: Annotated[int, typer.Option(help="The unfinished seed to give up")],
    reason: Annotated[str, typer.Option(help="Why it is given up; kept beside its rows and quoted in the report")],
) -> None:
    """Give up an unfinished seed whose backbone realization this machine cannot re-make: its rows move to
    `released/`, and the next `slpt simulate` on any realization runs it from its first round."""
    from sim.simulate import SimulationError, release_seed as release

    if not (records / "run.json").is_file():
        raise fail(f"--records {records} holds no study (no run.json)")
    try:
        target = release(records, seed, reason)
    except SimulationError as exc:
        raise fail(str(exc))
    note = json.loads((target / "release.json").read_text())
    typer.echo(f"seed {seed}: {note['rows']} rows of {note['rows_per_seed']} on backbone {note['backbone']} moved to "
               f"{target}; the next `slpt simulate` runs it from its first round and rewrites the report")


db_cli = typer.Typer(help="Database administration.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


@db_cli.command("upgrade")
def db_upgrade(db: Annotated[str, typer.Option(help="SQLAlchemy database URL, e.g. postgresql://user@host/slpt")]) -> None:
    """Apply every pending schema migration (the server also does this when it starts)."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import normalise_url
    from db.migrate import head_revision, upgrade

    try:
        upgrade(db)
    except (SQLAlchemyError, ValueError) as exc:
        raise fail(f"cannot upgrade {normalise_url(db)}: {exc}")
    typer.echo(f"database at revision {head_revision()}")


admin_cli = typer.Typer(help="Accounts, from the shell.", no_args_is_help=True)
cli.add_typer(admin_cli, name="admin")


@admin_cli.command("create-user")
def admin_create_user(
    name: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[str, typer.Option(help="admin, reviewer or annotator")],
    password: Annotated[Optional[str], typer.Option(help="Password for logging in from 3D Slicer (none: token only)")] = None,
    studies: Annotated[Optional[Path], typer.Option(help="Studies folder whose default SQLite database to use")] = None,
    db: Annotated[Optional[str], typer.Option(help="SQLAlchemy database URL")] = None,
) -> None:
    """Create a user (creating and migrating the database if needed); print its new API token on the last line."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.accounts import create_account
    from db.engine import create_db_engine, default_db_url, session_factory
    from db.errors import DBError
    from db.migrate import upgrade

    if (studies is None) == (db is None):
        raise fail("give exactly one of --studies DIR or --db URL")
    if studies is not None:
        from app.studies import StudiesError, resolve_studies

        try:
            db = default_db_url(resolve_studies(studies).root)  # the database `slpt serve --studies` uses
        except StudiesError as exc:
            raise fail(str(exc))
    url = db
    try:
        upgrade(url)
        engine = create_db_engine(url)
        try:
            token = create_account(session_factory(engine), name, role, password)
        finally:
            engine.dispose()
    except DBError as exc:
        raise fail(str(exc))
    except SQLAlchemyError as exc:
        raise fail(f"database error: {exc}")
    typer.echo(f"created {role} {name!r}; API token (shown once):")
    typer.echo(token)


def emit_report(report: str, out: Path | None) -> None:
    """Print a benchmark report and, with ``--out``, write it (docs/results/ keeps the measured ones)."""
    typer.echo(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)


def bench_command_line() -> str:
    """The command as typed, for the report header."""
    import shlex
    import sys

    return shlex.join(["slpt", *sys.argv[1:]])


def main() -> None:
    cli()
