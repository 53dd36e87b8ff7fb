"""The simulator's files in a records folder: result rows, per-case rows, per-unit round state, the split and
``run.json``.

Several worker processes append to the same CSV files, so appends take an exclusive lock; a results row is
written after its per-case rows, so a results row present means its per-case rows are present too. Rows already
in ``results.csv`` are never computed again, which is what makes a run resumable.
"""

from __future__ import annotations

import csv
import fcntl
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from storage.atomic import atomic_path, write_text_atomic

BASE_COLUMNS = ("seed", "strategy", "tuning", "round", "n_labeled", "tumour_dice", "tumour_dice_global", "liver_dice")
TAIL_COLUMNS = ("train_time_s", "tunable_params", "total_params", "labeled")
PER_CASE_COLUMNS = ("seed", "strategy", "tuning", "round", "case", "group", "has_tumour", "tumour_dice", "liver_dice")


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


def remove_rows(path: Path, drops: Callable[[dict], bool]) -> int:
    """Remove the rows of CSV ``path`` for which ``drops`` is true (the file is rewritten atomically, under the same
    header). Returns how many rows went."""
    if not path.is_file():
        return 0
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    kept = [row for row in rows if not drops(row)]
    if len(kept) < len(rows):
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
    return len(rows) - len(kept)


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


def read_run(records: Path) -> dict:
    """The records' ``run.json`` (empty without one)."""
    path = records / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def check_identity(records: Path, identity: dict, write: bool = True) -> None:
    """Record ``identity``'s parts (design, kept backbone, cohort: what the rows depend on) in ``run.json``. A part
    already recorded must be equal, so rows of another design, backbone or cohort are never mixed with this run's; a
    part not yet recorded is added (unless ``write`` is false: a check alone)."""
    path = records / "run.json"
    existing = read_run(records)
    differ = [key for key in identity if key in existing and existing[key] != identity[key]]
    if "design" in differ:
        old, new = existing["design"], identity["design"]
        fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise RunFolderError(f"{path} records another design (differs in {', '.join(fields)}): use a fresh folder")
    if differ:
        raise RunFolderError(
            f"{path} records another {' and '.join(differ)} ({', '.join(_short(existing[k]) for k in differ)}, "
            f"this run has {', '.join(_short(identity[k]) for k in differ)}): its rows cannot be resumed with this one"
        )
    if write and any(key not in existing for key in identity):
        records.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(existing | identity, indent=2) + "\n")


def _short(part) -> str:
    """A recorded digest in 12 hex digits (a kept backbone by its file's SHA-256)."""
    if isinstance(part, dict):
        part = part.get("sha256", "?")
    return str(part)[:12]


def recorded_design(folder: Path) -> dict | None:
    """The study design a records folder's ``run.json`` holds, or None without one."""
    return read_run(folder).get("design")


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
