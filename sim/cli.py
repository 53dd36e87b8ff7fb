"""``slpt simulate``: the label-efficiency study's command (docs/design.md, "Measuring label efficiency honestly")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli import command_line, fail

sim_cli = typer.Typer(help="The label-efficiency simulator.", no_args_is_help=True)


@sim_cli.command()
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
            records or out, command=command_line(), expected_runs=outcome.total
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


@sim_cli.command("release-seed")
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
