"""Infer tasks for 3D Slicer: ``slpt`` (pre-segmentation) and ``slpt_uncertainty`` (where the K prompts disagree)."""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import nibabel as nib
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from app.modelstore import ModelStore
from app.predictions import PredictionCache
from models.inference import VolumePrediction, segment_volume

logger = logging.getLogger(__name__)


class SLPTInfer(InferTask):
    """Segmentation by the newest published prompt model: mean of the K prompts' predictions."""

    def __init__(self, store: ModelStore, labels: dict[str, int], output: str = "label",
                 predictions: PredictionCache | None = None):
        description = (
            "SLPT pre-segmentation (frozen backbone + K diversified prompts)"
            if output == "label"
            else "Where the K prompts disagree (mean pairwise Jensen-Shannon divergence per voxel)"
        )
        super().__init__(InferType.SEGMENTATION if output == "label" else InferType.OTHERS, labels, 3, description)
        self.store = store
        self.output = output
        self.predictions = predictions

    def is_valid(self) -> bool:
        return True  # listed even before training, so Slicer shows it; calling it then answers 409

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        loaded = self.store.latest()  # NoModelError -> 409 in the REST layer
        # The cascade: liver ROI on the working grid, K prompts inside it, result on the image's own grid.
        result = segment_volume(loaded.network, request["image"])
        label, disagreement = result.label_on_original(), result.disagreement_on_original()
        if self.predictions is not None and request.get("image_id"):
            # Kept for prospective quality and the dashboard: the label this annotator corrects is measured against
            # exactly this prediction, and nothing segments the volume again (docs/design.md, "Prospective quality").
            try:
                self.predictions.keep(loaded.version, request["image_id"], label, disagreement)
            except OSError:
                logger.exception(f"could not keep the prediction of {request['image_id']}")
        data = label if self.output == "label" else disagreement
        path = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        nib.save(nib.Nifti1Image(data, result.original_affine), path)
        return path, _summary(result, loaded.version)


def _summary(result: VolumePrediction, version: str) -> dict[str, Any]:
    prediction = result.prediction
    foreground = prediction.foreground_any
    summary = {
        "model_version": version,
        "mean_disagreement": float(prediction.disagreement[foreground].mean()) if foreground.any() else 0.0,
        "foreground_voxels": int(foreground.sum()),
        "liver_found": result.roi.found,
        "roi": {"start": list(result.roi.box.start), "stop": list(result.roi.box.stop), "liver_ml": round(result.roi.liver_ml, 1)},
        "outputs": ["slpt", "slpt_uncertainty"],
    }
    if not result.roi.found:
        summary["warning"] = "the backbone found no liver: the whole volume was segmented"
    return summary
