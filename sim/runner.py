"""Running (or resuming) a whole study: ``slpt simulate``'s driver.

``out`` holds what a run makes and can make again (the prepared cohort's cache, the trained models); ``records``
(default ``out``) holds what it measured and what that depends on: the kept backbone (:mod:`sim.kept_backbone`), the
split, the result and per-case rows, the round state and ``run.json`` (design, backbone and cohort). A long study
keeps its records under version control and resumes them in another session, on any machine (docs/design.md, "A
study that spans sessions").
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cohort.msd import MSDDataset
from models.backbone import load_backbone
from models.checkpoint import backbone_fingerprint
from sim import results as files
from sim.design import FULL_DATA, REFERENCES, SimulationError, Study, check_study, design_identity, round_budgets, study_rows
from sim.kept_backbone import keep_backbone
from sim.prepared import PreparationError, prepared_cohort, split_pool_test
from sim.profiles import SimProfile
from sim.round_models import RoundModels
from sim.rounds import RunContext, Unit, init_worker, run_unit, settle_unfinished


@dataclass(frozen=True)
class RunOutcome:
    """Where a run stopped: its ``results.csv``, the result rows recorded, the rows the study has in all, and the
    (seed, strategy) units it discarded under the unfinished-seed rule (:func:`sim.rounds.settle_unfinished`) and
    ran again from round 0."""

    results: Path
    done: int
    total: int
    discarded: tuple[tuple[int, str], ...] = ()

    @property
    def complete(self) -> bool:
        return self.done >= self.total


def run_simulation(
    dataset: MSDDataset, backbone_path: Path | None, out: Path, profile: SimProfile, study: Study, workers: int = 1,
    records: Path | None = None, deadline: float | None = None, recipe: dict | None = None,
) -> RunOutcome:
    """Run (or resume) the whole study; returns how far it got.

    The study's backbone is the one ``records`` keep, or else ``backbone_path`` (made by ``recipe``, None for the
    user's own), which is copied into them first (:func:`sim.kept_backbone.keep_backbone`). Units left unfinished
    are settled by the fixed rule of :func:`sim.rounds.settle_unfinished`. Work units (seed × strategy, and each
    reference seed's full-data reference of each tuning) run in ``workers`` processes with one torch thread each;
    rows already in ``results.csv`` are not computed again. No new model starts after ``deadline``
    (``time.time()``).
    """
    check_study(study)
    records = records or out
    out.mkdir(parents=True, exist_ok=True)
    design = design_identity(profile, study)
    kept = keep_backbone(records, backbone_path, design, recipe)
    backbone, backbone_config = load_backbone(kept.path)  # once: the workers load their own copy
    try:
        cohort, cache = prepared_cohort(dataset, kept.path, out, profile, backbone_fingerprint(backbone))
    except PreparationError as exc:
        raise SimulationError(str(exc)) from exc
    pool, test = split_pool_test(cohort, profile.test_fraction, profile.split_seed)
    round_budgets(len(pool), study.budget, study.rounds)  # fail before any training
    identity = {"design": design, "backbone": kept.entry(), "cohort": cohort.digest()}
    try:
        files.check_identity(records, identity)
        files.write_split(records, [cohort.names[i] for i in pool], [cohort.names[i] for i in test], profile.split_seed)
        ctx = RunContext(
            records=records, profile=profile, study=study, pool=pool, test=test,
            models=RoundModels(out / "models", identity, backbone_config),
            group_columns=files.group_column_names([cohort.groups[i] for i in test]), deadline=deadline,
        )
        files.check_existing_header(records / "results.csv", files.result_columns(ctx.group_columns))
    except files.RunFolderError as exc:
        raise SimulationError(str(exc)) from exc
    discarded = settle_unfinished(records, cohort.names)

    reference_seeds = min(study.seeds, profile.reference_seeds)
    units = [Unit(seed, FULL_DATA, tuning) for seed in range(reference_seeds) for tuning in study.tunings]
    units += [Unit(seed, strategy) for seed in range(study.seeds) for strategy in study.strategies]
    total = study_rows(study, len(pool), len(study.tunings) * reference_seeds * len(REFERENCES))
    already = len(files.done_keys(records))
    with tqdm(total=total, initial=min(already, total), desc="simulate", unit="run") as bar:
        if workers <= 1:
            init_worker(cache, kept.path, None)
            for unit in units:
                bar.update(run_unit(ctx, unit))
        else:
            _run_parallel(ctx, units, cache, kept.path, workers, bar)
    return RunOutcome(records / "results.csv", len(files.done_keys(records)), total, tuple(discarded))


#: Modules a worker process imports before the first unit (once, in the fork server).
WORKER_PRELOAD = ("torch", "monai", "sim.rounds")


def _run_parallel(ctx: RunContext, units: list[Unit], cache: Path, backbone_path: Path, workers: int, bar: tqdm) -> None:
    # Workers start from a fork server, not a fork of this process: a CUDA context (or torch's thread pools) in a
    # forked child is broken, and the same start method on the CPU keeps that path tested where no GPU is.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_PRELOAD))
    with context.Manager() as manager:
        progress = manager.Queue()
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=init_worker, initargs=(cache, backbone_path, progress)
        ) as pool:
            pending = {pool.submit(run_unit, ctx, unit) for unit in units}
            while pending:
                finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # re-raise a worker's error here
                while not progress.empty():
                    bar.update(progress.get())
        while not progress.empty():
            bar.update(progress.get())
