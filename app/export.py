"""The final labels as an MSD-layout archive (``imagesTr/``, ``labelsTr/``, ``dataset.json``, ``manifest.json``),
written as a gzipped tar stream so that neither the server nor the client holds the whole archive.

``manifest.json`` says who saved each final label and when (its newest version). Volumes or labels stored in another
format (NRRD, MHA) are converted to NIfTI, which the MSD layout requires; ``cohort.msd.load_msd`` reads the archive
back once unpacked. A case whose image or label file is missing or unreadable stops the archive with an
:class:`ExportError` naming the case and the file.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import SimpleITK as sitk
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cohort.msd import GROUPS_CSV, groups_csv, msd_index
from db.labels import FINAL_TAG
from db.schema import Image, Label


class ExportError(RuntimeError):
    """A case cannot be exported: its image or label file is missing or is not a readable volume."""


@dataclass(frozen=True)
class ExportedCase:
    image_id: str
    image_path: str
    label_path: str
    label_version: int
    annotator: str | None
    labeled_at: str
    label_checksum: str | None
    group: str | None


def final_labels(session: Session) -> list[ExportedCase]:
    """Every labeled volume with its newest final label, by image id."""
    newest = (
        select(Label.image_id, func.max(Label.version).label("version"))
        .where(Label.tag == FINAL_TAG)
        .group_by(Label.image_id)
        .subquery()
    )
    rows = session.execute(
        select(Image, Label)
        .join(Label, Label.image_id == Image.id)
        .join(newest, (newest.c.image_id == Label.image_id) & (newest.c.version == Label.version))
        .where(Label.tag == FINAL_TAG, Image.label_status == "labeled")
        .order_by(Image.id)
    ).all()
    return [
        ExportedCase(image.id, image.path, label.path, label.version, label.annotator, label.created_at.isoformat(),
                     label.checksum, image.grp)
        for image, label in rows
    ]


class _Chunks(io.RawIOBase):
    """A write-only file collecting what tarfile writes, handed out by :meth:`drain`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        parts, self._parts = self._parts, []
        yield from parts


def msd_archive(cases: list[ExportedCase], labels: dict[int, str], description: dict) -> Iterator[bytes]:
    """Yield the ``.tar.gz`` bytes of the archive, one volume at a time."""
    out = _Chunks()
    names = [c.image_id for c in cases]
    groups = {c.image_id: c.group for c in cases if c.group}
    with tarfile.open(fileobj=out, mode="w|gz") as tar, tempfile.TemporaryDirectory(prefix="slpt-export-") as scratch:
        for case in cases:
            _add_nifti(tar, case.image_id, "image", Path(case.image_path), "imagesTr", Path(scratch))
            _add_nifti(tar, case.image_id, "label", Path(case.label_path), "labelsTr", Path(scratch))
            yield from out.drain()
        _add_bytes(tar, "dataset.json", json.dumps(msd_index(names, labels, groups, description), indent=2) + "\n")
        if groups:
            _add_bytes(tar, GROUPS_CSV, groups_csv(names, groups))
        _add_bytes(tar, "manifest.json", json.dumps([asdict(c) for c in cases], indent=2) + "\n")
    yield from out.drain()


def _add_nifti(tar: tarfile.TarFile, image_id: str, what: str, source: Path, folder: str, scratch: Path) -> None:
    """Add ``source`` (the case's ``what`` file) as ``folder/<image_id>.nii.gz``, converted to NIfTI if need be."""
    if not source.is_file():
        raise ExportError(f"cannot export {image_id}: its {what} file {source} is missing")
    if not source.name.endswith(".nii.gz"):
        converted = scratch / "converted.nii.gz"
        try:
            sitk.WriteImage(sitk.ReadImage(str(source)), str(converted), useCompression=True)
        except RuntimeError as error:
            raise ExportError(f"cannot export {image_id}: its {what} file {source} is not a readable volume") from error
        source = converted
    tar.add(str(source), arcname=f"{folder}/{image_id}.nii.gz", recursive=False)


def _add_bytes(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))
