"""The active-learning simulator behind ``slpt simulate``: how many labels does each strategy need?

For every seed × strategy the loop starts with no labels; each round the strategy (exactly the
``strategies`` classes the server uses) picks volumes from the unlabeled pool, the oracle reveals their
labels (``labelsTr``), a network is trained *from the frozen backbone* on all labels so far with the
profile's fixed schedule (prompt tuning and/or full fine-tuning, on the same labels), and it is evaluated on
the held-out test set. The full-data references train on 100 % of the pool (strategy ``"full"``).

Our choices, named here because they change the numbers:
- Every volume is resized once to the profile's working size ``size``³ (image trilinear, label nearest);
  inference, Dice and embeddings work at that size. Training draws class-balanced ``patch``³ patches from
  those volumes (a patch centred on a lesion, not the whole volume, is what lets small tumours be learned) and
  inference slides a ``patch``³ window over them.
- Selection always follows the prompt-tuned model (the method's loop): uncertainty scores come from the
  K-prompt model of the previous round (:func:`strategies.uncertainty.volume_scores` on
  :func:`models.inference.working_resolution_probs`). The fine-tuned model is an evaluation arm trained on
  the very same labeled set, so prompt tuning and fine-tuning are compared at the same labels.
- Cold start: TESLA uses its unsupervised diversity rule; rules that cannot work without a score
  (entropy, epistemic) take the round-1 picks of ``random`` with the same seed.
- Liver Dice is over the whole liver (labels >= 1, tumour included, the LiTS convention); tumour Dice per
  case is averaged over the test cases that have tumour; global tumour Dice pools all test voxels.

Outputs in the run folder: ``split.json``, ``results.csv`` (one row per seed × strategy × tuning × round),
``per_case.csv`` (one row per test case of each of those), and ``state/`` (per seed × strategy: the picks
and scores of every finished round), from which an interrupted run resumes.
"""

from __future__ import annotations

import copy
import csv
import fcntl
import json
import os
import queue
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import Manager
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.transforms import Resize
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from models.backbone import load_backbone
from models.embedding import embedding_blocks, volume_embedding
from models.inference import prompt_probabilities, working_resolution_probs
from models.preprocess import load_volume
from models.slpt import SLPTConfig, SLPTNet
from models.training import TrainConfig, train_prompts
from sim.msd import MSDDataset
from sim.profiles import Schedule, SimProfile
from strategies import STRATEGIES, strategy_for_embeddings
from strategies.uncertainty import volume_scores

TUNINGS = ("prompt", "finetune")
FULL_DATA = "full"  # strategy name of the full-data reference rows
#: Score each strategy ranks by (from the prompt model); strategies not listed use no score.
SCORE_OF_STRATEGY = {"tesla": "prompt_uncertainty", "entropy": "entropy", "epistemic": "epistemic"}
BASE_COLUMNS = ("seed", "strategy", "tuning", "round", "n_labeled", "tumour_dice", "tumour_dice_global", "liver_dice")
TAIL_COLUMNS = ("train_time_s", "tunable_params", "total_params", "labeled")
PER_CASE_COLUMNS = ("seed", "strategy", "tuning", "round", "case", "group", "has_tumour", "tumour_dice", "liver_dice")
TUMOUR, LIVER = 2, 1


class SimulationError(ValueError):
    """Bad simulation input (strategy, budget, data, run folder); the message names the problem."""


@dataclass
class Cohort:
    """A labeled cohort at the working size S.

    Attributes:
        names: N case names; groups: N acquisition groups (None where the data records none).
        images: (N, S, S, S) float32 in HU; labels: (N, S, S, S) uint8 (0 background, 1 liver, 2 tumour).
        embeddings: (N, D) float32 backbone embeddings (:func:`models.embedding.volume_embedding`).
    """

    names: list[str]
    groups: list[str | None]
    images: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray


@dataclass(frozen=True)
class Study:
    """The design of one run: what to compare, with which labels budget, how often."""

    strategies: tuple[str, ...]
    budget: float
    rounds: int
    seeds: int
    tunings: tuple[str, ...]


@dataclass(frozen=True)
class Unit:
    """One independent piece of work: one seed × strategy (all rounds), or one seed's full-data reference."""

    seed: int
    strategy: str


@dataclass
class RunContext:
    """What every worker process needs; built once from the run folder."""

    out: Path
    profile: SimProfile
    study: Study
    backbone_path: Path
    pool: list[int]
    test: list[int]
    group_columns: dict[str, str] = field(default_factory=dict)  # group -> CSV column


# ----------------------------------------------------------------------------------------------- inputs

def check_study(study: Study) -> None:
    """Raise :class:`SimulationError` for an unknown strategy or tuning, or an impossible budget/rounds/seeds."""
    unknown = [s for s in study.strategies if s not in STRATEGIES]
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


def round_budgets(pool_size: int, budget: float, rounds: int) -> list[int]:
    """Volumes to label in each round: round(budget · pool) spread as evenly as possible over ``rounds``."""
    total = int(round(budget * pool_size))
    if total < rounds:
        raise SimulationError(
            f"a budget of {budget:g} of a {pool_size}-volume pool is {total} labels, fewer than the {rounds} rounds"
        )
    return [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]


def prepare_cohort(dataset: MSDDataset, backbone_path: Path, size: int) -> Cohort:
    """Load every labeled case of ``dataset``, resize it to ``size``³ and embed it with the frozen backbone."""
    cases = [c for c in dataset.cases if c.label is not None]
    if len(cases) < 4:
        raise SimulationError(f"{dataset.root} has {len(cases)} labeled cases; a simulation needs at least 4")
    if sorted(dataset.labels) != [0, 1, 2]:
        raise SimulationError(f"{dataset.root}: expected labels 0 background, 1 liver, 2 tumour, got {dataset.labels}")
    backbone, _ = load_backbone(backbone_path)
    shape = (size,) * 3
    images, labels, embeddings = [], [], []
    for case in tqdm(cases, desc="loading and embedding", unit="volume"):
        image = load_volume(case.image).astype(np.float32)
        label = load_volume(case.label).astype(np.float32)
        if image.shape != label.shape:
            raise SimulationError(f"{case.name}: image shape {image.shape} != label shape {label.shape}")
        image = np.asarray(Resize(spatial_size=shape, mode="trilinear")(image[None]), dtype=np.float32)[0]
        label = np.rint(np.asarray(Resize(spatial_size=shape, mode="nearest")(label[None]))[0]).astype(np.uint8)
        images.append(image)
        labels.append(label)
        embeddings.append(volume_embedding(backbone, image, size=shape))
    return Cohort(
        names=[c.name for c in cases], groups=[c.group for c in cases], images=np.stack(images),
        labels=np.stack(labels), embeddings=np.stack(embeddings),
    )


def save_cohort(cohort: Cohort, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(
        partial, names=np.array(cohort.names), groups=np.array(["" if g is None else g for g in cohort.groups]),
        images=cohort.images, labels=cohort.labels, embeddings=cohort.embeddings,
    )
    os.replace(partial, path)


def load_cohort(path: Path) -> Cohort:
    with np.load(path) as data:
        return Cohort(
            names=data["names"].tolist(), groups=[g or None for g in data["groups"].tolist()],
            images=data["images"], labels=data["labels"], embeddings=data["embeddings"],
        )


def split_pool_test(cohort: Cohort, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(pool indices, test indices): a split fixed by ``seed``, stratified by group and tumour presence."""
    has_tumour = (cohort.labels == TUMOUR).any(axis=(1, 2, 3))
    strata = np.array([f"{g}|{t}" for g, t in zip(cohort.groups, has_tumour)])
    _, counts = np.unique(strata, return_counts=True)
    n_test = int(round(test_fraction * len(cohort.names)))
    # Stratify only when every stratum can give the test and the pool a member each.
    stratify = strata if counts.min() >= 2 and n_test >= len(counts) and len(strata) - n_test >= len(counts) else None
    pool, test = train_test_split(np.arange(len(strata)), test_size=n_test, random_state=seed, stratify=stratify)
    return sorted(pool.tolist()), sorted(test.tolist())


def write_split(out: Path, cohort: Cohort, pool: list[int], test: list[int], seed: int) -> None:
    """Write ``split.json``; an existing one must hold the same split (the run folder belongs to this data)."""
    split = {
        "seed": seed,
        "pool": [cohort.names[i] for i in pool],
        "test": [cohort.names[i] for i in test],
    }
    path = out / "split.json"
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing.get("pool") != split["pool"] or existing.get("test") != split["test"]:
            raise SimulationError(f"{path} holds a different pool/test split: this run folder belongs to other data")
        return
    path.write_text(json.dumps(split, indent=2) + "\n")


# ------------------------------------------------------------------------------------------- one network

def train_network(
    backbone: torch.nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], tuning: str,
    schedule: Schedule, profile: SimProfile, seed: int,
) -> tuple[SLPTNet, float]:
    """Train a fresh network from (a copy of) the frozen backbone: -> (network, training seconds)."""
    torch.manual_seed(seed)
    config = SLPTConfig(num_prompts=profile.num_prompts, mode=tuning, seed=seed, roi_size=(profile.patch,) * 3)
    network = SLPTNet(copy.deepcopy(backbone), config)
    schedule_config = TrainConfig(
        steps=schedule.steps, lr=schedule.lr, batch_per_prompt=profile.batch_per_prompt, seed=seed
    )
    result = train_prompts(network, list(zip(images, labels)), schedule_config)
    return network, result.time_s


def evaluate(network: SLPTNet, cohort: Cohort, test: list[int]) -> tuple[dict[str, float], list[dict]]:
    """Test-set Dice: -> (summary {tumour_dice, tumour_dice_global, liver_dice, group -> tumour Dice}, per case).

    Per case, one forward pass of all K prompts at the working size; the prediction is the argmax of the
    mean of the K softmax maps.
    """
    per_case = []
    overlap = predicted = truth = 0
    for i in test:
        probs = prompt_probabilities(network, cohort.images[i])  # (K, C, S, S, S)
        prediction = probs.mean(dim=0).argmax(dim=0)
        label = torch.from_numpy(cohort.labels[i].astype(np.int64))
        has_tumour = bool((label == TUMOUR).any())
        tumour_dice = _dice(prediction == TUMOUR, label == TUMOUR) if has_tumour else float("nan")
        overlap += int(((prediction == TUMOUR) & (label == TUMOUR)).sum())
        predicted += int((prediction == TUMOUR).sum())
        truth += int((label == TUMOUR).sum())
        per_case.append({
            "case": cohort.names[i], "group": cohort.groups[i] or "", "has_tumour": int(has_tumour),
            "tumour_dice": tumour_dice, "liver_dice": _dice(prediction >= LIVER, label >= LIVER),
        })
    tumour = [c["tumour_dice"] for c in per_case if c["has_tumour"]]
    summary = {
        "tumour_dice": float(np.mean(tumour)) if tumour else float("nan"),
        "tumour_dice_global": 2 * overlap / (predicted + truth) if predicted + truth else 1.0,
        "liver_dice": float(np.mean([c["liver_dice"] for c in per_case])),
    }
    for group in sorted({c["group"] for c in per_case if c["group"]}):
        values = [c["tumour_dice"] for c in per_case if c["group"] == group and c["has_tumour"]]
        summary[group] = float(np.mean(values)) if values else float("nan")
    return summary, per_case


def _dice(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    """MONAI Dice of two (S, S, S) boolean masks; an empty truth and empty prediction count as 1."""
    value = compute_dice(prediction[None, None].float(), truth[None, None].float(), include_background=True, ignore_empty=False)
    return float(value.reshape(-1)[0])


# --------------------------------------------------------------------------------------- the work units

_WORKER: dict = {}


def _init_worker(cohort_path: Path, backbone_path: Path, progress: queue.Queue | None) -> None:
    """Process start: one torch thread, the cohort and the frozen backbone loaded once per process."""
    torch.set_num_threads(1)
    _WORKER.update(cohort=load_cohort(cohort_path), backbone=load_backbone(backbone_path)[0], progress=progress)


def run_unit(ctx: RunContext, unit: Unit) -> int:
    """Run (or finish) one unit in this process; returns the number of result rows it wrote."""
    cohort, backbone = _WORKER["cohort"], _WORKER["backbone"]
    progress = _WORKER.get("progress")
    report: Callable[[int], None] = progress.put if progress is not None else (lambda n: None)
    if unit.strategy == FULL_DATA:
        return _run_reference(ctx, unit, cohort, backbone, report)
    return _run_rounds(ctx, unit, cohort, backbone, report)


def _run_reference(ctx: RunContext, unit: Unit, cohort: Cohort, backbone, report) -> int:
    done = _done_keys(ctx.out)
    written = 0
    for tuning in ctx.study.tunings:
        if (unit.seed, FULL_DATA, tuning, 0) in done:
            continue
        schedule = ctx.profile.reference_prompt if tuning == "prompt" else ctx.profile.reference_finetune
        network, seconds = train_network(
            backbone, cohort.images[ctx.pool], cohort.labels[ctx.pool], tuning, schedule, ctx.profile,
            seed=_train_seed(unit.seed, 0),
        )
        written += _write_result(ctx, unit, tuning, 0, ctx.pool, network, seconds, cohort)
        report(1)
    return written


def _run_rounds(ctx: RunContext, unit: Unit, cohort: Cohort, backbone, report) -> int:
    """All rounds of one seed × strategy. Rounds recorded in the state file replay their stored picks and
    scores, and only train the tunings whose rows are missing from results.csv."""
    state_path = ctx.out / "state" / f"seed{unit.seed}_{unit.strategy}.json"
    finished = json.loads(state_path.read_text())["rounds"] if state_path.is_file() else []
    budgets = round_budgets(len(ctx.pool), ctx.study.budget, ctx.study.rounds)
    score_name = SCORE_OF_STRATEGY.get(unit.strategy)
    done = _done_keys(ctx.out)
    labeled: list[int] = []
    scores: dict[str, float] | None = None
    blocks = embedding_blocks(backbone)
    written = 0
    for r in range(ctx.study.rounds):
        replay = r < len(finished)
        picks = finished[r]["selected"] if replay else _select(ctx, unit, cohort, labeled, scores, budgets[r], r, blocks)
        labeled = labeled + picks
        prompt_network = None
        for tuning in ctx.study.tunings:
            if (unit.seed, unit.strategy, tuning, r) in done:
                continue
            network, seconds = _train_round(ctx, cohort, backbone, labeled, tuning, unit.seed, r)
            written += _write_result(ctx, unit, tuning, r, labeled, network, seconds, cohort)
            report(1)
            if tuning == "prompt":
                prompt_network = network
        if replay:
            scores = finished[r]["scores"]
            continue
        scores = None
        if score_name and r + 1 < ctx.study.rounds:
            if prompt_network is None:  # rows of this round existed, or only fine-tuning is evaluated
                prompt_network, _ = _train_round(ctx, cohort, backbone, labeled, "prompt", unit.seed, r)
            roi = (ctx.profile.size,) * 3
            scores = {
                str(i): volume_scores(working_resolution_probs(prompt_network, cohort.images[i], roi))[score_name]
                for i in ctx.pool if i not in labeled
            }
        finished.append({"round": r, "selected": picks, "scores": scores})
        _write_json_atomic(state_path, {"seed": unit.seed, "strategy": unit.strategy, "rounds": finished})
    return written


def _select(
    ctx: RunContext, unit: Unit, cohort: Cohort, labeled: list[int], scores: dict[str, float] | None,
    budget: int, round_index: int, blocks: Sequence[int],
) -> list[int]:
    """Pool indices the strategy picks this round (the exact ``strategies`` classes the server uses)."""
    unlabeled = [i for i in ctx.pool if i not in labeled]
    name = unit.strategy
    uncertainty = None if scores is None else np.array([scores[str(i)] for i in unlabeled])
    if STRATEGIES[name].requires_uncertainty and uncertainty is None:
        name = "random"  # cold start of a score-only rule: no model yet
    picks = strategy_for_embeddings(name, blocks).select(
        cohort.embeddings[unlabeled], budget, uncertainty=uncertainty,
        labeled_embeddings=cohort.embeddings[labeled] if labeled else None,
        seed=unit.seed * 1000 + round_index,
    )
    return [unlabeled[p] for p in picks]


def _train_round(ctx, cohort: Cohort, backbone, labeled: list[int], tuning: str, seed: int, r: int):
    schedule = ctx.profile.prompt if tuning == "prompt" else ctx.profile.finetune
    return train_network(
        backbone, cohort.images[labeled], cohort.labels[labeled], tuning, schedule, ctx.profile, _train_seed(seed, r)
    )


def _train_seed(seed: int, round_index: int) -> int:
    return seed * 1000 + round_index


# ------------------------------------------------------------------------------------------------ files

def result_columns(group_columns: dict[str, str]) -> list[str]:
    return [*BASE_COLUMNS, *group_columns.values(), *TAIL_COLUMNS]


def group_column_names(groups: Sequence[str | None]) -> dict[str, str]:
    """{group: "dice_<group>"} with the group name reduced to CSV-safe characters."""
    return {g: "dice_" + re.sub(r"[^A-Za-z0-9_]+", "_", g) for g in sorted({g for g in groups if g})}


def _write_result(
    ctx: RunContext, unit: Unit, tuning: str, round_index: int, labeled: list[int], network: SLPTNet,
    seconds: float, cohort: Cohort,
) -> int:
    summary, per_case = evaluate(network, cohort, ctx.test)
    key = {"seed": unit.seed, "strategy": unit.strategy, "tuning": tuning, "round": round_index}
    row = {
        **key, "n_labeled": len(labeled),
        "tumour_dice": summary["tumour_dice"], "tumour_dice_global": summary["tumour_dice_global"],
        "liver_dice": summary["liver_dice"],
        **{column: summary.get(group, float("nan")) for group, column in ctx.group_columns.items()},
        "train_time_s": round(seconds, 3), "tunable_params": network.parameter_counts()["tunable_params"],
        "total_params": network.parameter_counts()["total_params"],
        "labeled": ";".join(cohort.names[i] for i in labeled),
    }
    # Per-case rows first: a results row present means its per-case rows are present too.
    _append_rows(ctx.out / "per_case.csv", PER_CASE_COLUMNS, [{**key, **case} for case in per_case])
    _append_rows(ctx.out / "results.csv", result_columns(ctx.group_columns), [row])
    return 1


def _append_rows(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    """Append rows under an exclusive lock (several worker processes write the same files)."""
    with path.open("a", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
            if handle.tell() == 0:
                writer.writeheader()
            writer.writerows(rows)
            handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _done_keys(out: Path) -> set[tuple[int, str, str, int]]:
    """(seed, strategy, tuning, round) of every row already in results.csv."""
    path = out / "results.csv"
    if not path.is_file():
        return set()
    with path.open(newline="") as handle:
        return {(int(r["seed"]), r["strategy"], r["tuning"], int(r["round"])) for r in csv.DictReader(handle)}


def _write_json_atomic(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(content))
    os.replace(partial, path)


def _check_existing_header(path: Path, columns: list[str]) -> None:
    if path.is_file() and path.stat().st_size:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != columns:
            raise SimulationError(f"{path} has other columns than this run writes: use a fresh --out folder")


# ------------------------------------------------------------------------------------------- the driver

def run_simulation(
    dataset: MSDDataset, backbone_path: Path, out: Path, profile: SimProfile, study: Study, workers: int = 1,
) -> Path:
    """Run (or resume) the whole study in ``out``; returns the path of ``results.csv``.

    Work units (seed × strategy, and each seed's full-data reference) run in ``workers`` processes with one
    torch thread each; rows already in ``results.csv`` are not computed again.
    """
    check_study(study)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache" / f"cohort_{profile.size}.npz"
    if cache.is_file():
        cohort = load_cohort(cache)
        expected = [c.name for c in dataset.cases if c.label is not None]
        if cohort.names != expected:
            raise SimulationError(f"{cache} was made from other data: use a fresh --out folder")
    else:
        cohort = prepare_cohort(dataset, backbone_path, profile.size)
        save_cohort(cohort, cache)
    pool, test = split_pool_test(cohort, profile.test_fraction, profile.split_seed)
    round_budgets(len(pool), study.budget, study.rounds)  # fail before any training
    write_split(out, cohort, pool, test, profile.split_seed)
    ctx = RunContext(
        out=out, profile=profile, study=study, backbone_path=backbone_path, pool=pool, test=test,
        group_columns=group_column_names([cohort.groups[i] for i in test]),
    )
    _check_existing_header(out / "results.csv", result_columns(ctx.group_columns))

    reference_seeds = min(study.seeds, profile.reference_seeds)
    units = [Unit(seed, FULL_DATA) for seed in range(reference_seeds)]
    units += [Unit(seed, strategy) for seed in range(study.seeds) for strategy in study.strategies]
    total_rows = len(study.tunings) * (reference_seeds + study.seeds * len(study.strategies) * study.rounds)
    already = len(_done_keys(out))
    with tqdm(total=total_rows, initial=min(already, total_rows), desc="simulate", unit="run") as bar:
        if workers <= 1:
            _init_worker(cache, backbone_path, None)
            for unit in units:
                bar.update(run_unit(ctx, unit))
        else:
            _run_parallel(ctx, units, cache, backbone_path, workers, bar)
    return out / "results.csv"


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
    ``out/backbone.pt``. Both are reused when present. Returns (cohort folder, backbone checkpoint).
    """
    from models.pretrain import PretrainConfig, pretrain_backbone
    from sim.synth import generate_cohort

    cohort_dir, upstream_dir, backbone = out / "cohort", out / "upstream", out / "backbone.pt"
    _generate_once(cohort_dir, lambda d: generate_cohort(d, profile.cases, profile.cohort_seed, profile.size))
    if not backbone.is_file():
        _generate_once(
            upstream_dir,
            lambda d: generate_cohort(d, profile.upstream_cases, profile.upstream_seed, profile.size, upstream=True),
        )
        with tqdm(desc="pre-training the backbone", unit="step") as bar:

            def report(done: int, total: int, loss: float) -> None:
                bar.total, bar.n = total, done
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.refresh()

            pretrain_backbone(
                upstream_dir, backbone, profile.backbone, epochs=profile.pretrain_epochs, progress=report,
                schedule=PretrainConfig(patch_size=(profile.size,) * 3, seed=profile.upstream_seed),
            )
    return cohort_dir, backbone


def _generate_once(folder: Path, generate: Callable[[Path], Path]) -> None:
    """Generate into a scratch folder and rename it, so an interrupted generation is simply redone."""
    if (folder / "dataset.json").is_file():
        return
    scratch = folder.with_name(folder.name + ".partial")
    if scratch.exists():
        shutil.rmtree(scratch)
    generate(scratch)
    os.replace(scratch, folder)
