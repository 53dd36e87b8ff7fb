"""What a study compares and how often: the :class:`Study`, its checks, its round budgets and its row counts, and the
design identity a study's ``run.json`` records (docs/design.md, "Measuring label efficiency honestly").

For every seed × strategy the loop starts with no labels; each round the strategy picks volumes from the unlabeled
pool, the oracle reveals their labels, a network is trained from the frozen backbone on all labels so far with the
profile's fixed schedule (prompt tuning and/or fine-tuning, on the same labels) and evaluated on the held-out test
set. Every model's steps follow one rule of its label count (:class:`sim.profiles.StepRule`). The references train
on 100 % of the pool: the full-data reference (strategy :data:`FULL_DATA`) on the rule's steps for the whole pool, the
compute-matched one (:data:`COMPUTE_MATCHED`) on the budget round's steps, so that labels and compute read apart. The
learning curve: the ``curve_strategies`` go on past the study budget to each of ``curve_budgets`` (cumulative
fractions of the pool).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from sim.profiles import SimProfile
from strategies import STRATEGIES

TUNINGS = ("prompt", "finetune")
FULL_DATA = "full"  # strategy name of the full-data reference rows
COMPUTE_MATCHED = "full_matched"  # every pool label on the budget round's schedule
REFERENCES = (FULL_DATA, COMPUTE_MATCHED)  # rows that no strategy selected


class SimulationError(ValueError):
    """Bad simulation input (strategy, budget, data, run folder, backbone); the message names the problem."""


@dataclass(frozen=True)
class Study:
    """The design of one run: what to compare, with which labels budget, how often.

    ``curve_strategies`` continue past ``budget`` to each cumulative fraction of ``curve_budgets`` (the learning
    curve); both may be empty. ``finetune_budget_only`` trains the fine-tuning arm in the budget round only.
    """

    strategies: tuple[str, ...]
    budget: float
    rounds: int
    seeds: int
    tunings: tuple[str, ...]
    curve_strategies: tuple[str, ...] = ()
    curve_budgets: tuple[float, ...] = ()
    finetune_budget_only: bool = False
    #: Fraction of the unlabeled pool a scored round selects among: a candidate subset stratified by TESLA's clusters,
    #: as the server's ``round_candidates`` (docs/design.md, "Candidate subsets"); 0 = the whole pool.
    candidates: float = 0.0

    def trains(self, tuning: str, round_index: int) -> bool:
        """Whether ``tuning`` is trained and evaluated in round ``round_index``. Selection follows prompt tuning, which
        trains every round; fine-tuning is an evaluation arm, which ``finetune_budget_only`` limits to the budget round
        (the targets compare the two there; a fine-tuned model costs the most to train)."""
        return tuning == "prompt" or not self.finetune_budget_only or round_index == self.rounds - 1

    def follows_curve(self, strategy: str) -> bool:
        """Whether ``strategy`` goes on past the budget to the learning curve's label counts."""
        return strategy in self.curve_strategies


def study_of(profile: SimProfile) -> Study:
    """The profile's own study design (``slpt simulate`` without options that change it)."""
    return Study(**{f.name: getattr(profile, f.name) for f in fields(Study) if hasattr(profile, f.name)})


def check_study(study: Study) -> None:
    """Raise :class:`SimulationError` for an unknown strategy or tuning, or an impossible budget/rounds/seeds."""
    unknown = [s for s in (*study.strategies, *study.curve_strategies) if s not in STRATEGIES]
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
    if not 0 <= study.candidates < 1:
        raise SimulationError(f"candidates is a fraction of the unlabeled pool in [0, 1) (0 = the whole pool), got "
                              f"{study.candidates}")
    if study.rounds < 1 or study.seeds < 1:
        raise SimulationError(f"rounds and seeds must be >= 1, got rounds={study.rounds}, seeds={study.seeds}")
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


def strategy_budgets(study: Study, pool_size: int, strategy: str) -> list[int]:
    """Volumes ``strategy`` labels in each of its rounds (the curve's strategies go on past the budget)."""
    curve = study.curve_budgets if study.follows_curve(strategy) else ()
    return round_budgets(pool_size, study.budget, study.rounds, curve)


def unit_rows(study: Study, pool_size: int, strategy: str) -> int:
    """Result rows of one seed × strategy: every round of every tuning it trains."""
    rounds = len(strategy_budgets(study, pool_size, strategy))
    return sum(study.trains(tuning, r) for r in range(rounds) for tuning in study.tunings)


def seed_rows(study: Study, pool_size: int) -> int:
    """Result rows of one seed: every strategy's rounds of every tuning it trains."""
    return sum(unit_rows(study, pool_size, strategy) for strategy in study.strategies)


def study_rows(study: Study, pool_size: int, references: int) -> int:
    """Result rows of the whole study: every seed's rows and ``references`` reference rows."""
    return references + study.seeds * seed_rows(study, pool_size)


def reference_labels(study: Study, pool_size: int, reference: str) -> int:
    """The label count whose schedule (:meth:`sim.profiles.SimProfile.schedule`) a reference trains with: the whole
    pool's, or for :data:`COMPUTE_MATCHED` the budget round's (all budget rounds' labels)."""
    return pool_size if reference == FULL_DATA else sum(round_budgets(pool_size, study.budget, study.rounds))


def design_identity(profile: SimProfile, study: Study) -> dict:
    """The design a study's rows belong to: the profile without its worker count, and the study. JSON-ready."""
    study_fields = asdict(study)
    if not study.candidates:  # studies recorded before the option existed keep their identity
        del study_fields["candidates"]
    design = {k: v for k, v in asdict(profile).items() if k != "workers"} | {"study": study_fields}
    return json.loads(json.dumps(design))
