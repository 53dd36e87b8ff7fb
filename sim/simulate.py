"""The active-learning simulator behind ``slpt simulate``: how many labels does each strategy need?

For every seed × strategy the loop starts with no labels; each round the strategy (exactly the
``strategies`` classes the server uses) picks volumes from the unlabeled pool, the oracle reveals their
labels (``labelsTr``), a network is trained *from the frozen backbone* on all labels so far with the
profile's fixed schedule (prompt tuning and/or full fine-tuning, on the same labels), and it is evaluated on
the held-out test set. The full-data references train on 100 % of the pool (strategy ``"full"``).

Our choices, named here because they change the numbers:
- Geometry is the server's (docs/design.md, "Geometry and the liver-ROI cascade"): every volume is resampled once
  to the profile's working spacing, the frozen backbone finds its liver ROI on a coarse grid (stage 1), and
  training, evaluation and scoring work inside that ROI (:mod:`sim.prepared`). Training draws class-balanced
  ``patch``³ patches from the ROI crops and inference slides a ``patch``³ window over them.
- Selection always follows the prompt-tuned model (the method's loop): scores come from the K-prompt model of the
  previous round (:func:`strategies.uncertainty.volume_scores` over the ROI). The fine-tuned model is an
  evaluation arm trained on the very same labeled set, so prompt tuning and fine-tuning are compared at the same
  labels.
- Which score a strategy ranks by, and what it does before any model exists, is the strategy's own declaration,
  applied by :func:`strategies.rounds.select_round` (the server calls the same function).
- The learning curve: the ``curve_strategies`` go on past the study budget to each of ``curve_budgets``
  (cumulative fractions of the pool), continuing their own rounds.
- Dice is computed on the working grid (:mod:`sim.evaluation`); labelled voxels outside the ROI count as missed.

Records (``--records``, default the run folder): ``split.json``, ``results.csv`` (one row per seed × strategy ×
tuning × round), ``per_case.csv`` (one row per test case of each of those), ``state/`` (per seed × strategy: the
picks and scores of every finished round) and ``run.json`` (design, backbone and cohort the rows belong to), from
which an interrupted run resumes, in another session too (docs/design.md, "A study that spans sessions").
"""

from __future__ import annotations

import copy
import json
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from multiprocessing import Manager
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from cohort.msd import MSDDataset
from models.backbone import load_backbone
from models.cascade import CascadeConfig
from models.checkpoint import backbone_fingerprint
from models.embedding import embedding_blocks
from models.inference import prompt_probabilities
from models.slpt import SLPTConfig, SLPTNet
from models.training import Progress, TrainConfig, progress_bar, train_prompts
from sim import results as files
from storage.atomic import atomic_path, write_text_atomic
from sim.evaluation import evaluate
from sim.model_store import ModelStore
from sim.prepared import PreparationError, PreparedCohort, load_prepared, prepare_cohort, save_prepared
from sim.profiles import Schedule, SimProfile
from strategies import STRATEGIES
from strategies.rounds import select_round
from strategies.uncertainty import volume_scores

TUNINGS = ("prompt", "finetune")
FULL_DATA = "full"  # strategy name of the full-data reference rows


class SimulationError(ValueError):
    """Bad simulation input (strategy, budget, data, run folder); the message names the problem."""


@dataclass(frozen=True)
class Study:
    """The design of one run: what to compare, with which labels budget, how often.

    ``curve_strategies`` continue past ``budget`` to each cumulative fraction of ``curve_budgets`` (the
    learning curve), on the first ``curve_seeds`` seeds (None: every seed); both may be empty.
    ``finetune_strategies`` limits the fine-tuning arm to those strategies' labels (empty: every strategy's).
    ``budget_round_only`` names strategies whose rows start at the budget round: their earlier rounds only pick
    volumes, and train a model only where the next pick ranks by its scores (core-set picks by embeddings alone).
    ``early_rounds_on_curve_seeds`` does the same for every strategy on the seeds off the learning curve, where a
    round before the budget feeds no target: its rows (the curve's first points) are recorded on the curve's seeds.
    """

    strategies: tuple[str, ...]
    budget: float
    rounds: int
    seeds: int
    tunings: tuple[str, ...]
    curve_strategies: tuple[str, ...] = ()
    curve_budgets: tuple[float, ...] = ()
    finetune_budget_only: bool = False
    finetune_strategies: tuple[str, ...] = ()
    curve_seeds: int | None = None
    budget_round_only: tuple[str, ...] = ()
    early_rounds_on_curve_seeds: bool = False

    def trains(self, strategy: str, tuning: str, round_index: int, seed: int) -> bool:
        """Whether ``tuning`` is trained and evaluated on ``strategy``'s labels in round ``round_index`` at ``seed``.
        Selection follows prompt tuning, which trains every round; fine-tuning is an evaluation arm, which
        ``finetune_budget_only`` limits to the budget round (the targets compare the two there; a fine-tuned model
        costs the most to train) and ``finetune_strategies`` to the strategies a target compares it on. A
        ``budget_round_only`` strategy, and with ``early_rounds_on_curve_seeds`` any strategy off the curve's seeds,
        records nothing before the budget round."""
        if round_index < self.rounds - 1 and (
            strategy in self.budget_round_only or (self.early_rounds_on_curve_seeds and not self.on_curve_seed(seed))
        ):
            return False
        if tuning == "prompt":
            return True
        if self.finetune_strategies and strategy not in self.finetune_strategies:
            return False
        return not self.finetune_budget_only or round_index == self.rounds - 1

    def follows_curve(self, strategy: str, seed: int) -> bool:
        """Whether ``strategy`` goes on past the budget to the learning curve's label counts at ``seed``."""
        return strategy in self.curve_strategies and self.on_curve_seed(seed)

    def on_curve_seed(self, seed: int) -> bool:
        """Whether the learning curve runs at ``seed`` (on its strategies)."""
        return bool(self.curve_strategies) and (self.curve_seeds is None or seed < self.curve_seeds)


def study_of(profile: SimProfile) -> Study:
    """The profile's own study design (``slpt simulate`` without options that change it)."""
    return Study(**{f.name: getattr(profile, f.name) for f in fields(Study)})


@dataclass(frozen=True)
class RunOutcome:
    """Where a run stopped: its ``results.csv``, the result rows recorded and the rows the study has in all (over
    every backbone realization), the seeds recorded on other realizations than this run's ({seed: backbone}), the rows
    recorded when it started and its backbone's fingerprint."""

    results: Path
    done: int
    total: int
    elsewhere: dict[int, str] = field(default_factory=dict)
    done_before: int = 0  # rows recorded when the run started
    backbone: str = ""  # the run's backbone fingerprint

    @property
    def complete(self) -> bool:
        return self.done >= self.total


@dataclass(frozen=True)
class Unit:
    """One independent piece of work: one seed × strategy (all rounds), or one seed's full-data reference of one
    tuning."""

    seed: int
    strategy: str
    tuning: str | None = None


@dataclass(frozen=True)
class Trained:
    """A trained network, its training seconds (of the run that trained it) and its :class:`ModelStore` key."""

    network: SLPTNet
    seconds: float
    key: str


@dataclass
class RunContext:
    """What every worker process needs; built once from the run folder."""

    records: Path
    profile: SimProfile
    study: Study
    backbone_path: Path
    pool: list[int]
    test: list[int]
    models: ModelStore
    group_columns: dict[str, str] = field(default_factory=dict)  # group -> CSV column
    deadline: float | None = None  # time.time() after which no new model starts


def past_deadline(ctx: RunContext) -> bool:
    return ctx.deadline is not None and time.time() >= ctx.deadline


# ----------------------------------------------------------------------------------------------- inputs

def check_study(study: Study) -> None:
    """Raise :class:`SimulationError` for an unknown strategy or tuning, or an impossible budget/rounds/seeds."""
    named = (*study.strategies, *study.curve_strategies, *study.finetune_strategies, *study.budget_round_only)
    unknown = [s for s in named if s not in STRATEGIES]
    if unknown or not study.strategies:
        raise SimulationError(
            f"unknown strategy {', '.join(map(repr, unknown)) or '(none given)'}; known strategies: {', '.join(STRATEGIES)}"
        )
    if len(set(study.strategies)) != len(study.strategies):
        raise SimulationError(f"strategies listed twice: {', '.join(study.strategies)}")
    bad_tunings = [t for t in study.tunings if t not in TUNINGS]
    if bad_tunings or not study.tunings:
        raise SimulationError(f"unknown tuning {bad_tunings or '(none given)'}; expected prompt and/or finetune")
    if not 0 < study.budget < 1:
        raise SimulationError(f"budget is the fraction of the pool to label and must lie in (0, 1), got {study.budget}")
    if study.rounds < 1 or study.seeds < 1:
        raise SimulationError(f"rounds and seeds must be >= 1, got rounds={study.rounds}, seeds={study.seeds}")
    if study.curve_seeds is not None and study.curve_seeds < 1:
        raise SimulationError(f"curve seeds must be >= 1 (or none for every seed), got {study.curve_seeds}")
    if list(study.curve_budgets) != sorted(study.curve_budgets) or any(
        not study.budget < f < 1 for f in study.curve_budgets
    ):
        raise SimulationError(
            f"curve budgets must rise from above the budget {study.budget:g} to below 1, got {study.curve_budgets}"
        )


def round_budgets(pool_size: int, budget: float, rounds: int, curve: Sequence[float] = ()) -> list[int]:
    """Volumes to label in each round: round(budget · pool) spread as evenly as possible over ``rounds``, then one
    round per cumulative fraction of ``curve``."""
    total = int(round(budget * pool_size))
    if total < rounds:
        raise SimulationError(
            f"a budget of {budget:g} of a {pool_size}-volume pool is {total} labels, fewer than the {rounds} rounds"
        )
    budgets = [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]
    for fraction in curve:
        budgets.append(max(1, int(round(fraction * pool_size)) - sum(budgets)))
    return budgets


def cascade_of(profile: SimProfile) -> CascadeConfig:
    """The cascade geometry of a profile (the server's defaults unless the profile says otherwise)."""
    return CascadeConfig(spacing=profile.spacing, coarse_spacing=profile.coarse_spacing, margin_mm=profile.margin_mm)


def split_pool_test(cohort: PreparedCohort, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(pool indices, test indices): a split fixed by ``seed``, stratified by group and tumour presence."""
    strata = np.array([f"{g}|{t}" for g, t in zip(cohort.groups, cohort.has_tumour())])
    _, counts = np.unique(strata, return_counts=True)
    n_test = int(round(test_fraction * len(cohort.names)))
    # Stratify only when every stratum can give the test and the pool a member each.
    stratify = strata if counts.min() >= 2 and n_test >= len(counts) and len(strata) - n_test >= len(counts) else None
    pool, test = train_test_split(np.arange(len(strata)), test_size=n_test, random_state=seed, stratify=stratify)
    return sorted(pool.tolist()), sorted(test.tolist())


# ------------------------------------------------------------------------------------------- one network

def build_network(backbone: torch.nn.Module, tuning: str, profile: SimProfile, seed: int) -> SLPTNet:
    """A fresh network around (a copy of) the frozen backbone, configured by the profile."""
    torch.manual_seed(seed)
    config = SLPTConfig(
        num_prompts=profile.num_prompts, mode=tuning, seed=seed, roi_size=(profile.patch,) * 3,
        spacing=profile.spacing, coarse_spacing=profile.coarse_spacing, roi_margin_mm=profile.margin_mm,
        fpu_rank=profile.fpu_rank, prompt_stages=profile.prompt_stages,
        head_reads_stages=profile.head_reads_stages, head_kernel=profile.head_kernel,
        head_reads_image=profile.head_reads_image,
    )
    return SLPTNet(copy.deepcopy(backbone), config)


def train_network(
    backbone: torch.nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], tuning: str,
    schedule: Schedule, profile: SimProfile, seed: int, progress: Progress | None = None,
    network: SLPTNet | None = None, lr_decay: str | None = None,
) -> tuple[SLPTNet, float]:
    """Train a fresh network (or ``network``, built by :func:`build_network`) on working-grid crops:
    -> (network, seconds). ``lr_decay``: :attr:`models.training.TrainConfig.lr_decay`, the profile's unless given
    (the development sweep compares both)."""
    network = network or build_network(backbone, tuning, profile, seed)
    schedule_config = TrainConfig(
        steps=schedule.steps, lr=schedule.lr, batch_per_prompt=profile.batch_per_prompt, seed=seed,
        class_ratios=profile.class_ratios, lr_decay=lr_decay or profile.lr_decay,
    )
    result = train_prompts(network, list(zip(images, labels)), schedule_config, progress=progress)
    return network, result.time_s


# --------------------------------------------------------------------------------------- the work units

_WORKER: dict = {}


def _init_worker(cohort_path: Path, backbone_path: Path, progress: queue.Queue | None) -> None:
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
        if (unit.seed, FULL_DATA, tuning, 0) in done or past_deadline(ctx):
            continue
        schedule = ctx.profile.reference_prompt if tuning == "prompt" else ctx.profile.reference_finetune
        trained = _trained(ctx, cohort, backbone, ctx.pool, tuning, schedule, _train_seed(unit.seed, 0))
        written += _write_result(ctx, unit, tuning, 0, ctx.pool, trained, cohort)
        report(1)
    return written


def unit_budgets(ctx: RunContext, unit: Unit) -> list[int]:
    return strategy_budgets(ctx.study, len(ctx.pool), unit.strategy, unit.seed)


def strategy_budgets(study: Study, pool_size: int, strategy: str, seed: int) -> list[int]:
    """Volumes ``strategy`` labels in each of its rounds at ``seed`` (on the learning curve's seeds, its strategies go
    on past the budget)."""
    curve = study.curve_budgets if study.follows_curve(strategy, seed) else ()
    return round_budgets(pool_size, study.budget, study.rounds, curve)


def seed_rows(study: Study, pool_size: int, seed: int) -> int:
    """Result rows of one seed: every strategy's rounds of every tuning it trains."""
    return sum(
        study.trains(s, tuning, r, seed)
        for s in study.strategies for r in range(len(strategy_budgets(study, pool_size, s, seed)))
        for tuning in study.tunings
    )


def study_rows(study: Study, pool_size: int, references: int, realizations: int) -> int:
    """Result rows of the whole study: every seed's rows, and ``references`` rows per backbone realization."""
    return references * max(realizations, 1) + sum(seed_rows(study, pool_size, seed) for seed in range(study.seeds))


def _run_rounds(ctx: RunContext, unit: Unit, cohort: PreparedCohort, backbone, report) -> int:
    """All rounds of one seed × strategy. Rounds recorded in the state file replay their stored picks and
    scores, and only train the tunings whose rows are missing from results.csv."""
    state_path = ctx.records / "state" / f"seed{unit.seed}_{unit.strategy}.json"
    finished = files.read_state(state_path)
    budgets = unit_budgets(ctx, unit)
    score_name = STRATEGIES[unit.strategy].score
    done = files.done_keys(ctx.records)
    labeled: list[int] = []
    scores: dict[str, float] | None = None
    blocks = embedding_blocks(backbone)
    written = 0
    # Past the deadline no new model starts. A round whose prompt model is in hand is still scored and recorded
    # (its missing fine-tuning row is trained on replay); an unfinished round is selected again next time, with
    # the same picks (they depend on the seed and the stored scores only).
    for r, budget in enumerate(budgets):
        replay = r < len(finished)
        picks = finished[r]["selected"] if replay else _select(ctx, unit, cohort, labeled, scores, budget, r, blocks)
        labeled = labeled + picks
        prompt_model: Trained | None = None
        stopping = False
        for tuning in ctx.study.tunings:
            recorded = (unit.seed, unit.strategy, tuning, r) in done
            if recorded or not ctx.study.trains(unit.strategy, tuning, r, unit.seed):
                continue
            if past_deadline(ctx):
                stopping = True
                break
            trained = _train_round(ctx, cohort, backbone, labeled, tuning, unit.seed, r)
            written += _write_result(ctx, unit, tuning, r, labeled, trained, cohort)
            report(1)
            if tuning == "prompt":
                prompt_model = trained
        if replay:
            if stopping:
                return written
            scores = finished[r]["scores"]
            continue
        scores = None
        if score_name and r + 1 < len(budgets):
            if prompt_model is None:  # rows of this round existed, or none is recorded in this round
                if stopping or past_deadline(ctx):
                    return written
                prompt_model = _train_round(ctx, cohort, backbone, labeled, "prompt", unit.seed, r)
            scores = {i: every[score_name] for i, every in _pool_scores(ctx, cohort, prompt_model, labeled).items()}
        finished.append({"round": r, "selected": picks, "scores": scores})
        files.write_state(state_path, unit.seed, unit.strategy, finished)
        if stopping:
            return written
    return written


def _select(
    ctx: RunContext, unit: Unit, cohort: PreparedCohort, labeled: list[int], scores: dict[str, float] | None,
    budget: int, round_index: int, blocks: Sequence[int],
) -> list[int]:
    """Pool indices the strategy picks this round (:func:`strategies.rounds.select_round`, as the server does)."""
    unlabeled = [i for i in ctx.pool if i not in labeled]
    selection = select_round(
        unit.strategy, cohort.embeddings[unlabeled], budget, block_sizes=blocks,
        scores=None if scores is None else np.array([scores[str(i)] for i in unlabeled]),
        labeled_embeddings=cohort.embeddings[labeled] if labeled else None,
        seed=unit.seed * 1000 + round_index,
    )
    return [unlabeled[p] for p in selection.picks]


def _train_round(ctx, cohort: PreparedCohort, backbone, labeled: list[int], tuning: str, seed: int, r: int) -> Trained:
    schedule = ctx.profile.prompt if tuning == "prompt" else ctx.profile.finetune
    return _trained(ctx, cohort, backbone, labeled, tuning, schedule, _train_seed(seed, r))


def _trained(
    ctx: RunContext, cohort: PreparedCohort, backbone, labeled: list[int], tuning: str, schedule: Schedule, seed: int,
) -> Trained:
    """The network trained on ``labeled`` (in that order): from the run's model store if an identical one was
    trained before (another strategy picked the same volumes at the same seed), else trained now and stored."""
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


# ------------------------------------------------------------------------------------------- the driver

def prepared_cohort(
    dataset: MSDDataset, backbone_path: Path, out: Path, profile: SimProfile, backbone_sha: str | None = None,
) -> tuple[PreparedCohort, Path]:
    """The run's prepared cohort, from its cache when present (prepared once per run folder, geometry and backbone:
    stage 1's ROIs and the embeddings depend on the backbone). ``backbone_sha``: the backbone's fingerprint where the
    caller has it (it is computed from ``backbone_path`` otherwise)."""
    cfg = cascade_of(profile)
    fingerprint = (backbone_sha or backbone_fingerprint(load_backbone(backbone_path)[0]))[:12]
    tag = "_".join(f"{v:g}" for v in (*cfg.spacing, *cfg.coarse_spacing, cfg.margin_mm)) + f"_{fingerprint}"
    cache = out / "cache" / f"prepared_{tag}.npz"
    expected = [c.name for c in dataset.cases if c.label is not None]
    if cache.is_file():
        cohort = load_prepared(cache)
        if cohort.names != expected:
            raise SimulationError(f"{cache} was made from other data: use a fresh --out folder")
        return cohort, cache
    try:
        cohort = prepare_cohort(dataset, backbone_path, cfg)
    except PreparationError as exc:
        raise SimulationError(str(exc)) from exc
    save_prepared(cohort, cache)
    return cohort, cache


def run_simulation(
    dataset: MSDDataset, backbone_path: Path, out: Path, profile: SimProfile, study: Study, workers: int = 1,
    records: Path | None = None, deadline: float | None = None,
) -> RunOutcome:
    """Run (or resume) the whole study; returns how far it got.

    ``out`` holds what the run makes and can make again (the prepared cohort's cache); ``records`` (default
    ``out``) holds what it measured: the split, the result and per-case rows, the round state and ``run.json``,
    the identity of the design, backbone and cohort those rows belong to. A long study keeps its records under
    version control and resumes them in another session with a re-made cohort and backbone. A backbone that comes
    out different is another realization: it records in ``records/backbone-<fingerprint>/`` and runs only the seeds
    no other realization has rows for (docs/design.md, "A study that spans sessions"). No new model starts after
    ``deadline`` (``time.time()``).

    Work units (seed × strategy, and each seed's full-data reference of each tuning) run in ``workers`` processes
    with one torch thread each; rows already in ``results.csv`` are not computed again.
    """
    check_study(study)
    study_folder = records or out
    out.mkdir(parents=True, exist_ok=True)
    backbone, backbone_config = load_backbone(backbone_path)  # once: the workers load their own copy
    backbone_sha = backbone_fingerprint(backbone)
    cohort, cache = prepared_cohort(dataset, backbone_path, out, profile, backbone_sha)
    pool, test = split_pool_test(cohort, profile.test_fraction, profile.split_seed)
    round_budgets(len(pool), study.budget, study.rounds)  # fail before any training
    identity = run_identity(profile, study, backbone_sha, cohort)
    # Another backbone realization (the same recipe re-made with other float rounding) records apart, and runs only
    # the seeds no other realization has rows for: a seed's comparisons are all on one backbone.
    records = files.realization_folder(study_folder, identity["backbone"])
    others = [folder for folder in files.realization_folders(study_folder) if folder != records]
    held = {seed: backbone for folder in others for seed, backbone in seeds_recorded(folder).items()}
    own_seeds = [seed for seed in range(study.seeds) if seed not in held]
    reference_seeds = min(study.seeds, profile.reference_seeds)
    references = len(study.tunings) * reference_seeds
    try:
        files.check_same_design(others, identity["design"])
        if not own_seeds:  # nothing left for this realization: it records nothing, not even its references
            total = study_rows(study, len(pool), references, len(others))
            done = _rows_recorded(others)
            return RunOutcome(records / "results.csv", done, total, held, done, backbone_sha)
        records.mkdir(parents=True, exist_ok=True)
        files.check_identity(records, identity)
        files.write_split(records, [cohort.names[i] for i in pool], [cohort.names[i] for i in test], profile.split_seed)
        ctx = RunContext(
            records=records, profile=profile, study=study, backbone_path=backbone_path, pool=pool, test=test,
            models=ModelStore(out / "models", identity, backbone_config),
            group_columns=files.group_column_names([cohort.groups[i] for i in test]), deadline=deadline,
        )
        files.check_existing_header(records / "results.csv", files.result_columns(ctx.group_columns))
    except files.RunFolderError as exc:
        raise SimulationError(str(exc)) from exc

    # Every realization trains its own references: its seeds are compared with them.
    units = [Unit(seed, FULL_DATA, tuning) for seed in range(reference_seeds) for tuning in study.tunings]
    units += [Unit(seed, strategy) for seed in own_seeds for strategy in study.strategies]
    total_rows = study_rows(study, len(pool), references, len(others) + 1)
    already = _rows_recorded([*others, records])
    with tqdm(total=total_rows, initial=min(already, total_rows), desc="simulate", unit="run") as bar:
        if workers <= 1:
            _init_worker(cache, backbone_path, None)
            for unit in units:
                bar.update(run_unit(ctx, unit))
        else:
            _run_parallel(ctx, units, cache, backbone_path, workers, bar)
    return RunOutcome(records / "results.csv", _rows_recorded([*others, records]), total_rows, held, already, backbone_sha)


def seeds_recorded(folder: Path) -> dict[int, str]:
    """{seed: the realization's backbone (first 12 hex digits)} of the seeds with strategy rows in ``folder``."""
    backbone = files.recorded_backbone(folder)[:12]
    return {seed: backbone for seed, strategy, _tuning, _round in files.done_keys(folder) if strategy != FULL_DATA}


def release_seed(records: Path, seed: int, reason: str) -> Path:
    """Give up ``seed`` on the realization that holds it unfinished: its result and per-case rows and its round state
    move to ``released/seed<N>-<time>/`` inside that realization's folder, beside a ``release.json`` saying why, and
    the next run on any realization takes the seed from its first round (docs/design.md, "Releasing a seed"). A
    finished seed is never released: that would let a study drop results it does not like. Returns the folder the
    rows moved to."""
    if not reason.strip():
        raise SimulationError("say why the seed is released (--reason): it is kept beside its rows and in the report")
    holders = [folder for folder in files.realization_folders(records) if seed in seeds_recorded(folder)]
    if not holders:
        raise SimulationError(f"no realization in {records} has rows for seed {seed}: nothing to release")
    [folder] = holders  # a seed's rows are all on one realization
    recorded = [key for key in files.done_keys(folder) if key[0] == seed and key[1] != FULL_DATA]
    expected = rows_of_seed(folder, seed)
    if len(recorded) >= expected:
        raise SimulationError(
            f"seed {seed} is finished on {folder} ({len(recorded)} of {expected} rows): a finished seed is not released"
        )
    released_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    target = folder / files.RELEASED / f"seed{seed}-{released_at.replace(':', '')}"

    def of_seed(row: dict) -> bool:
        return int(row["seed"]) == seed and row["strategy"] != FULL_DATA

    # results.csv first: once its rows are gone the seed is free; per-case rows and state follow.
    moved = files.move_rows(folder / "results.csv", target / "results.csv", of_seed)
    files.move_rows(folder / "per_case.csv", target / "per_case.csv", of_seed)
    files.move_files(sorted((folder / "state").glob(f"seed{seed}_*.json")), target / "state")
    note = {"seed": seed, "backbone": (files.recorded_backbone(folder) or "")[:12], "rows": moved,
            "rows_per_seed": expected, "released_at": released_at, "reason": reason.strip()}
    write_text_atomic(target / "release.json", json.dumps(note, indent=2) + "\n")
    return target


def rows_of_seed(folder: Path, seed: int) -> int:
    """Result rows ``seed`` has when finished, by the design and split a realization's folder records."""
    recorded = files.recorded_design(folder)["study"]
    study = Study(**{key: tuple(value) if isinstance(value, list) else value for key, value in recorded.items()})
    pool_size = len(json.loads((folder / "split.json").read_text())["pool"])
    return seed_rows(study, pool_size, seed)


def _rows_recorded(folders: Sequence[Path]) -> int:
    return sum(len(files.done_keys(folder)) for folder in folders)


def run_identity(profile: SimProfile, study: Study, backbone_sha: str, cohort: PreparedCohort) -> dict:
    """What a study's rows depend on: the design (profile without its worker count, and the study), the frozen
    backbone's fingerprint (``backbone_sha``, :func:`models.backbone.backbone_fingerprint`) and the prepared cohort's
    digest. JSON-ready."""
    return {
        "design": design_identity(profile, study),
        "backbone": backbone_sha,
        "cohort": cohort.digest(),
    }


def design_identity(profile: SimProfile, study: Study) -> dict:
    """The design part of :func:`run_identity`: the profile without its worker count, and the study. JSON-ready."""
    study_design = {k: v for k, v in asdict(study).items() if not _later_field_at_default(Study, k, v)}
    design = {
        k: v for k, v in asdict(profile).items() if k != "workers" and not _later_field_at_default(SimProfile, k, v)
    } | {"study": study_design}
    return json.loads(json.dumps(design))


#: Design fields added after a study's records were made. At their default they reproduce the behaviour from before
#: they existed, so a design leaves them out and those records (whose run.json lacks them) stay valid.
LATER_FIELDS = (
    "lr_decay", "finetune_strategies", "curve_seeds", "budget_round_only", "early_rounds_on_curve_seeds", "prompt_stages",
)


def _later_field_at_default(kind: type, name: str, value) -> bool:
    return name in LATER_FIELDS and value == {f.name: f.default for f in fields(kind)}[name]


def _run_parallel(ctx: RunContext, units: list[Unit], cache: Path, backbone_path: Path, workers: int, bar: tqdm) -> None:
    with Manager() as manager:
        progress = manager.Queue()
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(cache, backbone_path, progress)) as pool:
            pending = {pool.submit(run_unit, ctx, unit) for unit in units}
            while pending:
                finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # re-raise a worker's error here
                while not progress.empty():
                    bar.update(progress.get())
        while not progress.empty():
            bar.update(progress.get())


def prepare_synthetic(out: Path, profile: SimProfile) -> tuple[Path, Path]:
    """Make (once) the downstream cohort and the upstream-pretrained backbone of a ``--synthetic`` run.

    The downstream cohort (seed ``profile.cohort_seed``) goes to ``out/cohort``; the backbone is pre-trained
    on a separate upstream cohort (``upstream=True``, seed ``profile.upstream_seed``) into
    ``out/backbone.pt``, at the profile's working and coarse spacings. Both are reused when present. Pre-training
    runs on one thread, so the downstream cohort is generated on the other core meanwhile. Returns (cohort folder,
    backbone checkpoint).
    """
    cohort_dir, upstream_dir, backbone = out / "cohort", out / "upstream", out / "backbone.pt"
    if backbone.is_file():
        _generate_once(cohort_dir, partial(_generate_cohort, profile=profile, upstream=False))
        return cohort_dir, backbone
    _generate_once(upstream_dir, partial(_generate_cohort, profile=profile, upstream=True))
    with ProcessPoolExecutor(1) as side:
        cohort_made = side.submit(
            _generate_once, cohort_dir, partial(_generate_cohort, profile=profile, upstream=False, progress=False)
        )
        _pretrain_synthetic(upstream_dir, backbone, profile)
        cohort_made.result()
    return cohort_dir, backbone


def _generate_cohort(folder: Path, profile: SimProfile, upstream: bool, progress: bool = True) -> Path:
    """The run's downstream cohort, or (``upstream``) its upstream pre-training cohort, into ``folder``."""
    from cohort.synth import generate_cohort

    seed, cases = (profile.upstream_seed, profile.upstream_cases) if upstream else (profile.cohort_seed, profile.cases)
    return generate_cohort(folder, cases, seed, profile.size, upstream=upstream, progress=progress)


def _pretrain_synthetic(upstream_dir: Path, backbone: Path, profile: SimProfile) -> None:
    """Pre-train the run's backbone on the upstream cohort. One thread: a study's seeds resume in later sessions only
    on a bit-identical backbone (run.json), and a single-threaded run re-makes it exactly on the same kind of CPU
    (docs/design.md, "Backbone realizations")."""
    from models.pretrain import PretrainConfig, pretrain_backbone

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with progress_bar("pre-training the backbone") as report:
            pretrain_backbone(
                upstream_dir, backbone, profile.backbone, epochs=profile.pretrain_epochs, progress=report,
                schedule=PretrainConfig(
                    patch_size=(profile.pretrain_patch,) * 3, spacing=profile.spacing,
                    coarse_spacing=profile.coarse_spacing, batch_size=profile.pretrain_batch,
                    denoise_weight=profile.pretrain_denoise,
                ),
            )
    finally:
        torch.set_num_threads(threads)


def _generate_once(folder: Path, generate: Callable[[Path], Path]) -> None:
    """Generate into a temporary folder moved into place when complete, so an interrupted generation is redone."""
    if (folder / "dataset.json").is_file():
        return
    with atomic_path(folder) as scratch:
        generate(scratch)
