"""Tests of the MSD-layout loader and writer (cohort.msd) on generated folders, on a folder without
dataset.json (LiTS converted to MSD layout) and on a real-MSD-like dataset.json."""

from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cohort.msd import DEFAULT_LABELS, CohortError, load_msd, write_nifti_gz
from cohort.synth import generate_cohort


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("msd") / "synth"
    generate_cohort(out, cases=4, seed=1, size=12, progress=False)
    return out


@pytest.fixture
def copy(generated: Path, tmp_path: Path) -> Path:
    """A writable copy of the generated cohort."""
    return Path(shutil.copytree(generated, tmp_path / "copy"))


def test_loads_generated_cohort_with_groups(generated: Path) -> None:
    dataset = load_msd(generated)
    assert dataset.root == generated
    assert dataset.labels == {0: "background", 1: "liver", 2: "tumour"}
    assert [case.name for case in dataset.cases] == [f"case_000{i}" for i in range(4)]
    groups_csv = dict(line.split(",") for line in (generated / "groups.csv").read_text().splitlines()[1:])
    for case in dataset.cases:
        assert case.image == generated / "imagesTr" / f"{case.name}.nii.gz" and case.image.is_file()
        assert case.label == generated / "labelsTr" / f"{case.name}.nii.gz" and case.label.is_file()
        assert case.group == groups_csv[case.name]


def test_groups_come_from_dataset_json_without_csv(copy: Path) -> None:
    expected = json.loads((copy / "dataset.json").read_text())["slpt_groups"]
    (copy / "groups.csv").unlink()
    assert {case.name: case.group for case in load_msd(copy).cases} == expected


def test_folder_without_dataset_json_pairs_files_by_name(copy: Path) -> None:
    (copy / "dataset.json").unlink()
    (copy / "groups.csv").unlink()
    (copy / "labelsTr" / "case_0002.nii.gz").unlink()  # an unlabeled volume
    for folder in ("imagesTr", "labelsTr"):  # macOS resource forks shipped in the MSD archives
        (copy / folder / "._case_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (copy / "imagesTr" / "notes.txt").write_text("not an image")
    dataset = load_msd(copy)
    assert dataset.labels == DEFAULT_LABELS
    assert [case.name for case in dataset.cases] == ["case_0000", "case_0001", "case_0002", "case_0003"]
    assert dataset.cases[2].label is None
    assert dataset.cases[0].label == copy / "labelsTr" / "case_0000.nii.gz"
    assert all(case.group is None for case in dataset.cases)


def test_real_msd_style_dataset_json(copy: Path) -> None:
    """MSD Task03 Liver: liver_N names, 'cancer' label, no groups, ._ files next to the images."""
    for folder in ("imagesTr", "labelsTr"):
        for index, path in enumerate(sorted((copy / folder).glob("case_*.nii.gz"))):
            path.rename(copy / folder / f"liver_{index}.nii.gz")
        (copy / folder / "._liver_0.nii.gz").write_bytes(b"junk")
    (copy / "groups.csv").unlink()
    msd_json = {
        "name": "Liver",
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "modality": {"0": "CT"},
        "numTraining": 4,
        "training": [
            {"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"} for i in range(4)
        ],
        "test": ["./imagesTs/liver_132.nii.gz"],
    }
    (copy / "dataset.json").write_text(json.dumps(msd_json))
    dataset = load_msd(copy)
    assert dataset.labels[2] == "cancer"
    assert [case.name for case in dataset.cases] == [f"liver_{i}" for i in range(4)]
    assert all(case.group is None and case.label.is_file() for case in dataset.cases)


def test_missing_or_broken_folders_raise(tmp_path: Path, copy: Path) -> None:
    with pytest.raises(CohortError, match="is not a directory"):
        load_msd(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CohortError, match="imagesTr"):
        load_msd(tmp_path / "empty")
    (copy / "imagesTr" / "case_0001.nii.gz").unlink()
    with pytest.raises(CohortError, match="case_0001"):
        load_msd(copy)
    (copy / "dataset.json").write_text("{not json")
    with pytest.raises(CohortError, match="dataset.json"):
        load_msd(copy)
    (copy / "dataset.json").write_text(json.dumps({"training": []}))
    with pytest.raises(CohortError, match="labels"):
        load_msd(copy)


def test_groups_csv_needs_its_columns(copy: Path) -> None:
    (copy / "groups.csv").write_text("name,kind\ncase_0000,arterial\n")
    with pytest.raises(CohortError, match="case,group"):
        load_msd(copy)


def test_nifti_writer_round_trips_and_is_deterministic(tmp_path: Path) -> None:
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 60
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    write_nifti_gz(tmp_path / "a.nii.gz", array, affine)
    time.sleep(1.1)  # gzip stores seconds: a time stamp would now differ
    write_nifti_gz(tmp_path / "b.nii.gz", array, affine)
    raw = (tmp_path / "a.nii.gz").read_bytes()
    assert raw == (tmp_path / "b.nii.gz").read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME field
    image = nib.load(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(np.asarray(image.dataobj), array)
    assert image.get_data_dtype() == np.int16
    np.testing.assert_allclose(image.affine, affine)
    np.testing.assert_allclose(image.header.get_zooms(), (0.8, 0.8, 2.5))
    assert image.header.get_xyzt_units() == ("mm", "sec")
    assert gzip.decompress(raw)[:4] == (348).to_bytes(4, "little")  # a NIfTI-1 header inside

