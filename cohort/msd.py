"""Medical Segmentation Decathlon (MSD) folder layout: reading and writing.

An MSD task folder holds ``imagesTr/*.nii.gz``, ``labelsTr/*.nii.gz`` (same file names) and a
``dataset.json`` with the label map and the list of training pairs. Real MSD Task03 Liver and LiTS
converted to that layout load with :func:`load_msd`, as do the synthetic cohorts of :mod:`cohort.synth`.
The synthetic cohorts also record each case's acquisition group, in ``dataset.json`` under
``"slpt_groups"`` and in a sidecar ``groups.csv`` (columns ``case,group``).
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

# Label map assumed when a folder has no dataset.json (LiTS / MSD Task03 convention).
DEFAULT_LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "tumour"}
GROUPS_CSV = "groups.csv"
GROUPS_KEY = "slpt_groups"
NIFTI_SUFFIXES = (".nii.gz", ".nii")


class CohortError(ValueError):
    """A cohort cannot be generated or loaded; the message names the offending path or argument."""


@dataclass(frozen=True)
class MSDCase:
    """One training case: ``name`` is the file name without ``.nii.gz`` (e.g. ``"case_0003"``)."""

    name: str
    image: Path
    label: Path | None  # None: no label file (an unlabeled volume)
    group: str | None  # acquisition group; None when the folder does not record groups (real MSD)


@dataclass(frozen=True)
class MSDDataset:
    """An MSD task folder: its root, label map {value: name} and cases in dataset order."""

    root: Path
    labels: dict[int, str]
    cases: list[MSDCase]


def case_name(path: Path) -> str:
    """File name without its NIfTI suffix: ``imagesTr/case_0003.nii.gz`` → ``case_0003``."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    raise CohortError(f"{path} is not a NIfTI file (.nii or .nii.gz)")


def _is_nifti(path: Path) -> bool:
    # MSD archives carry macOS resource forks ("._liver_0.nii.gz"): not images.
    return path.is_file() and not path.name.startswith("._") and path.name.endswith(NIFTI_SUFFIXES)


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CohortError(f"cannot read {path}: {exc}") from exc
    if not isinstance(content, dict):
        raise CohortError(f"{path} does not hold a JSON object")
    return content


def _read_groups_csv(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"case", "group"} <= set(reader.fieldnames):
                raise CohortError(f"{path} must have the columns 'case,group'")
            return {row["case"]: row["group"] for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CohortError(f"cannot read {path}: {exc}") from exc


def _labels_from_json(meta: dict, path: Path) -> dict[int, str]:
    try:
        return {int(value): str(name) for value, name in meta["labels"].items()}
    except (KeyError, AttributeError, ValueError) as exc:
        raise CohortError(f"{path} has no valid 'labels' map {{\"0\": \"background\", ...}}") from exc


def _pairs_from_json(root: Path, meta: dict, path: Path) -> list[tuple[Path, Path | None]]:
    training = meta.get("training")
    if not isinstance(training, list):
        raise CohortError(f"{path} has no 'training' list")
    pairs = []
    for entry in training:
        if not isinstance(entry, dict) or "image" not in entry:
            raise CohortError(f"{path}: training entry {entry!r} has no 'image'")
        image = root / entry["image"]
        if image.name.startswith("._"):
            continue
        if not image.is_file():
            raise CohortError(f"{path} lists {entry['image']}, but {image} does not exist")
        label = root / entry["label"] if entry.get("label") else None
        pairs.append((image, label if label is not None and label.is_file() else None))
    return pairs


def _pairs_from_folders(root: Path) -> list[tuple[Path, Path | None]]:
    labels_dir = root / "labelsTr"
    pairs = []
    for image in sorted(p for p in (root / "imagesTr").iterdir() if _is_nifti(p)):
        label = labels_dir / image.name
        pairs.append((image, label if label.is_file() else None))
    return pairs


def load_msd(root: Path) -> MSDDataset:
    """Read an MSD-layout folder.

    Uses ``dataset.json`` (its ``training`` list and ``labels``) when present; otherwise pairs
    ``imagesTr/*.nii.gz`` with ``labelsTr/`` by file name and assumes :data:`DEFAULT_LABELS`.
    Hidden ``._*`` files are ignored; a case without a label file gets ``label=None``. Groups come from
    ``groups.csv``, else from ``dataset.json["slpt_groups"]``, else are None.
    """
    root = Path(root)
    if not root.is_dir():
        raise CohortError(f"{root} is not a directory")
    json_path = root / "dataset.json"
    meta = _read_json(json_path) if json_path.is_file() else None
    if meta is None and not (root / "imagesTr").is_dir():
        raise CohortError(f"{root} has neither dataset.json nor an imagesTr folder")

    if meta is not None:
        labels = _labels_from_json(meta, json_path)
        pairs = _pairs_from_json(root, meta, json_path)
        groups = meta.get(GROUPS_KEY) or {}
        if not isinstance(groups, dict):
            raise CohortError(f"{json_path}: '{GROUPS_KEY}' must map case names to group names")
    else:
        labels = dict(DEFAULT_LABELS)
        pairs = _pairs_from_folders(root)
        groups = {}
    if (root / GROUPS_CSV).is_file():
        groups = _read_groups_csv(root / GROUPS_CSV)

    cases = []
    for image, label in pairs:
        name = case_name(image)
        cases.append(MSDCase(name=name, image=image, label=label, group=groups.get(name)))
    return MSDDataset(root=root, labels=labels, cases=cases)


def write_nifti_gz(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array`` (X, Y, Z) as a gzipped NIfTI-1 file with byte-identical output for equal input.

    nibabel's own ``.nii.gz`` writer stamps the gzip header with the current time; compressing the
    serialised image with ``mtime=0`` makes the file a pure function of array and affine.
    """
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code="scanner")
    image.set_sform(affine, code="scanner")
    image.header.set_xyzt_units("mm", "sec")
    # Level 1: noisy CT barely compresses further, and higher levels cost several times the time.
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def msd_index(names: list[str], labels: dict[int, str], groups: dict[str, str], description: dict) -> dict:
    """The ``dataset.json`` content of cases ``names`` (MSD keys, ``slpt_groups`` of those with a known group, and
    the ``description`` extras)."""
    return {
        **description,
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(value): name for value, name in labels.items()},
        "numTraining": len(names),
        "numTest": 0,
        "training": [
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"} for name in names
        ],
        "test": [],
        GROUPS_KEY: {name: groups[name] for name in names if name in groups},
    }


def groups_csv(names: list[str], groups: dict[str, str]) -> str:
    """``groups.csv`` (columns ``case,group``) of the cases of ``names`` with a known group."""
    rows = ["case,group"] + [f"{name},{groups[name]}" for name in names if name in groups]
    return "\n".join(rows) + "\n"


def write_msd_index(
    root: Path, names: list[str], labels: dict[int, str], groups: dict[str, str], description: dict
) -> Path:
    """Write ``dataset.json`` (:func:`msd_index`) and ``groups.csv``; return the path of ``dataset.json``.

    ``names`` are case names whose files already lie in ``imagesTr/`` and ``labelsTr/``.
    """
    json_path = root / "dataset.json"
    json_path.write_text(json.dumps(msd_index(names, labels, groups, description), indent=2) + "\n")
    (root / GROUPS_CSV).write_text(groups_csv(names, groups))
    return json_path
