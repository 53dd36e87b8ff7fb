"""Atomic writes on a real folder: complete file or none, the format suffix kept, nothing left behind on failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.atomic import PARTIAL_PREFIX, atomic_copy, atomic_path, staged_copy, write_bytes_atomic, write_text_atomic


def test_a_write_appears_complete_under_the_target_name_only(tmp_path: Path):
    target = tmp_path / "deep" / "state.json"  # missing parents are made
    write_text_atomic(target, '{"round": 1}')
    write_text_atomic(target, '{"round": 2}')  # replaces
    assert target.read_text() == '{"round": 2}'
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "model.pt"
    write_bytes_atomic(target, b"v1")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as temp:
            temp.write_bytes(b"half of v2")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_the_temporary_name_ends_with_the_target_name_so_suffix_sniffing_writers_work(tmp_path: Path):
    target = tmp_path / "cohort.npz"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.name.endswith("cohort.npz") and temp.name.startswith(".")
        np.savez(temp, x=np.arange(3))  # np.savez would append ".npz" to a name not ending with it
    with np.load(target) as data:
        assert data["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["cohort.npz"]


def test_a_folder_is_moved_into_place_whole_or_removed(tmp_path: Path):
    target = tmp_path / "studies"
    with pytest.raises(ValueError):
        with atomic_path(target) as temp:
            temp.mkdir()
            (temp / "a.txt").write_text("a")
            raise ValueError("generation failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as temp:
        temp.mkdir()
        (temp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a" and [p.name for p in tmp_path.iterdir()] == ["studies"]


def test_copy(tmp_path: Path):
    source = tmp_path / "upload.nii.gz"
    source.write_bytes(b"\x1f\x8b volume bytes")
    atomic_copy(source, tmp_path / "labels" / "final" / "case.v1.nii.gz")
    assert (tmp_path / "labels" / "final" / "case.v1.nii.gz").read_bytes() == source.read_bytes()


def test_staged_copy_is_complete_before_it_is_placed(tmp_path):
    source = tmp_path / "upload.nii.gz"
    source.write_bytes(b"label bytes" * 1000)
    folder = tmp_path / "labels"
    with staged_copy(source, folder) as place:
        (staged,) = folder.iterdir()  # the full copy already sits under a partial name, before any final name exists
        assert staged.name.startswith(PARTIAL_PREFIX) and staged.read_bytes() == source.read_bytes()
        place(folder / "case.v1.nii.gz")
    assert [p.name for p in folder.iterdir()] == ["case.v1.nii.gz"]
    assert (folder / "case.v1.nii.gz").read_bytes() == source.read_bytes()


def test_staged_copy_never_placed_leaves_nothing(tmp_path):
    source = tmp_path / "upload.nii.gz"
    source.write_bytes(b"x")
    folder = tmp_path / "labels"
    with pytest.raises(RuntimeError):
        with staged_copy(source, folder):
            raise RuntimeError("the transaction failed")
    with staged_copy(source, folder):
        pass
    assert list(folder.iterdir()) == []
