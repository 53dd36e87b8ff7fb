"""Infer tasks for 3D Slicer: ``slpt`` (pre-segmentation) and ``slpt_uncertainty`` (where the K prompts disagree)."""

from __future__ import annotations

import tempfile
from typing import Any

import nibabel as nib
import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from app.modelstore import ModelStore
from models.inference import Prediction, predict


class SLPTInfer(InferTask):
    """Segmentation by the newest published prompt model: mean of the K prompts' predictions."""

    def __init__(self, store: ModelStore, labels: dict[str, int], output: str = "label"):
        description = (
            "SLPT pre-segmentation (frozen backbone + K diversified prompts)"
            if output == "label"
            else "Where the K prompts disagree (mean pairwise Jensen-Shannon divergence per voxel)"
        )
        super().__init__(InferType.SEGMENTATION if output == "label" else InferType.OTHERS, labels, 3, description)
        self.store = store
        self.output = output

    def is_valid(self) -> bool:
        return True  # listed even before training, so Slicer shows it; calling it then answers 409

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        loaded = self.store.latest()  # NoModelError -> 409 in the REST layer
        image_path = request["image"]
        image = nib.load(image_path)
        prediction = predict(loaded.network, image_path)
        data = prediction.label.astype(np.uint8) if self.output == "label" else prediction.disagreement.astype(np.float32)
        result = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        nib.save(nib.Nifti1Image(data, image.affine), result)
        return result, _summary(prediction, loaded.version)


def _summary(prediction: Prediction, version: str) -> dict[str, Any]:
    foreground = prediction.foreground_any
    return {
        "model_version": version,
        "mean_disagreement": float(prediction.disagreement[foreground].mean()) if foreground.any() else 0.0,
        "foreground_voxels": int(foreground.sum()),
        "outputs": ["slpt", "slpt_uncertainty"],
    }
