"""The simulator's files in a run folder: result rows, per-case rows, per-unit round state, the split.

Several worker processes append to the same CSV files, so appends take an exclusive lock; a results row is
written after its per-case rows, so a results row present means its per-case rows are present too. Rows already
in ``results.csv`` are never computed again, which is what makes a run resumable.
"""

from __future__ import annotations

import csv
import fcntl
import json
import platform
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from storage.atomic import atomic_path, write_text_atomic

BASE_COLUMNS = ("seed", "strategy", "tuning", "round", "n_labeled", "tumour_dice", "tumour_dice_global", "liver_dice")
TAIL_COLUMNS = ("train_time_s", "tunable_params", "total_params", "labeled")
PER_CASE_COLUMNS = ("seed", "strategy", "tuning", "round", "case", "group", "has_tumour", "tumour_dice", "liver_dice")


#: One row per ``slpt simulate`` invocation on a records folder: where and how long it ran (the study's cost, which
#: spans sessions and CPUs: docs/design.md, "A study that spans sessions").
SESSION_COLUMNS = ("started_utc", "cpu", "backbone", "prepare_min", "run_min", "rows_before", "rows_after")


class RunFolderError(ValueError):
    """The run folder belongs to other data or another design; the message says which file disagrees."""


def result_columns(group_columns: dict[str, str]) -> list[str]:
    return [*BASE_COLUMNS, *group_columns.values(), *TAIL_COLUMNS]


def group_column_names(groups: Sequence[str | None]) -> dict[str, str]:
    """{group: "dice_<group>"} with the group name reduced to CSV-safe characters."""
    return {g: "dice_" + re.sub(r"[^A-Za-z0-9_]+", "_", g) for g in sorted({g for g in groups if g})}


def append_rows(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
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


def done_keys(out: Path) -> set[tuple[int, str, str, int]]:
    """(seed, strategy, tuning, round) of every row already in results.csv."""
    path = out / "results.csv"
    if not path.is_file():
        return set()
    with path.open(newline="") as handle:
        return {(int(r["seed"]), r["strategy"], r["tuning"], int(r["round"])) for r in csv.DictReader(handle)}


def move_rows(source: Path, target: Path, moves: Callable[[dict], bool]) -> int:
    """Move the rows of CSV ``source`` for which ``moves`` is true to the end of CSV ``target`` (made with the same
    header if new); ``source`` is rewritten atomically. Returns how many rows moved."""
    if not source.is_file():
        return 0
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    moved, kept = [], []
    for row in rows:
        (moved if moves(row) else kept).append(row)
    if moved:
        target.parent.mkdir(parents=True, exist_ok=True)
        append_rows(target, columns, moved)
        with atomic_path(source) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
    return len(moved)


def move_files(paths: Sequence[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.move(path, target / path.name)


def check_existing_header(path: Path, columns: list[str]) -> None:
    if path.is_file() and path.stat().st_size:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != columns:
            raise RunFolderError(f"{path} has other columns than this run writes: use a fresh --out folder")


def read_state(path: Path) -> list[dict]:
    """The finished rounds of one seed × strategy (picks and the scores computed after them)."""
    return json.loads(path.read_text())["rounds"] if path.is_file() else []


def write_state(path: Path, seed: int, strategy: str, rounds: list[dict]) -> None:
    write_text_atomic(path, json.dumps({"seed": seed, "strategy": strategy, "rounds": rounds}))


def check_identity(records: Path, identity: dict) -> None:
    """Write ``run.json`` (what the rows depend on: design, backbone, cohort); an existing one must match, so rows
    of another design, backbone or cohort are never mixed with this run's."""
    path = records / "run.json"
    if not path.is_file():
        write_text_atomic(path, json.dumps(identity, indent=2) + "\n")
        return
    existing = json.loads(path.read_text())
    differ = [key for key in identity if existing.get(key) != identity[key]]
    if "design" in differ:
        old, new = existing.get("design", {}), identity["design"]
        fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise RunFolderError(f"{path} records another design (differs in {', '.join(fields)}): use a fresh folder")
    if differ:
        raise RunFolderError(
            f"{path} records another {' and '.join(differ)} ({', '.join(existing.get(k, '?')[:12] for k in differ)}, "
            f"this run has {', '.join(identity[k][:12] for k in differ)}): its rows cannot be resumed with this one"
        )


#: Folder, inside a study's records, of the rows made on another backbone realization than the records' own.
REALIZATION_PREFIX = "backbone-"


def realization_folder(study: Path, backbone: str) -> Path:
    """Where a run on ``backbone`` (its SHA-256) records its rows: the study folder itself when it is new or was
    started on that backbone, else ``backbone-<first 12 hex digits>/`` inside it (docs/design.md, "A study that spans
    sessions": a machine that re-makes the backbone with other float rounding makes another realization of it)."""
    own = recorded_backbone(study)
    return study if own in (None, backbone) else study / f"{REALIZATION_PREFIX}{backbone[:12]}"


def _recorded(folder: Path, key: str):
    path = folder / "run.json"
    return json.loads(path.read_text()).get(key) if path.is_file() else None


def recorded_backbone(folder: Path) -> str | None:
    """The backbone fingerprint (SHA-256) a records folder's ``run.json`` names, or None without one."""
    return _recorded(folder, "backbone")


def recorded_design(folder: Path) -> dict | None:
    """The study design a records folder's ``run.json`` holds, or None without one."""
    return _recorded(folder, "design")


def realization_folders(study: Path) -> list[Path]:
    """Every folder of ``study`` that holds a realization's records (the study folder first)."""
    nested = sorted(p.parent for p in study.glob(f"{REALIZATION_PREFIX}*/run.json"))
    return ([study] if (study / "run.json").is_file() else []) + nested


#: Folder, inside a realization's records, holding the seeds it gave up (docs/design.md, "Releasing a seed").
RELEASED = "released"


def released_seeds(study: Path) -> list[dict]:
    """The ``release.json`` of every seed given up by any realization of ``study`` (oldest first)."""
    notes = [json.loads(path.read_text()) for folder in realization_folders(study)
             for path in folder.glob(f"{RELEASED}/*/release.json")]
    return sorted(notes, key=lambda note: note["released_at"])


def check_same_design(folders: Sequence[Path], design: dict) -> None:
    """Every realization of one study has one design; a folder that records another is an error naming it."""
    for folder in folders:
        old = json.loads((folder / "run.json").read_text()).get("design", {})
        if old != design:
            fields = sorted(k for k in old.keys() | design.keys() if old.get(k) != design.get(k))
            raise RunFolderError(
                f"{folder / 'run.json'} records another design (differs in {', '.join(fields)}): use a fresh folder"
            )


def write_split(out: Path, pool_names: list[str], test_names: list[str], seed: int) -> None:
    """Write ``split.json``; an existing one must hold the same split (the run folder belongs to this data)."""
    split = {"seed": seed, "pool": pool_names, "test": test_names}
    path = out / "split.json"
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing.get("pool") != split["pool"] or existing.get("test") != split["test"]:
            raise RunFolderError(f"{path} holds a different pool/test split: this run folder belongs to other data")
        return
    write_text_atomic(path, json.dumps(split, indent=2) + "\n")


def cpu_kind() -> str:
    """The CPU as its kind matters to a study (a backbone re-makes bit for bit only on the same kind):
    "<model name> (family F model M)", from /proc/cpuinfo where there is one."""
    info = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']} model {fields['model']})"
    return name


def append_session(study: Path, row: dict) -> None:
    """Add one invocation's row (:data:`SESSION_COLUMNS`) to ``study/sessions.csv``."""
    study.mkdir(parents=True, exist_ok=True)
    append_rows(study / "sessions.csv", SESSION_COLUMNS, [row])


def read_sessions(study: Path) -> list[dict]:
    """The rows of ``study/sessions.csv`` (none when absent)."""
    path = study / "sessions.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
