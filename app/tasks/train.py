"""Train task ``slpt``: prompt tuning on the volumes whose label is final, publishing a new model version."""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.tasks.train import TrainTask

from app.jobs import JobReporter, tracked_job
from app.modelstore import ModelStore
from app.scoring import score_unlabeled
from app.settings import AppSettings
from db.datastore import SQLDatastore
from models.slpt import SLPTConfig, SLPTNet
from models.distributed import train_on_devices, training_gpus
from models.training import TrainConfig, measure_prompt_disagreement

logger = logging.getLogger(__name__)

HELD_OUT_FOR_DISAGREEMENT = 3  # unlabeled volumes on which the prompts' disagreement is measured after training


class NoFinalLabelsError(ValueError):
    """Training was asked for while no volume has a final label."""


class SLPTTrain(TrainTask):
    def __init__(self, store: ModelStore, settings: AppSettings, num_classes: int):
        super().__init__("Prompt tuning of the frozen backbone on the final labels (K diversified prompts)")
        self.store = store
        self.settings = settings
        self.num_classes = num_classes

    def config(self) -> dict[str, Any]:
        return {"steps": self.settings.train_steps, "num_prompts": self.settings.num_prompts}

    def __call__(self, request: dict[str, Any], datastore: SQLDatastore) -> dict[str, Any]:
        # The server reserved the job (one training at a time across servers); this process takes it over, and any
        # error from here on ends it as failed rather than leaving it queued.
        with tracked_job(datastore.sessions, "train", job_id=request.get("job_id")) as job:
            network, version, metrics = self._train(request, datastore, job)
            job.result = {"model_version": version, **metrics}
        logger.info(f"published model {version}: {metrics}")
        # Plan the new version's scoring and take part in it here, in the training process, with the network in memory;
        # every replica joins when it sees the version (docs/design.md, "Work spread over replicas").
        scoring = score_unlabeled(datastore, network.eval(), version, self.settings.work(), store=self.store)
        return {"model_version": version, **metrics, "scoring": scoring}

    def _train(self, request: dict[str, Any], datastore: SQLDatastore, job: JobReporter) -> tuple[SLPTNet, str, dict]:
        """Prompt-tune on every final label and publish the version; returns (network, version, metrics)."""
        pairs = datastore.datalist()
        if not pairs:
            raise NoFinalLabelsError("no volume has a final label yet: submit labels before training")
        steps = int(request.get("steps", self.settings.train_steps))
        backbone, backbone_config = self.store.backbone()
        info = self.store.info()
        network = SLPTNet(
            backbone,
            SLPTConfig(
                num_classes=self.num_classes,
                num_prompts=int(request.get("num_prompts", self.settings.num_prompts)),
                roi_size=(self.settings.roi_size,) * 3,
                cascade=self.settings.cascade(info),
                inherit_classes=info.inherit_classes(),
            ),
        )
        cases = [(pair["image"], pair["label"]) for pair in pairs]
        device = None if self.settings.device == "auto" else self.settings.device
        result = train_on_devices(
            network,
            cases,
            TrainConfig(steps=steps, device=device),
            progress=lambda done, total, loss: job(done, total, f"step {done}/{total} loss {loss:.4f}"),
            gpus=training_gpus(device, self.settings.train_gpus),
        )
        held_out = datastore.get_unlabeled_images()[:HELD_OUT_FOR_DISAGREEMENT]
        disagreement = (
            measure_prompt_disagreement(network, [datastore.get_image_uri(i) for i in held_out]) if held_out else None
        )
        metrics = {
            "labels": len(cases),
            "steps": result.steps,
            "train_time_s": round(result.time_s, 2),
            "first_loss": result.losses[0],
            "final_loss": result.losses[-1],
            "held_out_disagreement": disagreement,
            **network.parameter_counts(),
        }
        return network, self.store.publish(network, backbone_config, metrics), metrics
