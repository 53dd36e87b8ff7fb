"""Atomic file writes: a reader (another process, or this one after a crash) finds either no file or a complete one.

Everything is written to a temporary name in the target's folder, flushed to disk, and renamed over the target
(``os.replace`` is atomic within one file system). The temporary name keeps the target's whole name as its end, so
writers that infer the format from the suffix (``np.savez`` adds ``.npz`` otherwise, NIfTI writers read ``.nii.gz``)
write the right format. A failed write removes its temporary file or folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

PARTIAL_PREFIX = ".partial-"  # temporary names start with this (hidden files: folder scans skip them)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` for the caller to write (a file, or a folder it creates); when the
    block ends without an exception, move it onto ``target``. A file is fsynced first; an existing ``target`` file is
    replaced, an existing non-empty target folder is an error (``OSError``) and the temporary one is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}"
    try:
        yield temp
        if temp.is_file():
            _fsync(temp)
        os.replace(temp, target)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        raise


def atomic_copy(source: Path | str, target: Path | str) -> None:
    """Copy the file ``source`` to ``target`` atomically."""
    with atomic_path(target) as temp, open(source, "rb") as src, open(temp, "wb") as out:
        shutil.copyfileobj(src, out)


@contextlib.contextmanager
def staged_copy(source: Path | str, folder: Path | str) -> Iterator[Callable[[Path | str], None]]:
    """Copy ``source`` into ``folder`` under a temporary name and fsync it now; yield ``place(target)``, which renames
    it onto ``target`` (in ``folder``'s file system). The slow part (copy and fsync) happens before the caller needs
    the final name, so a caller that learns the name inside a database transaction only renames inside it. A copy
    never placed is removed when the block ends; one left by a killed process has the partial prefix
    (:func:`remove_partial_files`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}-{Path(source).name}"
    try:
        shutil.copyfile(source, temp)
        _fsync(temp)

        def place(target: Path | str) -> None:
            os.replace(temp, target)

        yield place
    finally:
        temp.unlink(missing_ok=True)


def write_bytes_atomic(target: Path | str, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as temp:
        temp.write_bytes(data)


def write_text_atomic(target: Path | str, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as temp:
        temp.write_text(text, encoding=encoding)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def remove_partial_files(folder: Path | str) -> list[Path]:
    """Remove what interrupted writes left under ``folder`` (temporary names of :func:`atomic_path`); run at start-up,
    when no write is in flight. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = sorted(folder.rglob(f"{PARTIAL_PREFIX}*"))
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed
