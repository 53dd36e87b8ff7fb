"""The `slpt` CLI run as a user runs it: a real process, its exit code and its message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path



def slpt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=300)


def test_synth_writes_an_msd_cohort(tmp_path: Path):
    result = slpt("synth", "--out", str(tmp_path / "c"), "--cases", "3", "--size", "16", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "c" / "imagesTr").iterdir()) == [
        "case_0000.nii.gz",
        "case_0001.nii.gz",
        "case_0002.nii.gz",
    ]
    assert (tmp_path / "c" / "dataset.json").is_file()


def test_synth_refuses_a_non_empty_folder(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("precious")
    result = slpt("synth", "--out", str(tmp_path), "--cases", "2", "--size", "16")
    assert result.returncode != 0
    assert "not empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_synth_refuses_zero_cases(tmp_path: Path):
    result = slpt("synth", "--out", str(tmp_path / "c"), "--cases", "0")
    assert result.returncode != 0
    assert "cases" in result.stderr
    assert not (tmp_path / "c").exists()


def test_synth_refuses_an_unwritable_path(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "cohort"
    result = slpt("synth", "--out", str(out), "--cases", "2", "--size", "16")
    assert result.returncode != 0
    assert str(tmp_path / "file") in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_missing_folder(tmp_path: Path):
    result = slpt("serve", "--studies", str(tmp_path / "missing"), "--port", "1")
    assert result.returncode != 0
    assert "studies folder not found" in result.stderr
    assert not (tmp_path / "missing").exists()
