"""The MONAI Label app: ``monailabel start_server --app app --studies DIR`` (or ``slpt serve``) loads this file.

MONAI Label imports this module as ``main`` from the app folder, so everything it needs is imported from the installed
``app`` package by absolute name.
"""

from __future__ import annotations

import logging
from pathlib import Path

from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from app.settings import AppSettings
from app.studies import resolve_studies

logger = logging.getLogger(__name__)

LABELS = {"liver": 1, "tumour": 2}


class SLPTApp(MONAILabelApp):
    """Prompt-tuned segmentation (SLPT) with TESLA selective labeling, served to 3D Slicer."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.settings = AppSettings.from_conf(conf)
        self.layout = resolve_studies(studies)
        super().__init__(
            app_dir=app_dir,
            studies=str(self.layout.root),
            conf=conf,
            name="slpt-label",
            description="Selective labeling meets prompt tuning: liver tumour segmentation in CT",
            version="0.1.0",
            labels=LABELS,
        )

    def init_datastore(self) -> Datastore:
        images_dir = self.layout.images_dir.relative_to(self.layout.root)
        return LocalDatastore(
            str(self.layout.root),
            images_dir=str(images_dir),
            labels_dir="labels",
            extensions=("*.nii.gz", "*.nii", "*.nrrd"),
            auto_reload=False,
        )

    def init_strategies(self) -> dict[str, Strategy]:
        # Slicer preselects the first strategy: dict order is the default order.
        return {"random": Random(), "first": First()}


def app_dir() -> Path:
    """The folder MONAI Label's ``--app`` must point at (this package)."""
    return Path(__file__).resolve().parent
