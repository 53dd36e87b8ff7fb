"""Pre-segmentations kept on disk per (model version, volume): the quality job and the dashboard's volume pictures
read one inference instead of making it again. Files live under ``<studies>/.slpt/predictions/<version>/``."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.modelstore import ModelStore
from models.inference import segment_volume
from storage.atomic import atomic_path

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class StoredPrediction:
    """A model version's output on one volume, on the image's own grid."""

    version: str
    label: np.ndarray  # uint8 class map
    disagreement: np.ndarray  # float32, where the K prompts disagree


class PredictionCache:
    def __init__(self, store: ModelStore, folder: Path):
        self.store = store
        self.folder = Path(folder)
        self._lock = threading.Lock()  # one segmentation at a time from this cache: it is background work

    def path(self, version: str, image_id: str) -> Path:
        return self.folder / _SAFE.sub("_", version) / f"{_SAFE.sub('_', image_id)}.npz"

    def cached(self, version: str, image_id: str) -> StoredPrediction | None:
        path = self.path(version, image_id)
        if not path.is_file():
            return None
        with np.load(path) as stored:
            return StoredPrediction(version, stored["label"], stored["disagreement"].astype(np.float32))

    def get(self, version: str, image_id: str, image_path: str) -> StoredPrediction:
        """The stored prediction, or one made now with that version and stored."""
        if (found := self.cached(version, image_id)) is not None:
            return found
        with self._lock:
            if (found := self.cached(version, image_id)) is not None:  # made while this thread waited
                return found
            result = segment_volume(self.store.version(version).network, image_path)
            return self.keep(version, image_id, result.label_on_original(), result.disagreement_on_original())

    def keep(self, version: str, image_id: str, label: np.ndarray, disagreement: np.ndarray) -> StoredPrediction:
        """Store a prediction made elsewhere (the infer task's, for Slicer), so it is not made again."""
        with atomic_path(self.path(version, image_id)) as temp, open(temp, "wb") as out:
            np.savez_compressed(out, label=label.astype(np.uint8), disagreement=disagreement.astype(np.float16))
        return StoredPrediction(version, label, disagreement)
