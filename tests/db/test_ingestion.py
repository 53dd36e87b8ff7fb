"""Registering a studies folder without opening its files, reading their headers after, and the bad input of both."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.audit import audit_events
from db.ingestion import DuplicateImageError, fill_facts, register_folder, walk_volumes
from db.schema import Image

VOLUME = gzip.compress(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.diag([1.0, 1.0, 2.5, 1.0])).to_bytes())


def write_volumes(folder: Path, count: int, prefix: str = "vol") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}_{i:04d}.nii.gz" for i in range(count)]
    for path in paths:
        path.write_bytes(VOLUME)
    return paths


def ids_in_db(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(Image.id)))


def test_a_folder_is_registered_without_opening_a_file_then_read_in_the_background(sessions, tmp_path: Path) -> None:
    write_volumes(tmp_path / "studies", 30)
    write_volumes(tmp_path / "studies" / "batch2" / "deep", 5, prefix="late")
    (tmp_path / "studies" / "broken.nii.gz").write_bytes(b"not a volume at all")
    (tmp_path / "studies" / "notes.txt").write_text("ignored: not a volume file")
    write_volumes(tmp_path / "studies" / "labels" / "final", 3, prefix="lab")  # labels are no served volumes

    result = register_folder(sessions, tmp_path / "studies", exclude=(tmp_path / "studies" / "labels",))
    # The broken file registers like the others: nothing was opened to find out.
    assert (result.found, result.registered, result.known) == (36, 36, 0)
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Image.checksum.is_(None))) == 36
        seqs = list(session.scalars(select(Image.seq).order_by(Image.seq)))
    assert seqs == list(range(1, 37))
    assert "lab_0000" not in ids_in_db(sessions) and "late_0004" in ids_in_db(sessions)

    facts = fill_facts(sessions)
    assert facts.read == 35 and facts.unreadable_count == 1
    assert facts.unreadable[0]["id"] == "broken" and "not a readable" in facts.unreadable[0]["reason"]
    with sessions() as session:
        broken, good = session.get(Image, "broken"), session.get(Image, "vol_0000")
        assert broken.label_status == "archived" and "not a readable" in broken.meta["unreadable"]
        assert good.shape == [8, 8, 4] and good.spacing == [1.0, 1.0, 2.5] and good.checksum.startswith("SHA256:")
        assert [e.image_id for e in audit_events(session, action="image_unreadable")] == ["broken"]

    again = register_folder(sessions, tmp_path / "studies", exclude=(tmp_path / "studies" / "labels",))
    assert (again.registered, again.known) == (0, 36)  # a rescan registers nothing twice
    write_volumes(tmp_path / "studies" / "batch3", 2, prefix="new")
    added = register_folder(sessions, tmp_path / "studies", exclude=(tmp_path / "studies" / "labels",))
    assert added.registered == 2 and fill_facts(sessions).read == 2


def test_two_files_with_one_id_in_different_folders_are_an_error_naming_both_and_nothing_is_written(
    sessions, tmp_path: Path
) -> None:
    write_volumes(tmp_path / "studies" / "a", 3)
    write_volumes(tmp_path / "studies" / "b", 1)  # b/vol_0000 has a/vol_0000's id
    with pytest.raises(DuplicateImageError) as raised:
        register_folder(sessions, tmp_path / "studies")
    message = str(raised.value)
    assert "vol_0000" in message and str(tmp_path / "studies" / "a") in message and str(tmp_path / "studies" / "b") in message
    assert ids_in_db(sessions) == set()


def test_a_new_file_with_a_registered_volumes_id_is_an_error_but_a_moved_file_is_followed(sessions, tmp_path) -> None:
    first = write_volumes(tmp_path / "studies", 2)
    register_folder(sessions, tmp_path / "studies")
    write_volumes(tmp_path / "studies" / "later", 1)  # a second, different file named vol_0000
    with pytest.raises(DuplicateImageError, match="registered"):
        register_folder(sessions, tmp_path / "studies")
    (tmp_path / "studies" / "later" / "vol_0000.nii.gz").unlink()
    (tmp_path / "studies" / "moved").mkdir()
    first[1].rename(tmp_path / "studies" / "moved" / first[1].name)  # the same volume, moved
    result = register_folder(sessions, tmp_path / "studies")
    assert (result.moved, result.registered) == (1, 0)
    with sessions() as session:
        assert session.get(Image, "vol_0001").path == str((tmp_path / "studies" / "moved" / first[1].name).resolve())


def test_files_whose_names_are_no_image_id_are_skipped_and_listed(sessions, tmp_path: Path) -> None:
    write_volumes(tmp_path / "studies", 2)
    (tmp_path / "studies" / "bad name!.nii.gz").write_bytes(VOLUME)
    result = register_folder(sessions, tmp_path / "studies")
    assert result.registered == 2 and result.skipped_count == 1
    assert result.skipped[0]["path"].endswith("bad name!.nii.gz") and "invalid image id" in result.skipped[0]["reason"]


def test_the_walk_streams_in_name_order_and_leaves_out_hidden_and_excluded_folders(tmp_path: Path) -> None:
    write_volumes(tmp_path / "b", 1)
    write_volumes(tmp_path / "a", 2)
    write_volumes(tmp_path / ".slpt", 1)
    write_volumes(tmp_path / "skip", 1)
    found = [p.relative_to(tmp_path).as_posix() for p in walk_volumes(tmp_path, exclude=(tmp_path / "skip",))]
    assert found == ["a/vol_0000.nii.gz", "a/vol_0001.nii.gz", "b/vol_0000.nii.gz"]
