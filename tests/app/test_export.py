"""The labelled-dataset export (app/export.py) on a real datastore: which cases, which label version, and the archive's
files, dataset.json, groups.csv and manifest, checked against figures written out by hand.

Six volumes, stored through the real SQL datastore (ingest, validated label saves, archive):

=======  ======  =====  ==============================================================  ==========================
volume   format  group  labels                                                          exported
=======  ======  =====  ==============================================================  ==========================
case_a   NIfTI   g1     final v1 by ann, final v2 by bob                                v2, bob
case_b   NRRD    g2     final v1 by cat (NRRD)                                          v1, cat, converted to NIfTI
case_c   NIfTI   g1     a draft only                                                    no
case_d   NIfTI   g1     final v1 by ann, then the volume is archived                    no
case_e   NIfTI   -      none                                                            no
case_f   NIfTI   -      final v1 with no annotator (an import), then drafts v1 and v2   v1, no annotator
=======  ======  =====  ==============================================================  ==========================
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy import select

from app.export import ExportError, ExportedCase, final_labels, msd_archive
from cohort.msd import load_msd
from db.datastore import SQLDatastore
from db.engine import create_db_engine, session_factory
from db.migrate import upgrade
from db.schema import Label
from db.volumes import file_checksum
from tests.app.conftest import database_url

LABELS = {0: "background", 1: "liver", 2: "tumour"}
DESCRIPTION = {"name": "slpt-label", "description": "final labels exported for a test"}
GROUPS = {"case_a": "g1", "case_b": "g2", "case_c": "g1", "case_d": "g1"}
SPACING, ORIGIN = (1.5, 2.0, 2.5), (-10.0, 5.0, 20.0)
SHAPE = (4, 5, 6)  # z, y, x


def write_volume(path: Path, voxels: np.ndarray) -> Path:
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def read_volume(path: Path) -> tuple[np.ndarray, tuple, tuple]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin()


@dataclass
class Studies:
    datastore: SQLDatastore
    folder: Path
    images: dict[str, np.ndarray]  # every volume's voxels
    exported: dict[str, np.ndarray]  # the label voxels the export must give, by case


@pytest.fixture(params=["sqlite", "postgresql"])
def studies(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Studies]:
    with database_url(request.param, tmp_path) as url:
        upgrade(url)
        engine = create_db_engine(url)
        try:
            yield make_studies(session_factory(engine), tmp_path)
        finally:
            engine.dispose()


@pytest.fixture
def sqlite_studies(tmp_path: Path) -> Iterator[Studies]:
    with database_url("sqlite", tmp_path) as url:
        upgrade(url)
        engine = create_db_engine(url)
        try:
            yield make_studies(session_factory(engine), tmp_path)
        finally:
            engine.dispose()


def make_studies(sessions, folder: Path) -> Studies:
    rng = np.random.default_rng(3)
    datastore = SQLDatastore(sessions, images_dir=folder / "images", labels_dir=folder / "labels",
                             label_values={1, 2}, groups=GROUPS)
    images = {name: rng.integers(-1000, 1000, SHAPE).astype(np.int16) for name in "abcdef"}
    paths = [write_volume(folder / "images" / f"case_{n}{'.nrrd' if n == 'b' else '.nii.gz'}", v)
             for n, v in images.items()]
    datastore.ingest(paths)

    def label(name: str, suffix: str = ".nii.gz") -> tuple[Path, np.ndarray]:
        voxels = rng.integers(0, 3, SHAPE).astype(np.uint8)
        return write_volume(folder / "uploads" / f"{name}{suffix}", voxels), voxels

    exported = {}
    for name, case, tag, info, suffix in [
        ("a1", "case_a", "final", {"annotator": "ann"}, ".nii.gz"),
        ("a2", "case_a", "final", {"annotator": "bob"}, ".nii.gz"),
        ("b1", "case_b", "final", {"annotator": "cat"}, ".nrrd"),
        ("c1", "case_c", "draft", {"annotator": "ann"}, ".nii.gz"),
        ("d1", "case_d", "final", {"annotator": "ann"}, ".nii.gz"),
        ("f1", "case_f", "final", {}, ".nii.gz"),
        ("f2", "case_f", "draft", {"annotator": "ann"}, ".nii.gz"),
        ("f3", "case_f", "draft", {"annotator": "ann"}, ".nii.gz"),  # drafts reach version 2; final stays at 1
    ]:
        path, voxels = label(name, suffix)
        datastore.save_label(case, str(path), tag, info)
        if tag == "final":
            exported[case] = voxels  # the newest final version wins
    datastore.remove_image("case_d")
    del exported["case_d"]
    return Studies(datastore, folder, {f"case_{n}": v for n, v in images.items()}, exported)


def export_cases(studies: Studies) -> list[ExportedCase]:
    with studies.datastore.sessions() as session:
        return final_labels(session)


def unpack(chunks: list[bytes], into: Path) -> tuple[list[str], Path]:
    """The archive's member names in order, and the folder it was unpacked in."""
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as tar:
        names = tar.getnames()
        tar.extractall(into, filter="data")
    return names, into


# --- which cases ---------------------------------------------------------------------------------------------------

def test_final_labels_are_the_newest_final_version_of_each_labeled_volume(studies: Studies) -> None:
    cases = export_cases(studies)
    assert [(c.image_id, c.label_version, c.annotator, c.group) for c in cases] == [
        ("case_a", 2, "bob", "g1"),
        ("case_b", 1, "cat", "g2"),
        ("case_f", 1, None, None),
    ]
    with studies.datastore.sessions() as session:
        rows = {(label.image_id, label.version): label
                for label in session.scalars(select(Label).where(Label.tag == "final"))}
    for case in cases:
        row = rows[(case.image_id, case.label_version)]
        assert case.label_path == row.path and Path(case.label_path).is_file()
        assert case.label_checksum == file_checksum(Path(case.label_path))
        assert case.labeled_at == row.created_at.isoformat()
        assert Path(case.image_path).name == ("case_b.nrrd" if case.image_id == "case_b" else f"{case.image_id}.nii.gz")


# --- the archive ---------------------------------------------------------------------------------------------------

def test_the_archive_holds_each_case_as_nifti_with_its_index_groups_and_manifest(sqlite_studies: Studies,
                                                                                 tmp_path: Path) -> None:
    studies = sqlite_studies
    cases = export_cases(studies)
    names, unpacked = unpack(list(msd_archive(cases, LABELS, DESCRIPTION)), tmp_path / "unpacked")
    assert names == [
        "imagesTr/case_a.nii.gz", "labelsTr/case_a.nii.gz",
        "imagesTr/case_b.nii.gz", "labelsTr/case_b.nii.gz",
        "imagesTr/case_f.nii.gz", "labelsTr/case_f.nii.gz",
        "dataset.json", "groups.csv", "manifest.json",
    ]
    for case in ("case_a", "case_b", "case_f"):  # case_b was NRRD: converted, voxels and geometry kept
        voxels, spacing, origin = read_volume(unpacked / "imagesTr" / f"{case}.nii.gz")
        assert np.array_equal(voxels, studies.images[case]) and voxels.dtype == np.int16, case
        assert np.allclose(spacing, SPACING) and np.allclose(origin, ORIGIN), case
        voxels, spacing, origin = read_volume(unpacked / "labelsTr" / f"{case}.nii.gz")
        assert np.array_equal(voxels, studies.exported[case]), case
        assert np.allclose(spacing, SPACING) and np.allclose(origin, ORIGIN), case

    assert json.loads((unpacked / "dataset.json").read_text()) == {
        "name": "slpt-label",
        "description": "final labels exported for a test",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "tumour"},
        "numTraining": 3,
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                     for c in ("case_a", "case_b", "case_f")],
        "test": [],
        "slpt_groups": {"case_a": "g1", "case_b": "g2"},
    }
    assert (unpacked / "groups.csv").read_text() == "case,group\ncase_a,g1\ncase_b,g2\n"

    manifest = json.loads((unpacked / "manifest.json").read_text())
    assert [(m["image_id"], m["label_version"], m["annotator"], m["group"]) for m in manifest] == [
        ("case_a", 2, "bob", "g1"), ("case_b", 1, "cat", "g2"), ("case_f", 1, None, None),
    ]
    by_id = {c.image_id: c for c in cases}
    for entry in manifest:
        case = by_id[entry["image_id"]]
        assert (entry["labeled_at"], entry["label_checksum"], entry["label_path"], entry["image_path"]) == (
            case.labeled_at, case.label_checksum, case.label_path, case.image_path)

    dataset = load_msd(unpacked)  # what training and the simulator read
    assert [(c.name, c.group) for c in dataset.cases] == [("case_a", "g1"), ("case_b", "g2"), ("case_f", None)]
    assert dataset.labels == LABELS


def test_without_groups_there_is_no_groups_file_and_nothing_to_export_is_an_empty_dataset(
    sqlite_studies: Studies, tmp_path: Path
) -> None:
    only_f = [c for c in export_cases(sqlite_studies) if c.image_id == "case_f"]
    names, unpacked = unpack(list(msd_archive(only_f, LABELS, DESCRIPTION)), tmp_path / "f")
    assert names == ["imagesTr/case_f.nii.gz", "labelsTr/case_f.nii.gz", "dataset.json", "manifest.json"]
    assert json.loads((unpacked / "dataset.json").read_text())["slpt_groups"] == {}

    names, unpacked = unpack(list(msd_archive([], LABELS, DESCRIPTION)), tmp_path / "empty")
    assert names == ["dataset.json", "manifest.json"]
    assert json.loads((unpacked / "dataset.json").read_text())["numTraining"] == 0
    assert json.loads((unpacked / "manifest.json").read_text()) == []


def test_the_archive_streams_one_case_at_a_time(sqlite_studies: Studies, tmp_path: Path) -> None:
    # A volume big enough to leave gzip's buffers; the next case's image is missing. A stream hands out the first
    # case before it reaches the second; an archive built whole would fail before giving anything.
    noise = np.random.default_rng(0).integers(-1000, 1000, (48, 48, 48)).astype(np.int16)
    big = write_volume(tmp_path / "big.nii.gz", noise)
    first, second = export_cases(sqlite_studies)[:2]
    first = ExportedCase(**{**vars(first), "image_path": str(big)})
    second = ExportedCase(**{**vars(second), "image_path": str(tmp_path / "gone.nii.gz")})
    stream = msd_archive([first, second], LABELS, DESCRIPTION)
    head = next(stream)
    assert len(head) > 0
    with pytest.raises(ExportError):
        list(stream)


# --- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["image missing", "label missing", "label unreadable", "image unreadable"])
def test_a_missing_or_unreadable_file_stops_the_export_naming_the_case_and_file(
    sqlite_studies: Studies, tmp_path: Path, damage: str
) -> None:
    cases = export_cases(sqlite_studies)
    case_b = next(c for c in cases if c.image_id == "case_b")  # NRRD: the export has to read it to convert it
    what, how = damage.split()
    path = Path(case_b.image_path if what == "image" else case_b.label_path)
    if how == "missing":
        path.unlink()
        expected = f"cannot export case_b: its {what} file {path} is missing"
    else:
        path.write_bytes(b"not a volume at all" * 10)
        expected = f"cannot export case_b: its {what} file {path} is not a readable volume"
    with pytest.raises(ExportError) as raised:
        b"".join(msd_archive(cases, LABELS, DESCRIPTION))
    assert str(raised.value) == expected
