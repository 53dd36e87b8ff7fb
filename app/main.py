"""The MONAI Label app: ``monailabel start_server --app app --studies DIR`` (or ``slpt serve``) loads this file.

MONAI Label imports this module as ``main`` from the app folder, so everything it needs is imported from the installed
``app`` package by absolute name. MONAI Label also puts the app folder on ``PYTHONPATH`` of its training and scoring
processes: no module here may share a name with a top-level package (``strategies``, ``models``, ``db``, ``sim``).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from app.accounts import bootstrap_admin
from app.agreement import AgreementWorker
from app.security import Authenticator
from app.inference_queue import InferenceQueue
from app.ingest import Ingestion
from app.jobs import fail_interrupted_jobs
from app.login_guard import LoginGuard
from app.modelstore import ModelStore
from app.predictions import PredictionCache
from app.quality import QualityWorker, predictions_folder
from app.scoring import BackgroundWork, SLPTScoring
from app.selection import RoundBuilder, review_only_strategies, served_strategies
from app.settings import AppSettings
from app.studies import StudiesLayout, resolve_studies
from app.work import release_interrupted_batches
from app.tasks.infer import SLPTInfer
from app.tasks.train import SLPTTrain
from db.datastore import SQLDatastore
from db.ingestion import DuplicateImageError
from db.engine import create_db_engine, default_db_url, session_factory
from db.migrate import upgrade
from cohort.msd import load_msd
from storage.atomic import remove_partial_files

logger = logging.getLogger(__name__)

LABELS = {"liver": 1, "tumour": 2}


class SLPTApp(MONAILabelApp):
    """Prompt-tuned segmentation (SLPT) with TESLA selective labeling, served to 3D Slicer."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.settings = AppSettings.from_conf(conf)
        self.layout = resolve_studies(studies)
        self._build_services()
        super().__init__(
            app_dir=app_dir,
            studies=str(self.layout.root),
            conf=conf,
            name="slpt-label",
            description="Selective labeling meets prompt tuning: liver tumour segmentation in CT",
            version="0.1.0",
            labels=LABELS,
        )
        # Stock MONAI Label re-scores in a new process (which rebuilds the app) at start-up and after every
        # training; our train task scores with the model it just published instead (see app.tasks.train).
        self._auto_update_scoring = False

    def _build_services(self) -> None:
        """What the app's tasks and routes share, built before MONAI Label's constructor asks for the datastore, infers
        and trainers: the database (migrated to the newest schema), the inference queue, the upload lane, the
        authenticator with the first admin, and the published models."""
        self.db_url = self.settings.db or default_db_url(self.layout.root)
        upgrade(self.db_url)
        self.engine = create_db_engine(self.db_url)
        self.db_sessions = session_factory(self.engine)  # not "sessions": MONAILabelApp.sessions() serves /session/
        self.infer_queue = InferenceQueue(self.settings.infer_workers, self.settings.infer_queue)
        # Uploads queue among themselves: on a busy server their validation and writes would otherwise share the CPU
        # (and SQLite's write lock) with every Next Sample claim (docs/design.md, "Faults, load and replicas").
        self.label_lane = threading.BoundedSemaphore(self.settings.label_writers)
        self.authenticator = Authenticator(self.db_sessions, self.settings.secret_key, self.settings.token_minutes)
        self.login_guard = LoginGuard(self.db_sessions, self.settings)
        bootstrap_admin(self.db_sessions, self.settings)
        models = self.settings.work_dir(self.layout.root) / "models"
        if leftovers := remove_partial_files(models):  # interrupted writes (a killed server): never acknowledged
            logger.warning(f"removed {len(leftovers)} partial file(s) under {models}")
        self.model_store = ModelStore(
            self.db_sessions, folder=models, backbone_path=self.settings.backbone_path(self.layout.root)
        )
        self.predictions = PredictionCache(self.model_store, predictions_folder(self.settings.work_dir(self.layout.root)))
        self.quality_worker = QualityWorker(self.db_sessions, self.predictions, self.settings.quality_interval_s)

    def init_datastore(self) -> Datastore:
        """The SQL datastore, with new volumes in the studies folder ingested."""
        datastore = SQLDatastore(
            self.db_sessions,
            images_dir=self.layout.images_dir,
            labels_dir=self.layout.labels_dir,
            label_values=set(LABELS.values()),
            lease=timedelta(hours=self.settings.lease_hours),
            groups=_msd_groups(self.layout),
            clock=self.settings.clock,
            train_on=self.settings.train_on,
        )
        self.agreement = AgreementWorker(datastore)
        if leftovers := remove_partial_files(self.layout.labels_dir):  # interrupted label writes: never acknowledged
            logger.warning(f"removed {len(leftovers)} partial file(s) under {self.layout.labels_dir}")
        try:  # registers the new volume files, opening none of them; their headers are read in the background
            datastore.register_new()
        except DuplicateImageError as error:
            raise SystemExit(f"cannot serve {self.layout.images_dir}: {error}") from None
        self.ingestion = Ingestion(datastore)
        if self.settings.import_labels and self.layout.is_msd:
            _import_ground_truth(datastore, self.layout)
        return datastore

    def init_infers(self) -> dict[str, InferTask]:
        if self.settings.no_model:
            return {}
        return {
            "slpt": SLPTInfer(self.model_store, LABELS, output="label", predictions=self.predictions),
            "slpt_uncertainty": SLPTInfer(self.model_store, LABELS, output="disagreement", predictions=self.predictions),
        }

    def init_trainers(self) -> dict[str, TrainTask]:
        if self.settings.no_model:
            return {}
        return {"slpt": SLPTTrain(self.model_store, self.settings, num_classes=len(LABELS) + 1)}

    def init_strategies(self) -> dict[str, Strategy]:
        if self.settings.no_model:
            self.round_builder = None
            return review_only_strategies()
        self.round_builder = RoundBuilder(
            self.datastore(), self.model_store, self.settings.round_size,
            self.settings.cascade(self.model_store.info()), self.settings.work(),
        )
        return served_strategies(self.round_builder)  # Slicer preselects the first: the registry puts TESLA first

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        if self.settings.no_model:
            return {}
        return {"slpt_uncertainty": SLPTScoring(self.model_store, self.settings.work())}

    def on_init_complete(self):
        super().on_init_complete()
        interrupted = fail_interrupted_jobs(self.datastore().sessions)
        if interrupted:
            logger.warning(f"marked {len(interrupted)} interrupted job(s) failed: {interrupted}")
        self.agreement.request()  # comparisons a stopped server left undone
        self.ingestion.start()  # headers and checksums of volumes registered but not read yet
        if self.settings.no_model:
            return
        released = release_interrupted_batches(self.datastore().sessions)
        if released:
            logger.warning(f"gave back {released} work batch(es) leased by a process of this host that is gone")
        # This replica's share of the embedding and scoring batches: it catches up on what a killed or failed
        # worker left, joins every new model version's scoring, and builds a TESLA round once the work is complete
        # (docs/design.md, "Work spread over replicas").
        self.background_work = BackgroundWork(
            self.datastore(), self.model_store, self.round_builder.cascade, self.settings.work(),
            self.settings.work_poll_s, on_complete=lambda: self.round_builder.request("tesla"),
        )
        self.background_work.start()
        if self.settings.quality_interval_s > 0:  # never on the upload path: labels are measured in the background
            self.quality_worker.start()

    def strategy_names(self) -> list[str]:
        return list(self._strategies)

    def strategy(self, name: str) -> Strategy:
        return self._strategies[name]

    def infer_names(self) -> list[str]:
        return list(self._infers)

    def trainer_names(self) -> list[str]:
        return list(self._trainers)

    def scoring_names(self) -> list[str]:
        return list(self._scoring_methods)

    def on_save_label(self, image_id, label_id):
        super().on_save_label(image_id, label_id)
        self.agreement.request()  # a double-read volume may have its last read now

    def next_sample(self, request: dict) -> dict:
        """Claim the next volume for ``request["annotator"]``; ``{}`` when nothing is left (MONAI Label's empty answer).

        Unlike the stock method this neither triggers scoring nor writes image info on every call; the claim itself
        returns the volume's info (one transaction per request).
        """
        strategy = self._strategies[request.get("strategy") or "random"]
        return strategy(request, self.datastore()) or {}


def _msd_groups(layout: StudiesLayout) -> dict[str, str]:
    if not layout.is_msd:
        return {}
    return {case.name: case.group for case in load_msd(layout.root).cases if case.group}


def _import_ground_truth(datastore: SQLDatastore, layout: StudiesLayout) -> None:
    """``--conf import_labels true``: an MSD folder's labelsTr/ become final labels of still unlabeled volumes."""
    unlabeled = set(datastore.get_unlabeled_images())
    for case in load_msd(layout.root).cases:
        if case.label is not None and case.name in unlabeled:
            datastore.save_label(case.name, str(case.label), "final", {"annotator": "import"})


def app_dir() -> Path:
    """The folder MONAI Label's ``--app`` must point at (this package)."""
    return Path(__file__).resolve().parent
