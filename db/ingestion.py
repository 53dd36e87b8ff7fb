"""Registering a studies folder of any size: a streaming walk, batched inserts, no volume opened.

Registration (:func:`register_folder`) records one ``images`` row per volume file found under the images folder (its
sub-folders too, hidden ones and the excluded ones left out) with what the walk knows: id, path, name, group. It opens
no file, so 100,000 volumes register in seconds. Reading each new volume's header and checksum (:func:`fill_facts`)
comes after, in the background: a file that does not read is archived (out of the campaign, listed, undoable), never
fatal. A second file with an id already taken by another existing file is an error that names both files, and nothing
of that walk is written (one transaction).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from db import archive
from db.audit import audit
from db.engine import is_postgresql, refresh_statistics, write_session
from db.errors import DBError
from db.schema import Image, utcnow
from db.volumes import InvalidVolumeError, VolumeFacts, check_image_id, image_id_of, volume_facts, volume_suffix

#: Rows per INSERT batch and per facts batch.
BATCH = 1000
#: Unreadable and skipped files named in a result (the counts are complete).
LISTED = 100
# Namespace of the advisory lock that serialises registrations across replicas on PostgreSQL (seq is max + 1).
_REGISTER_LOCK = text("SELECT pg_advisory_xact_lock(1397510229, 1)")
ProgressFn = Callable[[int, int, str], None]


class DuplicateImageError(DBError):
    """Two files in the studies folder would have the same image id."""


@dataclass
class RegisterResult:
    """What one walk found: ``found`` volume files, ``registered`` new ones, ``known`` already registered, ``moved``
    registered ones whose file moved; ``skipped``: files that cannot be served (bad names), with the reason."""

    found: int = 0
    registered: int = 0
    known: int = 0
    moved: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_count: int = 0

    def skip(self, path: Path, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < LISTED:
            self.skipped.append({"path": str(path), "reason": reason})


@dataclass
class FactsResult:
    """What reading the new volumes found: ``read`` volumes now have their header facts and checksum; ``unreadable``
    ones were archived (the first :data:`LISTED` named, with the reason)."""

    read: int = 0
    unreadable: list[dict[str, str]] = field(default_factory=list)
    unreadable_count: int = 0


def walk_volumes(root: Path, exclude: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Volume files under ``root``, depth first, each folder's entries in name order; hidden entries and the
    ``exclude`` folders are left out. Streams: only one folder's names are held at a time (plus the stack)."""
    excluded = {p.resolve() for p in exclude}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in listing if not e.name.startswith("."))
        except OSError:
            continue
        subfolders = []
        for name, is_dir in entries:
            path = folder / name
            if is_dir:
                if path.resolve() not in excluded:
                    subfolders.append(path)
            elif volume_suffix(name):
                yield path
        stack.extend(reversed(subfolders))


def register_folder(
    sessions: sessionmaker[Session], root: Path, *, exclude: tuple[Path, ...] = (), groups: dict[str, str] | None = None,
    now: datetime | None = None, progress: ProgressFn | None = None,
) -> RegisterResult:
    """Register every volume file under ``root`` not registered yet (see the module doc); one transaction."""
    result = RegisterResult()
    groups = groups or {}
    seen: dict[str, str] = {}  # id -> path of this walk (duplicates across folders)
    now = now or utcnow()
    with write_session(sessions) as session:
        if is_postgresql(session):
            session.execute(_REGISTER_LOCK)
        next_seq = (session.scalar(select(func.max(Image.seq))) or 0) + 1
        batch: list[tuple[str, Path]] = []

        def flush() -> None:
            nonlocal next_seq
            next_seq = _insert_batch(session, batch, next_seq, groups, now, result)
            batch.clear()
            if progress:
                progress(result.found, 0, f"{result.found} volume files found, {result.registered} new")

        for path in walk_volumes(root, exclude):
            result.found += 1
            image_id = image_id_of(path)
            try:
                check_image_id(image_id)
            except DBError as error:
                result.skip(path, str(error))
                continue
            if image_id in seen:
                raise DuplicateImageError(
                    f"two files have the image id {image_id!r}: {seen[image_id]} and {path}; rename or remove one "
                    "(nothing of this scan was registered)"
                )
            seen[image_id] = str(path)
            batch.append((image_id, path))
            if len(batch) >= BATCH:
                flush()
        flush()
        if result.registered:
            refresh_statistics(session, Image.__table__)
    return result


def _insert_batch(
    session: Session, batch: list[tuple[str, Path]], next_seq: int, groups: dict[str, str], now: datetime,
    result: RegisterResult,
) -> int:
    if not batch:
        return next_seq
    ids = [image_id for image_id, _ in batch]
    known = dict(session.execute(select(Image.id, Image.path).where(Image.id.in_(ids))).all())
    rows, moved = [], []
    for image_id, path in batch:
        location = str(path.resolve())
        if image_id in known:
            if known[image_id] == location:
                result.known += 1
            elif os.path.exists(known[image_id]):
                raise DuplicateImageError(
                    f"two files have the image id {image_id!r}: {known[image_id]} (registered) and {location}; "
                    "rename or remove one (nothing of this scan was registered)"
                )
            else:  # the registered file is gone: it moved (e.g. into a sub-folder)
                moved.append({"key": image_id, "path": location})
            continue
        rows.append({
            "id": image_id, "path": location, "name": path.name, "shape": None, "spacing": None, "checksum": None,
            "grp": groups.get(image_id), "meta": {}, "seq": next_seq, "ingested_at": now, "label_status": "unlabeled",
            "lease_holder": None, "lease_expires_at": None,
        })
        next_seq += 1
    if rows:
        session.execute(Image.__table__.insert(), rows)
        result.registered += len(rows)
    if moved:
        table = Image.__table__
        session.execute(table.update().where(table.c.id == bindparam("key")).values(path=bindparam("path")), moved)
        result.moved += len(moved)
    return next_seq


def fill_facts(
    sessions: sessionmaker[Session], *, limit: int | None = None, progress: ProgressFn | None = None,
    reader: Callable[[Path], VolumeFacts] = volume_facts,
) -> FactsResult:
    """Read the header facts and checksum of every registered volume that lacks them (at most ``limit``), in
    ``seq`` order and batches; archive the unreadable ones (audited as ``image_unreadable``)."""
    result = FactsResult()
    with sessions() as session:
        total = int(session.scalar(select(func.count()).select_from(Image).where(
            Image.checksum.is_(None), Image.label_status != "archived")) or 0)
    if limit is not None:
        total = min(total, limit)
    after = 0
    done = 0
    while done < total:
        with sessions() as session:
            rows = session.execute(
                select(Image.id, Image.path, Image.seq)
                .where(Image.seq > after, Image.checksum.is_(None), Image.label_status != "archived")
                .order_by(Image.seq).limit(min(BATCH, total - done))
            ).all()
        if not rows:
            break
        after = rows[-1].seq
        facts, bad = [], []
        for row in rows:
            try:
                found = reader(Path(row.path))
            except (InvalidVolumeError, OSError) as error:
                bad.append((row.id, row.path, str(error)))
                continue
            facts.append({"key": row.id, "shape": found.shape, "spacing": found.spacing, "checksum": found.checksum})
        store_facts(sessions, facts, bad, result)
        done += len(rows)
        if progress:
            progress(done, total, f"{done}/{total} volumes read ({result.unreadable_count} unreadable)")
    return result


def store_facts(
    sessions: sessionmaker[Session], facts: list[dict[str, Any]], bad: list[tuple[str, str, str]], result: FactsResult
) -> None:
    """Write read facts (rows of ``key``, ``shape``, ``spacing``, ``checksum``) and archive unreadable volumes."""
    table = Image.__table__
    with write_session(sessions) as session:
        if facts:
            statement = (table.update().where(table.c.id == bindparam("key"))
                         .values(shape=bindparam("shape"), spacing=bindparam("spacing"), checksum=bindparam("checksum")))
            session.execute(statement, facts)
        for image_id, path, error in bad:
            image = session.get(Image, image_id)
            if image is None or image.label_status == "archived":
                continue
            archive.archive_image(session, image_id)
            image.meta = {**(image.meta or {}), "unreadable": error}
            audit(session, "ingestion", "image_unreadable", image_id, path=path, error=error)
            result.unreadable_count += 1
            if len(result.unreadable) < LISTED:
                result.unreadable.append({"id": image_id, "path": path, "reason": error})
    result.read += len(facts)


def facts_of(sessions: sessionmaker[Session], image_id: str) -> dict[str, Any] | None:
    """Read one volume's facts now (a claim of a volume the background job has not reached); None if unreadable (it is
    then archived)."""
    with sessions() as session:
        image = session.get(Image, image_id)
        if image is None:
            return None
        if image.checksum is not None:
            return {"shape": image.shape, "spacing": image.spacing, "checksum": image.checksum}
        path = image.path
    result = FactsResult()
    try:
        found = volume_facts(Path(path))
    except (InvalidVolumeError, OSError) as error:
        store_facts(sessions, [], [(image_id, path, str(error))], result)
        return None
    row = {"key": image_id, "shape": found.shape, "spacing": found.spacing, "checksum": found.checksum}
    store_facts(sessions, [row], [], result)
    return {"shape": found.shape, "spacing": found.spacing, "checksum": found.checksum}


def missing_facts(session: Session) -> int:
    """How many campaign volumes still wait for their header facts."""
    query = select(func.count()).select_from(Image).where(Image.checksum.is_(None), Image.label_status != "archived")
    return int(session.scalar(query) or 0)


__all__ = ["DuplicateImageError", "FactsResult", "RegisterResult", "facts_of", "fill_facts", "missing_facts",
           "register_folder", "walk_volumes"]
