"""Before a session re-makes a study's backbone: can this CPU add any row to the study's records?

Re-making the cohort and backbone of the ``full`` recipe costs about half an hour of the session, and only then does
the run learn which backbone realization this CPU makes (docs/design.md, "A study that spans sessions"). The records
already tell when that half hour would buy nothing: a seed belongs to the realization that started it, so once every
seed is held, only the CPU kinds that made the realizations holding unfinished seeds can add rows. ``sessions.csv``
says which CPU kind made which realization. A run on any other CPU would make a new realization with no seed to run,
so ``slpt simulate`` stops before pre-training and says which CPU would help.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sim import results as files
from sim.simulate import FULL_DATA, rows_of_seed


@dataclass(frozen=True)
class OpenRealization:
    """A backbone realization with rows still to record: its fingerprint (12 hex digits), its recorded and expected
    rows, the seeds it holds unfinished and the CPU kinds ``sessions.csv`` records as having made it."""

    backbone: str
    rows: int
    expected: int
    unfinished_seeds: tuple[int, ...]
    made_on: tuple[str, ...]


@dataclass(frozen=True)
class Preflight:
    """Whether a new backbone on this CPU can add rows (``can_add``), and why in one sentence (``reason``)."""

    can_add: bool
    reason: str
    open_realizations: tuple[OpenRealization, ...] = ()


def open_realizations(records: Path) -> list[OpenRealization]:
    """Every realization of the study in ``records`` that holds a seed with rows missing (or lacks a reference its
    seeds are measured against)."""
    makers: dict[str, list[str]] = {}
    for session in files.read_sessions(records):
        makers.setdefault(session["backbone"], [])
        if session["cpu"] not in makers[session["backbone"]]:
            makers[session["backbone"]].append(session["cpu"])
    found = []
    for folder in files.realization_folders(records):
        design = files.recorded_design(folder)
        keys = files.done_keys(folder)
        held = sorted({seed for seed, strategy, _tuning, _round in keys if strategy != FULL_DATA})
        if not held:
            continue  # references alone: no seed is waiting for them
        rows = {seed: sum(1 for key in keys if key[0] == seed and key[1] != FULL_DATA) for seed in held}
        expected = {seed: rows_of_seed(folder, seed) for seed in held}
        references = len(design["study"]["tunings"]) * min(design["study"]["seeds"], design["reference_seeds"])
        recorded_references = sum(1 for key in keys if key[1] == FULL_DATA)
        unfinished = tuple(seed for seed in held if rows[seed] < expected[seed])
        if unfinished or recorded_references < references:
            backbone = (files.recorded_backbone(folder) or "")[:12]
            found.append(OpenRealization(
                backbone=backbone, rows=len(keys), expected=references + sum(expected.values()),
                unfinished_seeds=unfinished, made_on=tuple(makers.get(backbone, ())),
            ))
    return found


def check_machine(records: Path, cpu: str) -> Preflight:
    """Whether a backbone made on ``cpu`` (:func:`sim.results.cpu_kind`) can add rows to the study in ``records``."""
    realizations = files.realization_folders(records)
    if not realizations:
        return Preflight(True, "a new study: any CPU can start it")
    design = files.recorded_design(realizations[0])
    held = {seed for folder in realizations for seed, strategy, _t, _r in files.done_keys(folder) if strategy != FULL_DATA}
    free = [seed for seed in range(design["study"]["seeds"]) if seed not in held]
    if free:
        return Preflight(True, f"seeds {', '.join(map(str, free))} have no rows yet: any CPU can run them")
    waiting = tuple(open_realizations(records))
    if not waiting:
        return Preflight(True, "the study is complete: the run re-makes the backbone and re-writes the report")
    if any(not r.made_on or any(same_cpu_kind(cpu, maker) for maker in r.made_on) for r in waiting):
        return Preflight(True, "this CPU kind makes (or may make) a realization with rows to add", waiting)
    where = "; ".join(f"backbone {r.backbone} ({_left(r)}) is made on {' or '.join(r.made_on)}" for r in waiting)
    return Preflight(False, (
        f"nothing this CPU can add to {records}: every seed is held by a backbone realization, and those with rows "
        f"left are re-made only on other CPU kinds: {where}. This CPU ({cpu}) would make a new realization with no "
        "seed to run, so the run stops before making the backbone. `--force` makes it anyway; `slpt release-seed` "
        "gives an unfinished seed up so that any CPU can run it."
    ), waiting)


def same_cpu_kind(a: str, b: str) -> bool:
    """Whether two :func:`sim.results.cpu_kind` strings name one kind of CPU: by family and model where both have them
    (a virtual machine may report the same silicon under another model name), else by the whole string."""
    kinds = [re.search(r"\(family \d+ model \d+\)$", text) for text in (a, b)]
    if all(kinds):
        return kinds[0].group() == kinds[1].group()
    return a == b


def _left(realization: OpenRealization) -> str:
    seeds = realization.unfinished_seeds
    held = f", seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} unfinished" if seeds else ", references missing"
    return f"{realization.rows} of {realization.expected} rows{held}"
