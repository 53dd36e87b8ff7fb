"""Where a studies folder keeps its images and labels.

Two layouts are served:
- a plain folder of volumes (MONAI Label's usual layout): images at the top, labels under ``labels/final``;
- an MSD-layout dataset (``dataset.json``, ``imagesTr/``, ``labelsTr/``): ``imagesTr/`` is served, annotators' labels
  go to ``labels/final`` beside it, and ``labelsTr/`` stays ground truth for simulations unless imported explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class StudiesError(ValueError):
    """The studies folder cannot be served."""


@dataclass(frozen=True)
class StudiesLayout:
    root: Path
    images_dir: Path
    labels_dir: Path
    ground_truth_dir: Path | None

    @property
    def is_msd(self) -> bool:
        return self.ground_truth_dir is not None


def resolve_studies(studies: str | Path) -> StudiesLayout:
    root = Path(studies).expanduser().resolve()
    if not root.is_dir():
        raise StudiesError(f"studies folder not found: {root}")
    images_tr = root / "imagesTr"
    if images_tr.is_dir():
        return StudiesLayout(root, images_tr, root / "labels" / "final", root / "labelsTr")
    return StudiesLayout(root, root, root / "labels" / "final", None)
