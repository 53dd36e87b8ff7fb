"""Facts about volume files on disk, and the checks a submitted label file must pass.

SimpleITK reads both NIfTI and NRRD (what 3D Slicer uploads) into one physical frame (LPS), so an image and its
label compare by size, spacing, origin and direction whatever their formats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from db.errors import DBError
from storage.digest import file_sha256

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd")
# MONAI Label image ids are file stems; anything that could leave the studies folder is refused.
IMAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
# Geometry tolerance: headers written by different tools round spacing/origin differently.
SPACING_TOLERANCE = 1e-3  # relative
ORIGIN_TOLERANCE_MM = 1e-2
DIRECTION_TOLERANCE = 1e-4


class InvalidIdError(DBError):
    """An image id that is not a plain file stem (e.g. holds ``../`` or a path separator)."""


class InvalidVolumeError(DBError):
    """A file that is not a readable NIfTI or NRRD volume."""


class InvalidLabelError(InvalidVolumeError):
    """A label file that is unreadable or does not fit its image."""


@dataclass(frozen=True)
class VolumeFacts:
    shape: list[int]  # voxels along (i, j, k), as nibabel and ITK report them
    spacing: list[float]  # mm, (x, y, z)
    checksum: str  # "SHA256:<hex>"


def check_image_id(image_id: str) -> str:
    if not isinstance(image_id, str) or not IMAGE_ID_PATTERN.match(image_id) or ".." in image_id:
        raise InvalidIdError(f"invalid image id {image_id!r}: use letters, digits, '.', '_' and '-' only")
    return image_id


def volume_suffix(name: str) -> str | None:
    """The volume suffix of a file name (``.nii.gz``, ``.nrrd`` …), or None if it is not a volume."""
    lower = name.lower()
    return next((s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), None)


def image_id_of(path: Path) -> str:
    suffix = volume_suffix(path.name)
    return path.name[: -len(suffix)] if suffix else path.stem


def file_checksum(path: Path) -> str:
    """The checksum in the form Slicer verifies downloads with (``SHA256:<hex>``)."""
    return f"SHA256:{file_sha256(path)}"


def _read_header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def volume_facts(path: Path) -> VolumeFacts:
    """Shape, spacing and checksum of a volume, reading only its header (plus the bytes for the checksum)."""
    try:
        header = _read_header(path)
    except RuntimeError:
        raise InvalidVolumeError(f"{path.name} is not a readable NIfTI or NRRD volume") from None
    return VolumeFacts(
        shape=[int(n) for n in header.GetSize()],
        spacing=[float(s) for s in header.GetSpacing()],
        checksum=file_checksum(path),
    )


def validate_label_file(label_path: Path, image_path: Path, allowed_values: set[int]) -> None:
    """Raise :class:`InvalidLabelError` naming the problem unless ``label_path`` is a label of ``image_path``.

    A label must be a readable NIfTI/NRRD volume on the image's voxel grid (same size, spacing, origin and direction
    within tolerance), with an integer pixel type and values in ``allowed_values`` (0 = background included).
    """
    try:
        label = sitk.ReadImage(str(label_path))
    except RuntimeError:
        raise InvalidLabelError("label file is not a readable NIfTI or NRRD volume") from None
    image = _read_header(image_path)
    if label.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidLabelError(f"label must have one value per voxel, got {label.GetNumberOfComponentsPerPixel()}")
    if tuple(label.GetSize()) != tuple(image.GetSize()):
        raise InvalidLabelError(f"label shape {list(label.GetSize())} does not match image shape {list(image.GetSize())}")
    _check_geometry(label, image)
    voxels = sitk.GetArrayViewFromImage(label)
    if not np.issubdtype(voxels.dtype, np.integer):
        raise InvalidLabelError(f"label voxels must be integers, got {voxels.dtype}")
    present = {int(v) for v in np.unique(voxels)}
    unknown = sorted(present - allowed_values - {0})
    if unknown:
        raise InvalidLabelError(f"label values {unknown} are outside the label map {sorted(allowed_values | {0})}")


def _check_geometry(label: sitk.Image, image: sitk.ImageFileReader) -> None:
    label_spacing, image_spacing = np.array(label.GetSpacing()), np.array(image.GetSpacing())
    if not np.allclose(label_spacing, image_spacing, rtol=SPACING_TOLERANCE, atol=0):
        raise InvalidLabelError(
            f"label spacing {label_spacing.round(4).tolist()} does not match image spacing {image_spacing.round(4).tolist()}"
        )
    label_origin, image_origin = np.array(label.GetOrigin()), np.array(image.GetOrigin())
    if not np.allclose(label_origin, image_origin, atol=ORIGIN_TOLERANCE_MM, rtol=0):
        raise InvalidLabelError(
            f"label origin {label_origin.round(3).tolist()} does not match image origin {image_origin.round(3).tolist()} (affine)"
        )
    if not np.allclose(label.GetDirection(), image.GetDirection(), atol=DIRECTION_TOLERANCE, rtol=0):
        raise InvalidLabelError("label orientation (direction cosines) does not match the image's (affine)")
