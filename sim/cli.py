"""``slpt simulate``: the label-efficiency study's command (docs/design.md, "Measuring label efficiency honestly")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli import command_line, fail

sim_cli = typer.Typer(help="The label-efficiency simulator.", no_args_is_help=True)


@sim_cli.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Run folder: the generated cohort (and a backbone pre-trained here), caches and trained models; without --records also the records and report")],
    data: Annotated[Optional[Path], typer.Option(help="Labeled MSD-layout folder (e.g. MSD Task03 Liver / LiTS); needs --backbone unless the records keep one")] = None,
    synthetic: Annotated[bool, typer.Option(help="Generate the cohort in the run folder (and, where neither --backbone nor the records give one, pre-train a backbone)")] = False,
    strategies: Annotated[Optional[str], typer.Option(help="Comma-separated strategies, e.g. tesla,random,entropy,coreset,epistemic")] = None,
    budget: Annotated[Optional[float], typer.Option(help="Fraction of the pool labeled by the last round, in (0, 1)")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Selection rounds the budget is spread over")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Repeats (selection and training seed)")] = None,
    tuning: Annotated[Optional[str], typer.Option(help="prompt, finetune or prompt,finetune (both at the same labels)")] = None,
    profile: Annotated[str, typer.Option(help="quick, lesion or smoke (sizes and fixed schedules: sim/profiles.py)")] = "quick",
    backbone: Annotated[Optional[Path], typer.Option(help="Frozen backbone checkpoint (its .json beside it), copied into the records")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel processes, one thread each (default: the profile's, at most the CPUs)")] = None,
    records: Annotated[Optional[Path], typer.Option(help="Folder of the kept backbone, measured rows, round state, report and run.json (default: --out); keep it in git to resume in another session")] = None,
    candidates: Annotated[Optional[float], typer.Option(help="Fraction of the unlabeled pool a scored round selects among (a candidate subset stratified by TESLA's clusters, as the server's round_candidates); 0 = the whole pool")] = None,
    stop_after: Annotated[Optional[float], typer.Option(help="Start no new model after this many minutes from the command's start (the run resumes later)")] = None,
) -> None:
    """Label-efficiency study: strategies × seeds × rounds against full-data references (resumes an interrupted run)."""
    import os
    import time
    from dataclasses import replace

    from models.errors import ModelError
    from cohort.msd import CohortError, load_msd
    from sim.design import SimulationError, check_study, design_identity, study_of
    from sim.kept_backbone import kept_backbone
    from sim.profiles import PROFILES
    from sim.report import write_report
    from sim.runner import run_simulation
    from sim.synthetic import prepare_synthetic, synthetic_cohort
    from strategies import SelectionError

    if (data is None) == (not synthetic):
        raise fail("give exactly one of --data DIR and --synthetic")
    if profile not in PROFILES:
        raise fail(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    if data is not None and not data.is_dir():
        raise fail(f"--data {data} is not a folder")
    if backbone is not None and not backbone.is_file():
        raise fail(f"--backbone {backbone} does not exist")
    if stop_after is not None and stop_after < 0:
        raise fail(f"--stop-after is minutes from now and must be >= 0, got {stop_after:g}")

    def names(text: Optional[str], default: tuple[str, ...]) -> tuple[str, ...]:
        return default if text is None else tuple(s.strip() for s in text.split(",") if s.strip())

    study = study_of(chosen)
    if strategies is not None:  # the learning curve belongs to the profile's own strategy list
        study = replace(study, strategies=names(strategies, ()), curve_strategies=(), curve_budgets=())
    study = replace(
        study, budget=study.budget if budget is None else budget, rounds=study.rounds if rounds is None else rounds,
        seeds=study.seeds if seeds is None else seeds, tunings=names(tuning, study.tunings),
        candidates=study.candidates if candidates is None else candidates,
    )
    n_workers = workers or min(chosen.workers, os.cpu_count() or 1)
    folder = records or out
    started = time.time()
    try:
        check_study(study)
        # The records' design and kept backbone are checked before anything is made (pre-training takes long).
        kept = kept_backbone(folder, design_identity(chosen, study))
        if data is not None and backbone is None and kept is None:
            raise fail("--data needs --backbone FILE (the frozen pre-trained backbone) where the records keep none")
        recipe = None
        if synthetic and backbone is None and kept is None:
            data, backbone = prepare_synthetic(out, chosen)
            recipe = chosen.recipe.to_dict()
        elif synthetic:
            data = synthetic_cohort(out, chosen)
        deadline = None if stop_after is None else started + 60 * stop_after
        outcome = run_simulation(
            load_msd(data), backbone, out, chosen, study, workers=n_workers, records=records, deadline=deadline,
            recipe=recipe,
        )
        report = write_report(folder, command=command_line(), expected_runs=outcome.total) if outcome.done else None
    except (SimulationError, CohortError, ModelError, SelectionError) as exc:
        raise fail(str(exc))
    for seed, strategy in outcome.discarded:
        typer.echo(f"seed {seed} × {strategy}: its round state did not match its recorded rows: they were "
                   "discarded, and it runs again from round 0", err=True)
    typer.echo(f"results: {outcome.results} ({outcome.done} of {outcome.total} runs)\nreport: {report or '(no rows yet)'}")
    if not outcome.complete and stop_after is not None:
        typer.echo("stopped before the end (--stop-after): the same command resumes the study", err=True)
