"""The study's work units: one seed × strategy (all its rounds) or one seed's references of one tuning, each
run in a worker process, and the fixed rule for a seed left unfinished (:func:`settle_unfinished`).

Our choices, named here because they change the numbers:
- Geometry is the server's (docs/design.md, "Geometry and the liver-ROI cascade"): training, evaluation and scoring
  work inside the liver ROI the frozen backbone finds (:mod:`sim.prepared`). Training draws class-balanced
  ``patch``³ patches from the ROI crops and inference slides a ``patch``³ window over them.
- Selection always follows the prompt-tuned model (the method's loop): scores come from the K-prompt model of the
  previous round (:func:`strategies.uncertainty.volume_scores` over the ROI). The fine-tuned model is an evaluation
  arm trained on the very same labeled set, so prompt tuning and fine-tuning are compared at the same labels.
- Which score a strategy ranks by, and what it does before any model exists, is the strategy's own declaration,
  applied by :func:`strategies.rounds.select_round` (the server calls the same function).
- Dice is computed on the working grid (:mod:`sim.evaluation`); labelled voxels outside the ROI count as missed.

A unit records, per seed × strategy, its round state (``state/seed<N>_<strategy>.json``: the picks of every finished
round and the scores computed after them) beside its rows; a run resumes a unit from that state.
"""

from __future__ import annotations

import csv
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.backbone import load_backbone
from models.embedding import embedding_blocks
from models.inference import prompt_probabilities
from models.slpt import SLPTNet
from sim import results as files
from sim.design import FULL_DATA, REFERENCES, Study, reference_labels, strategy_budgets
from sim.evaluation import evaluate
from sim.network import train_network
from sim.prepared import PreparedCohort, load_prepared
from sim.profiles import Schedule, SimProfile
from sim.round_models import RoundModels
from strategies import STRATEGIES
from strategies.candidates import stratified_subset
from strategies.rounds import select_round
from strategies.uncertainty import volume_scores


@dataclass(frozen=True)
class Unit:
    """One independent piece of work: one seed × strategy (all rounds), or one seed's references of one tuning
    (strategy :data:`~sim.design.FULL_DATA`: the full-data and the compute-matched reference)."""

    seed: int
    strategy: str
    tuning: str | None = None


@dataclass(frozen=True)
class Trained:
    """A trained network, its training seconds (of the run that trained it) and its :class:`RoundModels` key."""

    network: SLPTNet
    seconds: float
    key: str


@dataclass
class RunContext:
    """What every worker process needs; built once from the records folder."""

    records: Path
    profile: SimProfile
    study: Study
    pool: list[int]
    test: list[int]
    models: RoundModels
    group_columns: dict[str, str] = field(default_factory=dict)  # group -> CSV column
    deadline: float | None = None  # time.time() after which no new model starts


def past_deadline(ctx: RunContext) -> bool:
    return ctx.deadline is not None and time.time() >= ctx.deadline


def state_path(records: Path, seed: int, strategy: str) -> Path:
    return records / "state" / f"seed{seed}_{strategy}.json"


# ------------------------------------------------------------------------------------------ an unfinished seed

def settle_unfinished(records: Path, names: Sequence[str]) -> list[tuple[int, str]]:
    """Apply the fixed rule for an unfinished seed to the records, before a run starts; returns the (seed, strategy)
    units it discarded.

    The rule, the same for every seed and decided before any result is seen: with the backbone kept, an interrupted
    seed × strategy always resumes from its round state. One whose round state is missing, unreadable or does not
    match its recorded rows (a row of a round the state has not finished, or a row whose labelled volumes are not the
    state's picks up to its round) is discarded whole: its round state, result rows and per-case rows are removed,
    and the run takes it again from round 0. The rows a unit keeps are thus always those its picks produced. Per-case
    rows without their results row (a write cut between the two) are removed too; the run writes them again with
    their row. ``names``: the cohort's case names, by index (the state records picks as pool indices)."""
    rows = _read_rows(records / "results.csv")
    by_unit: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        if row["strategy"] not in REFERENCES:
            by_unit.setdefault((int(row["seed"]), row["strategy"]), []).append(row)
    units = set(by_unit) | {_unit_of(path) for path in (records / "state").glob("seed*_*.json")}
    discarded = sorted(unit for unit in units if not _state_matches(records, unit, by_unit.get(unit, []), names))
    for seed, strategy in discarded:
        # State first: once it is gone, a cut here leaves rows without state, which this rule discards again.
        state_path(records, seed, strategy).unlink(missing_ok=True)
        files.remove_rows(records / "results.csv", lambda r: (int(r["seed"]), r["strategy"]) == (seed, strategy))
    done = files.done_keys(records)
    files.remove_rows(
        records / "per_case.csv", lambda r: (int(r["seed"]), r["strategy"], r["tuning"], int(r["round"])) not in done
    )
    return discarded


def _unit_of(path: Path) -> tuple[int, str]:
    seed, _, strategy = path.stem.removeprefix("seed").partition("_")
    return int(seed), strategy


def _state_matches(records: Path, unit: tuple[int, str], rows: list[dict], names: Sequence[str]) -> bool:
    """Whether the unit's round state exists, reads, and accounts for every row it has recorded."""
    try:
        rounds = files.read_state(state_path(records, *unit))
        picks = [[names[i] for i in finished["selected"]] for finished in rounds]
    except (ValueError, KeyError, TypeError, IndexError):
        return False
    if not state_path(records, *unit).is_file():
        return not rows
    for row in rows:
        r = int(row["round"])
        if r >= len(picks) or row["labeled"] != ";".join(name for done in picks[: r + 1] for name in done):
            return False
    return True


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------ the units

_WORKER: dict = {}


def init_worker(cohort_path: Path, backbone_path: Path, progress: queue.Queue | None) -> None:
    """Process start: one torch thread, the cohort and the frozen backbone loaded once per process."""
    torch.set_num_threads(1)
    _WORKER.update(cohort=load_prepared(cohort_path), backbone=load_backbone(backbone_path)[0], progress=progress)


def run_unit(ctx: RunContext, unit: Unit) -> int:
    """Run (or finish) one unit in this process; returns the number of result rows it wrote."""
    cohort, backbone = _WORKER["cohort"], _WORKER["backbone"]
    progress = _WORKER.get("progress")
    report: Callable[[int], None] = progress.put if progress is not None else (lambda n: None)
    if unit.strategy == FULL_DATA:
        return _run_reference(ctx, unit, cohort, backbone, report)
    return _run_rounds(ctx, unit, cohort, backbone, report)


def _run_reference(ctx: RunContext, unit: Unit, cohort: PreparedCohort, backbone, report) -> int:
    done = files.done_keys(ctx.records)
    written = 0
    for tuning in [unit.tuning] if unit.tuning else ctx.study.tunings:
        for reference in REFERENCES:
            if (unit.seed, reference, tuning, 0) in done or past_deadline(ctx):
                continue
            schedule = ctx.profile.schedule(tuning, reference_labels(ctx.study, len(ctx.pool), reference))
            trained = _trained(ctx, cohort, backbone, ctx.pool, tuning, schedule, _train_seed(unit.seed, 0))
            written += _write_result(ctx, Unit(unit.seed, reference, tuning), tuning, 0, ctx.pool, trained, cohort)
            report(1)
    return written


def _run_rounds(ctx: RunContext, unit: Unit, cohort: PreparedCohort, backbone, report) -> int:
    """All rounds of one seed × strategy. Rounds recorded in the state file replay their stored picks and scores, and
    only train the tunings whose rows are missing from results.csv.

    Past the deadline no new round begins and no further model of a begun round starts. A begun round always ends
    with its state written: its first model is the prompt model the next pick ranks by (trained first, or alone
    where prompt tuning records no row), so scoring the pool needs no model past the deadline, and the round's
    missing rows are trained when the run resumes and the round replays. A round not begun is selected again next
    time, with the same picks (they depend on the seed and the stored scores only)."""
    path = state_path(ctx.records, unit.seed, unit.strategy)
    finished = files.read_state(path)
    budgets = strategy_budgets(ctx.study, len(ctx.pool), unit.strategy)
    score_keys = STRATEGIES[unit.strategy].score_keys()
    done = files.done_keys(ctx.records)
    tunings = sorted(ctx.study.tunings, key=lambda tuning: tuning != "prompt")  # prompt first
    labeled: list[int] = []
    scores: dict[str, float | list[float]] | None = None
    blocks = embedding_blocks(backbone)
    written = 0
    for r, budget in enumerate(budgets):
        replay = r < len(finished)
        if not replay and past_deadline(ctx):
            return written
        picks = finished[r]["selected"] if replay else _select(ctx, unit, cohort, labeled, scores, budget, r, blocks)
        labeled = labeled + picks
        scoring = not replay and bool(score_keys) and r + 1 < len(budgets)
        prompt_model: Trained | None = None
        if scoring and "prompt" not in tunings:  # no prompt row is recorded, but the next pick ranks by its model
            prompt_model = _train_round(ctx, cohort, backbone, labeled, "prompt", unit.seed, r)
        begun, stopping = prompt_model is not None, False
        for tuning in tunings:
            if (unit.seed, unit.strategy, tuning, r) in done or not ctx.study.trains(tuning, r):
                continue
            if (replay or begun) and past_deadline(ctx):
                stopping = True
                break
            trained = _train_round(ctx, cohort, backbone, labeled, tuning, unit.seed, r)
            written += _write_result(ctx, unit, tuning, r, labeled, trained, cohort)
            report(1)
            begun = True
            if tuning == "prompt":
                prompt_model = trained
        if replay:
            if stopping:
                return written
            scores = finished[r]["scores"]
            continue
        scores = None
        if scoring:
            if prompt_model is None:  # its row was recorded before (settle_unfinished discards such rows)
                prompt_model = _train_round(ctx, cohort, backbone, labeled, "prompt", unit.seed, r)
            # a rule with several score keys (clasp_pe) gets a list per volume: the columns of its (N, S) scores
            scores = {
                i: every[score_keys[0]] if len(score_keys) == 1 else [every[k] for k in score_keys]
                for i, every in _pool_scores(ctx, cohort, prompt_model, labeled).items()
            }
        finished.append({"round": r, "selected": picks, "scores": scores})
        files.write_state(path, unit.seed, unit.strategy, finished)
        if stopping:
            return written
    return written


def _select(
    ctx: RunContext, unit: Unit, cohort: PreparedCohort, labeled: list[int],
    scores: dict[str, float | list[float]] | None,
    budget: int, round_index: int, blocks: Sequence[int],
) -> list[int]:
    """Pool indices the strategy picks this round (:func:`strategies.rounds.select_round`, as the server does)."""
    unlabeled = [i for i in ctx.pool if i not in labeled]
    if scores is not None and ctx.study.candidates:
        # a scored round selects among a stratified candidate subset, as the server does while the rest is scored
        size = max(budget, round(ctx.study.candidates * len(unlabeled)))
        subset = stratified_subset(cohort.embeddings[unlabeled], size, block_sizes=blocks,
                                   seed=unit.seed * 1000 + round_index)
        unlabeled = [unlabeled[p] for p in subset]
    selection = select_round(
        unit.strategy, cohort.embeddings[unlabeled], budget, block_sizes=blocks,
        scores=None if scores is None else np.array([scores[str(i)] for i in unlabeled]),
        labeled_embeddings=cohort.embeddings[labeled] if labeled else None,
        seed=unit.seed * 1000 + round_index,
    )
    return [unlabeled[p] for p in selection.picks]


def _train_round(ctx, cohort: PreparedCohort, backbone, labeled: list[int], tuning: str, seed: int, r: int) -> Trained:
    return _trained(ctx, cohort, backbone, labeled, tuning, ctx.profile.schedule(tuning, len(labeled)),
                    _train_seed(seed, r))


def _trained(
    ctx: RunContext, cohort: PreparedCohort, backbone, labeled: list[int], tuning: str, schedule: Schedule, seed: int,
) -> Trained:
    """The network trained on ``labeled`` (in that order): from the run's :class:`RoundModels` if an identical one
    was trained before (another strategy picked the same volumes at the same seed), else trained now and stored."""
    key = ctx.models.key(tuning, schedule.steps, schedule.lr, seed, [cohort.names[i] for i in labeled])
    stored = ctx.models.load_network(key, backbone)
    if stored is not None:
        return Trained(*stored, key)
    network, seconds = train_network(
        backbone, [cohort.images[i] for i in labeled], [cohort.labels[i] for i in labeled], tuning, schedule,
        ctx.profile, seed,
    )
    ctx.models.save_network(key, network, seconds)
    return Trained(network, seconds, key)


def _pool_scores(ctx: RunContext, cohort: PreparedCohort, model: Trained, labeled: list[int]) -> dict[str, dict]:
    """{pool index (str): every score of :func:`volume_scores`} of the unlabelled pool under ``model`` (stored per
    model, so strategies ranking by different scores of the same model score the pool once)."""
    scores = ctx.models.scores(model.key)
    if scores is None:
        scores = {
            str(i): volume_scores(prompt_probabilities(model.network, cohort.roi_image(i)).numpy())
            for i in ctx.pool if i not in labeled
        }
        ctx.models.save_scores(model.key, scores)
    return scores


def _train_seed(seed: int, round_index: int) -> int:
    return seed * 1000 + round_index


def _write_result(
    ctx: RunContext, unit: Unit, tuning: str, round_index: int, labeled: list[int], model: Trained,
    cohort: PreparedCohort,
) -> int:
    evaluation = ctx.models.evaluation(model.key)
    if evaluation is None:
        evaluation = evaluate(model.network, cohort, ctx.test)
        ctx.models.save_evaluation(model.key, evaluation)
    summary, per_case = evaluation
    key = {"seed": unit.seed, "strategy": unit.strategy, "tuning": tuning, "round": round_index}
    counts = model.network.parameter_counts()
    row = {
        **key, "n_labeled": len(labeled),
        "tumour_dice": summary["tumour_dice"], "tumour_dice_global": summary["tumour_dice_global"],
        "liver_dice": summary["liver_dice"],
        **{column: summary.get(group, float("nan")) for group, column in ctx.group_columns.items()},
        "train_time_s": round(model.seconds, 3), "tunable_params": counts["tunable_params"],
        "total_params": counts["total_params"],
        "labeled": ";".join(cohort.names[i] for i in labeled),
    }
    # Per-case rows first: a results row present means its per-case rows are present too.
    files.append_rows(ctx.records / "per_case.csv", files.PER_CASE_COLUMNS, [{**key, **case} for case in per_case])
    files.append_rows(ctx.records / "results.csv", files.result_columns(ctx.group_columns), [row])
    return 1
